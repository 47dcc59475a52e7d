"""The student on a GPU: skipped where torch sees no CUDA device (CI has none).

The shrunk decoder runs on ``cuda`` in bf16 and fp32 with the prefix-shared
answers equal to per-type ``generate``, every tensor it keeps on the GPU, and
``ray_jobs.extract --num-gpus 1`` annotates a handful of documents.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

from spacy_uniner import prompts  # noqa: E402
from spacy_uniner.models.hf import HFStudent  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["Ada Lovelace met Charles Babbage in London in 1833.",
         "The Transformer was introduced at NeurIPS by Google researchers. " * 3, "Short."]
LABELS = ["person", "location", "date", "organisation", "conference", "x"]


@pytest.mark.parametrize("grounded", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_prefix_shared_answers_equal_per_type_generate_on_cuda(tiny_model_dir, dtype, grounded):
    ps = [prompts.render_query(t, label) for t in TEXTS for label in LABELS]
    settings = dict(device="cuda", dtype=dtype, max_new_tokens=8, batch_size=4,
                    grounded=grounded)
    shared = HFStudent(str(tiny_model_dir), **settings)
    plain = HFStudent(str(tiny_model_dir), prefix_sharing=False, **settings)
    a, b = shared.generate(ps), plain.generate(ps)
    assert [g.text for g in a] == [g.text for g in b]
    tolerance = 1e-3 if dtype == "float32" else 5e-2
    for x, y in zip(a, b):
        assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=tolerance)
    model = shared.load()._model
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    kept = [t for held in shared._workspace.values() for part in held for t in part]
    assert kept and all(t.device.type == "cuda" for t in kept)


def test_ray_extract_with_one_gpu(tiny_model_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n"
                            for i, t in enumerate(TEXTS * 2)))
    out = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "ray_jobs.extract", "--input", str(docs), "--output", str(out),
         "--labels", "person,location", "--model", str(tiny_model_dir), "--actors", "1",
         "--num-gpus", "1", "--batch-size", "2", "--max-new-tokens", "8", "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["documents"] == len(TEXTS) * 2 and summary["errors"] == 0
