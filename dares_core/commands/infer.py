"""`dares infer`: depth files (and point clouds) for an image, a folder of images or a video (dares_core/infer.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..names import TEMPORAL_SCALE_WEIGHT, TEMPORAL_TOLERANCE, TEMPORAL_WEIGHT
from .options import POSITIVE_FLOAT, SHARE, add_network_options, add_weights_options

NAME = "infer"
HELP = "predict depth for an image, a folder of images or a video"
DESCRIPTION = "Run a DARES / Depth Anything V2 checkpoint on images and write depth files."


def add_arguments(p) -> None:
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
    p.add_argument("--save-confidence", action="store_true",
                   help="also write NAME_confidence.npy ((H,W) float32 in [0,1], higher more trusted) and "
                        "NAME_confidence.png (8-bit, 255 = 1) per frame: where the depth is least reliable "
                        "(docs/confidence.md; with --temporal, of the network's depth before it is stabilised)")
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


def run(args: argparse.Namespace) -> None:
    from ..infer import run_infer

    run_infer(args)
