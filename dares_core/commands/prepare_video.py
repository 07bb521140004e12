"""`dares prepare-video`: a video of your endoscope into frames, calibration and splits that `dares train` reads."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DaresError
from ..names import STEREO_LAYOUTS
from .options import add_recording_options, print_recording, progress_bar, recording_options

NAME = "prepare-video"
HELP = "a video of your endoscope -> frames, calibration and splits that `dares train` reads"
DESCRIPTION = ("Frames of one or both eyes (side by side or over/under), rectified with the calibration, only frames "
               "with camera motion, and DATA/splits/own/ with validation blocks kept apart from training in time.")


def add_arguments(p) -> None:
    p.add_argument("video", type=Path, help="a video file OpenCV reads (mp4, avi, mkv, ...)")
    p.add_argument("--calibration", type=Path, nargs="+", default=None, metavar="FILE",
                   help="an OpenCV calibration YAML (one camera, or a stereo pair: M1 D1 M2 D2 R T, T in mm), "
                        "SCARED's endoscope_calibration.yaml, or ROS camera_info YAMLs (left right)")
    p.add_argument("--stereo", choices=STEREO_LAYOUTS, default="side-by-side",
                   help="how each frame holds the eyes (default side-by-side)")
    add_recording_options(p)


def run(args: argparse.Namespace) -> None:
    from ..data.recording import prepare_recording, video_recording

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
