"""How long each stage of a pipeline run took, from its executed notebooks.

papermill records each notebook's start, end and duration in its metadata. This prints one
Markdown row per stage group (data, pretraining, the fine-tuning stages, ...) with the count,
the median and the sum of its notebooks' durations, then the total: what a run that was never
interrupted spends executing notebooks. The report stage runs no notebook, so its time is not
in the table.

    python scripts/stage_times.py reports/executed
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

# the numbered notebook each group's stages execute, in the pipeline's order
GROUPS = {"01": "data", "02": "pretraining", "03": "finetune", "04": "pal_after",
          "05": "results", "06": "errors", "07": "budget", "08": "best_model"}


def durations(executed: Path) -> dict[str, list[tuple[str, float]]]:
    """{group: [(notebook, seconds), ...]} for every executed notebook under ``executed``."""
    found: dict[str, list[tuple[str, float]]] = {}
    for path in sorted(executed.rglob("*.ipynb")):
        rel = path.relative_to(executed).as_posix()
        group = GROUPS.get(rel[:2])
        if group is None:
            continue
        meta = json.loads(path.read_text())["metadata"].get("papermill") or {}
        seconds = meta.get("duration")
        if seconds is None or meta.get("exception"):
            raise ValueError(f"{path}: metadata.papermill: no duration, or an exception (the notebook did not finish)")
        found.setdefault(group, []).append((rel, float(seconds)))
    return {group: found[group] for group in GROUPS.values() if group in found}


def table(found: dict[str, list[tuple[str, float]]]) -> str:
    rows = ["| stage | notebooks | median | sum |", "| --- | --- | --- | --- |"]
    for group, items in found.items():
        seconds = [s for _, s in items]
        rows.append(f"| {group} | {len(seconds)} | {statistics.median(seconds) / 60:.1f} min"
                    f" | {sum(seconds) / 60:.1f} min |")
    total = sum(s for items in found.values() for _, s in items)
    rows.append(f"| **all** | {sum(len(i) for i in found.values())} | | **{total / 60:.1f} min** |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("executed", type=Path, help="the folder of executed notebooks")
    args = parser.parse_args(argv)
    try:
        found = durations(args.executed)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not found:
        print(f"error: {args.executed}: no executed notebooks", file=sys.stderr)
        return 1
    print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
