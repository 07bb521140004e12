"""The shipped demo model and its pose network: trained by `dares train` on synthetic scenes (docs/demo_model.md),
judged on scenes from seeds they never saw, at the demo's 320x256 with the model's own input size, as the nodes
run them."""

import numpy as np
import pytest
import torch

from dares_core.data.scared import gt_path, image_path, instrument_mask_path, read_gt_depth
from dares_core.data.synthetic import SynthConfig, generate_sequence, sequence_folder
from dares_core.evaluate import evaluate_depth, evaluate_pose
from dares_core.inference import DepthPredictor
from dares_core.model.weights import DEMO_MODEL, DEMO_POSE, load_depth_net
from dares_core.pose import keyframe_sequence, load_pose_net, pose_units, predict_relative_poses
from dares_core.preprocess import read_rgb

UNSEEN_SEEDS = (31, 32, 33, 34, 35)  # trained on seed 2, developed against 11-15, the demo shows seed 7
FRAMES = (1, 4)
MAX_GT_MM = 150.0  # the SCARED protocol's cap


def ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two 1-D arrays (ties are measure-zero for continuous depth)."""
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


@pytest.fixture(scope="module")
def unseen(tmp_path_factory):
    """Per unseen scene: (predicted depth mm (N,H,W), ground truth mm (N,H,W), instrument masks (N,H,W))."""
    import cv2

    net = load_depth_net(DEMO_MODEL)
    predictor = DepthPredictor(net)
    scenes = []
    for seed in UNSEEN_SEEDS:
        root = tmp_path_factory.mktemp(f"seed{seed}")
        generate_sequence(SynthConfig(width=320, height=256, frames=max(FRAMES), sequences=1, seed=seed), 0, root)
        folder = sequence_folder(0)
        images = torch.from_numpy(np.stack([read_rgb(image_path(root, folder, f)) for f in FRAMES]))
        depth = predictor.predict(images).depth.numpy()
        gt = np.stack([read_gt_depth(gt_path(root, folder, f)) for f in FRAMES])
        masks = np.stack([cv2.imread(str(instrument_mask_path(root, folder, f)), cv2.IMREAD_UNCHANGED) > 0
                          for f in FRAMES])
        scenes.append((depth, gt, masks))
    return scenes


def test_the_shipped_file_is_small_and_merged():
    assert DEMO_MODEL.is_file() and DEMO_MODEL.stat().st_size < 20 * 2**20
    net = load_depth_net(DEMO_MODEL)
    assert net.config.merged or not net.config.has_adapters


def test_abs_rel_is_at_most_a_third_of_a_constant_depths(unseen):
    ours, constant = [], []
    for depth, gt, _ in unseen:
        ours.append(evaluate_depth(1.0 / depth, list(gt)).mean["abs_rel"])
        constant.append(evaluate_depth(np.ones_like(depth), list(gt)).mean["abs_rel"])
    assert np.mean(ours) <= np.mean(constant) / 3, (ours, constant)


@pytest.mark.parametrize("scene", range(len(UNSEEN_SEEDS)))
def test_folds_and_instruments_are_where_the_ground_truth_has_them(unseen, scene):
    """Depth ranks agree with ground truth's over every pixel and over the instruments alone, frame by frame."""
    depth, gt, masks = unseen[scene]
    for d, g, m in zip(depth, gt, masks):
        valid = (g > 1e-3) & (g < MAX_GT_MM)
        assert spearman(d[valid], g[valid]) > 0.8
        assert m.sum() > 100 and spearman(d[m & valid], g[m & valid]) > 0.5


def test_depth_comes_out_in_millimetres(unseen):
    """Without any scaling the model's depth is near the truth: its median within 20 % of ground truth's."""
    for depth, gt, _ in unseen:
        valid = (gt > 1e-3) & (gt < MAX_GT_MM)
        assert 0.8 < np.median(depth[valid]) / np.median(gt[valid]) < 1.25


POSE_SEEDS = UNSEEN_SEEDS
POSE_FRAMES = 16
ATE_OF_STILL = 0.9  # measured 0.77 (docs/demo_model.md); an untrained network scores about 1
PATH_RATIO = (0.5, 2.0)  # measured median 1.30


@pytest.fixture(scope="module")
def unseen_motion(tmp_path_factory):
    """Per unseen scene: the demo pose network's relative poses (N,4,4) at the size it was trained at, translation
    in mm through the demo model's depth unit; and the true ones."""
    network = load_pose_net(DEMO_POSE)
    units = pose_units(DEMO_POSE)
    assert units.unit_mm == load_depth_net(DEMO_MODEL).config.depth_unit_mm  # the depth model's unit
    scenes = []
    for seed in POSE_SEEDS:
        root = tmp_path_factory.mktemp(f"motion{seed}")
        generate_sequence(SynthConfig(width=320, height=256, frames=POSE_FRAMES, sequences=1, seed=seed), 0, root)
        entries, truth = keyframe_sequence(root, sequence_folder(0))
        predicted = predict_relative_poses(network, root, entries, units.input_size)
        predicted[:, :3, 3] *= units.unit_mm
        scenes.append((predicted, truth))
    return scenes


def test_the_pose_network_follows_the_camera(unseen_motion):
    """Official ATE (5-frame snippets, scale-aligned) well below a still camera's, over the unseen scenes."""
    scores = [evaluate_pose(predicted, truth) for predicted, truth in unseen_motion]
    ate, still = np.mean([s["ate_mean"] for s in scores]), np.mean([s["still_ate_mean"] for s in scores])
    assert ate < ATE_OF_STILL * still, (ate, still)


def test_the_pose_network_moves_in_millimetres(unseen_motion):
    """Unscaled, the predicted path is as long as the true one (the depth network's unit)."""
    lengths = [np.linalg.norm(p[:, :3, 3], axis=1).sum() / np.linalg.norm(t[:, :3, 3], axis=1).sum()
               for p, t in unseen_motion]
    assert PATH_RATIO[0] < np.median(lengths) < PATH_RATIO[1], lengths
