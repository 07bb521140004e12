"""`dares`: the command line. Thin: parse, call dares_core, report. Errors are one line, exit status 2."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from . import __version__
from .errors import DaresError
from .names import ENCODERS, PRECISIONS, STEREO_LAYOUTS, TEMPORAL_SCALE_WEIGHT, TEMPORAL_TOLERANCE, TEMPORAL_WEIGHT


def number(kind: type, minimum: float = 0.0, inclusive: bool = False, maximum: float = math.inf):
    """An argparse type for a finite `kind` (int or float) above `minimum` (or equal, with inclusive) and at most
    `maximum`: 0, -5, nan, inf and sizes beyond any machine stop at parsing with one line naming the option."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive) or value > maximum:
            bound = f" and <= {maximum:g}" if math.isfinite(maximum) else ""
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a number {'>=' if inclusive else '>'} "
                                             f"{minimum:g}{bound}")
        return value
    return parse

POSITIVE_INT, POSITIVE_FLOAT, NON_NEGATIVE_FLOAT = number(int), number(float), number(float, inclusive=True)
IMAGE_SIDE = number(int, maximum=4096)  # pixels of a network input or a generated image
SHARE = number(float, inclusive=True, maximum=0.95)  # a blending weight: 0 (off) to 0.95


FORCE_INTO_FOLDER = ("write into an --out that also holds files of other origin (they are kept); the command's own "
                     "earlier outputs there are replaced without it")


def progress_bar(total: int | None, desc: str):
    """The progress bar every long command shows (frames; total None when unknown)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True)


def add_weights_options(p, required: bool = True) -> None:
    """--weights and --base-weights, as every command that loads a depth network takes them."""
    p.add_argument("--weights", type=Path, required=required, default=None,
                   help="checkpoint: HF Depth-Anything-V2 folder, official DAv2 .pth, DARES depth_model.pth or dares "
                        ".safetensors")
    p.add_argument("--base-weights", type=Path, default=None,
                   help="Depth Anything V2 weights under an adapter-only .safetensors checkpoint")


def add_network_options(p, compute: bool = True) -> None:
    """Network input size (and with compute, --device and --precision)."""
    p.add_argument("--height", type=IMAGE_SIDE, default=None,
                   help="network input height (default: the size the checkpoint was trained at, else 256)")
    p.add_argument("--width", type=IMAGE_SIDE, default=None,
                   help="network input width (default: the size the checkpoint was trained at, else 320)")
    if compute:
        p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="compute precision")
        p.add_argument("--compile", action="store_true",
                       help="torch.compile the network first (faster per frame; ViT-S compiles in 30-40 s on a "
                            "2-core CPU)")


def add_bench_output_options(p) -> None:
    """--out and --force, shared by every `dares bench` command (see publish_result)."""
    p.add_argument("--out", type=Path, default=None,
                   help="folder for results/NAME.json and benchmarks.md (default: ./dares_bench; run from the dares "
                        "repository's root without --out: its bench/results and docs/benchmarks.md)")
    p.add_argument("--force", action="store_true", help="replace an existing result of the same name")


def publish_result(args: argparse.Namespace, name: str, record: dict) -> Path:
    """Write a benchmark's JSON and regenerate the table where bench_destination says."""
    from .bench import bench_destination, write_result

    results_dir, docs, project = bench_destination(args.out)
    return write_result(name, record, results_dir, docs, replace=project or args.force)


