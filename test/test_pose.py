"""Camera motion: the official ATE/RE on hand-computed cases, the ground-truth convention checked by warping, and
`dares pose` end to end on a synthetic sequence."""

import json

import numpy as np
import pytest
import torch

from dares_core.cli import main
from dares_core.data.scared import gt_path, instrument_mask_path, read_gt_depth
from dares_core.data.synthetic import SynthConfig, generate, sequence_folder
from dares_core.evaluate import evaluate_pose
from dares_core.geometry import backproject, project, sample_at_pixels, transform_points
from dares_core.model.pose_net import PoseDecoder, ResnetEncoder
from dares_core.pose import PoseUnits, keyframe_sequence, official_sequence, pose_units
from dares_core.preprocess import read_rgb

CFG = SynthConfig(width=192, height=160, frames=8, sequences=1, seed=21)


def rotation_z(angle: float) -> np.ndarray:
    T = np.eye(4)
    T[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return T


def translation(x: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = x
    return T


def test_ate_aligns_scale_and_re_measures_the_rotation_angle():
    gt = np.stack([translation(1.0)] * 6)
    assert evaluate_pose(np.stack([translation(2.0)] * 6), gt)["ate_mean"] < 1e-12  # scale is aligned away
    # one relative pose turned by 0.1 rad: a snippet starting there sees it at 4 of its 5 frames, mean 0.08 rad
    pred = gt.copy()
    pred[0] = translation(1.0) @ rotation_z(0.1)
    result = evaluate_pose(pred, gt)
    assert result["snippets"] == 5
    first_snippet_re = 4 * 0.1 / 5
    assert result["re_mean"] == pytest.approx(first_snippet_re / 5, rel=1e-9)
    # motion along y where it was along x cannot be scaled away (the best scale is 0): a snippet of n positions
    # 0..n-1 scores sqrt(sum k^2) / n; as the official, the last snippets are shorter (5, 5, 5, 4, 3 positions)
    sideways = np.stack([np.eye(4)] * 6)
    sideways[:, 1, 3] = 1.0
    expected = np.mean([np.sqrt(sum(k * k for k in range(n))) / n for n in (5, 5, 5, 4, 3)])
    assert evaluate_pose(sideways, gt)["ate_mean"] == pytest.approx(expected, rel=1e-9)
    # which is what a camera predicted to stand still scores: the yardstick ATE is read against
    assert evaluate_pose(sideways, gt)["still_ate_mean"] == pytest.approx(expected, rel=1e-9)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate(CFG, tmp_path_factory.mktemp("pose") / "scenes")


def test_ground_truth_relative_poses_are_what_the_trainer_warps_with(scenes):
    """T_i takes camera i's points into camera i+1's (the convention of the pose network's output,
    T_source_from_target for the target i): frame 3's ground-truth points moved by the chained T land on frame 7's
    ground-truth surface (compared in depth, so the moving light does not matter)."""
    folder = sequence_folder(0)
    entries, relative = keyframe_sequence(scenes, folder)
    assert [e.frame for e in entries] == list(range(1, CFG.frames)) and relative.shape == (CFG.frames - 1, 4, 4)
    K = torch.tensor(CFG.intrinsics(), dtype=torch.float64)[None]
    depth = {f: torch.from_numpy(read_gt_depth(gt_path(scenes, folder, f))).double()[None, None] for f in (3, 7)}
    tissue = torch.from_numpy(read_rgb(instrument_mask_path(scenes, folder, 3))[..., 0] == 0)  # instruments move
    T_7_from_3 = relative[5] @ relative[4] @ relative[3] @ relative[2]  # chained: T_{i+1<-i} for i = 3..6

    def depth_error(T):
        points = transform_points(torch.from_numpy(T)[None], backproject(depth[3], K))
        uv = project(points, K)
        seen = sample_at_pixels(depth[7], uv)[0, 0]
        u, v = uv[0, ..., 0], uv[0, ..., 1]
        inside = (u > 0) & (u < CFG.width - 1) & (v > 0) & (v < CFG.height - 1)
        return float((seen - points[0, 2]).abs()[inside & tissue].median())

    assert depth_error(T_7_from_3) < 0.05  # mm
    assert depth_error(np.linalg.inv(T_7_from_3)) > 1.0


def test_official_sequences_are_packaged():
    for number, frames in ((1, 410), (2, 833)):
        entries, relative = official_sequence(number)
        assert len(entries) == len(relative) == frames


def test_dares_pose_writes_official_poses_metrics_and_a_plot(scenes, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "af_weights"
    weights.mkdir()
    torch.save(ResnetEncoder(2).state_dict(), weights / "pose_encoder.pth")
    torch.save(PoseDecoder().state_dict(), weights / "pose.pth")
    out = tmp_path / "pose"
    assert main(["pose", "--weights", str(weights), "--data", str(scenes), "--keyframe", sequence_folder(0),
                 "--height", "64", "--width", "96", "--out", str(out)]) == 0
    predicted = np.load(out / "pred_poses.npz")["data"]
    assert predicted.shape == (CFG.frames - 1, 4, 4) and np.allclose(predicted[:, 3], [0, 0, 0, 1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == CFG.frames - 1 and np.isfinite(metrics["ate_mean"]) and metrics["re_mean"] >= 0
    assert (out / "trajectory.png").stat().st_size > 1000
    assert pose_units(weights) == PoseUnits((256, 320), 1.0)  # an official folder: the official size and unit
    # the same scores as `dares eval` on the written arrays
    np.savez(tmp_path / "gt.npz", data=keyframe_sequence(scenes, sequence_folder(0))[1])
    assert main(["eval", "--pred-poses", str(out / "pred_poses.npz"), "--gt-poses", str(tmp_path / "gt.npz")]) == 0
    assert main(["pose", "--weights", str(weights), "--data", str(scenes), "--out", str(out)]) == 2  # which sequence?


def test_pose_weights_that_do_not_fit_are_refused_in_one_line(tmp_path):
    from dares_core.errors import DaresError
    from dares_core.model.weights import DEMO_MODEL
    from dares_core.pose import load_pose_net

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    torch.save(ResnetEncoder(2, width=8).state_dict(), mixed / "pose_encoder.pth")  # a narrow encoder ...
    torch.save(PoseDecoder().state_dict(), mixed / "pose.pth")  # ... with ResNet-18's decoder
    with pytest.raises(DaresError, match=r"net.0.weight of shape \(256, 512, 1, 1\), the network \(256, 64, 1, 1\)"):
        load_pose_net(mixed)
    with pytest.raises(DaresError, match="not a pose network export"):
        load_pose_net(DEMO_MODEL)  # a depth network
