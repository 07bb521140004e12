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
