import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from spacy_uniner.parsing import parse_teacher_reply
from spacy_uniner.teacher.client import Secret, SpacyLLMTeacher, TeacherConfig
from spacy_uniner.teacher.prompt import SYSTEM, TeacherPrompt

from .conftest import SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import spacy_llm  # noqa: F401
    from spacy.util import registry
    assert "spacy_uniner" not in sys.modules
    block = {"@llm_models": "spacy_uniner.OpenAICompatible.v1", "name": "replay",
             "endpoint": sys.argv[1], "system": sys.argv[2], "verify": True}
    model = registry.resolve({"model": block})["model"]
    assert "spacy_uniner.teacher.llm_model" in sys.modules  # found through the entry point
    print(json.dumps(list(map(list, model([[sys.argv[3]]])))))
    """
)


def test_spacy_llm_model_resolves_through_entry_point(teacher_server, replay_teacher):
    server = teacher_server()
    passage = next(p for p in replay_teacher.passages() if replay_teacher.pairs(p))
    user = TeacherPrompt.for_variant("type").messages(passage)[1]["content"]
    env = dict(os.environ, OPENAI_API_KEY=SECRET_KEY)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, server.base_url + "/chat/completions", SYSTEM, user],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [[replay_teacher.reply(passage)]]
    assert server.stats()["requests"] == 1 and server.stats()["with_authorization"] == 1
    assert SECRET_KEY not in done.stdout + done.stderr


def test_spacy_llm_backend_asks_the_teacher(teacher_server, replay_teacher, tmp_path):
    server = teacher_server()
    config = tmp_path / "teacher.cfg"
    config.write_text(
        textwrap.dedent(
            f"""
            [model]
            @llm_models = "spacy_uniner.OpenAICompatible.v1"
            name = "replay"
            endpoint = "{server.base_url}/chat/completions"
            system = "{SYSTEM}"
            """
        )
    )
    teacher_config = TeacherConfig(model="replay", backend="spacy-llm", llm_config=str(config))
    assert teacher_config.teacher_name.startswith("spacy-llm:replay:")
    teacher = SpacyLLMTeacher(teacher_config, TeacherPrompt.for_variant("type"), Secret(None))
    passage = next(p for p in replay_teacher.passages() if replay_teacher.pairs(p))
    result = teacher.ask(passage)
    assert result["ok"] and parse_teacher_reply(result["reply"]).items == replay_teacher.pairs(
        passage
    )
    assert result["usage"]["estimated"] == 1
    server.faults.fail_rate, server.faults.fail_status = 1.0, (500,)  # spacy-llm does not retry 500: a failure
    failed = teacher.ask(passage)
    assert not failed["ok"] and "500" in failed["error"]


def test_spacy_llm_backend_on_ray(
    ray_cluster, teacher_server, replay_teacher, small_corpus, tmp_path, smollm2_tokenizer_dir
):
    from spacy_uniner.teacher import AnnotateOptions, annotate

    server = teacher_server()
    config = tmp_path / "teacher.cfg"
    config.write_text(
        f'[model]\n@llm_models = "spacy_uniner.OpenAICompatible.v1"\nname = "replay"\n'
        f'endpoint = "{server.base_url}/chat/completions"\n'
    )
    options = AnnotateOptions(
        corpus=[small_corpus],
        out=tmp_path / "out",
        num_passages=6,
        tokenizer=str(smollm2_tokenizer_dir),
        progress=False,
    )
    teacher = TeacherConfig(model="replay", backend="spacy-llm", llm_config=str(config))
    stats = annotate(options, teacher, TeacherPrompt.for_variant("definition"), Secret(None))
    assert stats["passages"] == 6 and server.stats()["requests"] == 6
    assert stats["teacher"].startswith("spacy-llm:replay:")
    assert stats["prompt_version"] == "uniner.teacher.definition.v1"
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "teacher.jsonl").read_text().splitlines()
    ]
    for row in rows:  # the definition variant reached the teacher through spacy-llm
        assert parse_teacher_reply(row["raw_reply"]).items == replay_teacher.pairs(
            row["text"], "definition"
        )
        assert all(len(label.split()) > 3 for _, label in row["entities"])


def test_cli_help():
    for module, option in (
        ("ray_jobs.annotate", "--num-passages"),
        ("ray_jobs.teacher_server", "--fail-rate"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert option in done.stdout
