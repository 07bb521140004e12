"""Benchmarks that publish their figures: JSON under bench/results/ and a table in docs/benchmarks.md.

Every benchmark measures our path side by side, interleaved in one run, with the reference way of running
the same network (the official DARES style: unmerged LoRA, four heads, eager fp32), so the ratio holds on
a noisy machine.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import DaresError
from .files import atomic_file
from .geometry import sigmoid_to_depth
from .inference import DepthPredictor, network_input_size, resolve_device
from .model.depth_net import DaresDepthNet, DepthNetConfig
from .model.weights import load_depth_net

RESULTS_DIR = Path("bench/results")
DOCS = Path("docs/benchmarks.md")
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the repository, when running from a checkout


def bench_destination(out: Path | None) -> tuple[Path, Path, bool]:
    """(results folder, docs table, is_project): this repository's bench/results and docs/benchmarks.md when run
    from its root without --out (re-measuring replaces a figure); else OUT/results and OUT/benchmarks.md, OUT
    being --out or ./dares_bench, so a user's own docs/ and bench/ are never touched."""
    if out is None and Path.cwd().resolve() == SOURCE_ROOT and (SOURCE_ROOT / RESULTS_DIR).is_dir():
        return SOURCE_ROOT / RESULTS_DIR, SOURCE_ROOT / DOCS, True
    out = Path(out or "dares_bench")
    return out / "results", out / "benchmarks.md", False


def machine(device: torch.device) -> dict:
    """Where a figure was measured."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "dares": __version__, "device": "cpu"}
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(seconds: list[float], batch: int) -> dict:
    """median and p99 latency (ms) and throughput (frames/s) of per-call timings."""
    ms = np.array(seconds) * 1000
    return {"median_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "throughput_fps": round(batch * 1000 / float(np.median(ms)), 2), "calls": len(ms)}


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory (CUDA allocator) or peak resident memory of this process (CPU), MiB."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_result(name: str, record: dict, results_dir: Path = RESULTS_DIR, docs: Path = DOCS,
                 replace: bool = True) -> Path:
    """Write one benchmark's JSON atomically and regenerate the docs table from every result; an existing
    result of the same name is replaced only with `replace`."""
    record = {**record, "date": datetime.date.today().isoformat()}
    path = Path(results_dir) / f"{name}.json"
    if path.exists() and not replace:
        raise DaresError(f"{path} already exists: pass --force to replace it, or another --out")
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    render_docs(results_dir, docs)
    return path


GPU_TARGETS = {"model": "model at 256x320 fp16", "node": "node at 1280x1024 stereo 60 Hz", "train": "training"}


def _depth_agreement(path: dict, precision: str | None) -> str:
    """The docs cell for a path's depth agreement with the fp32 reference; empty when not measured."""
    if "depth_relative_p99" not in path:
        return ""
    cell = f"{path['depth_relative_p99']:.1e}"
    if precision not in (None, "fp32") and path["depth_relative_max"] < 1e-6:
        cell += " (equals fp32: not computed in " + precision + ")"
    return cell


MAP_SIZES = (100, 1000)  # fused frames at which bench_fusion times the published map's extraction
SURVEY_FRAMES, SURVEY_SHIFT_MM = 100, 300.0  # bench_fusion fuses its sequence again this much further along x
PUBLISHES_TIMED = 4  # the published-map figures are medians of this many publishes
NODE_STAGES = ("receive", "preprocess", "network", "postprocess", "stereo_scale", "temporal", "cloud", "preview",
               "publish", "own", "stereo_worker")  # the depth node's stages, in the order a frame passes them


STABILITY_COLUMNS = ("settings", "seed", "TAE plain", "TAE stabilised", "tissue plain", "tissue stabilised", "floor",
                     "AbsRel plain", "AbsRel stabilised")
STABILITY_FIGURES = (("tae", "plain"), ("tae", "stabilised"), ("tae_tissue", "plain"), ("tae_tissue", "stabilised"),
                     ("tae_floor", "plain"), ("abs_rel", "plain"), ("abs_rel", "stabilised"))  # columns 3 on
NODE_STABILITY_FIGURES = (*STABILITY_FIGURES, ("abs_rel_instruments", "plain"), ("abs_rel_instruments", "stabilised"))


