"""`dares synth`: procedural stereo endoscopy with exact ground truth, in the SCARED layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import IMAGE_SIDE, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, POSITIVE_INT, progress_bar

NAME = "synth"
HELP = "generate synthetic stereo endoscopy with exact ground truth (SCARED layout)"
DESCRIPTION = ("Render procedural da Vinci-like stereo sequences (a tissue lumen with folds, moving instruments, "
               "endoscope lighting) with ground-truth depth, instrument masks and poses.")


def add_arguments(p) -> None:
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


def run(args: argparse.Namespace) -> None:
    from ..data.synthetic import SynthConfig, generate
    from ..files import SYNTH_ENTRIES, ensure_writable_output

    cfg = SynthConfig(
        width=args.width, height=args.height, frames=args.frames, sequences=args.sequences, seed=args.seed,
        baseline_mm=args.baseline_mm, fps=args.fps, noise=args.noise, instruments=args.instruments,
    )
    cfg.validate()
    ensure_writable_output(args.out, args.force, SYNTH_ENTRIES)
    with progress_bar(cfg.frames * cfg.sequences, "synth") as bar:
        out = generate(cfg, args.out, force=args.force, progress=bar.update)
    print(f"wrote {cfg.sequences} sequence(s) of {cfg.frames} frames at {cfg.width}x{cfg.height} to {out}")
    if cfg.sequences < 3:  # said, not only in --help: a model trained and tested on one sequence scores too well
        print("note: " + ("one sequence is both the train and the test split" if cfg.sequences == 1 else
                          "two sequences give no validation split") + "; 3 or more keep train, val and test apart")
