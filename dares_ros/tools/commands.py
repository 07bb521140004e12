"""`dares` subcommands that need ROS, registered through the `dares.commands` entry point (lazy imports)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dares_core.cli import (
    FORCE_INTO_FOLDER,
    IMAGE_SIDE,
    NON_NEGATIVE_FLOAT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SHARE,
    add_bench_output_options,
    add_recording_options,
    print_stability,
    publish_result,
)
from dares_core.names import ENCODERS, PRECISIONS

from ..names import FINE_TUNE_SOURCES, NODE_TEMPORAL_SEEDS, OUTPUT_NAMESPACE, RIG, SCALE_MODES


def add_input_size_options(p) -> None:
    """--input-height and --input-width of the network; by default the size the checkpoint was trained at."""
    p.add_argument("--input-height", type=IMAGE_SIDE, default=None,
                   help="network input height (default: the checkpoint's training size, else 256)")
    p.add_argument("--input-width", type=IMAGE_SIDE, default=None,
                   help="network input width (default: the checkpoint's training size, else 320)")


def cmd_bench_node(args: argparse.Namespace) -> None:
    from dares_core.bench import result_name

    from .bench_node import bench_node

    record = bench_node(args.weights, args.encoder, args.width, args.height, args.rate, args.duration, args.warmup,
                        args.device, args.precision, (args.input_height, args.input_width), args.scale_mode, args.eyes,
                        args.compile, args.sequence, args.stand_in_network, args.temporal_weight)
    name = result_name(record, "network", "rate_hz", "precision", "scale_mode", "eyes") + (
        "-compiled" if args.compile else "") + ("-stand-in" if args.stand_in_network else "") + (
        "-temporal" if args.temporal_weight else "")
    path = publish_result(args, name, record)
    depth = record["paths"]["node depth"]
    own = depth["stages_ms"].get("own")
    print(f"depth at {depth['achieved_rate_hz']} Hz of {args.rate} Hz, latency p50 {depth.get('median_ms')} ms, "
          f"p99 {depth.get('p99_ms')} ms, dropped {depth['dropped']}, the node's own cost {own} ms a frame; wrote "
          f"{path}")


def cmd_bench_fine_tune(args: argparse.Namespace) -> None:
    from dares_core.bench import check_bench_output

    from .bench_fine_tune import bench_fine_tune

    name = f"fine-tune-{args.source}-{len(args.recordings)}-recordings-{args.epochs}-epochs"
    check_bench_output(args.out, args.force, name)
    record = bench_fine_tune(tuple(args.recordings), test_seeds=tuple(args.test_seeds), epochs=args.epochs,
                             source=args.source)
    path = publish_result(args, name, record)
    run = record["paths"]["built-in model fine-tuned"]
    print(f"{run['kept_frames']} frames kept of {record['settings']['video_s']} s of video, trained in "
          f"{run['train_s']} s; held-out AbsRel, built-in model -> fine-tuned: "
          + ", ".join(f"seed {seed} {m['start']:.4f} -> {m['fine_tuned']:.4f}" for seed, m in run["abs_rel"].items())
          + f"; wrote {path}")


def cmd_bench_node_temporal(args: argparse.Namespace) -> None:
    from dares_core.bench import check_bench_output

    from .bench_node_temporal import bench_node_temporal

    name = f"node-temporal-{args.width}x{args.height}"
    check_bench_output(args.out, args.force, name)
    record = bench_node_temporal(tuple(args.seeds), args.frames, (args.width, args.height))
    print_stability(record, publish_result(args, name, record))


def cmd_bench_soak(args: argparse.Namespace) -> None:
    from dares_core.bench import result_name

    from .soak import soak

    record = soak(args.weights, args.encoder, args.width, args.height, args.phase_seconds, args.device,
                  (args.input_height, args.input_width))
    path = publish_result(args, result_name(record, "input", "phase_s"), record)
    s = record["paths"]["node under abuse"]
    print(f"node alive: {s['node_alive']}; answered per phase: "
          + ", ".join(f"{k} {v['answered']}/{v['sent']}" for k, v in record["phases"].items())
          + f"; latency p99 {s.get('p99_ms')} ms; memory growth {s['rss_growth_mb']} MB; wrote {path}")


def cmd_bag(args: argparse.Namespace) -> None:
    import json

    from dares_core.cli import progress_bar
    from dares_core.errors import DaresError

    from . import bag

    if args.bag_command in ("from-synth", "from-scared"):
        counts = bag.write_sequence_bag(args.source, args.out, args.compressed, args.rig, args.force, args.storage)
        print(f"wrote {args.out}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    elif args.bag_command == "info":
        info = bag.bag_info(args.bag)
        if args.json:
            print(json.dumps(info, indent=2))
            return
        print(f"{info['path']}: {info['messages']} messages over {info['duration_s']:.3f} s")
        for topic, t in info["topics"].items():
            print(f"  {topic:48s} {t['type']:32s} {t['count']:7d}  {t['rate_hz']:8.2f} Hz")
    elif args.bag_command == "play":
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
    elif args.bag_command == "record":
        import signal
        import threading

        stop = threading.Event()  # Ctrl-C and SIGTERM end the recording; the bag is closed whole
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        counts = bag.record_bag(args.topics, args.out, args.duration, args.force, stop=stop, say=print)
        print(f"recorded {args.out}: " + (", ".join(f"{t} {n}" for t, n in counts.items()) or "no messages"))
    elif args.bag_command == "infer":
        args.device = args.device or "auto"
        total = bag.bag_info(args.bag)["topics"]
        with progress_bar(None, "infer") as bar:
            result = bag.infer_bag(args.bag, args.weights, args.out, args.force, args.image_topic, args.info_topic,
                                   args.device, args.precision, (args.input_height, args.input_width),
                                   args.point_stride,
                                   args.fixed_scale, args.base_weights, progress=bar.update)
        height, width = result["input_size"]
        print(f"wrote depth for {result['frames']} frames of {result['image_topic']} (network input {height}x{width}) "
              f"into {args.out} ({len(total)} input topics copied)")
        if result["replaced"]:
            print(f"replaced the bag's earlier outputs: {', '.join(result['replaced'])}")
        if result["uncalibrated"]:
            print(f"{result['uncalibrated']} frames had an uncalibrated camera_info (all zeros): their depth is in "
                  "relative scale and they have no points; calibrate the camera to get both")
    elif args.bag_command == "repair":
        counts = bag.repair_bag(args.source, args.out, args.force)
        print(f"repaired into {args.out}: " + (", ".join(f"{t} {n}" for t, n in counts.items()) or "no whole message"))
    elif args.bag_command == "eval":
        from dares_core.evaluate import write_depth_report
        from dares_core.files import EVAL_ENTRIES, check_output_folder

        check_output_folder(args.out, args.force, ours=EVAL_ENTRIES)
        evaluation, left_out = bag.eval_bag(args.bag, args.depth_topic, args.gt_topic, not args.no_median_scaling)
        print(evaluation.table())
        if left_out:
            print(f"{left_out} frame(s) with no valid depth pixel left out")
        write_depth_report(evaluation, args.out, {"bag": str(args.bag), "depth_topic": args.depth_topic,
                                                  "median_scaling": not args.no_median_scaling, "left_out": left_out})
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'per_frame.csv'}")


def cmd_demo(args: argparse.Namespace) -> None:
    from dares_core.inference import resolve_device

    from .demo import run_demo

    device = str(resolve_device(args.device or "auto"))
    size = (args.input_height, args.input_width)
    run_demo(args.out, args.weights, args.bag, size, args.rate, args.frames, (args.width, args.height), device,
             args.precision, args.scale_mode, args.pose_weights)


def _add_demo(root) -> None:
    p = root.add_parser("demo",
                        help="the whole product on built-in data: bag -> depth node -> recorded bag -> pictures",
                        description="Replays a synthetic da Vinci stereo bag (or --bag) into dares_depth_node on a "
                                    "loopback ROS 2 graph with dares_odometry_node and dares_fusion_node, records "
                                    "their outputs and writes pictures, a point cloud, the camera trajectory, the "
                                    "fused surface and report.md to --out (replaced on each run).")
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
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.set_defaults(func=cmd_demo)


def _add_bag(root) -> None:
    p = root.add_parser("bag", help="rosbag2 tools: from-synth, from-scared, info, play, record, infer, eval",
                        description="Write, inspect, replay, record and run the model over rosbag2 bags (MCAP).")
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
    q = sub.add_parser("info", help="topics, types, counts, duration and rates")
    q.add_argument("bag", type=Path)
    q.add_argument("--json", action="store_true", help="print JSON")
    q = sub.add_parser("play", help="publish a bag at recorded timing with rclpy")
    q.add_argument("bag", type=Path)
    q.add_argument("--rate", type=POSITIVE_FLOAT, default=1.0, help="playback speed factor")
    q.add_argument("--loop", action="store_true", help="start again at the end")
    q.add_argument("--start", type=NON_NEGATIVE_FLOAT, default=0.0, help="seconds into the bag to start at")
    q.add_argument("--topics", nargs="*", default=[], help="only these topics")
    q.add_argument("--remap", action="append", default=[], metavar="FROM:=TO", help="publish FROM under TO")
    q.add_argument("--clock", action="store_true", help="publish /clock for use_sim_time")
    q.add_argument("--wait-for", nargs="*", default=[], metavar="TOPIC",
                   help="bag topics that must have a subscriber before playing starts (up to 30 s)")
    q = sub.add_parser("record", help="record live topics into an MCAP bag")
    q.add_argument("topics", nargs="+")
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--duration", type=POSITIVE_FLOAT, default=None, help="seconds (default: until Ctrl-C)")
    q.add_argument("--force", action="store_true", help="replace an existing output bag")
    q = sub.add_parser("repair", help="make a complete bag of what a crashed recording left")
    q.add_argument("source", type=Path, help="the .NAME.*.partial folder (or an .mcap) a crash left")
    q.add_argument("--out", type=Path, required=True, help="output bag folder")
    q.add_argument("--force", action="store_true", help="replace an existing output bag")
    q = sub.add_parser("infer", help="run the model over a bag's images offline into a new bag")
    q.add_argument("bag", type=Path)
    q.add_argument("--weights", type=Path, required=True)
    q.add_argument("--base-weights", type=Path, default=None)
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--image-topic", default=None, help="left image topic (default: the bag's */left/image_raw)")
    q.add_argument("--info-topic", default=None, help="left camera_info topic (default: */left/camera_info)")
    add_input_size_options(q)
    q.add_argument("--point-stride", type=POSITIVE_INT, default=4)
    q.add_argument("--fixed-scale", type=POSITIVE_FLOAT, default=None,
                   help="metres per model unit (default: units read as mm)")
    q.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    q.add_argument("--precision", choices=PRECISIONS, default="fp32")
    q.add_argument("--force", action="store_true", help="replace an existing output bag")
    q = sub.add_parser("eval", help="SCARED metrics of a bag's depth against its ground_truth/depth")
    q.add_argument("bag", type=Path)
    q.add_argument("--depth-topic", default=f"{OUTPUT_NAMESPACE}/depth/image")
    q.add_argument("--gt-topic", default=None)
    q.add_argument("--no-median-scaling", action="store_true")
    q.add_argument("--out", type=Path, default=Path("dares_eval"),
                   help="folder for metrics.json and per_frame.csv (default ./dares_eval; an earlier evaluation's "
                        "files there are replaced)")
    q.add_argument("--force", action="store_true", help=FORCE_INTO_FOLDER)
    p.set_defaults(func=cmd_bag)


def cmd_prepare_bag(args: argparse.Namespace) -> None:
    from dares_core.cli import print_recording, progress_bar, recording_options

    from .bag import bag_info
    from .bag.prepare import prepare_bag

    total = max(t["count"] for t in bag_info(args.bag)["topics"].values())
    with progress_bar(total, "frames") as bar:
        report, unpaired = prepare_bag(args.bag, args.out, args.name, args.left_topic, args.right_topic,
                                       args.pose_topic, args.hand_eye, recording_options(args), args.force,
                                       bar.update)
    print_recording(report, args.out, f"; {unpaired} left frames had no right frame within 5 ms and were left out"
                    if unpaired else "")


def _add_prepare_bag(root) -> None:
    p = root.add_parser("prepare-bag", help="a rosbag2 recorded on the robot -> frames, calibration, poses and "
                                            "splits that `dares train` reads",
                        description="Frames of one or both eyes (raw ones rectified with their camera_info), "
                                    "calibration.yaml from camera_info, camera_poses.npz from a pose topic, only "
                                    "frames with camera motion, and DATA/splits/own/ with validation blocks kept "
                                    "apart from training in time. A recording already prepared is kept.")
    p.add_argument("bag", type=Path, help="rosbag2 folder (MCAP or sqlite3; ours or `ros2 bag record`'s)")
    p.add_argument("--left-topic", default=None, help="left images (default: the topic ending in left/image_rect, "
                                                      "left/image_raw or their /compressed)")
    p.add_argument("--right-topic", default=None, help="right images (default: as left; '' for the left eye alone)")
    p.add_argument("--pose-topic", default=None, help="camera poses, PoseStamped or TransformStamped, e.g. "
                                                      "/ECM/measured_cp (default: ground_truth/pose when present)")
    p.add_argument("--hand-eye", type=Path, default=None,
                   help="text file of the 4x4 camera pose in the pose topic's frame (metres; default identity)")
    add_recording_options(p)
    p.set_defaults(func=cmd_prepare_bag)


def add_commands(groups: dict) -> None:
    _add_demo(groups["root"])
    _add_bag(groups["root"])
    _add_prepare_bag(groups["root"])
    p = groups["bench"].add_parser("soak", help="the node under abuse: 2x rate, bursts, bad stamps, dropouts, resizes")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: random weights of --encoder)")
    p.add_argument("--encoder", default="vits", choices=ENCODERS)
    p.add_argument("--width", type=POSITIVE_INT, default=640)
    p.add_argument("--height", type=POSITIVE_INT, default=512)
    p.add_argument("--phase-seconds", type=POSITIVE_FLOAT, default=60.0,
                   help="seconds per phase (5 phases; default 60)")
    add_input_size_options(p)
    p.add_argument("--device", default="cpu")
    add_bench_output_options(p)
    p.set_defaults(func=cmd_bench_soak)
    p = groups["bench"].add_parser("node", help="dares_depth_node end to end: output rate and latency on stereo input")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: random weights of --encoder)")
    p.add_argument("--encoder", default="vits", choices=ENCODERS, help="ViT size for random weights")
    p.add_argument("--width", type=POSITIVE_INT, default=1280, help="camera image width (default 1280)")
    p.add_argument("--height", type=POSITIVE_INT, default=1024, help="camera image height (default 1024)")
    p.add_argument("--rate", type=POSITIVE_FLOAT, default=30.0, help="stereo frames per second published (default 30)")
    p.add_argument("--duration", type=POSITIVE_FLOAT, default=20.0, help="measured seconds (default 20)")
    p.add_argument("--warmup", type=POSITIVE_FLOAT, default=3.0, help="unmeasured seconds first (default 3)")
    add_input_size_options(p)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="node precision")
    p.add_argument("--scale-mode", choices=SCALE_MODES, default="relative", help="node scale mode")
    p.add_argument("--eyes", choices=("left", "both"), default="left", help="node eyes: both batches the right eye too")
    p.add_argument("--compile", action="store_true", help="node compile: torch.compile the network at start")
    p.add_argument("--stand-in-network", action="store_true",
                   help="replace the network by a constant of its output's shape: the node's own cost per stage")
    p.add_argument("--temporal-weight", type=SHARE, default=0.0,
                   help="node temporal_weight: the depth stabiliser on (a still camera's pose on camera_pose at every "
                        "frame), its cost in the stage table (default 0: off)")
    p.add_argument("--sequence", type=Path, default=None,
                   help="stream this keyframe folder's stereo frames (image_02, image_03, calibration.yaml; e.g. "
                        "`dares synth` or `dares prepare-scared` output) instead of a generated scene of --width x "
                        "--height")
    add_bench_output_options(p)
    p.set_defaults(func=cmd_bench_node)
    p = groups["bench"].add_parser("node-temporal", help="TAE and AbsRel of dares_depth_node's stabiliser in dares "
                                                         "demo's graph against plain depth, on synthetic scenes")
    p.add_argument("--seeds", type=int, nargs="+", default=list(NODE_TEMPORAL_SEEDS),
                   help="synthetic scenes (default 7, the demo's, and 141-149: the node's stabiliser defaults were "
                        "checked on 61-65)")
    p.add_argument("--frames", type=POSITIVE_INT, default=40, help="frames per scene (default 40, the demo's)")
    p.add_argument("--width", type=POSITIVE_INT, default=320, help="frame width (default 320)")
    p.add_argument("--height", type=POSITIVE_INT, default=256, help="frame height (default 256)")
    add_bench_output_options(p)
    p.set_defaults(func=cmd_bench_node_temporal)
    p = groups["bench"].add_parser("fine-tune", help="the own-endoscope loop: the built-in model fine-tuned on bags of "
                                                     "a scope it never saw, held-out AbsRel before and after")
    p.add_argument("--recordings", type=int, nargs="+", default=[510, 511, 512],
                   help="seeds of the recorded scenes (12 s each; default three: 36 s of video)")
    p.add_argument("--test-seeds", type=int, nargs="+", default=[611, 612, 613, 614, 615],
                   help="seeds of the held-out scenes")
    p.add_argument("--epochs", type=POSITIVE_INT, default=8, help="fine-tuning epochs (default 8)")
    p.add_argument("--source", choices=FINE_TUNE_SOURCES, default="bag",
                   help="bag: prepare-bag of compressed images, camera_info and poses; video: prepare-video of a "
                        "side-by-side MJPG video with an OpenCV stereo calibration")
    add_bench_output_options(p)
    p.set_defaults(func=cmd_bench_fine_tune)
