"""An OpenAI-compatible chat model for spacy-llm: any server with ``/v1/chat/completions``.

spacy-llm's own OpenAI models check credentials against api.openai.com when
they are created, even with a custom endpoint. This subclass talks only to the
configured endpoint, sends an optional system message and needs no key for a
local server. Registered as ``spacy_uniner.OpenAICompatible.v1`` in
spacy-llm's ``llm_models`` registry through the ``thinc_llm_models`` entry
point, so a config resolves it in a fresh process:

    [components.llm.model]
    @llm_models = "spacy_uniner.OpenAICompatible.v1"
    name = "gpt-3.5-turbo"
    endpoint = "http://127.0.0.1:8000/v1/chat/completions"
    system = "You are a helpful information extraction system."
"""

import os
from typing import Any, Dict, Iterable, List, Optional

from confection import SimpleFrozenDict
from spacy_llm.models.rest.openai.model import OpenAI
from spacy_llm.registry import registry


class OpenAICompatible(OpenAI):
    def __init__(self, *, system: Optional[str], verify: bool, **kwargs: Any) -> None:
        self._system = system
        self._verify = verify
        super().__init__(**kwargs)

    @property
    def credentials(self) -> Dict[str, str]:
        api_key = os.getenv("OPENAI_API_KEY")
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _verify_auth(self) -> None:
        """With ``verify``, check that the endpoint's server lists the model (``GET …/models``)."""
        if not self._verify:
            return
        base = self._endpoint.rsplit("/chat/completions", 1)[0]
        response = self.retry(
            call_method=__import__("requests").get,
            url=f"{base}/models",
            headers=self._credentials,
            timeout=self._max_request_time,
        )
        response.raise_for_status()
        models = [item.get("id") for item in response.json().get("data", [])]
        if models and self._name not in models:
            raise ValueError(
                f"Model {self._name!r} is not served at {base}; it serves {sorted(models)}."
            )

    def __call__(self, prompts: Iterable[Iterable[str]]) -> Iterable[Iterable[str]]:
        import requests

        headers = {**self._credentials, "Content-Type": "application/json"}
        results: List[List[str]] = []
        for prompts_for_doc in prompts:
            replies: List[str] = []
            for prompt in prompts_for_doc:
                messages = [{"role": "user", "content": prompt}]
                if self._system:
                    messages.insert(0, {"role": "system", "content": self._system})
                response = self.retry(
                    call_method=requests.post,
                    url=self._endpoint,
                    headers=headers,
                    json={**self._config, "model": self._name, "messages": messages},
                    timeout=self._max_request_time,
                )
                if response.status_code >= 400:
                    raise ValueError(
                        f"Request to {self._endpoint} failed with {response.status_code}: "
                        f"{response.text[:300]}"
                    )
                body = response.json()
                if "error" in body or not body.get("choices"):
                    if self._strict:
                        raise ValueError(f"API call to {self._endpoint} failed: {str(body)[:300]}")
                    replies.append(str(body))
                    continue
                replies.append(body["choices"][0].get("message", {}).get("content") or "")
            results.append(replies)
        return results

    @staticmethod
    def _get_context_lengths() -> Dict[str, int]:
        return {}


@registry.llm_models("spacy_uniner.OpenAICompatible.v1")
def make_openai_compatible_v1(
    name: str,
    endpoint: str,
    config: Dict[Any, Any] = SimpleFrozenDict(temperature=0.0),
    system: Optional[str] = None,
    strict: bool = True,
    max_tries: int = 5,
    interval: float = 1.0,
    max_request_time: float = 60.0,
    context_length: Optional[int] = None,
    verify: bool = False,
) -> OpenAICompatible:
    """An OpenAI-compatible chat-completions model (vLLM, llama.cpp server, OpenAI, …).

    name (str): Model name sent with each request.
    endpoint (str): Full URL of the chat-completions route.
    config (Dict[Any, Any]): Extra request fields (temperature 0 by default).
    system (Optional[str]): System message sent before each prompt.
    verify (bool): Check at creation that the server lists the model.
    RETURNS (OpenAICompatible): The model callable.
    """
    return OpenAICompatible(
        name=name,
        endpoint=endpoint,
        config=dict(config),
        strict=strict,
        max_tries=max_tries,
        interval=interval,
        max_request_time=max_request_time,
        context_length=context_length,
        system=system,
        verify=verify,
    )
