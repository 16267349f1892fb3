"""Runs the recipes of conf/experiment/ on real data; prints the tables of docs/results.md.

    uv run python benchmarks/run_recipes.py --root /path/to/cifar10-jpg   # run all, then print
    uv run python benchmarks/run_recipes.py --root ... --only bn_cnn      # run one
    uv run python benchmarks/run_recipes.py --root ... --collect          # print from past runs

Each recipe runs as a user would type it (``train.py experiment=NAME``, plus the data source) in
its own process, into ``logs/recipes/<name>/``; the table is built from the runs' metrics.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = ("tutorial_lenet", "lenet", "fc512", "bn_cnn", "airplane_vs_bird")


def command(name: str, root: Path) -> list[str]:
    return ["train.py", f"experiment={name}", "data.source=folder", f"data.root={root}"]


def run(name: str, root: Path, out: Path) -> None:
    args = [*command(name, root), f"hydra.run.dir={out}", "trainer.enable_progress_bar=false"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    (out.parent / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)


def tables(runs: dict[str, dict], root: Path) -> str:
    lines = [
        "| experiment | command | epochs | test acc % | worst class | best class | wall time "
        "| params |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in runs.items():
        # None: a class with no test images
        per_class = {c: a for c, a in m["test/acc_class"].items() if a is not None}
        worst = min(per_class, key=per_class.get)
        best = max(per_class, key=per_class.get)
        cmd = " ".join(["uv run", *command(name, Path("DATA"))])
        lines.append(
            f"| {name} | `{cmd}` | {m['epochs']} | {100 * m['test/acc']:.2f} "
            f"| {worst} {100 * per_class[worst]:.1f} | {best} {100 * per_class[best]:.1f} "
            f"| {m['wall_time_s']:.0f} s | {m['num_params']:,} |"
        )
    classes = list(dict.fromkeys(c for m in runs.values() for c in m["test/acc_class"]))
    lines += [
        "",
        "Per-class test accuracy (%):",
        "",
        "| class | " + " | ".join(runs) + " |",
        "| --- |" + " --- |" * len(runs),
    ]
    for c in classes:
        cells = [
            f"{100 * m['test/acc_class'][c]:.1f}" if m["test/acc_class"].get(c) is not None else "-"
            for m in runs.values()
        ]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder-source CIFAR-10")
    parser.add_argument("--only", nargs="*", choices=RECIPES, default=list(RECIPES))
    parser.add_argument("--collect", action="store_true", help="only print from earlier runs")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "recipes")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.collect:
        for name in args.only:
            run(name, args.root.resolve(), args.out / name)
    runs = {
        name: json.loads((args.out / name / "metrics.json").read_text())
        for name in RECIPES
        if (args.out / name / "metrics.json").is_file()
    }
    print(tables(runs, args.root))


if __name__ == "__main__":
    main()
