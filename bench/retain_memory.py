"""The default student with and without ``retain_memory``, in alternating processes.

``retain_memory`` changes glibc's malloc for the whole process, so the two
settings cannot alternate within one run as student_speed's variants do. This
runs ``student_speed.py --variants float32`` in fresh processes, alternating
``--retain-memory`` and ``--no-retain-memory`` for ``--rounds`` rounds, and
reports each setting's median passages/s and their ratio (also per round).
Writes bench/results/retain_memory.json.

    python bench/retain_memory.py [--rounds 3] [--runs 3] [--passages 8]
"""

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import typer
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


def main(
    rounds: int = typer.Option(3, help="Process pairs (one of each setting per round)."),
    runs: int = typer.Option(3, help="Timed runs per process (student_speed --runs)."),
    passages: int = typer.Option(8, help="Passages per run (student_speed --passages)."),
    output: Path = typer.Option(ROOT / "bench" / "results" / "retain_memory.json"),
) -> None:
    settings = {"retain": "--retain-memory", "default_malloc": "--no-retain-memory"}
    speed: Dict[str, List[float]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            order = list(settings) if r % 2 == 0 else list(settings)[::-1]
            for name in order:
                result = Path(tmp) / f"{name}-{r}.json"
                subprocess.run(
                    [sys.executable, str(ROOT / "bench" / "student_speed.py"),
                     "--variants", "float32", "--runs", str(runs), "--passages", str(passages),
                     settings[name], "--output", str(result)],
                    check=True, stdout=subprocess.DEVNULL,
                )
                figure = json.loads(result.read_text())["passages_per_s"]
                speed[name].append(figure)
                print(f"round {r + 1}: {name:15s} {figure:.4f} passages/s", flush=True)
    ratios = [a / b for a, b in zip(speed["retain"], speed["default_malloc"])]
    out = {
        "benchmark": "retain_memory",
        "passages": passages,
        "runs_per_process": runs,
        "passages_per_s": {name: [round(v, 4) for v in values] for name, values in speed.items()},
        "median_passages_per_s": {
            name: round(statistics.median(values), 4) for name, values in speed.items()
        },
        "ratio_per_round": [round(x, 3) for x in ratios],
        "ratio_of_medians": round(
            statistics.median(speed["retain"]) / statistics.median(speed["default_malloc"]), 3
        ),
        "machine": machine_info(),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    print(f"retain_memory: {out['ratio_of_medians']}x the passages/s of glibc's default malloc "
          f"(rounds {', '.join(f'{x:.3f}x' for x in ratios)})")


if __name__ == "__main__":
    typer.run(main)
