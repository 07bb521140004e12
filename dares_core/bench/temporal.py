"""`dares bench temporal`: TAE and AbsRel of dares infer --temporal against plain depth; the temporal tables that
`dares bench node-temporal` shares."""

from __future__ import annotations

from pathlib import Path

from ..commands.options import POSITIVE_INT, SEED
from . import Benchmark
from .results import settings_text

STABILITY_COLUMNS = ("settings", "seed", "TAE plain", "TAE stabilised", "tissue plain", "tissue stabilised", "floor",
                     "AbsRel plain", "AbsRel stabilised")
STABILITY_FIGURES = (("tae", "plain"), ("tae", "stabilised"), ("tae_tissue", "plain"), ("tae_tissue", "stabilised"),
                     ("tae_floor", "plain"), ("abs_rel", "plain"), ("abs_rel", "stabilised"))  # columns 3 on


def bench_temporal(weights: Path | None = None, pose_weights: Path | None = None, width: int = 320,
                   height: int = 256, frames: int = 20, seeds: tuple[int, ...] = tuple(range(121, 131))) -> dict:
    """`dares infer --temporal` with its defaults against plain depth on synthetic scenes of `seeds` (the defaults
    were chosen on seeds 41-50): TAE of the whole frame and of the tissue alone, the ground truth's own (the floor),
    and median-scaled AbsRel, per seed and their mean. Depth from `weights` (default: the demo model), the camera's
    motion from `pose_weights` (default: the demo pose network), never from ground truth."""
    import tempfile

    import numpy as np
    import torch

    from ..data.scared import (
        gt_path,
        image_path,
        instrument_mask_path,
        read_camera_poses,
        read_gt_depth,
        read_tissue_mask,
    )
    from ..data.synthetic import SynthConfig, generate_sequence, sequence_folder
    from ..evaluate import evaluate_depth, temporal_errors
    from ..infer import TemporalInference
    from ..inference import DepthPredictor
    from ..model.weights import DEMO_MODEL, DEMO_POSE, load_depth_net
    from ..names import TEMPORAL_SCALE_WEIGHT, TEMPORAL_TOLERANCE, TEMPORAL_WEIGHT
    from ..preprocess import network_batch, read_rgb
    from .results import machine, seed_means

    weights, pose_weights = Path(weights or DEMO_MODEL), Path(pose_weights or DEMO_POSE)
    predictor = DepthPredictor(load_depth_net(weights).eval())
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            cfg = SynthConfig(width=width, height=height, frames=frames, sequences=1, seed=seed)
            root, folder = Path(tmp) / str(seed), sequence_folder(0)
            generate_sequence(cfg, 0, root)
            stabiliser = TemporalInference(pose_weights, cfg.intrinsics(), (width, height), TEMPORAL_WEIGHT,
                                           TEMPORAL_TOLERANCE, TEMPORAL_SCALE_WEIGHT)
            plain, stabilised, gt, tissue = [], [], [], []
            for frame in range(1, frames + 1):
                rgb = read_rgb(image_path(root, folder, frame))
                depth = predictor.predict(network_batch([rgb], predictor.size), output_size=rgb.shape[:2]).depth[0]
                plain.append(depth.numpy())
                stabilised.append(stabiliser(f"{frame:010d}", rgb, plain[-1]))
                gt.append(read_gt_depth(gt_path(root, folder, frame)))
                tissue.append(read_tissue_mask(instrument_mask_path(root, folder, frame)))
            poses = read_camera_poses(root / folder)
            poses = np.stack([poses[frame] for frame in range(1, frames + 1)])
            scores[seed] = {}
            for label, depths in (("plain", plain), ("stabilised", stabilised)):
                depths = np.stack(depths).astype(np.float64)
                errors = temporal_errors(depths, np.stack(gt), cfg.intrinsics(), poses, np.stack(tissue))
                errors["abs_rel"] = evaluate_depth(1 / depths, gt).mean["abs_rel"]
                scores[seed][label] = {k: round(float(v), 4) for k, v in errors.items()}
    return {"benchmark": "temporal", "machine": machine(torch.device("cpu")),
            "settings": {"model": weights.name, "pose_model": pose_weights.name, "frames": f"{width}x{height}",
                         "count": frames, "seeds": list(seeds), "weight": TEMPORAL_WEIGHT,
                         "tolerance": TEMPORAL_TOLERANCE, "scale_weight": TEMPORAL_SCALE_WEIGHT},
            "paths": seed_means(scores), "seeds": scores,
            "note": "TAE: Video Depth Anything's temporal alignment error, depth scaled once per sequence; "
                    "tae_floor: the ground truth's own; AbsRel: per frame, median-scaled (SCARED); paths: means over "
                    "the seeds"}


class StabilityBenchmark(Benchmark):
    """A benchmark of plain against stabilised depth per seed: its table (the mean over the seeds with the settings,
    then each seed) and its printout."""

    figures = STABILITY_FIGURES
    columns = (*STABILITY_COLUMNS, "file")

    def rows(self, record: dict, file: str) -> list[str]:
        settings = settings_text(record)
        return [f"| {settings if seed == 'mean' else ''} | {seed} | "
                + " | ".join(f"{m[path][key]:.4f}" for key, path in self.figures) + f" | {file} |"
                for seed, m in [("mean", record["paths"]), *record["seeds"].items()]]

    def report(self, record: dict, path) -> str:
        return "\n".join([*(f"seed {seed}: TAE {m['plain']['tae']:.4f} -> {m['stabilised']['tae']:.4f} (floor "
                            f"{m['plain']['tae_floor']:.4f}), AbsRel {m['plain']['abs_rel']:.4f} -> "
                            f"{m['stabilised']['abs_rel']:.4f}"
                            for seed, m in [*record["seeds"].items(), ("mean", record["paths"])]), f"wrote {path}"])


class TemporalBenchmark(StabilityBenchmark):
    kind = "temporal"
    help = "TAE and AbsRel of dares infer --temporal (its defaults) against plain depth, on synthetic scenes"
    title = "Temporal stability: dares infer --temporal against plain depth"
    prose = ("`dares bench temporal`: the built-in depth model on synthetic scenes of seeds the stabiliser's",
             "defaults were not chosen on, its depth stabilised online with the pose network's motion (never the",
             "ground truth). TAE (lower holds stiller; depth scaled once per sequence) of the whole frame and of",
             "the tissue alone, the ground truth's own TAE (the floor: occlusions and moving instruments), and",
             "median-scaled AbsRel per frame.")

    def add_arguments(self, p) -> None:
        p.add_argument("--weights", type=Path, default=None, help="the depth model (default: the demo model)")
        p.add_argument("--pose-weights", type=Path, default=None, help="the pose network (default: the demo's)")
        p.add_argument("--width", type=POSITIVE_INT, default=320, help="frame width (default 320)")
        p.add_argument("--height", type=POSITIVE_INT, default=256, help="frame height (default 256)")
        p.add_argument("--frames", type=POSITIVE_INT, default=20, help="frames per scene (default 20)")
        p.add_argument("--seeds", type=SEED, nargs="+", default=list(range(121, 131)),
                       help="synthetic scenes (default 121-130: the stabiliser's defaults were chosen on 41-50)")

    def name_before(self, args) -> str:
        from ..model.weights import DEMO_MODEL

        return f"temporal-{Path(args.weights or DEMO_MODEL).stem}-{args.width}x{args.height}"

    def measure(self, args) -> dict:
        return bench_temporal(args.weights, args.pose_weights, args.width, args.height, args.frames, tuple(args.seeds))


BENCHMARK = TemporalBenchmark()
