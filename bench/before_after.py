"""student_speed of two checkouts, alternating in one run: this tree and an earlier one.

Each round runs ``bench/student_speed.py`` of the earlier checkout (imported
from that tree: ``PYTHONPATH``) and of this one, in fresh processes, one after
the other (the order flips every round), and records each one's passages/s.
The ratio is this tree's median over the earlier tree's. Writes
bench/results/before_after.json.

    git worktree add /tmp/before <commit>
    python bench/before_after.py --before /tmp/before [--rounds 3] \
        [--before-variants float32] [--after-variants float32]
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import typer
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


def speed(tree: Path, variants: str, runs: int, passages: int) -> Dict[str, float]:
    """passages/s per variant of one student_speed.py run in ``tree``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run(
            [sys.executable, str(tree / "bench" / "student_speed.py"), "--variants", variants,
             "--runs", str(runs), "--passages", str(passages), "--output", str(out)],
            env=env, check=True, cwd=tree, stdout=subprocess.DEVNULL,
        )
        result = json.loads(out.read_text())
    figures = [result] + result.get("other_variants", [])
    return {f["variant"]: f["passages_per_s"] for f in figures}


def main(
    before: Path = typer.Option(..., help="The earlier checkout (a git worktree)."),
    before_variants: str = typer.Option("float32", help="Its student_speed --variants."),
    after_variants: str = typer.Option("float32", help="This tree's student_speed --variants."),
    rounds: int = typer.Option(3, help="Alternating rounds."),
    runs: int = typer.Option(3, help="Timed runs inside each student_speed call."),
    passages: int = typer.Option(8),
    output: Path = typer.Option(ROOT / "bench" / "results" / "before_after.json"),
) -> None:
    trees = {"before": (before.resolve(), before_variants), "after": (ROOT, after_variants)}
    seen: Dict[str, List[float]] = {}
    for r in range(rounds):
        for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
            tree, variants = trees[name]
            for variant, value in speed(tree, variants, runs, passages).items():
                seen.setdefault(f"{name}:{variant}", []).append(value)
                print(f"round {r + 1}: {name}:{variant:20s} {value:.3f} passages/s", flush=True)
    medians = {k: statistics.median(v) for k, v in seen.items()}
    reference = medians[f"before:{before_variants.split(',')[0]}"]
    result = {
        "benchmark": "before_after",
        "before": str(before),
        "after_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True,
                                       capture_output=True).stdout.strip(),
        "before_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=before, text=True,
                                        capture_output=True).stdout.strip(),
        "rounds": rounds,
        "passages_per_s": {k: [round(x, 4) for x in v] for k, v in seen.items()},
        "median_passages_per_s": {k: round(v, 4) for k, v in medians.items()},
        "ratio_to_before": {k: round(v / reference, 3) for k, v in medians.items()},
        "machine": machine_info(),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in medians.items():
        print(f"{k:30s} {v:.3f} passages/s = {v / reference:.3f}x the first before variant")


if __name__ == "__main__":
    typer.run(main)
