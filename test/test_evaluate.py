"""The SCARED protocol: our evaluation against a direct computation, official-format arrays, pose ATE."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dares_core.cli import main
from dares_core.errors import DaresError
from dares_core.evaluate import evaluate_depth, evaluate_pose

SPLITS = Path(__file__).resolve().parents[1] / "dares_core" / "splits" / "endovis"


def protocol_by_hand(disps, gts, median=True):
    """The protocol written out step by step, as in the official evaluate_depth.py."""
    out = []
    for disp, gt in zip(disps, gts):
        pred = 1 / cv2.resize(disp, (gt.shape[1], gt.shape[0]))
        m = np.logical_and(gt > 1e-3, gt < 150)
        p, g = pred[m], gt[m]
        if median:
            p = p * (np.median(g) / np.median(p))
        p = np.clip(p, 1e-3, 150)
        t = np.maximum(g / p, p / g)
        out.append([np.mean(np.abs(g - p) / g), np.mean((g - p) ** 2 / g), np.sqrt(np.mean((g - p) ** 2)),
                    np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)), (t < 1.25).mean(), (t < 1.25**2).mean(),
                    (t < 1.25**3).mean()])
    return np.mean(out, 0)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    gt = rng.uniform(20, 160, (4, 64, 80)).astype(np.float32)  # some pixels beyond the 150 mm cap
    disps = (1 / (cv2.resize(gt[0], (40, 32)) * 0.01) * rng.uniform(0.7, 1.3, (4, 32, 40))).astype(np.float32)
    gt[:, :5] = 0  # unknown ground truth
    return disps, gt


@pytest.mark.parametrize("median", [True, False])
def test_matches_the_protocol_computed_by_hand(arrays, median):
    disps, gt = arrays
    ours = evaluate_depth(disps, gt, median_scaling=median)
    np.testing.assert_allclose([ours.mean[k] for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")],
                               protocol_by_hand(disps, gt, median), rtol=1e-6)
    assert ours.ratios.size == (4 if median else 0)


def test_perfect_prediction_up_to_scale_scores_zero():
    gt = np.random.default_rng(1).uniform(30, 120, (2, 32, 40)).astype(np.float32)
    ours = evaluate_depth((1 / (gt * 7.0)).astype(np.float32), gt)
    assert ours.mean["abs_rel"] < 1e-6 and ours.mean["a1"] == 1.0
    assert ours.ratio_summary()["median"] == pytest.approx(1 / 7.0, rel=1e-5)  # gt / predicted depth


def test_cli_on_official_arrays_writes_json_and_csv(arrays, tmp_path, capsys):
    disps, gt = arrays
    np.save(tmp_path / "disps.npy", disps)
    np.savez_compressed(tmp_path / "gt_depths.npz", data=gt)
    out = tmp_path / "eval"
    assert main(["eval", "--pred-disps", str(tmp_path / "disps.npy"), "--gt-depths", str(tmp_path / "gt_depths.npz"),
                 "--out", str(out)]) == 0
    assert "abs_rel" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["abs_rel"] == pytest.approx(protocol_by_hand(disps, gt)[0], rel=1e-6)
    assert len((out / "per_frame.csv").read_text().splitlines()) == 5
    np.save(tmp_path / "short.npy", disps[:3])
    assert main(["eval", "--pred-disps", str(tmp_path / "short.npy"), "--gt-depths", str(tmp_path / "gt_depths.npz"),
                 "--out", str(tmp_path / "e2")]) == 2
    assert "3 predicted disparities but 4" in capsys.readouterr().err


def test_pose_ate_on_the_official_trajectory():
    gt = np.load(SPLITS / "gt_poses_sq1.npz")["data"]
    assert gt.shape[1:] == (4, 4)
    assert evaluate_pose(gt, gt)["ate_mean"] < 1e-12
    scaled = gt.copy()
    scaled[:, :3, 3] *= 3.0  # monocular scale is aligned away
    assert evaluate_pose(scaled, gt)["ate_mean"] < 1e-7
    noisy = gt.copy()
    noisy[:, :3, 3] += np.random.default_rng(0).normal(0, 1e-3, noisy[:, :3, 3].shape)
    result = evaluate_pose(noisy, gt)
    assert result["ate_mean"] > 1e-5 and result["re_mean"] < 1e-9


def test_a_region_is_scored_alone_with_the_whole_frames_scale():
    """Instruments-only metrics: the region's pixels, median-scaled by the frame as a whole."""
    gt = np.linspace(20.0, 140.0, 40 * 50, dtype=np.float32).reshape(40, 50)
    region = np.zeros_like(gt, bool)
    region[10:20, 10:20] = True  # 4 % of the frame, predicted 1.5x too far relative to the rest
    pred = np.where(region, 3.0 * gt, 2.0 * gt)
    whole = evaluate_depth((1.0 / pred)[None], [gt])
    inside = evaluate_depth((1.0 / pred)[None], [gt], regions=[region])
    ratio = whole.ratios[0]  # about 1/2: the region moves the frame's median a little
    assert inside.ratios[0] == pytest.approx(ratio) and 0.45 < ratio < 0.55
    assert inside.mean["abs_rel"] == pytest.approx(abs(1 - 3 * ratio), rel=1e-4)
    assert whole.mean["abs_rel"] < 0.1
    with pytest.raises(DaresError, match="region"):
        evaluate_depth((1.0 / pred)[None], [gt], regions=[np.zeros_like(region)])


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """A synthetic sequence with exact depth, poses and instrument masks (the test split of `dares synth`)."""
    from dares_core.data.synthetic import SynthConfig, generate

    cfg = SynthConfig(width=192, height=160, frames=10, sequences=3, seed=21)
    return cfg, generate(cfg, tmp_path_factory.mktemp("tae") / "scenes")


