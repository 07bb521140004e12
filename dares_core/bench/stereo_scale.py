"""`dares bench stereo-scale`: the depth node's stereo scale against ground truth, each of its ways."""

from __future__ import annotations

from pathlib import Path

from ..commands.options import POSITIVE_FLOAT, POSITIVE_INT, SEED
from . import Benchmark
from .results import settings_text


def bench_stereo_scale(weights: Path | None = None, width: int = 320, height: int = 256, frames: int = 40,
                       seeds: tuple[int, ...] = (101, 102, 103, 104, 105), rate: float = 5.0) -> dict:
    """The depth node's stereo scale against ground truth, its three ways: sparse matches of every frame's own pair
    (stereo_matcher sparse, the node's default), SGBM on every frame on the frame path (sgbm, stereo_rate 0) and SGBM
    in a worker at `rate` Hz on the newest pair, fed at the camera's rate (sgbm, stereo_rate `rate`). Synthetic
    scenes of `seeds` (the demo's size and length, scenes the scale was never tuned on), depth from `weights`
    (default: the demo model). A frame's error is median(gt) / median(scaled depth) - 1 over
    its pixels with ground truth (0 is exact); summarised over all frames of all seeds."""
    import math
    import tempfile
    import time

    import numpy as np
    import torch

    from ..data.scared import gt_path, image_path, read_gt_depth
    from ..data.synthetic import SynthConfig, generate_sequence, sequence_folder
    from ..errors import FrameProblem
    from ..evaluate import MAX_DEPTH, MIN_DEPTH
    from ..inference import DepthPredictor
    from ..model.weights import DEMO_MODEL, load_depth_net
    from ..pipeline import STEREO_SETTINGS, MetricScale
    from ..preprocess import read_rgb
    from .results import machine

    weights = Path(weights or DEMO_MODEL)
    predictor = DepthPredictor(load_depth_net(weights).eval())
    ways = {"sparse, every frame": ("sparse", 0.0), "sgbm, every frame": ("sgbm", 0.0),
            f"sgbm, worker at {rate:g} Hz": ("sgbm", rate)}
    ratios, costs, measured = {label: [] for label in ways}, {label: [] for label in ways}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            cfg = SynthConfig(width=width, height=height, frames=frames, sequences=1, seed=seed)
            generate_sequence(cfg, 0, Path(tmp) / str(seed))
            folder, K, baseline_m = Path(tmp) / str(seed), cfg.intrinsics(), cfg.baseline_mm / 1000
            pairs, truths = [], []
            for frame in range(1, frames + 1):
                left, right = (read_rgb(image_path(folder, sequence_folder(0), frame, side)) for side in "lr")
                model_depth = predictor.predict(torch.from_numpy(left)[None]).depth[0].numpy()
                pairs.append((left, right, model_depth))
                truths.append(read_gt_depth(gt_path(folder, sequence_folder(0), frame)))
            for label, (matcher, stereo_rate) in ways.items():
                settings = {**STEREO_SETTINGS, "scale_mode": "stereo", "stereo_matcher": matcher,
                            "stereo_rate": stereo_rate, "stereo_max_age": math.inf}
                stage = MetricScale(settings.get, lambda *_, **__: None)  # the node's own scale stage
                start = time.monotonic()
                for i, ((left, right, model_depth), gt) in enumerate(zip(pairs, truths)):
                    time.sleep(max(0.0, start + i / cfg.fps - time.monotonic()))  # frames at the camera's rate
                    begin = time.perf_counter()
                    try:  # metres per unit from a baseline in metres: times 1000 for mm, as the ground truth
                        scale = 1000 * stage(left, right, torch.from_numpy(model_depth), K, K, baseline_m)
                    except FrameProblem:  # too few matches for a first scale
                        scale = math.nan
                    costs[label].append(time.perf_counter() - begin)
                    valid = (gt > MIN_DEPTH) & (gt < MAX_DEPTH) & np.isfinite(model_depth)
                    ratios[label].append(float(np.median(gt[valid]) / np.median(scale * model_depth[valid])))
                stage.close()
                measured[label] = measured.get(label, 0) + (stage.stereo.measurements if stage.stereo else 0)
    paths = {}
    for label, r in ratios.items():
        errors = np.array(r) - 1.0
        paths[label] = {"median_error": round(float(np.median(errors)), 4),
                        "mean_abs_error": round(float(np.nanmean(np.abs(errors))), 4),
                        "p90_abs_error": round(float(np.nanpercentile(np.abs(errors), 90)), 4),
                        "frames": len(r), "measurements": measured[label],
                        "frame_path_ms": round(1000 * float(np.median(costs[label])), 2)}
    return {"benchmark": "stereo-scale", "machine": machine(torch.device("cpu")),
            "settings": {"model": weights.name, "frames": f"{width}x{height}", "count": frames,
                         "seeds": list(seeds), "rate_hz": rate},
            "paths": paths,
            "note": "error per frame: median(gt)/median(scale x depth) - 1 over pixels with ground truth; "
                    "frame_path_ms: median time of a frame's scale (the frame path's share); the worker "
                    "path sees frames at the scenes' camera rate (25 Hz), its first frame measured on the frame path "
                    "as the node does"}


