"""The shipped demo model: trained by `dares train` on synthetic scenes, it must beat the median-scaled
constant-depth baseline by at least 2x on synthetic scenes it never saw."""

import numpy as np
import torch

from dares_core.data.scared import gt_path, image_path, read_gt_depth, read_split
from dares_core.data.synthetic import SynthConfig, generate
from dares_core.evaluate import evaluate_depth
from dares_core.inference import DepthPredictor
from dares_core.model.weights import DEMO_MODEL, load_depth_net
from dares_core.preprocess import read_rgb


def test_demo_model_beats_constant_depth_by_2x_on_unseen_scenes(tmp_path):
    assert DEMO_MODEL.is_file() and DEMO_MODEL.stat().st_size < 5 * 2**20  # a few MB at most, shipped
    net = load_depth_net(DEMO_MODEL)
    assert net.config.merged or not net.config.has_adapters
    root = generate(SynthConfig(width=128, height=96, frames=6, sequences=3, seed=11), tmp_path / "unseen")
    splits = root / "splits" / "synthetic"
    entries = read_split(splits / "test_files.txt") + read_split(splits / "val_files.txt")
    predictor = DepthPredictor(net, (64, 96))
    images = torch.from_numpy(np.stack([read_rgb(image_path(root, e.folder, e.frame)) for e in entries]))
    disps = predictor.predict(images).disparity.numpy()
    gts = [read_gt_depth(gt_path(root, e.folder, e.frame)) for e in entries]
    ours = evaluate_depth(disps, gts).mean["abs_rel"]
    constant = evaluate_depth(np.ones_like(disps), gts).mean["abs_rel"]
    assert ours <= 0.5 * constant, (ours, constant)