def cmd_synth(args: argparse.Namespace) -> None:
    from .data.synthetic import SynthConfig, generate
    from .files import SYNTH_ENTRIES, ensure_writable_output

    cfg = SynthConfig(
        width=args.width, height=args.height, frames=args.frames, sequences=args.sequences, seed=args.seed,
        baseline_mm=args.baseline_mm, fps=args.fps, noise=args.noise, instruments=args.instruments,
    )
    cfg.validate()
    ensure_writable_output(args.out, args.force, SYNTH_ENTRIES)
    with progress_bar(cfg.frames * cfg.sequences, "synth") as bar:
        out = generate(cfg, args.out, force=args.force, progress=bar.update)
    print(f"wrote {cfg.sequences} sequence(s) of {cfg.frames} frames at {cfg.width}x{cfg.height} to {out}")


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="generate synthetic stereo endoscopy with exact ground truth (SCARED layout)",
                       description="Render procedural da Vinci-like stereo sequences (a tissue lumen with folds, "
                                   "moving instruments, endoscope lighting) with ground-truth depth, instrument masks "
                                   "and poses.")
    p.add_argument("--out", type=Path, required=True, help="output folder (must not exist unless --force)")
    p.add_argument("--frames", type=POSITIVE_INT, default=100, help="frames per sequence (default 100)")
    p.add_argument("--sequences", type=POSITIVE_INT, default=3,
                   help="sequences; the last is held out for test, the one before for validation (3 or more "
                        "keep train, val and test apart; default 3)")
    p.add_argument("--width", type=IMAGE_SIDE, default=1280, help="image width in pixels (default 1280, as SCARED)")
    p.add_argument("--height", type=IMAGE_SIDE, default=1024, help="image height in pixels (default 1024)")
    p.add_argument("--baseline-mm", type=POSITIVE_FLOAT, default=4.5, help="stereo baseline in mm (default 4.5)")
    p.add_argument("--fps", type=POSITIVE_FLOAT, default=25.0,
                   help="frame rate written to the calibration (default 25)")
    p.add_argument("--noise", type=NON_NEGATIVE_FLOAT, default=0.004,
                   help="sensor noise std, image in [0,1] (default 0.004)")
    p.add_argument("--instruments", type=int, choices=(-1, 0, 1, 2), default=-1,
                   help="instruments per sequence (default -1: one or two, drawn per sequence)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same scenes (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_synth)


def cmd_infer(args: argparse.Namespace) -> None:
    from .infer_command import run_infer

    run_infer(args)


def _add_infer(sub) -> None:
    p = sub.add_parser("infer", help="predict depth for an image, a folder of images or a video",
                       description="Run a DARES / Depth Anything V2 checkpoint on images and write depth files.")
    add_weights_options(p)
    add_network_options(p)
    p.add_argument("--input", type=Path, required=True, help="image file, folder of images, or video file")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--min-depth", type=POSITIVE_FLOAT, default=0.1,
                   help="depth range minimum, as training (default 0.1)")
    p.add_argument("--max-depth", type=POSITIVE_FLOAT, default=150.0,
                   help="depth range maximum, as training (default 150)")
    p.add_argument("--save-disp", type=Path, default=None,
                   help="also write the (N,H,W) float32 scaled disparities as official evaluate_depth "
                        "--save_pred_disps (with --temporal: of the stabilised depth)")
    p.add_argument("--calibration", type=Path, default=None, help="calibration.yaml giving K for point clouds")
    for k in ("fx", "fy", "cx", "cy"):
        p.add_argument(f"--{k}", type=POSITIVE_FLOAT, default=None, help=f"intrinsic {k} in pixels of the input image")
    p.add_argument("--temporal", action="store_true",
                   help="stabilise depth over time: each frame's depth blended with the previous output, carried "
                        "along the optical flow and moved by the camera's motion, where they agree (needs "
                        "--pose-weights and intrinsics; frames in order)")
    p.add_argument("--pose-weights", type=Path, default=None,
                   help="with --temporal: the pose network giving the camera's motion (a pose .safetensors, a dares "
                        "train run, or an AF-SfMLearner folder)")
    p.add_argument("--temporal-weight", type=SHARE, default=TEMPORAL_WEIGHT,
                   help=f"with --temporal: the previous output's share where it agrees, 0 to 0.95 (default "
                        f"{TEMPORAL_WEIGHT})")
    p.add_argument("--temporal-tolerance", type=POSITIVE_FLOAT, default=TEMPORAL_TOLERANCE,
                   help="with --temporal: relative difference beyond which new depth passes unchanged (default "
                        f"{TEMPORAL_TOLERANCE})")
    p.add_argument("--temporal-scale-weight", type=SHARE, default=TEMPORAL_SCALE_WEIGHT,
                   help="with --temporal: how far each frame's depth scale is pulled toward the previous output's "
                        f"where they differ by less than the tolerance, 0 to 0.95 (default {TEMPORAL_SCALE_WEIGHT})")
    p.add_argument("--temporal-masks", type=Path, default=None,
                   help="with --temporal: a folder of instrument masks (your segmentation; PNG, grey or colour, 8 "
                        "or 16 bits, nonzero on instruments, any size), NAME.png for the frame whose outputs are "
                        "NAME_depth.* (a video's: frame_000001.png, ...): those pixels are never blended; a frame "
                        "without one is written unstabilised and named at the end")
    p.add_argument("--force", action="store_true", help="write into an existing output folder, replacing files")
    p.set_defaults(func=cmd_infer)