def _stability_rows(r: dict, settings: str, figures: tuple, file: str) -> list[str]:
    """Table rows of a temporal result: the mean over its seeds (with the settings), then each seed."""
    return [f"| {settings if seed == 'mean' else ''} | {seed} | "
            + " | ".join(f"{m[path][key]:.4f}" for key, path in figures) + f" | {file} |"
            for seed, m in [("mean", r["paths"]), *r["seeds"].items()]]


def render_docs(results_dir: Path = RESULTS_DIR, docs: Path = DOCS) -> None:
    """docs/benchmarks.md: one row per path of every result file, GPU rows marked pending when absent."""
    rows, agreements, scales, maps, stage_rows, tunes, gpu_benchmarks = [], [], [], [], [], [], set()
    stability, node_stability = [], []
    for path in sorted(Path(results_dir).glob("*.json")):
        r = json.loads(path.read_text())
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        if r["benchmark"] == "resize":
            for label, m in r["paths"].items():
                agreements.append(f"| {r['machine']['device']} | {settings} | {label} | "
                                  f"{m['median_rel_depth']:.2e} | {m['p99_rel_depth']:.2e} | {m['max_rel_depth']:.2e} "
                                  f"| {path.name} |")
            continue
        if r["benchmark"] == "stereo-scale":
            for label, m in r["paths"].items():
                scales.append(f"| {settings} | {label} | {m['median_error']:+.2%} | {m['mean_abs_error']:.2%} | "
                              f"{m['p90_abs_error']:.2%} | {m['frame_path_ms']:.1f} | {m['frames']} | "
                              f"{m['measurements']} | {path.name} |")
            continue
        if r["benchmark"] == "temporal":
            stability.extend(_stability_rows(r, settings, STABILITY_FIGURES, path.name))
            continue
        if r["benchmark"] == "node-temporal":
            node_stability.extend(_stability_rows(r, settings, NODE_STABILITY_FIGURES, path.name))
            continue
        if r["benchmark"] == "fine-tune":
            m = r["paths"]["built-in model fine-tuned"]
            tunes.extend(f"| {settings} | {seed} | {score['start']:.4f} | {score['fine_tuned']:.4f} | "
                         f"{m['kept_frames']} | {m['train_s']} | {path.name} |" for seed, score in m["abs_rel"].items())
            continue
        if r["benchmark"] == "fusion":
            m = r["paths"]["tsdf integrate"]
            maps.extend(f"| {r['machine']['device']} | {settings} | {n} | {m[f'map_blocks_at_{n}_frames']} | "
                        f"{m[f'map_points_at_{n}_frames']} | {m[f'map_points_ms_at_{n}_frames']} | "
                        f"{m[f'whole_grid_ms_at_{n}_frames']} | {path.name} |"
                        for n in MAP_SIZES if f"whole_grid_ms_at_{n}_frames" in m)
        if r["machine"]["device"] != "cpu":
            gpu_benchmarks.add(r["benchmark"])
        for label, m in r["paths"].items():
            if m.get("stages_ms"):
                stage_rows.append((m["stages_ms"], r["machine"]["device"], settings, path.name))
            rows.append(f"| {r['benchmark']} | {r['machine']['device']} | {settings} | {label} | "
                        f"{m.get('median_ms', '')} | "
                        f"{m.get('p99_ms', '')} | {m.get('throughput_fps', '')} | {m.get('peak_memory_mb', '')} | "
                        f"{m.get('speedup', '')} | {_depth_agreement(m, r['settings'].get('precision'))} | "
                        f"{path.name} |")
    lines = [
        "# Benchmarks",
        "",
        "Generated by `dares bench ...` from `bench/results/*.json`; do not edit by hand. Each benchmark runs our",
        "path and the reference path (official DARES style: unmerged LoRA, four heads, eager fp32) interleaved in",
        "one run; `speedup` is reference median latency over ours. Latency in ms, throughput in frames/s, peak",
        "memory in MiB (CUDA allocator on GPU, process resident set on CPU). `depth vs reference`: 99th",
        "percentile of the relative depth difference per pixel to the reference path (fp32); a reduced-precision",
        "path whose output equals fp32 is flagged, since it cannot have computed in that precision.",
        "",
        "| benchmark | device | settings | path | median | p99 | throughput | peak memory | speedup "
        "| depth vs reference | file |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    if agreements:
        lines += _table_section(
            "Preprocessing: the node's on-device resize against the official",
            ["`dares bench resize`: relative depth difference per pixel between the node's resize (torch",
             "bilinear, antialiased, on the device) and the official loader's (PIL LANCZOS) that training,",
             "`dares eval` and `dares infer` use."],
            ["device", "settings", "comparison", "median", "p99", "max", "file"], agreements)
    if maps:
        lines += _table_section(
            "The fusion node's published map as the map grows",
            ["`dares bench fusion --frames 1000`: ms to extract dares_fusion_node's map/points once a second",
             "(incrementally: the blocks the frames since the last publish touched) beside open3d's extraction of",
             "the whole grid, which grows with the map; both give the same points (tested). Every 100 frames the",
             "sequence is fused again 0.3 m further along x, so the map grows as a long survey's does; medians",
             "of the last 4 publishes."],
            ["device", "settings", "fused frames", "map blocks", "points", "published map", "whole grid", "file"], maps)
    if scales:
        lines += _table_section(
            "Stereo scale against ground truth: sparse matches, SGBM on every frame, or SGBM in a worker",
            ["`dares bench stereo-scale`: the depth node's metric scale (StereoScale through LiveStereoScale, as the",
             "node runs it) on synthetic scenes of seeds it was never tuned on. A frame's error is median(gt) /",
             "median(scaled depth) - 1. `sparse` (stereo_matcher sparse, the default) matches a grid of pixels of",
             "every frame's own pair; `sgbm, every frame` is stereo_matcher sgbm with stereo_rate 0; the `sgbm`",
             "worker gets the newest pair at most stereo_rate times a second while frames arrive at the camera's",
             "rate, and every frame folds its own depth's ratio to the newest stereo map. `frame path`: median ms",
             "a frame's scale costs the node at this size; `measurements`: sparse matches or SGBM maps made."],
            ["settings", "path", "median error", "mean abs error", "p90 abs error", "frame path ms", "frames",
             "measurements", "file"],
            scales)
    if stability:
        lines += _table_section(
            "Temporal stability: dares infer --temporal against plain depth",
            ["`dares bench temporal`: the built-in depth model on synthetic scenes of seeds the stabiliser's",
             "defaults were not chosen on, its depth stabilised online with the pose network's motion (never the",
             "ground truth). TAE (lower holds stiller; depth scaled once per sequence) of the whole frame and of",
             "the tissue alone, the ground truth's own TAE (the floor: occlusions and moving instruments), and",
             "median-scaled AbsRel per frame."],
            [*STABILITY_COLUMNS, "file"], stability)
    if node_stability:
        lines += _table_section(
            "Temporal stability: the depth node's stabiliser in dares demo's graph against plain depth",
            ["`dares bench node-temporal`: dares_depth_node as `dares demo` runs it (built-in models, stereo scale,",
             "the camera's motion from dares_odometry_node beside it, never the ground truth) on synthetic scenes",
             "of seeds the stabiliser's defaults were not chosen on (the node's: 61-65), each replayed twice, the",
             "stabiliser off and at its defaults. Figures as above, plus median-scaled AbsRel on the instruments",
             "alone (the frame scaled as a whole; the node runs here without an instrument mask). Seed 7 is the",
             "demo's own scene."],
            [*STABILITY_COLUMNS, "instruments plain", "instruments stabilised", "file"], node_stability)
    if tunes:
        lines += _table_section(
            "Your own endoscope: the built-in model fine-tuned on a scope it never saw",
            ["`dares bench fine-tune`: recordings of a 16:9 wide-angle stereo scope (synthetic, seeds",
             "`recordings`, 12 s each) go through prepare-bag (source=bag: compressed images, camera_info, poses)",
             "or prepare-video (source=video: side by side, OpenCV calibration), and the built-in model is",
             "fine-tuned on them, self-supervised (stereo, the scope's own intrinsics; no ground truth read).",
             "Median-scaled AbsRel on the held-out scene of each test seed, each model at its own input size;",
             "`kept frames`: those with camera motion; `train s`: the fine-tuning's wall time on this machine's",
             "CPU, while other work ran."],
            ["settings", "test seed", "built-in model", "fine-tuned", "kept frames", "train s", "file"], tunes)
    if stage_rows:
        names = [n for n in NODE_STAGES if any(n in stages for stages, *_ in stage_rows)]
        rows = [f"| {device} | {settings} | "
                + " | ".join(f"{stages[n]:.1f}" if n in stages else "" for n in names) + f" | {name} |"
                for stages, device, settings, name in stage_rows]
        lines += _table_section(
            "The node's own cost, stage by stage",
            ["`dares bench node` reads the node's diagnostics: each stage's median ms per frame over its last",
             "5 s (`own`: every stage but the network, the part a GPU does not remove; `stereo_worker`: SGBM per",
             "pair in a thread of its own, off the frame path, with stereo_matcher sgbm; `stereo_scale` with the",
             "default sparse matcher matches each frame's pair on the frame path). Rows with",
             "`network_stand_in=True` replace the network by a constant of its output's shape."],
            ["device", "settings", *names, "file"], rows)
    pending = [what for kind, what in GPU_TARGETS.items() if kind not in gpu_benchmarks]
    if pending:
        lines += [f"GPU figures still **pending**: {', '.join(pending)}. They are measured by `bench/gpu.sh` when a",
                  "session has a GPU, never estimated.", ""]
    with atomic_file(Path(docs)) as tmp:
        tmp.write_text("\n".join(lines))


def _table_section(title: str, text: list[str], columns: list[str], rows: list[str]) -> list[str]:
    """Lines of a docs/benchmarks.md section: its title, its text, and a table of `columns` holding `rows`."""
    return [f"## {title}", "", *text, "", "| " + " | ".join(columns) + " |",
            "| " + " | ".join("---" for _ in columns) + " |", *rows, ""]


def bench_model(encoder: str = "vits", height: int | None = None, width: int | None = None, batch: int = 1,
                device: str = "cpu",
                precision: str = "fp32", rounds: int = 10, calls: int = 5, weights: Path | None = None,
                compile: bool = False) -> dict:
    """Our deployment path (and with `compile` the compiled one) vs the reference path on the same network
    and input; returns the record with each path's speedup and max |disparity difference| to the reference."""
    dev = resolve_device(device)
    torch.manual_seed(0)
    if weights is not None:
        net = load_depth_net(weights, mode="dares")
    else:
        net = DaresDepthNet(DepthNetConfig.dares(encoder))
        with torch.no_grad():  # trained-looking adapters, so merging is not a no-op
            for name, p in net.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.01)
    net.eval()
    height, width = network_input_size(net, (height, width))
    reference = copy.deepcopy(net).to(dev)
    predictors = {"ours": DepthPredictor(copy.deepcopy(net), (height, width), dev, precision)}
    if compile:
        start = time.perf_counter()
        predictors["ours compiled"] = DepthPredictor(copy.deepcopy(net), (height, width), dev, precision, compile=True)
        compile_s = round(time.perf_counter() - start, 1)
    images = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8)
    floats = images.permute(0, 3, 1, 2).float().div(255).to(dev)

    def run_reference():
        with torch.no_grad():
            out = reference(floats, scales=(0, 1, 2, 3))
            disparity, depth = sigmoid_to_depth(out[0], 0.1, 150.0)
        synchronize(dev)
        return disparity[:, 0]

    def runner(predictor):
        def run():
            pred = predictor.predict(images)
            synchronize(dev)
            return pred.disparity
        return run

    runs = {"reference": run_reference, **{label: runner(p) for label, p in predictors.items()}}
    expected = run_reference().float()
    agreement = {}
    for label in predictors:
        disparity = runs[label]().float()
        relative = (expected / disparity - 1).abs().flatten().cpu()  # relative depth error: depth = unit / disparity
        agreement[label] = {"max_abs_diff_disparity": float((disparity - expected).abs().max()),
                            "depth_relative_p99": float(relative.quantile(0.99)),
                            "depth_relative_max": float(relative.max())}
    timings = {label: [] for label in runs}
    for _ in range(rounds):  # interleaved: every path sees the same machine noise
        for label, fn in runs.items():
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                timings[label].append(time.perf_counter() - start)
    paths = {label: summarize(t, batch) for label, t in timings.items()}
    for label in predictors:
        paths[label].update(speedup=round(paths["reference"]["median_ms"] / paths[label]["median_ms"], 2),
                            **agreement[label])
    paths["ours"]["peak_memory_mb"] = peak_memory_mb(dev)
    if compile:
        paths["ours compiled"]["compile_s"] = compile_s
    return {
        "benchmark": "model", "machine": machine(dev),
        "settings": {"encoder": encoder if weights is None else net.config.encoder, "input": f"{height}x{width}",
                     "batch": batch, "precision": precision, "torch_threads": torch.get_num_threads(),
                     "compile": compile},
        "paths": paths, "speedup": max(paths[label]["speedup"] for label in predictors),
        "note": "reference: unmerged LoRA, 4 heads, eager fp32; ours: DepthPredictor (merged, 1 head, "
                "inference_mode, channels-last, uint8 in, depth out); compiled: the same through torch.compile "
                "(inductor: frozen weights, max-autotune, CUDA graphs on GPU)",
    }


