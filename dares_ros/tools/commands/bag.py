"""`dares bag ACTION`: write, inspect, replay, record, repair, run the model over and score rosbag2 bags
(dares_ros/tools/bag). One function per action."""

from __future__ import annotations

import argparse
from pathlib import Path

from dares_core.commands.options import (
    FORCE_INTO_FOLDER,
    NON_NEGATIVE_FLOAT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    add_backend_options,
    add_input_size_options,
    add_weights_options,
    backend_options,
    progress_bar,
)
from dares_core.names import PRECISIONS

from ...names import OUTPUT_NAMESPACE, RIG

NAME = "bag"
HELP = "rosbag2 tools: from-synth, from-scared, info, play, record, repair, infer, eval"
DESCRIPTION = "Write, inspect, replay, record and run the model over rosbag2 bags (MCAP)."


def write_sequence(args: argparse.Namespace) -> None:
    from .. import bag

    counts = bag.write_sequence_bag(args.source, args.out, args.compressed, args.rig, args.force, args.storage)
    print(f"wrote {args.out}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))


def info(args: argparse.Namespace) -> None:
    import json

    from .. import bag

    found = bag.bag_info(args.bag)
    if args.json:
        print(json.dumps(found, indent=2))
        return
    print(f"{found['path']}: {found['messages']} messages over {found['duration_s']:.3f} s")
    for topic, t in found["topics"].items():
        print(f"  {topic:48s} {t['type']:32s} {t['count']:7d}  {t['rate_hz']:8.2f} Hz")


def play(args: argparse.Namespace) -> None:
    from dares_core.errors import DaresError

    from .. import bag

    remaps = {}
    for item in args.remap:
        src, sep, dst = item.partition(":=")
        if not sep:
            raise DaresError(f"--remap takes FROM:=TO, got {item!r}")
        remaps[src] = dst
    stats = bag.play_bag(args.bag, args.rate, args.loop, args.start, args.topics or None, remaps, args.clock,
                         wait_for=tuple(args.wait_for))
    skipped = (f"; skipped types without Python bindings here: {', '.join(stats.skipped_types)}"
               if stats.skipped_types else "")
    print(f"published {stats.published} messages{skipped}")


def record(args: argparse.Namespace) -> None:
    import signal
    import threading

    from .. import bag

    stop = threading.Event()  # Ctrl-C and SIGTERM end the recording; the bag is closed whole
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    counts = bag.record_bag(args.topics, args.out, args.duration, args.force, stop=stop, say=print)
    print(f"recorded {args.out}: " + (", ".join(f"{t} {n}" for t, n in counts.items()) or "no messages"))


def infer(args: argparse.Namespace) -> None:
    from .. import bag

    total = bag.bag_info(args.bag)["topics"]
    with progress_bar(None, "infer") as bar:
        result = bag.infer_bag(args.bag, args.weights, args.out, args.force, args.image_topic, args.info_topic,
                               args.device, args.precision, (args.input_height, args.input_width),
                               args.point_stride, args.fixed_scale, args.base_weights, progress=bar.update,
                               **backend_options(args))
    height, width = result["input_size"]
    print(f"wrote depth for {result['frames']} frames of {result['image_topic']} (network input {height}x{width}) "
          f"into {args.out} ({len(total)} input topics copied)")
    if result["replaced"]:
        print(f"replaced the bag's earlier outputs: {', '.join(result['replaced'])}")
    if result["unreadable"]:
        print(f"{result['unreadable']} message(s) of {result['image_topic']} held no image (zero-length or damaged) "
              "and were left out; the bag's other messages are copied as they are")
    if result["uncalibrated"]:
        print(f"{result['uncalibrated']} frames had an uncalibrated camera_info (all zeros): their depth is in "
              "relative scale and they have no points; calibrate the camera to get both")


def repair(args: argparse.Namespace) -> None:
    from .. import bag

    counts = bag.repair_bag(args.source, args.out, args.force)
    print(f"repaired into {args.out}: " + (", ".join(f"{t} {n}" for t, n in counts.items()) or "no whole message"))


def evaluate(args: argparse.Namespace) -> None:
    from dares_core.evaluate import write_depth_report
    from dares_core.files import EVAL_ENTRIES, check_output_folder

    from .. import bag

    check_output_folder(args.out, args.force, ours=EVAL_ENTRIES)
    evaluation, left_out = bag.eval_bag(args.bag, args.depth_topic, args.gt_topic, not args.no_median_scaling)
    print(evaluation.table())
    if left_out:
        print(f"{left_out} frame(s) with no valid depth pixel left out")
    write_depth_report(evaluation, args.out, {"bag": str(args.bag), "depth_topic": args.depth_topic,
                                              "median_scaling": not args.no_median_scaling, "left_out": left_out})
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'per_frame.csv'}")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="bag_command", metavar="ACTION", required=True)
    for name, what in (("from-synth", "a `dares synth` keyframe or dataset folder"),
                       ("from-scared", "a prepared SCARED keyframe or dataset folder")):
        q = sub.add_parser(name, help=f"write {what} as a bag")
        q.add_argument("source", type=Path, help=what)
        q.add_argument("--out", type=Path, required=True, help="output bag folder")
        q.add_argument("--compressed", action="store_true", help="JPEG CompressedImage instead of raw Image")
        q.add_argument("--rig", default=RIG, help=f"topic prefix, da Vinci style (default {RIG})")
        q.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default mcap)")
        q.add_argument("--force", action="store_true", help="replace an existing output bag")
        q.set_defaults(action=write_sequence)
    q = sub.add_parser("info", help="topics, types, counts, duration and rates")
    q.add_argument("bag", type=Path, help="a rosbag2 folder (or a .partial one a crash left)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(action=info)
    q = sub.add_parser("play", help="publish a bag at recorded timing with rclpy")
    q.add_argument("bag", type=Path, help="the rosbag2 folder to play")
    q.add_argument("--rate", type=POSITIVE_FLOAT, default=1.0, help="playback speed factor")
    q.add_argument("--loop", action="store_true", help="start again at the end")
    q.add_argument("--start", type=NON_NEGATIVE_FLOAT, default=0.0, help="seconds into the bag to start at")
    q.add_argument("--topics", nargs="*", default=[], help="only these topics")
    q.add_argument("--remap", action="append", default=[], metavar="FROM:=TO", help="publish FROM under TO")
    q.add_argument("--clock", action="store_true", help="publish /clock for use_sim_time")
    q.add_argument("--wait-for", nargs="*", default=[], metavar="TOPIC",
                   help="bag topics that must have a subscriber before playing starts (up to 30 s)")
    q.set_defaults(action=play)
    q = sub.add_parser("record", help="record live topics into an MCAP bag")
    q.add_argument("topics", nargs="+", help="the topics to record")
    q.add_argument("--out", type=Path, required=True, help="output bag folder")
    q.add_argument("--duration", type=POSITIVE_FLOAT, default=None, help="seconds (default: until Ctrl-C)")
    q.add_argument("--force", action="store_true", help="replace an existing output bag")
    q.set_defaults(action=record)
    q = sub.add_parser("repair", help="make a complete bag of what a crashed recording left")
    q.add_argument("source", type=Path, help="the .NAME.*.partial folder (or an .mcap) a crash left")
    q.add_argument("--out", type=Path, required=True, help="output bag folder")
    q.add_argument("--force", action="store_true", help="replace an existing output bag")
    q.set_defaults(action=repair)
    q = sub.add_parser("infer", help="run the model over a bag's images offline into a new bag")
    q.add_argument("bag", type=Path, help="the bag whose left images get depth")
    add_weights_options(q)
    q.add_argument("--out", type=Path, required=True, help="output bag folder: every input message and /dares/*")
    q.add_argument("--image-topic", default=None, help="left image topic (default: the bag's */left/image_raw)")
    q.add_argument("--info-topic", default=None, help="left camera_info topic (default: */left/camera_info)")
    add_input_size_options(q)
    q.add_argument("--point-stride", type=POSITIVE_INT, default=4,
                   help="points of every Nth pixel in each direction, as the node's point_stride (default 4)")
    q.add_argument("--fixed-scale", type=POSITIVE_FLOAT, default=None,
                   help="metres per model unit (default: units read as mm)")
    q.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    q.add_argument("--precision", choices=PRECISIONS, default="fp32", help="compute precision (default fp32)")
    add_backend_options(q)
    q.add_argument("--force", action="store_true", help="replace an existing output bag")
    q.set_defaults(action=infer)
    q = sub.add_parser("eval", help="SCARED metrics of a bag's depth against its ground_truth/depth")
    q.add_argument("bag", type=Path, help="a bag holding depth and ground truth (e.g. from bag infer)")
    q.add_argument("--depth-topic", default=f"{OUTPUT_NAMESPACE}/depth/image",
                   help=f"the depth to score (default {OUTPUT_NAMESPACE}/depth/image)")
    q.add_argument("--gt-topic", default=None, help="ground-truth depth (default: the bag's */ground_truth/depth)")
    q.add_argument("--no-median-scaling", action="store_true",
                   help="the depth is metric: no per-frame median scaling")
    q.add_argument("--out", type=Path, default=Path("dares_eval"),
                   help="folder for metrics.json and per_frame.csv (default ./dares_eval; an earlier evaluation's "
                        "files there are replaced)")
    q.add_argument("--force", action="store_true", help=FORCE_INTO_FOLDER)
    q.set_defaults(action=evaluate)


def run(args: argparse.Namespace) -> None:
    args.action(args)