def cmd_eval(args: argparse.Namespace) -> None:

    from .data.scared import default_split_dir
    from .evaluate import (
        evaluate_depth,
        evaluate_pose,
        load_array,
        load_npz_data,
        predict_split_disparities,
        split_temporal_errors,
        write_depth_report,
    )
    from .files import EVAL_ENTRIES, check_output_folder

    if args.pred_poses or args.gt_poses:
        if not (args.pred_poses and args.gt_poses):
            raise DaresError("pose evaluation needs both --pred-poses and --gt-poses")
        poses = [load_npz_data(path, what, "(N,4,4) relative poses") for path, what in
                 ((args.pred_poses, "predicted poses"), (args.gt_poses, "ground-truth poses"))]
        result = evaluate_pose(*poses)
        print(f"ATE {result['ate_mean']:.4f} (std {result['ate_std']:.4f}), RE {result['re_mean']:.4f} (std "
              f"{result['re_std']:.4f})")
        return
    check_output_folder(args.out, args.force, ours=EVAL_ENTRIES)  # an earlier evaluation's files are replaced
    temporal = {}  # TAE, where the split's sequences have camera poses (--weights with --data)
    if args.pred_disps is not None:
        if not args.pred_disps.is_file():
            raise DaresError(f"predicted disparities {args.pred_disps} not found")
        if args.gt_depths is None:
            raise DaresError("--pred-disps needs --gt-depths (the gt_depths.npz of the same split)")
        disps = load_array(args.pred_disps, "predicted disparities", "(N,H,W) disparities")
        gt = load_npz_data(args.gt_depths, "ground-truth depths", "(N,H,W) depths in mm")
        source = {"pred_disps": str(args.pred_disps)}
    else:
        if args.weights is None or args.data is None:
            raise DaresError("evaluate either --pred-disps with --gt-depths, or --weights with --data")
        from .inference import DepthPredictor
        from .model.weights import load_depth_net

        split_dir = args.split_dir or default_split_dir(args.data)
        predictor = DepthPredictor(load_depth_net(args.weights, base_weights=args.base_weights),
                                   (args.height, args.width), args.device, args.precision, compile=args.compile)
        gt = load_npz_data(args.gt_depths or split_dir / "gt_depths.npz", "ground-truth depths", "(N,H,W) depths in mm")
        with progress_bar(len(gt), "predict") as bar:
            disps = predict_split_disparities(predictor, args.data, split_dir / "test_files.txt", progress=bar.update)
        source = {"weights": str(args.weights), "data": str(args.data), "split": str(split_dir),
                  "input_size": list(predictor.size)}
        temporal = split_temporal_errors(args.data, split_dir / "test_files.txt", disps, gt)
    evaluation = evaluate_depth(disps, gt, median_scaling=not args.no_median_scaling)
    print(evaluation.table())
    if temporal:
        print(f"TAE {temporal['tae']:.4f}" + (f" (tissue {temporal['tae_tissue']:.4f})" if "tae_tissue" in temporal
                                               else "")
              + f"; the ground truth's own, the floor: {temporal['tae_floor']:.4f}"
              + (f" (tissue {temporal['tae_floor_tissue']:.4f})" if "tae_floor_tissue" in temporal else "")
              + f"; over {temporal['sequences']} sequence(s), each scaled once")
    write_depth_report(evaluation, args.out, {**source, "median_scaling": not args.no_median_scaling}, temporal)
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'per_frame.csv'}")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="SCARED depth metrics (official protocol) or pose ATE",
                       description="Evaluate official-format disparity arrays, a model on a data folder, or poses.")
    p.add_argument("--pred-disps", type=Path, default=None,
                   help="(N,H,W) disparities (official --save_pred_disps .npy)")
    p.add_argument("--gt-depths", type=Path, default=None, help="gt_depths.npz (official export_gt_depth.py)")
    add_weights_options(p, required=False)
    add_network_options(p)
    p.add_argument("--data", type=Path, default=None, help="data root holding datasetN/keyframeM (with --weights)")
    p.add_argument("--split-dir", type=Path, default=None,
                   help="folder with test_files.txt and gt_depths.npz (default DATA/splits/endovis)")
    p.add_argument("--no-median-scaling", action="store_true",
                   help="predictions are metric: no per-frame median scaling")
    p.add_argument("--pred-poses", type=Path, default=None, help="predicted relative poses (.npz 'data', (N,4,4))")
    p.add_argument("--gt-poses", type=Path, default=None, help="ground-truth relative poses (gt_poses_sq*.npz)")
    p.add_argument("--out", type=Path, default=Path("dares_eval"),
                   help="folder for metrics.json and per_frame.csv (default ./dares_eval; an earlier evaluation's "
                        "files there are replaced)")
    p.add_argument("--force", action="store_true", help=FORCE_INTO_FOLDER)
    p.set_defaults(func=cmd_eval)


def cmd_pose(args: argparse.Namespace) -> None:
    import numpy as np

    from .evaluate import evaluate_pose
    from .files import POSE_ENTRIES, atomic_file, check_output_folder, write_npz
    from .inference import resolve_device
    from .pose import (
        keyframe_sequence,
        load_pose_net,
        official_sequence,
        plot_trajectories,
        pose_units,
        predict_relative_poses,
    )

    check_output_folder(args.out, args.force, ours=POSE_ENTRIES)
    if (args.sequence is None) == (args.keyframe is None):
        raise DaresError("give one of --sequence 1|2 (official SCARED pose sequences) or --keyframe datasetN/keyframeM "
                         "(a folder with camera_poses.npz)")
    entries, ground_truth = (official_sequence(args.sequence) if args.sequence is not None
                             else keyframe_sequence(args.data, args.keyframe))
    encoder, decoder = load_pose_net(args.weights)
    units = pose_units(args.weights)
    size = (args.height or units.input_size[0], args.width or units.input_size[1])
    with progress_bar(len(entries), "pose") as bar:
        predicted = predict_relative_poses(encoder, decoder, args.data, entries, size,
                                           resolve_device(args.device), progress=bar.update)
    predicted[:, :3, 3] *= units.unit_mm  # nominal mm, as the official poses (unit 1 for DARES's own weights)
    result = evaluate_pose(predicted, ground_truth)
    name = f"sequence {args.sequence}" if args.sequence is not None else args.keyframe
    args.out.mkdir(parents=True, exist_ok=True)
    write_npz(args.out / "pred_poses.npz", compressed=True, data=predicted.astype(np.float32))
    with atomic_file(args.out / "metrics.json") as tmp:
        tmp.write_text(json.dumps({"sequence": name, "frames": len(entries), **result}, indent=2) + "\n")
    plot_trajectories(predicted, ground_truth, args.out / "trajectory.png",
                      f"{name}: ATE {result['ate_mean']:.4f} mm, RE {result['re_mean']:.4f} rad")
    print(f"{name}: ATE {result['ate_mean']:.4f} (std {result['ate_std']:.4f}), RE {result['re_mean']:.4f} (std "
          f"{result['re_std']:.4f}) over {result['snippets']} 5-frame snippets (a still camera: ATE "
          f"{result['still_ate_mean']:.4f}); wrote {args.out}/pred_poses.npz, metrics.json, trajectory.png")