def bench_resize(weights: Path | None = None, width: int = 1280, height: int = 1024,
                 seeds: tuple[int, ...] = (101, 102, 103), device: str = "cpu") -> dict:
    """How far the node's on-device resize (bilinear, antialiased) puts depth from the official preprocessing
    (PIL LANCZOS, preprocess.resize_like_official): relative depth difference over every pixel of synthetic
    frames at width x height, two frames from each seed's scene, with `weights` (default: the demo model; a
    network with random weights predicts one depth everywhere, which says nothing)."""
    import tempfile

    from .data.synthetic import SynthConfig, generate_sequence, sequence_folder
    from .model.weights import DEMO_MODEL
    from .preprocess import network_batch, read_rgb

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


def bench_stereo_scale(weights: Path | None = None, width: int = 320, height: int = 256, frames: int = 40,
                       seeds: tuple[int, ...] = (101, 102, 103, 104, 105), rate: float = 5.0) -> dict:
    """The depth node's stereo scale against ground truth, its three ways: sparse matches of every frame's own pair
    (stereo_matcher sparse, the node's default), SGBM on every frame on the frame path (sgbm, stereo_rate 0) and SGBM
    in a worker at `rate` Hz on the newest pair, fed at the camera's rate (sgbm, stereo_rate `rate`). Synthetic
    scenes of `seeds` (the demo's size and length, scenes the scale was never tuned on), depth from `weights`
    (default: the demo model). A frame's error is median(gt) / median(scaled depth) - 1 over
    its pixels with ground truth (0 is exact); summarised over all frames of all seeds."""
    import tempfile

    from .data.scared import gt_path, image_path, read_gt_depth
    from .data.synthetic import SynthConfig, generate_sequence, sequence_folder
    from .evaluate import MAX_DEPTH, MIN_DEPTH
    from .model.weights import DEMO_MODEL
    from .preprocess import read_rgb
    from .stereo_scale import LiveStereoScale, StereoScale

    weights = Path(weights or DEMO_MODEL)
    predictor = DepthPredictor(load_depth_net(weights).eval())
    ways = {"sparse, every frame": ("sparse", 0.0), "sgbm, every frame": ("sgbm", 0.0),
            f"sgbm, worker at {rate:g} Hz": ("sgbm", rate)}
    ratios, costs, measured = {label: [] for label in ways}, {label: [] for label in ways}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            cfg = SynthConfig(width=width, height=height, frames=frames, sequences=1, seed=seed)
            generate_sequence(cfg, 0, Path(tmp) / str(seed))
            folder, fx = Path(tmp) / str(seed), float(cfg.intrinsics()[0, 0])
            pairs, truths = [], []
            for frame in range(1, frames + 1):
                left, right = (read_rgb(image_path(folder, sequence_folder(0), frame, side)) for side in "lr")
                model_depth = predictor.predict(torch.from_numpy(left)[None]).depth[0].numpy()
                pairs.append((left, right, model_depth))
                truths.append(read_gt_depth(gt_path(folder, sequence_folder(0), frame)))
            for label, (matcher, stereo_rate) in ways.items():
                path_ratios, stereo = ratios[label], LiveStereoScale(StereoScale(), matcher, stereo_rate)
                start = time.monotonic()
                for i, ((left, right, model_depth), gt) in enumerate(zip(pairs, truths)):
                    time.sleep(max(0.0, start + i / cfg.fps - time.monotonic()))  # frames at the camera's rate
                    begin = time.perf_counter()
                    scale = stereo.scale_for(left, right, model_depth, fx, cfg.baseline_mm)
                    costs[label].append(time.perf_counter() - begin)
                    valid = (gt > MIN_DEPTH) & (gt < MAX_DEPTH) & np.isfinite(model_depth)
                    path_ratios.append(float(np.median(gt[valid]) / np.median(scale * model_depth[valid])))
                stereo.close()
                measured[label] = measured.get(label, 0) + stereo.measurements
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