class StereoScaleBenchmark(Benchmark):
    kind = "stereo-scale"
    help = ("the node's stereo scale against ground truth: sparse matches of every frame, SGBM on every frame, and "
            "SGBM from its worker at stereo_rate")
    title = "Stereo scale against ground truth: sparse matches, SGBM on every frame, or SGBM in a worker"
    prose = ("`dares bench stereo-scale`: the depth node's own metric-scale stage (dares_core.pipeline.MetricScale,",
             "at the node's stereo defaults) on synthetic scenes of seeds it was never tuned on. A frame's error is",
             "median(gt) / median(scaled depth) - 1. `sparse` (stereo_matcher sparse, the default) matches a grid",
             "of pixels of every frame's own pair; `sgbm, every frame` is stereo_matcher sgbm with stereo_rate 0;",
             "the `sgbm` worker gets the newest pair at most stereo_rate times a second while frames arrive at the",
             "camera's rate, and every frame folds its own depth's ratio to the newest stereo map. `frame path`:",
             "median ms a frame's scale costs the node at this size; `measurements`: sparse matches or SGBM maps",
             "made.")
    columns = ("settings", "path", "median error", "mean abs error", "p90 abs error", "frame path ms", "frames",
               "measurements", "file")

    def add_arguments(self, p) -> None:
        p.add_argument("--weights", type=Path, default=None, help="the model (default: the demo model)")
        p.add_argument("--width", type=POSITIVE_INT, default=320, help="frame width (default 320, the demo's)")
        p.add_argument("--height", type=POSITIVE_INT, default=256, help="frame height (default 256)")
        p.add_argument("--frames", type=POSITIVE_INT, default=40, help="frames per scene (default 40, the demo's)")
        p.add_argument("--seeds", type=SEED, nargs="+", default=[101, 102, 103, 104, 105], help="synthetic scenes")
        p.add_argument("--rate", type=POSITIVE_FLOAT, default=5.0,
                       help="the SGBM worker's stereo_rate (default 5, the node's)")

    def measure(self, args) -> dict:
        return bench_stereo_scale(args.weights, args.width, args.height, args.frames, tuple(args.seeds), args.rate)

    def name(self, args, record: dict) -> str:
        return f"stereo-scale-{Path(record['settings']['model']).stem}-{args.width}x{args.height}"

    def report(self, record: dict, path) -> str:
        return "\n".join([*(f"stereo scale, {label}: median error {m['median_error']:+.2%}, mean abs "
                            f"{m['mean_abs_error']:.2%} over {m['frames']} frames, {m['frame_path_ms']:.1f} ms a "
                            "frame on the frame path" for label, m in record["paths"].items()), f"wrote {path}"])

    def rows(self, record: dict, file: str) -> list[str]:
        return [f"| {settings_text(record)} | {label} | {m['median_error']:+.2%} | {m['mean_abs_error']:.2%} | "
                f"{m['p90_abs_error']:.2%} | {m['frame_path_ms']:.1f} | {m['frames']} | {m['measurements']} | "
                f"{file} |" for label, m in record["paths"].items()]


BENCHMARK = StereoScaleBenchmark()