def _add_pose(sub) -> None:
    p = sub.add_parser("pose", help="camera motion from the pose network, scored as official evaluate_pose.py",
                       description="Predict relative poses over a sequence, write them in the official .npz format, "
                                   "score ATE and RE against ground truth and plot both trajectories.")
    p.add_argument("--weights", type=Path, required=True,
                   help="official weights folder (pose_encoder.pth, pose.pth), a `dares train` run or checkpoint, or "
                        "a `dares export --network pose` .safetensors")
    p.add_argument("--data", type=Path, required=True, help="the data folder holding datasetN/keyframeM")
    p.add_argument("--sequence", type=int, default=None, help="official SCARED pose test sequence: 1 or 2")
    p.add_argument("--keyframe", default=None,
                   help="or any datasetN/keyframeM under --data with camera_poses.npz (synthetic scenes)")
    p.add_argument("--height", type=POSITIVE_INT, default=None,
                   help="network input height (default: the size the weights were trained at, else the official 256)")
    p.add_argument("--width", type=POSITIVE_INT, default=None,
                   help="network input width (default: the size the weights were trained at, else the official 320)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", type=Path, default=Path("dares_pose"),
                   help="folder for pred_poses.npz, metrics.json, trajectory.png (default ./dares_pose)")
    p.add_argument("--force", action="store_true", help=FORCE_INTO_FOLDER)
    p.set_defaults(func=cmd_pose)


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from .files import FUSED_ENTRIES, check_output_folder

    if args.protocol == "official":
        _reconstruct_official(args, check_output_folder)
        return
    check_output_folder(args.out, args.force, ours=FUSED_ENTRIES)
    _reconstruct_fused(args)


def _reconstruct_official(args: argparse.Namespace, check_output_folder) -> None:
    from .data.scared import default_split_dir, read_split
    from .evaluate import load_npz_data
    from .inference import DepthPredictor
    from .model.weights import load_depth_net
    from .reconstruct import OFFICIAL_SPLIT, official_cloud_name, official_point_clouds

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


def _why_empty(fusion, every: int) -> str:
    """Why a fused reconstruction has no surface, in one line: too little overlap for the observation threshold,
    or no depth inside the volume at all."""
    from .reconstruct import MIN_OBSERVATIONS

    if len(fusion.points(min_observations=1.0)[0]):
        return (f"the surface is where at least {MIN_OBSERVATIONS:g} frames saw a point, and none of the "
                f"{fusion.frames} fused frames (--every {every}) overlap that much: fuse more frames (a smaller "
                "--every, a longer keyframe)")
    return (f"nothing was fused from {fusion.frames} frames: check --max-depth-mm against the depth, and the poses")


