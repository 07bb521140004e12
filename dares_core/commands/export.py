"""`dares export`: deployment artifacts (ONNX, torch.export, merged safetensors) or the pose networks of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DaresError
from ..names import EXPORT_FORMATS
from .options import POSITIVE_INT, add_network_options, add_weights_options

NAME = "export"
HELP = "deployment artifacts: ONNX, torch.export .pt2, merged safetensors"
DESCRIPTION = ("Merge LoRA, keep the full-resolution head and write a deployment artifact; or write the pose networks "
               "of a run as one safetensors (--network pose).")


def add_arguments(p) -> None:
    add_weights_options(p)
    add_network_options(p, compute=False)
    p.add_argument("--network", choices=("depth", "pose"), default="depth",
                   help="depth (default), or pose: the pose encoder and decoder of a run folder, a checkpoint or an "
                        "official folder, for the odometry node and `dares pose`")
    p.add_argument("--format", choices=EXPORT_FORMATS, default=None, help="artifact format (default onnx)")
    p.add_argument("--out", type=Path, required=True, help="output file")
    p.add_argument("--opset", type=POSITIVE_INT, default=17, help="ONNX opset, 14 to 20 (default 17)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> None:
    from ..export import export, export_pose

    if args.network == "pose":
        if args.format not in (None, "safetensors") or args.base_weights:
            raise DaresError("--network pose writes safetensors from --weights alone: drop --format/--base-weights")
        result = export_pose(args.weights, args.out, args.force)
    else:
        result = export(args.weights, args.out, args.format or "onnx", args.height, args.width, args.base_weights,
                        args.force, args.opset)
    check = f", onnxruntime max |diff| {result['max_abs_diff']:.1e}" if result.get("max_abs_diff") is not None else ""
    print(f"wrote {result['path']} ({result['format']}{check})")
