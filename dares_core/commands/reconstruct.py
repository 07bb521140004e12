"""`dares reconstruct`: 3D from depth, the official per-frame clouds or a keyframe fused into a TSDF."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DaresError
from .options import FORCE_INTO_FOLDER, POSITIVE_FLOAT, POSITIVE_INT, add_weights_options, progress_bar

NAME = "reconstruct"
HELP = "3D from depth: the official per-frame clouds, or a sequence fused (TSDF)"
DESCRIPTION = ("--protocol official: point clouds of splits/endovis/3d_reconstruction.txt exactly as "
               "evaluate_3d_reconstruction.py. fused (default): a keyframe's depth integrated into a TSDF with "
               "ground-truth or pose-network poses; a mesh, points, a render and, with ground truth, "
               "accuracy/completeness/Chamfer in mm.")


def add_arguments(p) -> None:
    p.add_argument("--protocol", choices=("fused", "official"), default="fused", help="default fused")
    p.add_argument("--data", type=Path, required=True, help="the data folder holding datasetN/keyframeM")
    add_weights_options(p, required=False)
    p.add_argument("--split-file", type=Path, default=None,
                   help="official: frames to reconstruct (default the official 3d_reconstruction.txt)")
    p.add_argument("--gt-depths", type=Path, default=None,
                   help="official: the test split's gt_depths.npz (default DATA/splits/endovis/gt_depths.npz)")
    p.add_argument("--keyframe", default=None, help="fused: the datasetN/keyframeM folder to fuse")
    p.add_argument("--depth", choices=("net", "gt"), default="net", help="fused: network (--weights) or ground truth")
    p.add_argument("--poses", choices=("gt", "net"), default="gt",
                   help="fused: camera_poses.npz (default) or the pose network (--pose-weights)")
    p.add_argument("--pose-weights", type=Path, default=None, help="fused, --poses net: official folder or a run")
    p.add_argument("--scale", choices=("gt", "none"), default="gt",
                   help="fused, network depth: median-scaled to ground truth per frame (default) or as predicted")
    p.add_argument("--voxel-mm", type=POSITIVE_FLOAT, default=1.0, help="fused: voxel edge in mm (default 1)")
    p.add_argument("--trunc-mm", type=POSITIVE_FLOAT, default=4.0, help="fused: TSDF truncation in mm (default 4)")
    p.add_argument("--max-depth-mm", type=POSITIVE_FLOAT, default=150.0, help="fused: depth integrated up to (150)")
    p.add_argument("--every", type=POSITIVE_INT, default=1, help="fused: every N-th frame (default 1)")
    p.add_argument("--device", default="cpu", help="the networks' device (the TSDF uses CUDA when present)")
    p.add_argument("--out", type=Path, default=Path("dares_reconstruction"),
                   help="output folder (default ./dares_reconstruction)")
    p.add_argument("--force", action="store_true", help=FORCE_INTO_FOLDER)


def run(args: argparse.Namespace) -> None:
    from ..files import FUSED_ENTRIES, check_output_folder

    if args.protocol == "official":
        _official(args)
        return
    check_output_folder(args.out, args.force, ours=FUSED_ENTRIES)
    _fused(args)


def _official(args: argparse.Namespace) -> None:
    from ..data.scared import default_split_dir, read_split
    from ..evaluate import load_npz_data
    from ..files import check_output_folder
    from ..inference import DepthPredictor
    from ..model.weights import load_depth_net
    from ..reconstruct import OFFICIAL_SPLIT, official_cloud_name, official_point_clouds

    if args.weights is None:
        raise DaresError("--protocol official needs --weights (the depth model to reconstruct with)")
    entries = read_split(args.split_file or OFFICIAL_SPLIT)
    check_output_folder(args.out, args.force, ours=tuple(official_cloud_name(e) for e in entries))
    gt_file = args.gt_depths or default_split_dir(args.data) / "gt_depths.npz"
    gt = load_npz_data(gt_file, "ground-truth depths", "(N,H,W) depths in mm")
    if len(gt) < len(entries):
        raise DaresError(f"{gt_file} has {len(gt)} frames, fewer than the {len(entries)} to reconstruct: the official "
                         "protocol scales frame i by the test split's i-th ground truth")
    predictor = DepthPredictor(load_depth_net(args.weights, base_weights=args.base_weights), (256, 320), args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    with progress_bar(len(entries), "reconstruct") as bar:
        written = official_point_clouds(predictor, args.data, entries, gt, args.out, bar.update)
    print(f"wrote {len(written)} point clouds (metres, as the official) to {args.out}")


def _fused(args: argparse.Namespace) -> None:
    import numpy as np

    from ..data.scared import gt_path, read_camera_poses, read_gt_depth, read_sequence_calibration, sequence_frames
    from ..files import atomic_file
    from ..reconstruct import TsdfFusion, fuse_keyframe, surface_distances, why_empty, write_fused

    if args.keyframe is None:
        raise DaresError("fused reconstruction needs --keyframe datasetN/keyframeM (a folder under --data)")
    if (args.weights is None) == (args.depth == "net"):
        raise DaresError("give --weights for network depth, or --depth gt (and no --weights) for ground truth")
    folder, root = args.keyframe, args.data
    frames = sequence_frames(root, folder)[::args.every]
    calib = read_sequence_calibration(root / folder)
    K = np.asarray(calib["K"], np.float64).reshape(3, 3)
    gt_poses = read_camera_poses(root / folder)
    has_gt = gt_path(root, folder, frames[0]).is_file()

    def ground_truth(frame):
        return read_gt_depth(gt_path(root, folder, frame), rows=int(calib["image_height"]))

    if args.depth == "gt" and not has_gt:
        raise DaresError(f"--depth gt: {root / folder} has no ground truth")
    depth_of = (lambda frame, rgb: ground_truth(frame)) if args.depth == "gt" else _network_depth(args, ground_truth)
    poses = gt_poses if args.poses == "gt" else _network_poses(args, frames, gt_poses)
    if args.poses == "gt" and not gt_poses:
        raise DaresError(f"{root / folder / 'camera_poses.npz'} not found: pass --poses net --pose-weights W, or a "
                         "folder with poses")
    if args.scale == "gt" and not has_gt:
        raise DaresError(f"--scale gt: {root / folder} has no ground truth; pass --scale none for metric depth")
    fusion = TsdfFusion(args.voxel_mm, args.trunc_mm, args.max_depth_mm)
    with progress_bar(len(frames), "fuse") as bar:
        reference = fuse_keyframe(root, folder, fusion, K, depth_of, poses, frames,
                                  ground_truth if has_gt and gt_poses else None, gt_poses, bar.update)
    mesh, cloud = fusion.surface()
    if not len(cloud.points):
        raise DaresError(why_empty(fusion, args.every))
    metrics = {"frames": len(frames)}
    if reference is not None:
        metrics.update(surface_distances(np.asarray(cloud.points), reference))
    write_fused(args.out, mesh, cloud, f"{folder}: {len(frames)} frames fused, {args.voxel_mm:g} mm voxels")
    metrics.update(keyframe=folder, depth=args.depth, poses=args.poses, scale=args.scale, voxel_mm=args.voxel_mm,
                   trunc_mm=args.trunc_mm, vertices=len(mesh.vertices), device=str(fusion.device))
    with atomic_file(args.out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    distances = (f"; accuracy {metrics['accuracy_mm']:.2f} mm, completeness {metrics['completeness_mm']:.2f} mm, "
                 f"Chamfer {metrics['chamfer_mm']:.2f} mm") if "chamfer_mm" in metrics else ""
    print(f"fused {len(frames)} frames into {len(mesh.vertices)} vertices{distances}; wrote {args.out}/mesh.ply, "
          "points.ply, render.png, metrics.json")


def _network_depth(args: argparse.Namespace, ground_truth):
    """depth_of(frame, rgb) -> (H,W) mm of --weights, median-scaled to ground truth with --scale gt."""
    import torch

    from ..inference import DepthPredictor
    from ..model.weights import load_depth_net
    from ..reconstruct import scale_to_ground_truth

    predictor = DepthPredictor(load_depth_net(args.weights, base_weights=args.base_weights), device=args.device)

    def depth_of(frame, rgb):
        depth = predictor.predict(torch.from_numpy(rgb)[None]).depth[0].cpu().numpy()
        return scale_to_ground_truth(depth, ground_truth(frame)) if args.scale == "gt" else depth
    return depth_of


def _network_poses(args: argparse.Namespace, frames: list[int], gt_poses: dict) -> dict:
    from ..inference import resolve_device
    from ..reconstruct import network_poses

    if args.pose_weights is None:
        raise DaresError("--poses net needs --pose-weights (official weights folder, a `dares train` run or a pose "
                         ".safetensors)")
    if args.every != 1:
        raise DaresError("--poses net chains consecutive frames: use --every 1 (or --poses gt)")
    return network_poses(args.data, args.keyframe, frames, gt_poses, args.pose_weights, resolve_device(args.device))
