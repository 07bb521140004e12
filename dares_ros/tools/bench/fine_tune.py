"""`dares bench fine-tune`: docs/own-endoscope.md's loop measured on a scope the built-in model never saw.

A 16:9 wide-angle stereo scope (SCOPE) is recorded as a bag (compressed images, camera_info, poses) prepared by
prepare-bag, or as a side-by-side MJPG video with an OpenCV stereo calibration prepared by prepare-video, and the
built-in model is fine-tuned on it as `dares train` does, self-supervised (no ground truth is
read). Both models are then judged against the ground truth of scenes of other seeds from the same scope, each at
its own input size, as `dares eval` judges them (SCARED metrics, median-scaled).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from dares_core.bench.results import machine
from dares_core.data.recording import RecordingOptions, prepare_recording, video_recording
from dares_core.data.scared import default_split_dir
from dares_core.data.synthetic import (
    SynthConfig,
    generate,
    sequence_folder,
    write_opencv_stereo_calibration,
    write_stereo_video,
)
from dares_core.evaluate import evaluate_depth, load_npz_data, predict_split_disparities
from dares_core.inference import DepthPredictor
from dares_core.model.weights import DEMO_MODEL, load_depth_net
from dares_core.train import TrainConfig, run_training

from ..bag import write_sequence_bag
from ..bag.prepare import prepare_bag

SCOPE = {"width": 320, "height": 180, "fx_norm": 0.55, "fy_norm": 0.55 * 320 / 180}  # 16:9, wider than SCARED's
# the fine-tuning run: stereo self-supervision at the built-in model's input size, with the scope's own intrinsics
# and the built-in model's nominal baseline (its depth unit), as docs/demo_model.md trains it, without ground truth
FINE_TUNE = {"frame_ids": [0], "stereo": True, "stereo_baseline": 0.025, "intrinsics": "calibration",
             "batch_size": 4, "num_workers": 0, "device": "cpu"}


def abs_rel(weights: Path, scenes: Path) -> float:
    """Median-scaled AbsRel of a model on the test split of a `dares synth` folder, at the model's own input size."""
    split = default_split_dir(scenes)
    predictor = DepthPredictor(load_depth_net(weights))
    disparities = predict_split_disparities(predictor, scenes, split / "test_files.txt")
    gt = load_npz_data(split / "gt_depths.npz", "ground-truth depths", "(N,H,W) depths in mm")
    return float(evaluate_depth(disparities, gt).mean["abs_rel"])


def bench_fine_tune(recordings: tuple[int, ...] = (510, 511, 512), frames: int = 300,
                    test_seeds: tuple[int, ...] = (611, 612, 613, 614, 615), epochs: int = 8, height: int = 128,
                    width: int = 160, max_steps: int = 0, source: str = "bag") -> dict:
    """Record `recordings` (seeds) of `frames` frames each as `source` (one of names.FINE_TUNE_SOURCES), prepare,
    fine-tune the built-in model for `epochs` at height x width (max_steps per epoch, 0: all), and score both models
    on the test scenes of `test_seeds`."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp, kept = Path(tmp), 0
        for seed in recordings:
            cfg = SynthConfig(frames=frames, sequences=1, seed=seed, **SCOPE)
            keyframe = generate(cfg, tmp / f"scene_{seed}") / sequence_folder(0)
            if source == "bag":
                bag = tmp / f"scope_{seed}"
                write_sequence_bag(keyframe, bag, compressed=True)
                report, _ = prepare_bag(bag, tmp / "data")
            else:
                video = write_stereo_video(keyframe, tmp / f"scope_{seed}.avi", cfg.fps)
                calibration = write_opencv_stereo_calibration(tmp / f"stereo_{seed}.yaml", cfg.intrinsics(),
                                                              cfg.baseline_mm)
                report = prepare_recording(*video_recording(video, [calibration], "side-by-side"), tmp / "data",
                                           video.stem, str(video), None, RecordingOptions(), False)
            kept += report.kept
        start = time.monotonic()
        run = tmp / "run"
        run_training(TrainConfig(data=str(tmp / "data"), out=str(run), weights=str(DEMO_MODEL), height=height,
                                 width=width, num_epochs=epochs, max_steps_per_epoch=max_steps, **FINE_TUNE),
                     progress=False)
        train_s = time.monotonic() - start
        scores = {}
        for seed in test_seeds:
            scenes = generate(SynthConfig(frames=40, sequences=3, seed=seed, **SCOPE), tmp / f"test_{seed}")
            scores[seed] = {"start": round(abs_rel(DEMO_MODEL, scenes), 4),
                            "fine_tuned": round(abs_rel(run / "depth_model.safetensors", scenes), 4)}
    fps = SynthConfig().fps
    return {"benchmark": "fine-tune", "machine": machine(torch.device("cpu")),
            "settings": {"scope": f"{SCOPE['width']}x{SCOPE['height']} fx {SCOPE['fx_norm']:g}", "source": source,
                         "recordings": list(recordings), "video_s": round(len(recordings) * frames / fps, 1),
                         "epochs": epochs, "network": f"{height}x{width}", "test_seeds": list(test_seeds)},
            "paths": {"built-in model fine-tuned": {"kept_frames": kept, "train_s": round(train_s), "abs_rel": scores}},
            "note": "median-scaled AbsRel on the test scene of each test seed (40 frames of a scope the built-in model "
                    "never saw), before (start) and after (fine_tuned) stereo self-supervised fine-tuning on the "
                    "recordings, prepared from bags by prepare-bag or from side-by-side videos by prepare-video "
                    "(kept_frames: those with camera motion)"}
