"""`dares pose`: camera motion from the pose network over a sequence, scored as official evaluate_pose.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DaresError
from .options import FORCE_INTO_FOLDER, POSITIVE_INT, progress_bar

NAME = "pose"
HELP = "camera motion from the pose network, scored as official evaluate_pose.py"
DESCRIPTION = ("Predict relative poses over a sequence, write them in the official .npz format, score ATE and RE "
               "against ground truth and plot both trajectories.")


def add_arguments(p) -> None:
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


def run(args: argparse.Namespace) -> None:
    import numpy as np

    from ..evaluate import evaluate_pose
    from ..files import POSE_ENTRIES, atomic_file, check_output_folder, write_npz
    from ..inference import resolve_device
    from ..pose import (
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
    network = load_pose_net(args.weights)
    units = pose_units(args.weights)
    size = (args.height or units.input_size[0], args.width or units.input_size[1])
    with progress_bar(len(entries), "pose") as bar:
        predicted = predict_relative_poses(network, args.data, entries, size,
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