def _reconstruct_fused(args: argparse.Namespace) -> None:
    import numpy as np

    from .data.scared import gt_path, read_camera_poses, read_gt_depth, read_sequence_calibration, sequence_frames
    from .files import atomic_file
    from .reconstruct import TsdfFusion, fuse_keyframe, scale_to_ground_truth, surface_distances
    from .visualize import render_point_cloud

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

    if args.depth == "gt":
        if not has_gt:
            raise DaresError(f"--depth gt: {root / folder} has no ground truth")
        depth_of = lambda frame, rgb: ground_truth(frame)  # noqa: E731
    else:
        from .inference import DepthPredictor
        from .model.weights import load_depth_net

        predictor = DepthPredictor(load_depth_net(args.weights, base_weights=args.base_weights), device=args.device)

        def depth_of(frame, rgb):
            import torch

            depth = predictor.predict(torch.from_numpy(rgb)[None]).depth[0].cpu().numpy()
            return scale_to_ground_truth(depth, ground_truth(frame)) if args.scale == "gt" else depth
    if args.poses == "gt":
        if not gt_poses:
            raise DaresError(f"{root / folder / 'camera_poses.npz'} not found: pass --poses net --pose-weights W, or a "
                             "folder with poses")
        poses = gt_poses
    else:
        poses = _network_poses(args, frames, gt_poses)
    if args.scale == "gt" and not has_gt:
        raise DaresError(f"--scale gt: {root / folder} has no ground truth; pass --scale none for metric depth")
    fusion = TsdfFusion(args.voxel_mm, args.trunc_mm, args.max_depth_mm)
    with progress_bar(len(frames), "fuse") as bar:
        reference = fuse_keyframe(root, folder, fusion, K, depth_of, poses, frames,
                                  ground_truth if has_gt and gt_poses else None, gt_poses, bar.update)
    mesh, cloud = fusion.surface()
    if not len(cloud.points):
        raise DaresError(_why_empty(fusion, args.every))
    metrics = {"frames": len(frames)}
    if reference is not None:
        metrics.update(surface_distances(np.asarray(cloud.points), reference))
    import open3d as o3d

    args.out.mkdir(parents=True, exist_ok=True)
    for name, write, geometry in (("mesh.ply", o3d.io.write_triangle_mesh, mesh),
                                  ("points.ply", o3d.io.write_point_cloud, cloud)):
        with atomic_file(args.out / name) as tmp:
            if not write(str(tmp), geometry):
                raise DaresError(f"could not write {args.out / name}")
    points = np.asarray(cloud.points)
    shown = np.random.default_rng(0).choice(len(points), min(len(points), 30000), replace=False)
    render_point_cloud(points[shown], (np.asarray(cloud.colors)[shown] * 255).astype(np.uint8),
                       args.out / "render.png", f"{folder}: {len(frames)} frames fused, {args.voxel_mm:g} mm voxels")
    metrics.update(keyframe=folder, depth=args.depth, poses=args.poses, scale=args.scale, voxel_mm=args.voxel_mm,
                   trunc_mm=args.trunc_mm, vertices=len(mesh.vertices), device=str(fusion.device))
    with atomic_file(args.out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    distances = (f"; accuracy {metrics['accuracy_mm']:.2f} mm, completeness {metrics['completeness_mm']:.2f} mm, "
                 f"Chamfer {metrics['chamfer_mm']:.2f} mm") if "chamfer_mm" in metrics else ""
    print(f"fused {len(frames)} frames into {len(mesh.vertices)} vertices{distances}; wrote {args.out}/mesh.ply, "
          "points.ply, render.png, metrics.json")


def _network_poses(args: argparse.Namespace, frames: list[int], gt_poses: dict) -> dict:
    """Camera-to-world poses of `frames` chained from the pose network, started at the first frame's ground-truth
    pose (identity without), translation scaled to the ground-truth path length when there is one."""
    import numpy as np

    from .data.scared import SplitEntry
    from .inference import resolve_device
    from .pose import load_pose_net, pose_units, predict_relative_poses
    from .reconstruct import chain_poses

    if args.pose_weights is None:
        raise DaresError("--poses net needs --pose-weights (official weights folder, a `dares train` run or a pose "
                         ".safetensors)")
    if args.every != 1:
        raise DaresError("--poses net chains consecutive frames: use --every 1 (or --poses gt)")
    encoder, decoder = load_pose_net(args.pose_weights)
    steps = [SplitEntry(args.keyframe, f, "l") for f in frames[:-1]]  # pairs (f, f + 1)
    relative = predict_relative_poses(encoder, decoder, args.data, steps, pose_units(args.pose_weights).input_size,
                                      resolve_device(args.device))
    if gt_poses:
        gt_steps = [np.linalg.norm(gt_poses[b][:3, 3] - gt_poses[a][:3, 3]) for a, b in zip(frames, frames[1:])]
        relative[:, :3, 3] *= sum(gt_steps) / max(np.linalg.norm(relative[:, :3, 3], axis=1).sum(), 1e-12)
    chained = chain_poses(relative, gt_poses.get(frames[0]))
    return dict(zip(frames, chained))


def _add_reconstruct(sub) -> None:
    p = sub.add_parser("reconstruct", help="3D from depth: the official per-frame clouds, or a sequence fused (TSDF)",
                       description="--protocol official: point clouds of splits/endovis/3d_reconstruction.txt exactly "
                                   "as evaluate_3d_reconstruction.py. fused (default): a keyframe's depth integrated "
                                   "into a TSDF with ground-truth or pose-network poses; a mesh, points, a render and, "
                                   "with ground truth, accuracy/completeness/Chamfer in mm.")
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
    p.set_defaults(func=cmd_reconstruct)


def cmd_prepare_scared(args: argparse.Namespace) -> None:
    from .data.prepare import SPLITS, prepare_scared, raw_keyframes

    if not args.src.is_dir():
        raise DaresError(f"--src {args.src} is not a folder: give the SCARED download (dataset_N/keyframe_M/...)")
    total = len(raw_keyframes(args.src))
    with progress_bar(total, "keyframes") as bar:
        report = prepare_scared(args.src, args.dst, args.splits or SPLITS, progress=bar.update)
    print(f"converted {len(report.converted)}, already done {len(report.already_done)}, skipped {len(report.skipped)}"
          f", failed {len(report.failed)}")
    for line in report.skipped:
        print(f"  skipped {line}")
    for line in report.failed:
        print(f"  failed {line}")
    print(report.gt_export)
    if report.failed:
        raise DaresError(f"{len(report.failed)} keyframe(s) failed (listed above): mend or replace their files and "
                         "run again (finished keyframes are kept)")


def add_recording_options(p) -> None:
    """--out, --name, --min-motion, --block, --val-every and --force of `dares prepare-bag` and `prepare-video`."""
    p.add_argument("--out", type=Path, required=True, help="data root: the recording goes to OUT/NAME")
    p.add_argument("--name", default=None, help="the recording's folder name (default: the source's name)")
    p.add_argument("--min-motion", type=POSITIVE_FLOAT, default=2.0,
                   help="pixels of median image motion a frame needs since the last kept one (default 2)")
    p.add_argument("--block", type=POSITIVE_INT, default=50, help="frames per split block (default 50)")
    p.add_argument("--val-every", type=POSITIVE_INT, default=5,
                   help="every Nth block is validation (default 5: 20 %%)")
    p.add_argument("--force", action="store_true", help="prepare a recording of this name again")


def recording_options(args: argparse.Namespace):
    from .data.recording import RecordingOptions

    return RecordingOptions(args.min_motion, args.block, args.val_every)


def print_recording(report, data: Path, note: str = "") -> None:
    """What `dares prepare-*` kept, and how to train on it."""
    print(report.summary() + note)
    print(f"train on it: dares train --data {data} --set split_dir={data / 'splits' / 'own'} --set "
          "intrinsics=calibration")


def cmd_prepare_video(args: argparse.Namespace) -> None:
    from .data.recording import prepare_recording, video_recording

    if not args.calibration:
        raise DaresError(f"{args.video}: give --calibration FILE: a video carries no calibration, and rectified "
                         "frames and metric depth need it (an OpenCV YAML, a ROS camera_info YAML, or SCARED's "
                         "endoscope_calibration.yaml)")
    frames, calibration = video_recording(args.video, args.calibration, args.stereo)
    with progress_bar(None, "frames") as bar:
        report = prepare_recording(frames, calibration, args.out, args.name or Path(args.video).stem,
                                   str(Path(args.video).resolve()), None, recording_options(args), args.force,
                                   bar.update)
    print_recording(report, args.out)


def _add_prepare_video(sub) -> None:
    p = sub.add_parser("prepare-video", help="a video of your endoscope -> frames, calibration and splits that "
                                             "`dares train` reads",
                       description="Frames of one or both eyes (side by side or over/under), rectified with the "
                                   "calibration, only frames with camera motion, and DATA/splits/own/ with "
                                   "validation blocks kept apart from training in time.")
    p.add_argument("video", type=Path, help="a video file OpenCV reads (mp4, avi, mkv, ...)")
    p.add_argument("--calibration", type=Path, nargs="+", default=None, metavar="FILE",
                   help="an OpenCV calibration YAML (one camera, or a stereo pair: M1 D1 M2 D2 R T, T in mm), "
                        "SCARED's endoscope_calibration.yaml, or ROS camera_info YAMLs (left right)")
    p.add_argument("--stereo", choices=STEREO_LAYOUTS, default="side-by-side",
                   help="how each frame holds the eyes (default side-by-side)")
    add_recording_options(p)
    p.set_defaults(func=cmd_prepare_video)


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare-scared", help="convert the SCARED download into the layout DARES reads",
                       description="Extract frames (left/right), ground truth, poses and calibration; resumable.")
    p.add_argument("--src", type=Path, required=True, help="the SCARED download (holding dataset_N/keyframe_M)")
    p.add_argument("--dst", type=Path, required=True, help="output data root (datasetN/keyframeM/image_02/...)")
    p.add_argument("--splits", type=Path, default=None, help="split lists to use (default: the shipped endovis lists)")
    p.set_defaults(func=cmd_prepare_scared)


