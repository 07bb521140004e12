"""`dares bench resize`: the node's on-device resize against the official preprocessing, in depth."""

from __future__ import annotations

from pathlib import Path

from ..commands.options import POSITIVE_INT, SEED
from . import Benchmark
from .results import settings_text


def bench_resize(weights: Path | None = None, width: int = 1280, height: int = 1024,
                 seeds: tuple[int, ...] = (101, 102, 103), device: str = "cpu") -> dict:
    """How far the node's on-device resize (bilinear, antialiased) puts depth from the official preprocessing
    (PIL LANCZOS, preprocess.resize_like_official): relative depth difference over every pixel of synthetic
    frames at width x height, two frames from each seed's scene, with `weights` (default: the demo model; a
    network with random weights predicts one depth everywhere, which says nothing)."""
    import tempfile

    import numpy as np
    import torch

    from ..data.synthetic import SynthConfig, generate_sequence, sequence_folder
    from ..inference import DepthPredictor, resolve_device
    from ..model.weights import DEMO_MODEL, load_depth_net
    from ..preprocess import network_batch, read_rgb
    from .results import machine

    dev = resolve_device(device)
    weights = Path(weights or DEMO_MODEL)
    net = load_depth_net(weights)
    predictor = DepthPredictor(net.eval(), device=dev)
    relative = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            cfg = SynthConfig(width=width, height=height, frames=2, sequences=1, seed=seed)
            generate_sequence(cfg, 0, Path(tmp) / str(seed))
            for frame in (1, 2):
                path = Path(tmp) / str(seed) / sequence_folder(0) / "image_02" / "data" / f"{frame:010d}.png"
                rgb = read_rgb(path)
                on_device = predictor.predict(torch.from_numpy(rgb)[None]).depth[0]
                official = predictor.predict(network_batch([rgb], predictor.size), output_size=rgb.shape[:2]).depth[0]
                relative.append(((on_device - official).abs() / official).flatten().cpu().numpy())
    relative = np.concatenate(relative)
    agreement = {"median_rel_depth": float(np.median(relative)), "p99_rel_depth": float(np.percentile(relative, 99)),
                 "max_rel_depth": float(relative.max()), "frames": 2 * len(seeds)}
    return {
        "benchmark": "resize", "machine": machine(dev),
        "settings": {"model": weights.name,
                     "input": "x".join(map(str, predictor.size)), "frames": f"{width}x{height}",
                     "seeds": list(seeds)},
        "paths": {"on-device resize vs official": agreement},
        "note": "relative depth difference, every pixel of every frame: DepthPredictor.predict on full frames "
                "(torch bilinear, antialias) against predict on preprocess.network_batch (PIL LANCZOS)",
    }


class ResizeBenchmark(Benchmark):
    kind = "resize"
    help = "the node's on-device resize against the official preprocessing (depth)"
    title = "Preprocessing: the node's on-device resize against the official"
    prose = ("`dares bench resize`: relative depth difference per pixel between the node's resize (torch",
             "bilinear, antialiased, on the device) and the official loader's (PIL LANCZOS) that training,",
             "`dares eval` and `dares infer` use.")
    columns = ("device", "settings", "comparison", "median", "p99", "max", "file")

    def add_arguments(self, p) -> None:
        p.add_argument("--weights", type=Path, default=None, help="the model (default: the demo model)")
        p.add_argument("--width", type=POSITIVE_INT, default=1280, help="frame width (default 1280, as SCARED)")
        p.add_argument("--height", type=POSITIVE_INT, default=1024, help="frame height (default 1024)")
        p.add_argument("--seeds", type=SEED, nargs="+", default=[101, 102, 103],
                       help="synthetic scenes (2 frames each)")
        p.add_argument("--device", default="cpu", help="cpu or cuda")

    def measure(self, args) -> dict:
        return bench_resize(args.weights, args.width, args.height, tuple(args.seeds), args.device)

    def name(self, args, record: dict) -> str:
        return f"resize-{Path(record['settings']['model']).stem}-{args.width}x{args.height}"

    def report(self, record: dict, path) -> str:
        m = record["paths"]["on-device resize vs official"]
        return (f"on-device resize vs official: relative depth median {m['median_rel_depth']:.2e}, p99 "
                f"{m['p99_rel_depth']:.2e}, max {m['max_rel_depth']:.2e}; wrote {path}")

    def rows(self, record: dict, file: str) -> list[str]:
        return [f"| {record['machine']['device']} | {settings_text(record)} | {label} | {m['median_rel_depth']:.2e} | "
                f"{m['p99_rel_depth']:.2e} | {m['max_rel_depth']:.2e} | {file} |"
                for label, m in record["paths"].items()]


BENCHMARK = ResizeBenchmark()
