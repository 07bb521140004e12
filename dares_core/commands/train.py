"""`dares train`: self-supervised DARES training from a config file and overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DaresError
from ..names import PRECISIONS
from .options import POSITIVE_INT

NAME = "train"
HELP = "self-supervised DARES training (config file + overrides)"
DESCRIPTION = ("Train DARES on a SCARED-layout folder. Defaults are the official options; see "
               "dares_core/train_config.py TrainConfig for every key usable in --config or --set.")


def add_arguments(p) -> None:
    p.add_argument("--config", type=Path, default=None, help="YAML of TrainConfig keys")
    p.add_argument("--data", type=Path, default=None, help="data root (datasetN/keyframeM/...)")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder: config.yaml, checkpoints/, tb/, depth_model.safetensors")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None, help="number of epochs (official 20)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None, help="global batch size (official 12)")
    p.add_argument("--weights", type=Path, default=None, help="initial depth weights (DAv2 folder/.pth or DARES)")
    p.add_argument("--af-weights", type=Path, default=None, help="folder of AF-SfMLearner pose/position/transform .pth")
    p.add_argument("--train-backbone", action="store_true", help="train the whole network (from-scratch runs)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when present, else cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="mixed precision")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any TrainConfig key, YAML value")
    p.add_argument("--resume", type=Path, default=None, help="continue a run folder (or a checkpoint .pt) exactly")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")


def overrides(args: argparse.Namespace) -> dict:
    """The TrainConfig values the command line gives: its options and every --set KEY=VALUE (YAML values)."""
    import yaml

    from ..train_config import safe_yaml

    given = {"data": str(args.data) if args.data else None, "out": str(args.out) if args.out else None,
             "num_epochs": args.epochs, "batch_size": args.batch_size, "device": args.device,
             "precision": args.precision, "weights": str(args.weights) if args.weights else None,
             "af_weights": str(args.af_weights) if args.af_weights else None,
             "train_backbone": True if args.train_backbone else None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise DaresError(f"--set takes key=value, got {item!r}")
        try:
            given[key.strip()] = safe_yaml(value)
        except yaml.YAMLError:
            raise DaresError(f"--set {item}: the value is not valid YAML (quote text, write lists as [a, b])") from None
    return given


def run(args: argparse.Namespace) -> None:
    from ..run_folder import prepare_run_folder
    from ..train import run_training
    from ..train_config import run_config

    cfg = run_config(args.config, overrides(args), args.resume)
    out = Path(cfg.out)
    prepare_run_folder(out, args.resume, args.force)
    summary = run_training(cfg, args.resume)
    made = (f"export the pose networks: dares export --network pose --weights {out} --out pose.safetensors"
            if cfg.pose_only else f"depth model: {out / 'depth_model.safetensors'}")
    why = " (the val split has no ground truth: the self-supervised error)" if summary["score"] == "photometric" else ""
    best = (f"best epoch by val {summary['score']}{why}: {summary['best']:.4f}" if summary["score"] else
            "no val split: the last epoch is the model")
    print(f"trained to epoch {summary['epoch']} (step {summary['step']}); {best}; {made}")