def cmd_train(args: argparse.Namespace) -> None:
    import shutil

    import yaml

    from .files import RUN_ENTRIES, check_output_folder, ensure_writable_output, foreign_entries
    from .train import TrainConfig, run_training

    overrides = {"data": str(args.data) if args.data else None, "out": str(args.out) if args.out else None,
                 "num_epochs": args.epochs, "batch_size": args.batch_size, "device": args.device,
                 "precision": args.precision, "weights": str(args.weights) if args.weights else None,
                 "af_weights": str(args.af_weights) if args.af_weights else None,
                 "train_backbone": True if args.train_backbone else None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise DaresError(f"--set takes key=value, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise DaresError(f"--set {item}: the value is not valid YAML (quote text, write lists as [a, b])") from None
    if args.resume is not None and not (args.resume.is_file() or (args.resume / "config.yaml").is_file()):
        raise DaresError(f"--resume {args.resume}: no run there; give a run folder (holding config.yaml) or a "
                         "checkpoint .pt")
    if args.resume is not None and (args.resume / "config.yaml").is_file():  # a run folder resumes in place
        base = {**yaml.safe_load((args.resume / "config.yaml").read_text()), "out": str(args.resume.resolve())}
        cfg = TrainConfig.from_sources(None, {**base, **{k: v for k, v in overrides.items() if v is not None}})
    else:
        cfg = TrainConfig.from_sources(args.config, overrides)
    out = Path(cfg.out)
    check_output_folder(out, force=True)  # before any model is built: a folder, writable (room: Trainer.fit)
    if args.resume is None and out.exists() and any(out.iterdir()):
        foreign = foreign_entries(out, RUN_ENTRIES)
        if foreign:  # never a run's folder: no --force deletes it
            raise DaresError(f"{out} holds {', '.join(foreign[:3])}, which this command did not write: choose another "
                             "--out (--force replaces only an earlier run)")
        if not args.force:
            raise DaresError(f"{out} already holds a run: pass --resume {out} to continue it, another --out, or "
                             f"--force to start over")
        ensure_writable_output(out, True, RUN_ENTRIES)  # only an earlier run is deleted, never other files
        shutil.rmtree(out)
    summary = run_training(cfg, args.resume)
    made = (f"export the pose networks: dares export --network pose --weights {out} --out pose.safetensors"
            if cfg.pose_only else f"depth model: {out / 'depth_model.safetensors'}")
    why = " (the val split has no ground truth: the self-supervised error)" if summary["score"] == "photometric" else ""
    best = (f"best epoch by val {summary['score']}{why}: {summary['best']:.4f}" if summary["score"] else
            "no val split: the last epoch is the model")
    print(f"trained to epoch {summary['epoch']} (step {summary['step']}); {best}; {made}")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="self-supervised DARES training (config file + overrides)",
                       description="Train DARES on a SCARED-layout folder. Defaults are the official options; "
                                   "see dares_core/train.py TrainConfig for every key usable in --config or --set.")
    p.add_argument("--config", type=Path, default=None, help="YAML of TrainConfig keys")
    p.add_argument("--data", type=Path, default=None, help="data root (datasetN/keyframeM/...)")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder: config.yaml, checkpoints/, tb/, depth_model.safetensors")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None, help="number of epochs (official 20)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None, help="global batch size (official 12)")
    p.add_argument("--weights", type=Path, default=None, help="initial depth weights (DAv2 folder/.pth or DARES)")
    p.add_argument("--af-weights", type=Path, default=None, help="folder of AF-SfMLearner pose/position/transform .pth")
    p.add_argument("--train-backbone", action="store_true", help="train the whole network (from-scratch runs)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when present, else cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="mixed precision")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any TrainConfig key, YAML value")
    p.add_argument("--resume", type=Path, default=None, help="continue a run folder (or a checkpoint .pt) exactly")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=cmd_train)


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export, export_pose

    if args.network == "pose":
        if args.format not in (None, "safetensors") or args.base_weights:
            raise DaresError("--network pose writes safetensors from --weights alone: drop --format/--base-weights")
        result = export_pose(args.weights, args.out, args.force)
    else:
        result = export(args.weights, args.out, args.format or "onnx", args.height, args.width, args.base_weights,
                        args.force, args.opset)
    check = f", onnxruntime max |diff| {result['max_abs_diff']:.1e}" if result.get("max_abs_diff") is not None else ""
    print(f"wrote {result['path']} ({result['format']}{check})")


