"""`dares prepare-scared`: the SCARED challenge download converted into the layout DARES reads."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DaresError
from .options import progress_bar

NAME = "prepare-scared"
HELP = "convert the SCARED download into the layout DARES reads"
DESCRIPTION = "Extract frames (left/right), ground truth, poses and calibration; resumable."


def add_arguments(p) -> None:
    p.add_argument("--src", type=Path, required=True, help="the SCARED download (holding dataset_N/keyframe_M)")
    p.add_argument("--dst", type=Path, required=True, help="output data root (datasetN/keyframeM/image_02/...)")
    p.add_argument("--splits", type=Path, default=None, help="split lists to use (default: the shipped endovis lists)")


def run(args: argparse.Namespace) -> None:
    from ..data.prepare import SPLITS, prepare_scared, raw_keyframes

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
