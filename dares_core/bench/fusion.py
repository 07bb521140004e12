"""`dares bench fusion`: TSDF fusion throughput of dares reconstruct, and the fusion node's map as it grows."""

from __future__ import annotations

from ..commands.options import POSITIVE_FLOAT, POSITIVE_INT
from . import Benchmark
from .results import result_name, settings_text

MAP_SIZES = (100, 1000)  # fused frames at which bench_fusion times the published map's extraction
SURVEY_FRAMES, SURVEY_SHIFT_MM = 100, 300.0  # bench_fusion fuses its sequence again this much further along x
PUBLISHES_TIMED = 4  # the published-map figures are medians of this many publishes


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
    import time
    from pathlib import Path

    import numpy as np

    from ..data.scared import gt_path, read_camera_poses, read_gt_depth
    from ..data.synthetic import SynthConfig, generate_sequence, sequence_folder
    from ..inference import resolve_device
    from ..preprocess import read_rgb
    from ..reconstruct import MIN_OBSERVATIONS, TsdfFusion
    from .results import machine, summarize

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


class FusionBenchmark(Benchmark):
    kind = "fusion"
    help = "TSDF fusion throughput (frames/s) of dares reconstruct"
    timing = True
    title = "The fusion node's published map as the map grows"
    prose = ("`dares bench fusion --frames 1000`: ms to extract dares_fusion_node's map/points once a second",
             "(incrementally: the blocks the frames since the last publish touched) beside open3d's extraction of",
             "the whole grid, which grows with the map; both give the same points (tested). Every 100 frames the",
             "sequence is fused again 0.3 m further along x, so the map grows as a long survey's does; medians",
             "of the last 4 publishes.")
    columns = ("device", "settings", "fused frames", "map blocks", "points", "published map", "whole grid", "file")

    def add_arguments(self, p) -> None:
        p.add_argument("--width", type=POSITIVE_INT, default=320, help="frame width (default 320)")
        p.add_argument("--height", type=POSITIVE_INT, default=256, help="frame height (default 256)")
        p.add_argument("--frames", type=POSITIVE_INT, default=20, help="frames integrated (default 20)")
        p.add_argument("--voxel-mm", type=POSITIVE_FLOAT, default=1.0, help="voxel edge in mm (default 1)")
        p.add_argument("--device", default=None,
                       help="open3d device, e.g. CPU:0 or CUDA:0 (default: CUDA when present)")

    def measure(self, args) -> dict:
        return bench_fusion(args.width, args.height, args.frames, args.voxel_mm, args.device)

    def name(self, args, record: dict) -> str:
        return result_name(record, "frames", "voxel_mm")

    def report(self, record: dict, path) -> str:
        m = record["paths"]["tsdf integrate"]
        return (f"fusion: {m['throughput_fps']} frames/s ({m['median_ms']} ms per frame), mesh extraction "
                f"{m['extract_mesh_s']} s; wrote {path}")

    def rows(self, record: dict, file: str) -> list[str]:
        m = record["paths"]["tsdf integrate"]
        return [f"| {record['machine']['device']} | {settings_text(record)} | {n} | {m[f'map_blocks_at_{n}_frames']} "
                f"| {m[f'map_points_at_{n}_frames']} | {m[f'map_points_ms_at_{n}_frames']} | "
                f"{m[f'whole_grid_ms_at_{n}_frames']} | {file} |"
                for n in MAP_SIZES if f"whole_grid_ms_at_{n}_frames" in m]


BENCHMARK = FusionBenchmark()
