"""The benchmarks that need ROS, registered into `dares bench` through the `dares.benchmarks` entry point: each
one's options, result name, printout and docs section here; its measurement in its module (node, soak,
node_temporal, fine_tune), imported when it runs."""

from __future__ import annotations

from pathlib import Path

from dares_core.bench import Benchmark, table_section
from dares_core.bench.results import result_name, settings_text
from dares_core.bench.temporal import STABILITY_COLUMNS, STABILITY_FIGURES, StabilityBenchmark
from dares_core.commands.options import (
    IMAGE_SIDE,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    SHARE,
    add_input_size_options,
)
from dares_core.names import ENCODERS, PRECISIONS

from ...names import FINE_TUNE_SOURCES, NODE_TEMPORAL_SEEDS, SCALE_MODES

NODE_STAGES = ("receive", "preprocess", "network", "postprocess", "stereo_scale", "confidence", "temporal", "cloud",
               "preview", "publish", "own", "stereo_worker")  # the depth node's stages, in a frame's order


def add_camera_options(p, width: int, height: int) -> None:
    """The node benchmarks' network (--weights, or random weights of --encoder) and camera size."""
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: random weights of --encoder)")
    p.add_argument("--encoder", default="vits", choices=ENCODERS, help="ViT size for random weights")
    p.add_argument("--width", type=IMAGE_SIDE, default=width, help=f"camera image width (default {width})")
    p.add_argument("--height", type=IMAGE_SIDE, default=height, help=f"camera image height (default {height})")


class NodeTemporalBenchmark(StabilityBenchmark):
    kind = "node-temporal"
    help = "TAE and AbsRel of dares_depth_node's stabiliser in dares demo's graph against plain depth, on synthetic " \
           "scenes"
    title = "Temporal stability: the depth node's stabiliser in dares demo's graph against plain depth"
    prose = ("`dares bench node-temporal`: dares_depth_node as `dares demo` runs it (built-in models, stereo scale,",
             "the camera's motion from dares_odometry_node beside it, never the ground truth) on synthetic scenes",
             "of seeds the stabiliser's defaults were not chosen on (the node's: 61-65), each replayed twice, the",
             "stabiliser off and at its defaults. Figures as above, plus median-scaled AbsRel on the instruments",
             "alone (the frame scaled as a whole; the node runs here without an instrument mask). Seed 7, where",
             "run, is the demo's own scene.")
    figures = (*STABILITY_FIGURES, ("abs_rel_instruments", "plain"), ("abs_rel_instruments", "stabilised"))
    columns = (*STABILITY_COLUMNS, "instruments plain", "instruments stabilised", "file")

    def add_arguments(self, p) -> None:
        p.add_argument("--seeds", type=SEED, nargs="+", default=list(NODE_TEMPORAL_SEEDS),
                       help="synthetic scenes (default 7, the demo's, and 141-149: the node's stabiliser defaults "
                            "were checked on 61-65)")
        p.add_argument("--frames", type=POSITIVE_INT, default=40, help="frames per scene (default 40, the demo's)")
        p.add_argument("--width", type=POSITIVE_INT, default=320, help="frame width (default 320)")
        p.add_argument("--height", type=POSITIVE_INT, default=256, help="frame height (default 256)")

    def name_before(self, args) -> str:
        return f"node-temporal-{args.width}x{args.height}"

    def measure(self, args) -> dict:
        from .node_temporal import bench_node_temporal

        return bench_node_temporal(tuple(args.seeds), args.frames, (args.width, args.height))


