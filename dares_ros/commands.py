"""`dares` subcommands that need ROS, registered through the `dares.commands` entry point (lazy imports)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dares_core.cli import add_bench_output_options


def cmd_bench_node(args: argparse.Namespace) -> None:
    from dares_core.bench import result_name, write_result

    from .bench_node import bench_node

    record = bench_node(args.weights, args.encoder, args.width, args.height, args.rate, args.duration, args.warmup,
                        args.device, args.precision, (args.input_height, args.input_width), args.scale_mode)
    path = write_result(result_name(record, "network", "rate_hz", "precision", "scale_mode"), record,
                        args.results_dir, args.docs)
    depth = record["paths"]["node depth"]
    print(f"depth at {depth['achieved_rate_hz']} Hz of {args.rate} Hz, latency p50 {depth.get('median_ms')} ms, "
          f"p99 {depth.get('p99_ms')} ms, dropped {depth['dropped']}; wrote {path}")


def add_commands(groups: dict) -> None:
    p = groups["bench"].add_parser("node", help="dares_depth_node end to end: output rate and latency on stereo input")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: random weights of --encoder)")
    p.add_argument("--encoder", default="vits", choices=("vits", "vitb", "vitl"), help="ViT size for random weights")
    p.add_argument("--width", type=int, default=1280, help="camera image width (default 1280)")
    p.add_argument("--height", type=int, default=1024, help="camera image height (default 1024)")
    p.add_argument("--rate", type=float, default=30.0, help="stereo frames per second published (default 30)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds (default 20)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (default 3)")
    p.add_argument("--input-height", type=int, default=256, help="network input height (default 256)")
    p.add_argument("--input-width", type=int, default=320, help="network input width (default 320)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="node precision")
    p.add_argument("--scale-mode", choices=("relative", "stereo", "fixed"), default="relative", help="node scale mode")
    add_bench_output_options(p)
    p.set_defaults(func=cmd_bench_node)