def _add_export(sub) -> None:
    from .names import EXPORT_FORMATS

    p = sub.add_parser("export", help="deployment artifacts: ONNX, torch.export .pt2, merged safetensors",
                       description="Merge LoRA, keep the full-resolution head and write a deployment artifact; or "
                                   "write the pose networks of a run as one safetensors (--network pose).")
    add_weights_options(p)
    add_network_options(p, compute=False)
    p.add_argument("--network", choices=("depth", "pose"), default="depth",
                   help="depth (default), or pose: the pose encoder and decoder of a run folder, a checkpoint or an "
                        "official folder, for the odometry node and `dares pose`")
    p.add_argument("--format", choices=EXPORT_FORMATS, default=None, help="artifact format (default onnx)")
    p.add_argument("--out", type=Path, required=True, help="output file")
    p.add_argument("--opset", type=POSITIVE_INT, default=17, help="ONNX opset, 14 to 20 (default 17)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_export)


def cmd_bench_model(args: argparse.Namespace) -> None:
    from .bench import bench_model, result_name

    record = bench_model(args.encoder, args.height, args.width, args.batch, args.device, args.precision,
                         args.rounds, args.calls, args.weights, args.compile)
    path = publish_result(args, result_name(record, "encoder", "input", "batch", "precision"), record)
    print(f"reference {record['paths']['reference']['median_ms']} ms; " + "; ".join(
        f"{label} {m['median_ms']} ms ({m['throughput_fps']} fps, {m['speedup']}x, max |disparity diff| "
        f"{m['max_abs_diff_disparity']:.2e})" for label, m in record["paths"].items() if label != "reference")
        + f"; wrote {path}")


def cmd_bench_train(args: argparse.Namespace) -> None:
    from .bench import bench_train, result_name

    record = bench_train(args.encoder, args.height, args.width, args.batch, args.device, args.precision, args.steps,
                         data=args.data)
    path = publish_result(args, result_name(record, "encoder", "input", "batch", "precision"), record)
    step = record["paths"]["train step"]
    print(f"training: {step['throughput_fps']} images/s ({step['median_ms']} ms per step of {args.batch}); "
          f"wrote {path}")


def cmd_bench_resize(args: argparse.Namespace) -> None:
    from .bench import bench_resize

    record = bench_resize(args.weights, args.width, args.height, tuple(args.seeds), args.device)
    name = f"resize-{Path(record['settings']['model']).stem}-{args.width}x{args.height}"
    path = publish_result(args, name, record)
    m = record["paths"]["on-device resize vs official"]
    print(f"on-device resize vs official: relative depth median {m['median_rel_depth']:.2e}, p99 "
          f"{m['p99_rel_depth']:.2e}, max {m['max_rel_depth']:.2e}; wrote {path}")


def cmd_bench_stereo_scale(args: argparse.Namespace) -> None:
    from .bench import bench_stereo_scale

    record = bench_stereo_scale(args.weights, args.width, args.height, args.frames, tuple(args.seeds), args.rate)
    name = f"stereo-scale-{Path(record['settings']['model']).stem}-{args.width}x{args.height}"
    path = publish_result(args, name, record)
    for label, m in record["paths"].items():
        print(f"stereo scale, {label}: median error {m['median_error']:+.2%}, mean abs {m['mean_abs_error']:.2%} "
              f"over {m['frames']} frames, {m['frame_path_ms']:.1f} ms a frame on the frame path")
    print(f"wrote {path}")


def cmd_bench_temporal(args: argparse.Namespace) -> None:
    from .bench import bench_temporal, check_bench_output
    from .model.weights import DEMO_MODEL

    name = f"temporal-{Path(args.weights or DEMO_MODEL).stem}-{args.width}x{args.height}"
    check_bench_output(args.out, args.force, name)
    record = bench_temporal(args.weights, args.pose_weights, args.width, args.height, args.frames, tuple(args.seeds))
    print_stability(record, publish_result(args, name, record))


def print_stability(record: dict, path: Path) -> None:
    """A temporal benchmark's figures per seed and their mean, plain -> stabilised, and where they were written."""
    for seed, m in [*record["seeds"].items(), ("mean", record["paths"])]:
        print(f"seed {seed}: TAE {m['plain']['tae']:.4f} -> {m['stabilised']['tae']:.4f} (floor "
              f"{m['plain']['tae_floor']:.4f}), AbsRel {m['plain']['abs_rel']:.4f} -> {m['stabilised']['abs_rel']:.4f}")
    print(f"wrote {path}")


def cmd_bench_fusion(args: argparse.Namespace) -> None:
    from .bench import bench_fusion, result_name

    record = bench_fusion(args.width, args.height, args.frames, args.voxel_mm, args.device)
    path = publish_result(args, result_name(record, "frames", "voxel_mm"), record)
    m = record["paths"]["tsdf integrate"]
    print(f"fusion: {m['throughput_fps']} frames/s ({m['median_ms']} ms per frame), mesh extraction "
          f"{m['extract_mesh_s']} s; wrote {path}")


def _add_bench(sub) -> argparse._SubParsersAction:
    bench = sub.add_parser("bench", help="benchmarks that write bench/results/*.json and docs/benchmarks.md",
                           description="Measure our paths against the reference path and publish the figures.")
    kinds = bench.add_subparsers(dest="bench", metavar="KIND", required=True)
    p = kinds.add_parser("model", help="the depth network alone: our deployment path vs the official-style path")
    p.add_argument("--encoder", default="vits", choices=ENCODERS, help="ViT size (random weights)")
    p.add_argument("--weights", type=Path, default=None, help="benchmark this checkpoint instead of random weights")
    add_network_options(p, compute=False)
    p.add_argument("--batch", type=POSITIVE_INT, default=1, help="frames per call (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="our path's precision")
    p.add_argument("--rounds", type=POSITIVE_INT, default=10, help="interleaved rounds (default 10)")
    p.add_argument("--calls", type=POSITIVE_INT, default=5, help="calls per path per round (default 5)")
    p.add_argument("--compile", action="store_true", help="also measure our path through torch.compile")
    add_bench_output_options(p)
    p.set_defaults(func=cmd_bench_model)
    p = kinds.add_parser("train", help="training throughput (images/s) of the DARES two-step training step")
    p.add_argument("--encoder", default="vits", choices=ENCODERS, help="ViT size (random weights)")
    p.add_argument("--height", type=POSITIVE_INT, default=256, help="training height (default 256)")
    p.add_argument("--width", type=POSITIVE_INT, default=320, help="training width (default 320)")
    p.add_argument("--batch", type=POSITIVE_INT, default=12, help="batch size (official 12)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="training precision")
    p.add_argument("--steps", type=POSITIVE_INT, default=5, help="measured steps (default 5)")
    p.add_argument("--data", type=Path, default=None,
                   help="train on this data folder (`dares synth` / `dares prepare-scared` layout) instead of a "
                        "generated scene")
    add_bench_output_options(p)
    p.set_defaults(func=cmd_bench_train)
    p = kinds.add_parser("resize", help="the node's on-device resize against the official preprocessing (depth)")
    p.add_argument("--weights", type=Path, default=None, help="the model (default: the demo model)")
    p.add_argument("--width", type=POSITIVE_INT, default=1280, help="frame width (default 1280, as SCARED)")
    p.add_argument("--height", type=POSITIVE_INT, default=1024, help="frame height (default 1024)")
    p.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103], help="synthetic scenes (2 frames each)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_bench_output_options(p)
    p.set_defaults(func=cmd_bench_resize)
    p = kinds.add_parser("stereo-scale", help="the node's stereo scale against ground truth: sparse matches of every "
                                              "frame, SGBM on every frame, and SGBM from its worker at stereo_rate")
    p.add_argument("--weights", type=Path, default=None, help="the model (default: the demo model)")
    p.add_argument("--width", type=POSITIVE_INT, default=320, help="frame width (default 320, the demo's)")
    p.add_argument("--height", type=POSITIVE_INT, default=256, help="frame height (default 256)")
    p.add_argument("--frames", type=POSITIVE_INT, default=40, help="frames per scene (default 40, the demo's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105], help="synthetic scenes")
    p.add_argument("--rate", type=POSITIVE_FLOAT, default=5.0,
                   help="the SGBM worker's stereo_rate (default 5, the node's)")
    add_bench_output_options(p)
    p.set_defaults(func=cmd_bench_stereo_scale)
    p = kinds.add_parser("temporal", help="TAE and AbsRel of dares infer --temporal (its defaults) against plain "
                                          "depth, on synthetic scenes")
    p.add_argument("--weights", type=Path, default=None, help="the depth model (default: the demo model)")
    p.add_argument("--pose-weights", type=Path, default=None, help="the pose network (default: the demo's)")
    p.add_argument("--width", type=POSITIVE_INT, default=320, help="frame width (default 320)")
    p.add_argument("--height", type=POSITIVE_INT, default=256, help="frame height (default 256)")
    p.add_argument("--frames", type=POSITIVE_INT, default=20, help="frames per scene (default 20)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(121, 131)),
                   help="synthetic scenes (default 121-130: the stabiliser's defaults were chosen on 41-50)")
    add_bench_output_options(p)
    p.set_defaults(func=cmd_bench_temporal)
    p = kinds.add_parser("fusion", help="TSDF fusion throughput (frames/s) of dares reconstruct")
    p.add_argument("--width", type=POSITIVE_INT, default=320, help="frame width (default 320)")
    p.add_argument("--height", type=POSITIVE_INT, default=256, help="frame height (default 256)")
    p.add_argument("--frames", type=POSITIVE_INT, default=20, help="frames integrated (default 20)")
    p.add_argument("--voxel-mm", type=POSITIVE_FLOAT, default=1.0, help="voxel edge in mm (default 1)")
    p.add_argument("--device", default=None, help="open3d device, e.g. CPU:0 or CUDA:0 (default: CUDA when present)")
    add_bench_output_options(p)
    p.set_defaults(func=cmd_bench_fusion)
    return kinds


def _add_plugins(groups: dict) -> None:
    """Subcommands of other packages (dares_ros: the node benchmark, bags) via the `dares.commands` entry points."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="dares.commands"):
        ep.load()(groups)


class Parser(argparse.ArgumentParser):
    """argparse with one line for a bad command line, as every other error: the problem and where help is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dares", description="DARES depth estimation for endoscopy.")
    parser.add_argument("--version", action="version", version=f"dares {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_synth(sub)
    _add_prepare(sub)
    _add_prepare_video(sub)
    _add_infer(sub)
    _add_eval(sub)
    _add_pose(sub)
    _add_reconstruct(sub)
    _add_train(sub)
    _add_export(sub)
    bench = _add_bench(sub)
    _add_plugins({"root": sub, "bench": bench})
    return parser


class Terminated(Exception):
    """SIGTERM, raised where the program is so that unfinished outputs are cleaned up as on Ctrl-C."""


def _terminate(*_) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # commands that end cleanly on a signal (bag record) set their own
    try:
        if args.command == "bench":  # where the result goes is checked before anything is measured
            from .bench import check_bench_output

            check_bench_output(args.out, args.force)
        args.func(args)
    except DaresError as e:
        print(f"dares {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as e:
        print(f"dares {args.command}: interrupted; nothing partial was left", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as a SIGPIPE'd tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