class FineTuneBenchmark(Benchmark):
    kind = "fine-tune"
    help = ("the own-endoscope loop: the built-in model fine-tuned on bags of a scope it never saw, held-out AbsRel "
            "before and after")
    title = "Your own endoscope: the built-in model fine-tuned on a scope it never saw"
    prose = ("`dares bench fine-tune`: recordings of a 16:9 wide-angle stereo scope (synthetic, seeds",
             "`recordings`, 12 s each) go through prepare-bag (source=bag: compressed images, camera_info, poses)",
             "or prepare-video (source=video: side by side, OpenCV calibration), and the built-in model is",
             "fine-tuned on them, self-supervised (stereo, the scope's own intrinsics; no ground truth read).",
             "Median-scaled AbsRel on the held-out scene of each test seed, each model at its own input size;",
             "`kept frames`: those with camera motion; `train s`: the fine-tuning's wall time on this machine's",
             "CPU, while other work ran.")
    columns = ("settings", "test seed", "built-in model", "fine-tuned", "kept frames", "train s", "file")

    def add_arguments(self, p) -> None:
        p.add_argument("--recordings", type=int, nargs="+", default=[510, 511, 512],
                       help="seeds of the recorded scenes (12 s each; default three: 36 s of video)")
        p.add_argument("--test-seeds", type=SEED, nargs="+", default=[611, 612, 613, 614, 615],
                       help="seeds of the held-out scenes")
        p.add_argument("--epochs", type=POSITIVE_INT, default=8, help="fine-tuning epochs (default 8)")
        p.add_argument("--source", choices=FINE_TUNE_SOURCES, default="bag",
                       help="bag: prepare-bag of compressed images, camera_info and poses; video: prepare-video of a "
                            "side-by-side MJPG video with an OpenCV stereo calibration")

    def name_before(self, args) -> str:
        return f"fine-tune-{args.source}-{len(args.recordings)}-recordings-{args.epochs}-epochs"

    def measure(self, args) -> dict:
        from .fine_tune import bench_fine_tune

        return bench_fine_tune(tuple(args.recordings), test_seeds=tuple(args.test_seeds), epochs=args.epochs,
                               source=args.source)

    def report(self, record: dict, path) -> str:
        run = record["paths"]["built-in model fine-tuned"]
        return (f"{run['kept_frames']} frames kept of {record['settings']['video_s']} s of video, trained in "
                f"{run['train_s']} s; held-out AbsRel, built-in model -> fine-tuned: "
                + ", ".join(f"seed {seed} {m['start']:.4f} -> {m['fine_tuned']:.4f}"
                            for seed, m in run["abs_rel"].items()) + f"; wrote {path}")

    def rows(self, record: dict, file: str) -> list[str]:
        m = record["paths"]["built-in model fine-tuned"]
        return [f"| {settings_text(record)} | {seed} | {score['start']:.4f} | {score['fine_tuned']:.4f} | "
                f"{m['kept_frames']} | {m['train_s']} | {file} |" for seed, score in m["abs_rel"].items()]


