"""`dares prepare-bag`: a rosbag2 recorded on the robot into frames, calibration, poses and splits for training."""

from __future__ import annotations

import argparse
from pathlib import Path

from dares_core.commands.options import add_recording_options, print_recording, progress_bar, recording_options

NAME = "prepare-bag"
HELP = "a rosbag2 recorded on the robot -> frames, calibration, poses and splits that `dares train` reads"
DESCRIPTION = ("Frames of one or both eyes (raw ones rectified with their camera_info), calibration.yaml from "
               "camera_info, camera_poses.npz from a pose topic, only frames with camera motion, and DATA/splits/own/ "
               "with validation blocks kept apart from training in time. A recording already prepared is kept.")


def add_arguments(p) -> None:
    p.add_argument("bag", type=Path, help="rosbag2 folder (MCAP or sqlite3; ours or `ros2 bag record`'s)")
    p.add_argument("--left-topic", default=None, help="left images (default: the topic ending in left/image_rect, "
                                                      "left/image_raw or their /compressed)")
    p.add_argument("--right-topic", default=None, help="right images (default: as left; '' for the left eye alone)")
    p.add_argument("--pose-topic", default=None, help="camera poses, PoseStamped or TransformStamped, e.g. "
                                                      "/ECM/measured_cp (default: ground_truth/pose when present)")
    p.add_argument("--hand-eye", type=Path, default=None,
                   help="text file of the 4x4 camera pose in the pose topic's frame (metres; default identity)")
    add_recording_options(p)


def run(args: argparse.Namespace) -> None:
    from ..bag import bag_info
    from ..bag.prepare import prepare_bag

    total = max(t["count"] for t in bag_info(args.bag)["topics"].values())
    with progress_bar(total, "frames") as bar:
        report, unpaired = prepare_bag(args.bag, args.out, args.name, args.left_topic, args.right_topic,
                                       args.pose_topic, args.hand_eye, recording_options(args), args.force,
                                       bar.update)
    print_recording(report, args.out, f"; {unpaired} left frames had no right frame within 5 ms and were left out"
                    if unpaired else "")
