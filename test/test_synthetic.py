"""The synthetic scenes: layout, determinism, exact geometry (tissue and instruments), checked by reprojection."""

import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from dares_core.data.scared import gt_path, image_path, instrument_mask_path, read_gt_depth, read_split
from dares_core.data.synthetic import Sequence, SynthConfig, generate, sequence_folder
from dares_core.geometry import warp_to_target

CFG = SynthConfig(width=192, height=160, frames=6, sequences=3, seed=7)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate(CFG, tmp_path_factory.mktemp("synth") / "scenes")


def load_rgb(path):
    return torch.from_numpy(cv2.imread(str(path))[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255


def test_layout_splits_and_ground_truth(scenes):
    for s in range(CFG.sequences):
        folder = sequence_folder(s)
        for frame in range(1, CFG.frames + 1):
            for side in "lr":
                img = cv2.imread(str(image_path(scenes, folder, frame, side)))
                assert img.shape == (CFG.height, CFG.width, 3)
            depth = read_gt_depth(gt_path(scenes, folder, frame))
            assert depth.shape == (CFG.height, CFG.width)
            assert 15 < depth.min() and depth.max() < 260  # mm: instruments and folds near, the lumen's end far
            assert np.percentile(depth, 95) > 3 * np.percentile(depth, 5)  # relief, not a wall
            mask = cv2.imread(str(instrument_mask_path(scenes, folder, frame)), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (CFG.height, CFG.width) and set(np.unique(mask)) <= {0, 255}
        poses = np.load(scenes / folder / "camera_poses.npz")
        assert poses["poses"].shape == (CFG.frames, 4, 4)
        calib = yaml.safe_load((scenes / folder / "calibration.yaml").read_text())
        assert calib["baseline_mm"] == CFG.baseline_mm
        assert calib["P_right"][0][3] == pytest.approx(-calib["K"][0][0] * CFG.baseline_mm)
    split = scenes / "splits" / "synthetic"
    train, val, test = (read_split(split / f"{n}_files.txt") for n in ("train", "val", "test"))
    assert {e.folder for e in test} == {sequence_folder(2)} and {e.folder for e in val} == {sequence_folder(1)}
    assert [e.frame for e in train] == list(range(2, CFG.frames))
    gt = np.load(split / "gt_depths.npz")["data"]
    assert gt.shape == (CFG.frames, CFG.height, CFG.width) and gt.dtype == np.float32
    assert json.loads((scenes / "scene.json").read_text())["config"]["seed"] == CFG.seed


def test_same_seed_same_scene_and_other_seed_differs(tmp_path):
    small = SynthConfig(width=48, height=40, frames=3, sequences=1, seed=3)
    a = generate(small, tmp_path / "a")
    b = generate(small, tmp_path / "b")
    c = generate(SynthConfig(width=48, height=40, frames=3, sequences=1, seed=4), tmp_path / "c")
    rel = image_path(".", sequence_folder(0), 2).as_posix()
    assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / rel).read_bytes() != (c / rel).read_bytes()


@pytest.mark.parametrize("gap", [1, 3])
def test_temporal_reprojection_reproduces_a_later_frame(scenes, gap):
    folder = sequence_folder(0)
    K = torch.tensor(CFG.intrinsics(), dtype=torch.float32)[None]
    poses = np.load(scenes / folder / "camera_poses.npz")["poses"]
    target, source = load_rgb(image_path(scenes, folder, 2)), load_rgb(image_path(scenes, folder, 2 + gap))
    depth = torch.from_numpy(read_gt_depth(gt_path(scenes, folder, 2)))[None, None]
    tissue = torch.from_numpy(load_mask(scenes, folder, 2) == 0)[None, None]  # instruments move on their own

    def error(T_source_from_target):
        warped, mask = warp_to_target(source, depth, K, torch.tensor(T_source_from_target, dtype=torch.float32)[None])
        mask = mask * tissue
        return ((warped - target).abs().mean(1, keepdim=True) * mask).sum() / mask.sum()

    true_rel = np.linalg.inv(poses[1 + gap]) @ poses[1]
    wrong_rel = true_rel.copy()
    wrong_rel[:3, 3] += np.array([1.0, -1.0, 0.0])  # 1.4 mm off
    err_true = error(true_rel)
    assert err_true < 0.02
    assert err_true < 0.4 * error(wrong_rel)
    if gap > 1:  # over a few frames the camera has moved clearly
        assert err_true < 0.5 * error(np.eye(4))


def load_mask(root, folder, frame):
    return cv2.imread(str(instrument_mask_path(root, folder, frame)), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("region", ["everywhere", "instruments"])
def test_stereo_disparity_is_focal_times_baseline_over_depth(scenes, region):
    folder = sequence_folder(1)
    K = torch.tensor(CFG.intrinsics(), dtype=torch.float32)[None]
    left, right = load_rgb(image_path(scenes, folder, 2, "l")), load_rgb(image_path(scenes, folder, 2, "r"))
    depth = torch.from_numpy(read_gt_depth(gt_path(scenes, folder, 2)))[None, None]
    instruments = load_mask(scenes, folder, 2) > 0
    assert instruments.mean() > 0.02  # the sequence has an instrument in view
    keep = torch.from_numpy(instruments if region == "instruments" else np.ones_like(instruments))[None, None]
    keep = keep & torch.from_numpy(cv2.erode(instruments.astype(np.uint8), np.ones((5, 5))) > 0 if
                                   region == "instruments" else np.ones_like(instruments))[None, None]

    def error(baseline_mm):
        T_right_from_left = torch.eye(4)[None]
        T_right_from_left[0, 0, 3] = -baseline_mm  # the right eye sits at +B along x
        warped, mask = warp_to_target(right, depth, K, T_right_from_left)
        mask = mask * keep
        return ((warped - left).abs().mean(1, keepdim=True) * mask).sum() / mask.sum()

    assert error(CFG.baseline_mm) < 0.03
    assert error(CFG.baseline_mm) < 0.5 * error(CFG.baseline_mm * 1.5)
    assert error(CFG.baseline_mm) < 0.5 * error(CFG.baseline_mm * 0.5)


def test_ground_truth_is_exact_on_tissue_and_instruments(scenes):
    """Every pixel's ground-truth point lies on the surface it shows: instrument-mask pixels on an instrument,
    the others on the lumen (distances to the meshes the sequence is made of, redrawn from its seed)."""
    import open3d as o3d

    for index in range(CFG.sequences):
        sequence = Sequence.draw(CFG, index)
        for frame in (1, CFG.frames):
            xyz = cv2.imread(str(gt_path(scenes, sequence_folder(index), frame)),
                             cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)[..., ::-1].reshape(-1, 3).astype(np.float64)
            T = sequence.poses[frame - 1]
            world = xyz @ T[:3, :3].T + T[:3, 3]
            on_instrument = load_mask(scenes, sequence_folder(index), frame).reshape(-1) > 0
            for surfaces, points in ((sequence.instrument_meshes((frame - 1) / CFG.fps), world[on_instrument]),
                                     ([sequence.lumen.mesh], world[~on_instrument])):
                if not len(points):
                    continue
                scene = o3d.t.geometry.RaycastingScene()
                for mesh in surfaces:
                    scene.add_triangles(mesh)
                distance = scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()
                assert distance.max() < 0.01  # mm


def test_instruments_move_and_their_jaws_open(scenes):
    folder = sequence_folder(0)
    first, last = load_mask(scenes, folder, 1) > 0, load_mask(scenes, folder, CFG.frames) > 0
    assert first.any() and last.any() and (first != last).mean() > 0.002