def seed_means(scores: dict) -> dict:
    """{path: {figure: mean over seeds}} of {seed: {path: {figure: value}}}, to 4 decimals."""
    first = next(iter(scores.values()))
    return {path: {key: round(float(np.mean([by_path[path][key] for by_path in scores.values()])), 4)
                   for key in figures} for path, figures in first.items()}


def bench_temporal(weights: Path | None = None, pose_weights: Path | None = None, width: int = 320,
                   height: int = 256, frames: int = 20, seeds: tuple[int, ...] = tuple(range(121, 131))) -> dict:
    """`dares infer --temporal` with its defaults against plain depth on synthetic scenes of `seeds` (the defaults
    were chosen on seeds 41-50): TAE of the whole frame and of the tissue alone, the ground truth's own (the floor),
    and median-scaled AbsRel, per seed and their mean. Depth from `weights` (default: the demo model), the camera's
    motion from `pose_weights` (default: the demo pose network), never from ground truth."""
    import tempfile

    from .data.scared import (
        gt_path,
        image_path,
        instrument_mask_path,
        read_camera_poses,
        read_gt_depth,
        read_tissue_mask,
    )
    from .data.synthetic import SynthConfig, generate_sequence, sequence_folder
    from .evaluate import evaluate_depth, temporal_errors
    from .infer_command import TemporalInference
    from .model.weights import DEMO_MODEL, DEMO_POSE
    from .names import TEMPORAL_SCALE_WEIGHT, TEMPORAL_TOLERANCE, TEMPORAL_WEIGHT
    from .preprocess import network_batch, read_rgb

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