def _truth(cfg, root):
    from dares_core.data.scared import gt_path, instrument_mask_path, read_camera_poses, read_gt_depth

    folder = "dataset1/keyframe3"
    frames = range(1, cfg.frames + 1)
    depths = np.stack([read_gt_depth(gt_path(root, folder, f)) for f in frames])
    poses = read_camera_poses(root / folder)
    tissue = np.stack([cv2.imread(str(instrument_mask_path(root, folder, f)), cv2.IMREAD_GRAYSCALE) == 0
                       for f in frames])
    return depths, np.stack([poses[f] for f in frames]), tissue


def test_tae_is_zero_for_depth_that_holds_still_and_grows_with_flicker(sequence):
    from dares_core.evaluate import sequence_scaled, temporal_alignment_error

    cfg, root = sequence
    depths, poses, tissue = _truth(cfg, root)
    K = cfg.intrinsics()
    still = np.repeat(depths[:1], 4, axis=0)
    assert temporal_alignment_error(still, K, np.repeat(poses[:1], 4, axis=0)) < 1e-12  # no motion, same depth
    floor = temporal_alignment_error(depths, K, poses)
    tissue_floor = temporal_alignment_error(depths, K, poses, tissue)
    assert 0 < tissue_floor < floor < 0.02  # moving instruments make most of the floor
    flicker = depths * (1 + 0.05 * np.random.default_rng(0).standard_normal((len(depths), 1, 1)))
    assert temporal_alignment_error(flicker, K, poses) > 3 * floor
    # a prediction in another unit is brought to the sequence's scale once, so its flicker is kept and nothing else
    assert temporal_alignment_error(sequence_scaled(depths / 37.0, depths), K, poses) == pytest.approx(floor, rel=1e-6)
    assert temporal_alignment_error(sequence_scaled(flicker / 37.0, depths), K, poses) > 3 * floor


def test_eval_reports_tae_beside_its_floor(sequence, tmp_path, capsys):
    from dares_core.model.weights import DEMO_MODEL

    _, root = sequence
    assert main(["eval", "--weights", str(DEMO_MODEL), "--data", str(root), "--out", str(tmp_path / "out")]) == 0
    temporal = json.loads((tmp_path / "out" / "metrics.json").read_text())["temporal"]
    assert temporal["sequences"] == 1
    assert 0 < temporal["tae_floor_tissue"] < temporal["tae_floor"] < temporal["tae"] < 0.2
    assert "TAE" in capsys.readouterr().out
