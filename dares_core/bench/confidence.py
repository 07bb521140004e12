"""`dares bench confidence`: how well the per-pixel confidence (dares_core.confidence) ranks the depth's errors,
as the uncertainty literature scores it (AUSE against random's), per unseen synthetic scene."""

from __future__ import annotations

from pathlib import Path

from ..commands.options import POSITIVE_INT, SCENE_SIDE, SEED
from . import Benchmark
from .results import settings_text

GOAL = 0.5  # AUSE at most this fraction of random's, mono, mean over scenes (issue #42)
TUNING_SEEDS = (201, 202, 203, 204)  # the scenes its constants were chosen on: never scored here


def bench_confidence(weights: Path | None = None, width: int = 320, height: int = 256, frames: int = 12,
                     seeds: tuple[int, ...] = (7, 301, 302, 303, 304, 305)) -> dict:
    """AUSE of the confidence as a fraction of a random confidence's (1: chance, 0: the oracle) on synthetic scenes
    of `seeds`, depth from `weights` (default: the demo model) at its own input size: "mono" as `dares infer
    --save-confidence` and the depth node by default compute it (the edge term), "stereo" as the depth node in
    stereo mode with confidence_photometric does (its own stereo scale stage, then the photometric term of the
    right image too). AbsRel after median scaling, as `dares eval`;
    per scene, the mean AUSE over its frames over the mean random AUSE."""
    import tempfile
    import time

    import numpy as np
    import torch

    from ..data.scared import gt_path, image_path, read_gt_depth
    from ..data.synthetic import SynthConfig, generate_sequence, sequence_folder
    from ..errors import DaresError, FrameProblem
    from ..evaluate import evaluate_confidence
    from ..inference import DepthPredictor
    from ..model.weights import DEMO_MODEL, load_depth_net
    from ..pipeline import STEREO_SETTINGS, MetricScale, eye_confidences
    from ..preprocess import read_rgb
    from .results import machine

    if len(set(seeds)) != len(seeds):
        raise DaresError(f"--seeds {' '.join(map(str, seeds))}: a scene given twice would count twice; give each "
                         "once")
    if set(seeds) & set(TUNING_SEEDS):
        raise DaresError(f"--seeds {sorted(set(seeds) & set(TUNING_SEEDS))}: the confidence was tuned on seeds "
                         f"{', '.join(map(str, TUNING_SEEDS))}; score it on others")
    weights = Path(weights or DEMO_MODEL)
    predictor = DepthPredictor(load_depth_net(weights).eval())
    unit = predictor.net.config.depth_unit_mm
    per_seed, costs = {}, {"mono": [], "stereo": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            cfg = SynthConfig(width=width, height=height, frames=frames, sequences=1, seed=seed)
            folder, K = Path(tmp) / str(seed), cfg.intrinsics()
            generate_sequence(cfg, 0, folder)
            stage = MetricScale({**STEREO_SETTINGS, "scale_mode": "stereo"}.get, lambda *_, **__: None)
            disparities, truths, trust = [], [], {"mono": [], "stereo": []}
            for frame in range(1, frames + 1):
                left, right = (read_rgb(image_path(folder, sequence_folder(0), frame, side)) for side in "lr")
                prediction = predictor.predict(torch.from_numpy(left)[None])
                begin = time.perf_counter()
                trust["mono"].append(eye_confidences(prediction.disparity, unit, (height, width))[0].numpy())
                costs["mono"].append(time.perf_counter() - begin)
                try:  # the node's scale stage: metres per unit
                    scale = stage(left, right, prediction.depth[0], K, K, cfg.baseline_mm / 1000)
                except FrameProblem:  # no first scale yet: the node publishes nothing for this frame
                    continue
                begin = time.perf_counter()
                pair = (left, right, K[0, 0], cfg.baseline_mm / 1000, scale)
                trust["stereo"].append(eye_confidences(prediction.disparity, unit, (height, width), pair)[0].numpy())
                costs["stereo"].append(time.perf_counter() - begin)
                disparities.append(prediction.disparity[0].numpy())
                truths.append(read_gt_depth(gt_path(folder, sequence_folder(0), frame)))
            stage.close()
            if not disparities:
                raise DaresError(f"scene {seed}: no frame got a stereo scale ({width}x{height}, {frames} frame(s)): "
                                 "give larger frames or more of them")
            disparities = np.stack(disparities)
            trust["mono"] = trust["mono"][-len(disparities):]  # the frames the node published
            per_seed[seed] = {path: round(evaluate_confidence(disparities, values, truths)["ause_ratio"], 4)
                              for path, values in trust.items()}
    paths = {}
    for path in ("mono", "stereo"):
        ratios = [per_seed[s][path] for s in seeds]
        paths[path] = {"ause_ratio_mean": round(float(np.mean(ratios)), 4),
                       "ause_ratio_worst": round(float(np.max(ratios)), 4),
                       "per_seed": {str(s): per_seed[s][path] for s in seeds},
                       "cost_ms": round(1000 * float(np.median(costs[path])), 2)}
    return {"benchmark": "confidence", "machine": machine(torch.device("cpu")),
            "settings": {"model": weights.name, "frames": f"{width}x{height}", "count": frames, "seeds": list(seeds),
                         "input": f"{predictor.size[0]}x{predictor.size[1]}"},
            "paths": paths, "goal": GOAL,
            "note": "AUSE of the confidence over random's (1 chance, 0 oracle): per scene the mean over its frames of "
                    "the gap between its sparsification curve (AbsRel after median scaling, 2 % removed at a time) "
                    "and the oracle's, over the same for random; cost_ms: the confidence of one frame, CPU"}


class ConfidenceBenchmark(Benchmark):
    kind = "confidence"
    help = "how well the per-pixel confidence ranks the depth's errors (AUSE against random's), per unseen scene"
    title = "Confidence: AUSE against random's, per unseen scene"
    prose = ("`dares bench confidence`: the per-pixel confidence (dares_core.confidence) scored as the uncertainty",
             "literature scores one (Poggi et al., CVPR 2020): remove the least trusted 2 % of pixels at a time and",
             "take the AbsRel (median-scaled) of the rest; AUSE is the mean gap of that curve over the oracle's",
             "(largest true error removed first), shown as a fraction of a random confidence's: 1 is chance, 0 the",
             "oracle. `mono`: `dares infer --save-confidence` and the node's default (depth edges); `stereo`: the",
             "node in stereo mode with confidence_photometric (its own stereo scale, then the right image warped by",
             f"the depth too). Goal: mono at most {GOAL} of",
             "random's, mean over scenes; for scale, Poggi's best self-supervised method on KITTI is about 0.54.",
             f"Chosen on scenes {', '.join(map(str, TUNING_SEEDS))}; scored on others (7 is the demo's). `cost`: ms",
             "per frame.")
    columns = ("settings", "path", "mean", "worst scene", "per scene", "goal", "cost ms", "file")

    def add_arguments(self, p) -> None:
        p.add_argument("--weights", type=Path, default=None, help="the model (default: the demo model)")
        p.add_argument("--width", type=SCENE_SIDE, default=320, help="frame width (default 320, the demo's)")
        p.add_argument("--height", type=SCENE_SIDE, default=256, help="frame height (default 256)")
        p.add_argument("--frames", type=POSITIVE_INT, default=12, help="frames per scene (default 12)")
        p.add_argument("--seeds", type=SEED, nargs="+", default=[7, 301, 302, 303, 304, 305],
                       help="synthetic scenes, none of the tuning ones (201-204) (default the demo's, 7, and "
                            "301-305)")

    def measure(self, args) -> dict:
        return bench_confidence(args.weights, args.width, args.height, args.frames, tuple(args.seeds))

    def name(self, args, record: dict) -> str:
        return f"confidence-{Path(record['settings']['model']).stem}-{args.width}x{args.height}"

    def report(self, record: dict, path) -> str:
        return "\n".join([*(f"confidence, {label}: AUSE {m['ause_ratio_mean']:.3f} of random's (worst scene "
                            f"{m['ause_ratio_worst']:.3f}), {m['cost_ms']:.1f} ms a frame"
                            for label, m in record["paths"].items()), f"wrote {path}"])

    def rows(self, record: dict, file: str) -> list[str]:
        goal = record["goal"]
        return [f"| {settings_text(record)} | {label} | {m['ause_ratio_mean']:.3f} | {m['ause_ratio_worst']:.3f} | "
                f"{', '.join(f'{v:.2f}' for v in m['per_seed'].values())} | "
                f"{('met' if m['ause_ratio_mean'] <= goal else 'not met') if label == 'mono' else ''} | "
                f"{m['cost_ms']:.1f} | {file} |" for label, m in record["paths"].items()]


BENCHMARK = ConfidenceBenchmark()
