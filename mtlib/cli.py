"""Command line: ``mtlib train | evaluate | predict | download-data`` (also ``python -m mtlib``).

Every failure ends in ONE line on stderr, ``mtlib <command>: error: <file or setting>: <what>
(<hint>)``, and a non-zero exit (2: bad input or settings; 1: an unexpected error; 130:
interrupted). ``--debug`` (or ``MTLIB_DEBUG=1``) prints the traceback first.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

from mtlib.config import load_config, load_config_file, with_overrides
from mtlib.errors import (BackboneError, CheckpointError, ConfigError, DataError, DeviceError, OutputError,
                          RunFolderError)
from mtlib.tasks import TASK_NAMES

# Errors whose message already names the file or setting; the hint is added when the message has none.
KNOWN = {
    ConfigError: "fix the value in params.yaml or the --set option",
    DataError: "fix the file",
    BackboneError: "check backbone.name",
    DeviceError: "set train.device to auto or cpu",
    RunFolderError: "choose another run folder",
    CheckpointError: "train the run again",
    OutputError: "choose another output path",
}
WRITE_HINTS = {
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.ENOSPC: "the disk is full: free some space and run again",
    errno.EDQUOT: "the disk quota is exhausted: free some space and run again",
    errno.EACCES: "no permission: check the folder's owner and mode",
    errno.EPERM: "no permission: check the folder's owner and mode",
    errno.ENOENT: "check the path",
    errno.EISDIR: "give a file path, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtlib", description="Multitask BERT study: train, evaluate, predict.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="on an error, show the traceback (also MTLIB_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", parents=[common],
                       help="train one named experiment from params.yaml, or one resolved config, into a run folder")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="a name under `experiments:` in params.yaml")
    which.add_argument("--config", help="a resolved config file (a run folder's config.yaml, or "
                                        "results/best_model/config.yaml): retrains that run, params.yaml unread")
    p.add_argument("--profile", help="smoke, cpu or paper (default: params.yaml's `profile:`)")
    p.add_argument("--seed", type=int, help="overrides train.seed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.lr=3e-5 (repeatable)")
    p.add_argument("--out", help="run folder (default: runs/<profile>/<experiment>/seed<seed>)")
    p.add_argument("--params", help="the params file (default: params.yaml)")
    p.add_argument("--data", help="folder holding the course files (default: $MTLIB_DATA or ../shared/data/cs224n)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's last checkpoint (with the run's own config)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder (only a run folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("evaluate", parents=[common],
                       help="re-score a run's best checkpoint on dev; predict the test-student files")
    p.add_argument("--run", required=True, help="a run folder written by `mtlib train`")
    p.add_argument("--data", help="folder holding the course files")
    p.add_argument("--full-dev", action="store_true", help="score all of dev, not the profile's dev sample")

    p = sub.add_parser("predict", parents=[common],
                       help="score any file in the course layout with a run's best checkpoint")
    p.add_argument("--run", required=True)
    p.add_argument("--task", required=True, choices=list(TASK_NAMES))
    p.add_argument("--input", required=True, help="tab-separated file with id and text column(s); label optional")
    p.add_argument("--output", required=True, help="CSV written with id and the predicted label (never the input)")

    p = sub.add_parser("download-data", parents=[common], help="download the course files (needs internet)")
    p.add_argument("--target", default="data/raw")
    return parser


def describe(err: BaseException) -> tuple[str, int]:
    """``(one-line message, exit status)`` for any exception."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (a training run continues with --resume)", 130
    for kind, hint in KNOWN.items():
        if isinstance(err, kind):
            return _with_hint(str(err), hint), 2
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        what = err.strerror or str(err)
        return _with_hint(f"{where}{what}", WRITE_HINTS.get(err.errno, "")), 2
    if isinstance(err, ValueError):  # settings checked where they are used (e.g. train.amp)
        return _with_hint(str(err), "check the settings named"), 2
    return (f"unexpected {type(err).__name__}: {err} (a bug, or a case not yet handled: "
            "rerun with --debug to see the traceback)"), 1


def _with_hint(message: str, hint: str) -> str:
    message = " ".join(message.split())  # one line, whatever the message was
    return message if not hint or message.endswith(")") else f"{message} ({hint})"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    debug = args.debug or os.environ.get("MTLIB_DEBUG", "") not in ("", "0")
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, *_: f"mtlib {args.command}: warning: {' '.join(str(message).split())}\n"
    try:
        return _run(args)
    except BaseException as err:  # the one error boundary: every failure ends in one line
        if isinstance(err, SystemExit):
            raise
        if debug:
            traceback.print_exc()
        message, status = describe(err)
        print(f"mtlib {args.command}: error: {message}", file=sys.stderr)
        return status
    finally:
        warnings.formatwarning = formatwarning


def _run(args) -> int:
    # The heavy modules (torch, transformers, pandas: seconds) are imported here, by the command
    # that needs them, not at the top: `mtlib --help` and a settings error answer at once.
    warnings.simplefilter("default")
    if args.command == "train":
        if args.config:
            for option, value in (("--profile", args.profile), ("--params", args.params)):
                if value is not None:
                    raise ConfigError(f"{option}: not used with --config (the config file is already resolved; "
                                      "change it with --seed or --set)")
            cfg = load_config_file(args.config)
            seed = [] if args.seed is None else [f"train.seed={args.seed}"]
            cfg = with_overrides(cfg, [*args.overrides, *seed])
        else:
            cfg = load_config(args.params or "params.yaml", args.experiment, args.profile, args.seed, args.overrides)
        from mtlib.training.loop import train
        out = Path(args.out or f"runs/{cfg.profile}/{cfg.experiment}/seed{cfg.train.seed}")
        metrics = train(cfg, out, data_dir=args.data, resume=args.resume, overwrite=args.overwrite,
                        progress=not args.no_progress)
        print(f"run folder: {out}")
        print(json.dumps({"dev": metrics["dev"], "train_seconds": metrics["train_seconds"]}, indent=2))
    elif args.command == "evaluate":
        from mtlib.training.inference import evaluate_run
        print(json.dumps(evaluate_run(args.run, args.data, args.full_dev), indent=2))
        print(f"predictions: {Path(args.run) / 'evaluation'}")
    elif args.command == "predict":
        from mtlib.training.inference import predict_file
        scores = predict_file(args.run, args.task, args.input, args.output)
        print(f"wrote {args.output}")
        if scores:
            print(json.dumps(scores, indent=2))
    elif args.command == "download-data":
        from mtlib.data.files import download
        print(f"course files in {download(args.target)}")
    return 0
