"""`dares demo`: the whole product on built-in data (dares_ros/tools/demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dares_core.commands.options import POSITIVE_FLOAT, POSITIVE_INT, add_input_size_options
from dares_core.names import BACKENDS, PRECISIONS

from ...names import SCALE_MODES

NAME = "demo"
HELP = "the whole product on built-in data: bag -> depth node -> recorded bag -> pictures"
DESCRIPTION = ("Replays a synthetic da Vinci stereo bag (or --bag) into dares_depth_node on a loopback ROS 2 graph "
               "with dares_odometry_node and dares_fusion_node, records their outputs and writes pictures, a point "
               "cloud, the camera trajectory, the fused surface and report.md to --out (replaced on each run).")


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    p.add_argument("--weights", type=Path, default=None, help="depth checkpoint (default: the built-in demo model)")
    p.add_argument("--pose-weights", type=Path, default=None,
                   help="pose network for dares_odometry_node (default: the built-in demo pose network with the "
                        "built-in model, none with --weights)")
    p.add_argument("--bag", type=Path, default=None, help="a stereo bag to replay, e.g. from `dares bag from-scared` "
                                                          "(default: a synthetic sequence)")
    p.add_argument("--frames", type=POSITIVE_INT, default=40, help="synthetic frames (default 40)")
    p.add_argument("--width", type=POSITIVE_INT, default=320, help="synthetic image width (default 320)")
    p.add_argument("--height", type=POSITIVE_INT, default=256, help="synthetic image height (default 256)")
    p.add_argument("--rate", type=POSITIVE_FLOAT, default=1.0, help="playback speed factor (default 1)")
    add_input_size_options(p)
    p.add_argument("--scale-mode", choices=SCALE_MODES, default=None,
                   help="node scale mode (default: stereo when the bag has a right eye)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="compute precision (default fp32)")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="the depth node's backend: torch, or onnxruntime (checked against torch at start)")


def run(args: argparse.Namespace) -> None:
    from dares_core.inference import resolve_device

    from ..demo import run_demo

    device = str(resolve_device(args.device or "auto"))
    size = (args.input_height, args.input_width)
    run_demo(args.out, args.weights, args.bag, size, args.rate, args.frames, (args.width, args.height), device,
             args.precision, args.scale_mode, args.pose_weights, args.backend)
