"""Command line: ``mtlib train | evaluate | predict | download-data`` (also ``python -m mtlib``)."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from mtlib.config import ConfigError, load_config
from mtlib.data.files import DataError, download
from mtlib.model.backbone import BackboneError
from mtlib.tasks import TASK_NAMES
from mtlib.training.inference import evaluate_run, predict_file
from mtlib.training.loop import train

HELP = __doc__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtlib", description="Multitask BERT study: train, evaluate, predict.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one named experiment from params.yaml into a run folder")
    p.add_argument("--experiment", required=True, help="a name under `experiments:` in params.yaml")
    p.add_argument("--profile", help="smoke, cpu or paper (default: params.yaml's `profile:`)")
    p.add_argument("--seed", type=int, help="overrides train.seed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.lr=3e-5 (repeatable)")
    p.add_argument("--out", help="run folder (default: runs/<profile>/<experiment>/seed<seed>)")
    p.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    p.add_argument("--data", help="folder holding the course files (default: $MTLIB_DATA or ../shared/data/cs224n)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("evaluate", help="re-score a run's best checkpoint on dev; predict the test-student files")
    p.add_argument("--run", required=True, help="a run folder written by `mtlib train`")
    p.add_argument("--data", help="folder holding the course files")
    p.add_argument("--full-dev", action="store_true", help="score all of dev, not the profile's dev sample")

    p = sub.add_parser("predict", help="score any file in the course layout with a run's best checkpoint")
    p.add_argument("--run", required=True)
    p.add_argument("--task", required=True, choices=list(TASK_NAMES))
    p.add_argument("--input", required=True, help="tab-separated file with id and text column(s); label optional")
    p.add_argument("--output", required=True, help="CSV written with id and the predicted label")

    p = sub.add_parser("download-data", help="download the course files (needs internet)")
    p.add_argument("--target", default="data/raw")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ConfigError, DataError, BackboneError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"mtlib {args.command}: error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    warnings.simplefilter("default")
    if args.command == "train":
        cfg = load_config(args.params, args.experiment, args.profile, args.seed, args.overrides)
        out = Path(args.out or f"runs/{cfg.profile}/{cfg.experiment}/seed{cfg.train.seed}")
        metrics = train(cfg, out, data_dir=args.data, resume=args.resume, overwrite=args.overwrite,
                        progress=not args.no_progress)
        print(f"run folder: {out}")
        print(json.dumps({"dev": metrics["dev"], "train_seconds": metrics["train_seconds"]}, indent=2))
    elif args.command == "evaluate":
        print(json.dumps(evaluate_run(args.run, args.data, args.full_dev), indent=2))
        print(f"predictions: {Path(args.run) / 'evaluation'}")
    elif args.command == "predict":
        scores = predict_file(args.run, args.task, args.input, args.output)
        print(f"wrote {args.output}")
        if scores:
            print(json.dumps(scores, indent=2))
    elif args.command == "download-data":
        print(f"course files in {download(args.target)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