class NodeBenchmark(Benchmark):
    kind = "node"
    help = "dares_depth_node end to end: output rate and latency on stereo input"
    timing = True
    gpu_target = "node at 1280x1024 stereo 60 Hz"
    title = "The node's own cost, stage by stage"
    prose = ("`dares bench node` reads the node's diagnostics: each stage's median ms per frame over its last",
             "5 s (`own`: every stage but the network, the part a GPU does not remove; `stereo_worker`: SGBM per",
             "pair in a thread of its own, off the frame path, with stereo_matcher sgbm; `stereo_scale` with the",
             "default sparse matcher matches each frame's pair on the frame path). Rows with",
             "`network_stand_in=True` replace the network by a constant of its output's shape.")

    def add_arguments(self, p) -> None:
        add_camera_options(p, 1280, 1024)
        p.add_argument("--rate", type=POSITIVE_FLOAT, default=30.0,
                       help="stereo frames per second published (default 30)")
        p.add_argument("--duration", type=POSITIVE_FLOAT, default=20.0, help="measured seconds (default 20)")
        p.add_argument("--warmup", type=POSITIVE_FLOAT, default=3.0, help="unmeasured seconds first (default 3)")
        add_input_size_options(p)
        p.add_argument("--device", default="cpu", help="cpu or cuda")
        p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="node precision")
        p.add_argument("--scale-mode", choices=SCALE_MODES, default="relative", help="node scale mode")
        p.add_argument("--eyes", choices=("left", "both"), default="left",
                       help="node eyes: both batches the right eye too")
        p.add_argument("--compile", action="store_true", help="node compile: torch.compile the network at start")
        p.add_argument("--stand-in-network", action="store_true",
                       help="replace the network by a constant of its output's shape: the node's own cost per stage")
        p.add_argument("--temporal-weight", type=SHARE, default=0.0,
                       help="node temporal_weight: the depth stabiliser on (a still camera's pose on camera_pose at "
                            "every frame), its cost in the stage table (default 0: off)")
        p.add_argument("--sequence", type=Path, default=None,
                       help="stream this keyframe folder's stereo frames (image_02, image_03, calibration.yaml; e.g. "
                            "`dares synth` or `dares prepare-scared` output) instead of a generated scene of --width "
                            "x --height")

    def measure(self, args) -> dict:
        from .node import bench_node

        return bench_node(args.weights, args.encoder, args.width, args.height, args.rate, args.duration, args.warmup,
                          args.device, args.precision, (args.input_height, args.input_width), args.scale_mode,
                          args.eyes, args.compile, args.sequence, args.stand_in_network, args.temporal_weight)

    def name(self, args, record: dict) -> str:
        return result_name(record, "network", "rate_hz", "precision", "scale_mode", "eyes") + (
            "-compiled" if args.compile else "") + ("-stand-in" if args.stand_in_network else "") + (
            "-temporal" if args.temporal_weight else "")

    def report(self, record: dict, path) -> str:
        depth = record["paths"]["node depth"]
        return (f"depth at {depth['achieved_rate_hz']} Hz of {record['settings']['rate_hz']} Hz, latency p50 "
                f"{depth.get('median_ms')} ms, p99 {depth.get('p99_ms')} ms, dropped {depth['dropped']}, the node's "
                f"own cost {depth['stages_ms'].get('own')} ms a frame; wrote {path}")

    def section(self, results: list[tuple[str, dict]]) -> list[str]:
        """The stage table: a row per path with stages, a column per stage any of them has."""
        found = [(m["stages_ms"], record, file) for file, record in results for m in record["paths"].values()
                 if m.get("stages_ms")]
        names = [n for n in NODE_STAGES if any(n in stages for stages, *_ in found)]
        rows = [f"| {record['machine']['device']} | {settings_text(record)} | "
                + " | ".join(f"{stages[n]:.1f}" if n in stages else "" for n in names) + f" | {file} |"
                for stages, record, file in found]
        return table_section(self.title, self.prose, ("device", "settings", *names, "file"), rows)


class SoakBenchmark(Benchmark):
    kind = "soak"
    help = "the node under abuse: 2x rate, bursts, bad stamps, dropouts, resizes"
    timing = True

    def add_arguments(self, p) -> None:
        add_camera_options(p, 640, 512)
        p.add_argument("--phase-seconds", type=POSITIVE_FLOAT, default=60.0,
                       help="seconds per phase (5 phases; default 60)")
        add_input_size_options(p)
        p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")

    def measure(self, args) -> dict:
        from .soak import soak

        return soak(args.weights, args.encoder, args.width, args.height, args.phase_seconds, args.device,
                    (args.input_height, args.input_width))

    def name(self, args, record: dict) -> str:
        return result_name(record, "input", "phase_s")

    def report(self, record: dict, path) -> str:
        s = record["paths"]["node under abuse"]
        return (f"node alive: {s['node_alive']}; answered per phase: "
                + ", ".join(f"{k} {v['answered']}/{v['sent']}" for k, v in record["phases"].items())
                + f"; latency p99 {s.get('p99_ms')} ms; memory growth {s['rss_growth_mb']} MB; wrote {path}")


BENCHMARKS = [NodeTemporalBenchmark(), FineTuneBenchmark(), NodeBenchmark(), SoakBenchmark()]
