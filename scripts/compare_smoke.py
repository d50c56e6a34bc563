"""Every experiment of params.yaml trained on the smoke profile, and two such sets compared.

A refactor that promises "no behaviour change" is checked with it: train every experiment
(one seed) with one checkout, then with another, and compare what the runs wrote.

    python scripts/compare_smoke.py train --root OLD_CHECKOUT --out /tmp/smoke-old
    python scripts/compare_smoke.py train --root NEW_CHECKOUT --out /tmp/smoke-new
    python scripts/compare_smoke.py diff /tmp/smoke-old /tmp/smoke-new

``train`` goes through the command line (``mtlib train``) of the checkout named by
``--root``, in one process, so it works across refactors of the library's internals. An
experiment that starts from another one's runs (its overrides name
``results/runs/<name>/seed{seed}``) starts from that experiment's run in ``--out``.
``diff`` compares every metrics.json value except those that measure time or name the
machine or its installed package versions, history.csv except its time column, and every prediction file byte for byte; it
exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

TIMING = re.compile(r"(seconds|per_second|^machine$|^packages$)")
PARENT = re.compile(r"results/runs/(\w+)/seed")


def _init_from(entry) -> str | None:
    """The experiment whose runs ``entry`` (a params.yaml experiment) starts from, if any."""
    found = PARENT.search(json.dumps(entry))
    return found.group(1) if found else None


def experiment_order(params: dict) -> list[tuple[str, str | None]]:
    """(experiment, the experiment it starts from) with every parent before its children."""
    pending = {name: _init_from(entry) for name, entry in params["experiments"].items()}
    order: list[tuple[str, str | None]] = []
    while pending:
        ready = [n for n, parent in pending.items() if parent is None or parent in dict(order)]
        if not ready:
            raise SystemExit(f"experiments start from runs that are never trained: {sorted(pending)}")
        for name in ready:
            order.append((name, pending.pop(name)))
    return order


def train(root: Path, out: Path, data: str | None, only: list[str]) -> int:
    sys.path.insert(0, str(root))
    from mtlib.cli import main  # the checkout's own command line

    params = yaml.safe_load((root / "params.yaml").read_text())
    failed = []
    for name, parent in experiment_order(params):
        if only and name not in only:
            continue
        argv = ["train", "--experiment", name, "--profile", "smoke", "--seed", "1", "--no-progress",
                "--params", str(root / "params.yaml"), "--out", str(out / name), "--overwrite",
                "--set", f"data.cache_dir={out / 'cache'}", "--set", f"data.processed_dir={out / 'processed'}"]
        if parent:
            argv += ["--set", f"train.init_from={out / parent}"]
        if data:
            argv += ["--data", data]
        print(f"== {name}", flush=True)
        if main(argv) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


def _scores(tree, prefix=""):
    """metrics.json flattened to {dotted key: value}, without timing and machine fields."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        if not TIMING.search(key):
            out.update(_scores(value, f"{prefix}.{key}" if prefix else key))
    return out


def _history(path: Path) -> list[str]:
    if not path.exists():
        return []
    rows = [line.split(",") for line in path.read_text().splitlines()]
    keep = [i for i, col in enumerate(rows[0]) if not TIMING.search(col)]
    return [",".join(row[i] for i in keep) for row in rows]


def diff(old: Path, new: Path) -> int:
    problems = []
    names = sorted({p.parent.name for p in old.glob("*/metrics.json")} | {p.parent.name for p in new.glob("*/metrics.json")})
    for name in names:
        a, b = old / name, new / name
        if not (a / "metrics.json").exists() or not (b / "metrics.json").exists():
            problems.append(f"{name}: metrics.json only on one side")
            continue
        sa, sb = (_scores(json.loads((d / "metrics.json").read_text())) for d in (a, b))
        problems += [f"{name}: metrics {k}: {sa.get(k)!r} -> {sb.get(k)!r}"
                     for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
        if list(sa) != list(sb):
            problems.append(f"{name}: metrics.json keys in another order")
        if _history(a / "history.csv") != _history(b / "history.csv"):
            problems.append(f"{name}: history.csv differs")
        files = sorted({p.relative_to(a) for p in (a / "predictions").glob("*")}
                       | {p.relative_to(b) for p in (b / "predictions").glob("*")})
        problems += [f"{name}: {f} differs" for f in files
                     if not ((a / f).exists() and (b / f).exists() and (a / f).read_bytes() == (b / f).read_bytes())]
    print("\n".join(problems) if problems else f"{len(names)} experiments: identical scores, histories and predictions")
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train every experiment of ROOT's params.yaml on the smoke profile")
    p.add_argument("--root", type=Path, default=Path("."), help="the checkout whose mtlib and params.yaml run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", help="the course files (default: the checkout's own default)")
    p.add_argument("--only", nargs="*", default=[], help="these experiments only")
    p = sub.add_parser("diff", help="compare two folders written by `train`")
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    if args.command == "train":
        return train(args.root.resolve(), args.out.resolve(), args.data, args.only)
    return diff(args.old, args.new)


if __name__ == "__main__":
    sys.exit(main())