def bench_fusion(width: int = 320, height: int = 256, frames: int = 20, voxel_mm: float = 1.0,
                 device: str | None = None) -> dict:
    """TSDF fusion throughput: frames/s integrated (dares reconstruct's TsdfFusion) of a synthetic sequence's
    ground-truth depth and poses at width x height, and the surface extraction time at the end. Beyond
    SURVEY_FRAMES the sequence is fused again, its world SURVEY_SHIFT_MM further along x each time: a map that
    grows as a long survey's does, while a second of frames touches as many blocks as before. Once MAP_SIZES
    frames are fused: the ms to extract the point cloud dares_fusion_node publishes once a second (incrementally;
    here every cfg.fps frames) and open3d's extraction of the whole grid at those moments, medians of the last
    PUBLISHES_TIMED."""
    import tempfile

    from .data.scared import gt_path, read_camera_poses, read_gt_depth
    from .data.synthetic import SynthConfig, generate_sequence, sequence_folder
    from .preprocess import read_rgb
    from .reconstruct import MIN_OBSERVATIONS, TsdfFusion

    cfg = SynthConfig(width=width, height=height, frames=min(frames, SURVEY_FRAMES), sequences=1, seed=31)
    fusion = TsdfFusion(voxel_mm, 4 * voxel_mm, device=device)
    timings, publish_ms, published, whole = [], {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        generate_sequence(cfg, 0, Path(tmp))
        folder = Path(tmp) / sequence_folder(0)
        poses = read_camera_poses(folder)
        K = cfg.intrinsics()
        images = [(read_rgb(folder / "image_02" / "data" / f"{i:010d}.png"),
                   read_gt_depth(gt_path(tmp, sequence_folder(0), i)), poses[i]) for i in sorted(poses)]
        for i in range(frames):
            rgb, depth, pose = images[i % len(images)]
            pose = pose.copy()
            pose[0, 3] += (i // len(images)) * SURVEY_SHIFT_MM
            start = time.perf_counter()
            fusion.integrate(rgb, depth, K, pose)
            timings.append(time.perf_counter() - start)
            if fusion.frames % round(cfg.fps) == 0 or fusion.frames in MAP_SIZES:
                start = time.perf_counter()
                points, _ = fusion.points()
                published.append(1000 * (time.perf_counter() - start))
                start = time.perf_counter()
                fusion.grid.extract_point_cloud(weight_threshold=MIN_OBSERVATIONS)
                whole.append(1000 * (time.perf_counter() - start))
            if fusion.frames in MAP_SIZES:
                n, last = fusion.frames, slice(-PUBLISHES_TIMED, None)
                publish_ms.update({f"map_points_ms_at_{n}_frames": round(float(np.median(published[last])), 1),
                                   f"whole_grid_ms_at_{n}_frames": round(float(np.median(whole[last])), 1),
                                   f"map_points_at_{n}_frames": len(points),
                                   f"map_blocks_at_{n}_frames": fusion.grid.hashmap().size()})
        start = time.perf_counter()
        mesh, _ = fusion.surface()
        extract_s = time.perf_counter() - start
    paths = {"tsdf integrate": {**summarize(timings[1:], 1), "extract_mesh_s": round(extract_s, 3),
                                "vertices": len(mesh.vertices), **publish_ms}}
    machine_info = machine(resolve_device("cpu"))
    machine_info["device"] = "cpu" if str(fusion.device).startswith("CPU") else str(fusion.device).lower()
    return {"benchmark": "fusion", "machine": machine_info,
            "settings": {"frames": f"{width}x{height}", "voxel_mm": voxel_mm, "count": frames},
            "paths": paths, "note": "open3d VoxelBlockGrid; the first frame (allocation) is not counted; beyond "
                                    f"{SURVEY_FRAMES} frames the sequence again, {SURVEY_SHIFT_MM:g} mm further "
                                    "along x each time"}


def result_name(record: dict, *keys: str) -> str:
    """File stem of a result: benchmark, device and the named settings, e.g. model-cpu-vits-256x320."""
    device = record["machine"]["device"].lower().replace(" ", "-")
    return "-".join([record["benchmark"], device, *(str(record["settings"][k]) for k in keys)])



def bench_train(encoder: str = "vits", height: int = 256, width: int = 320, batch: int = 12, device: str = "cpu",
                precision: str = "fp32", steps: int = 5, warmup: int = 1, workdir: Path | None = None,
                data: Path | None = None) -> dict:
    """Images/s of full DARES training steps (position step + depth/pose/transform step) on synthetic scenes, or
    on the frames of `data` (a `dares synth` / `dares prepare-scared` folder).

    The step is the official trainer's (same networks, losses and two optimisers), so ours is the reference
    style of step; the figure is the throughput a lab can expect, data loading excluded.
    """
    import tempfile

    from .data.synthetic import SynthConfig, generate
    from .train import TrainConfig, Trainer

    dev = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="dares-bench-train-", dir=workdir) as tmp:
        if data is None:
            data = generate(SynthConfig(width=width, height=height, frames=max(batch + 2, 5), sequences=1, seed=0),
                            Path(tmp) / "data")
        cfg = TrainConfig(data=str(data), out=str(Path(tmp) / "run"), height=height, width=width, batch_size=batch,
                          encoder=encoder, device=device, precision=precision, num_workers=0)
        cfg.validate()
        trainer = Trainer(cfg)
        loader, _ = trainer._loader(0)
        inputs = next(iter(loader))
        times = []
        for i in range(warmup + steps):
            synchronize(dev)
            start = time.perf_counter()
            trainer.train_step(inputs)
            synchronize(dev)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    ours = summarize(times, batch)
    ours["peak_memory_mb"] = peak_memory_mb(dev)
    return {"benchmark": "train", "machine": machine(dev),
            "settings": {"encoder": encoder, "input": f"{height}x{width}", "batch": batch, "precision": precision,
                         "frames": "[0,-1,1]"},
            "paths": {"train step": ours},
            "note": "one step = position-net step + depth/pose/transform step, as the official trainer; throughput in "
                    "images/s"}
