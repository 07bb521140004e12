"""The per-pixel confidence: AUSE as the literature defines it; confidence that falls where the depth is wrong and
where the input is corrupted (a smeared patch, a specular blob); its figures on an unseen scene; and its outputs in
`dares infer --save-confidence` and `dares eval`."""

import cv2
import numpy as np
import pytest
import torch

from dares_core.bench.confidence import TUNING_SEEDS
from dares_core.confidence import ause, confidence
from dares_core.data.scared import gt_path, image_path, read_gt_depth
from dares_core.data.synthetic import SynthConfig, generate_sequence, sequence_folder
from dares_core.errors import DaresError
from dares_core.evaluate import evaluate_confidence
from dares_core.inference import DepthPredictor
from dares_core.model.weights import DEMO_MODEL, load_depth_net
from dares_core.pipeline import eye_confidences
from dares_core.preprocess import read_rgb

CFG = SynthConfig(width=320, height=256, frames=4, sequences=1, seed=306)  # a scene the constants never saw
PATCH = (slice(96, 160), slice(160, 224))  # rows, columns: tissue in the middle of the frame


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    assert CFG.seed not in TUNING_SEEDS
    folder = tmp_path_factory.mktemp("confidence")
    generate_sequence(CFG, 0, folder)
    frames = [(read_rgb(image_path(folder, sequence_folder(0), f, "l")),
               read_rgb(image_path(folder, sequence_folder(0), f, "r")),
               read_gt_depth(gt_path(folder, sequence_folder(0), f))) for f in range(1, CFG.frames + 1)]
    return DepthPredictor(load_depth_net(DEMO_MODEL)), frames


def stereo_confidence(predictor, left, right, gt, disparity=None):
    """The depth node's stereo confidence (H,W) of a frame, its scale the truth's median (the stereo scale's job)."""
    prediction = predictor.predict(torch.from_numpy(left)[None])
    disparity = prediction.disparity if disparity is None else disparity
    depth = predictor.net.config.depth_unit_mm / disparity
    valid = (gt > 0) & (gt < 150)
    size = left.shape[:2]
    scale = 1e-3 * np.median(gt[valid]) / np.median(cv2.resize(depth[0].numpy(), size[::-1])[valid])  # m per unit
    pair = (left, right, CFG.intrinsics()[0, 0], CFG.baseline_mm / 1000, scale)
    return eye_confidences(disparity, predictor.net.config.depth_unit_mm, size, pair)[0].numpy()


def test_ause_is_zero_for_the_oracle_one_for_chance_and_worse_reversed():
    errors = np.random.default_rng(0).gamma(2.0, 0.05, 20000)
    constant = ause(np.sort(errors), np.ones_like(errors))  # ties in a random order, not the pixels'
    assert constant["ause"] / constant["ause_random"] == pytest.approx(1.0, abs=0.05)
    oracle = ause(errors, -errors)
    assert oracle["ause"] == pytest.approx(0.0, abs=1e-12)
    chance = ause(errors, np.random.default_rng(1).random(errors.size))
    assert chance["ause"] / chance["ause_random"] == pytest.approx(1.0, abs=0.05)
    reversed_ = ause(errors, errors)
    assert reversed_["ause"] > 1.5 * reversed_["ause_random"]
    assert len(oracle["curve"]) == 50 and oracle["curve"][0] == pytest.approx(errors.mean())


def test_confidence_falls_at_depth_edges_and_is_one_where_depth_is_smooth():
    disparity = torch.full((1, 128, 160), 0.02)
    disparity[:, :, 80:] = 0.05  # an occluding edge down the middle
    trust = confidence(disparity)[0]
    assert trust[:, 79:81].max() < 0.1 and trust[:, 78:82].max() < 0.3
    assert trust[:, :60].min() > 0.99 and trust[:, 100:].min() > 0.99
    assert confidence(disparity, (256, 320)).shape == (1, 256, 320)


def test_stereo_confidence_falls_where_the_depth_is_wrong(scene):
    predictor, frames = scene
    left, right, gt = frames[0]
    prediction = predictor.predict(torch.from_numpy(left)[None])
    wrong = prediction.disparity.clone()
    h, w = wrong.shape[-2:]
    rows, cols = slice(h * 3 // 8, h * 5 // 8), slice(w // 2, w * 11 // 16)  # PATCH at the network's size
    wrong[:, rows, cols] *= 1.6  # 40 % too near there
    before = stereo_confidence(predictor, left, right, gt)[PATCH]
    after = stereo_confidence(predictor, left, right, gt, wrong)[PATCH[0], slice(176, 208)]  # inside its edges
    assert np.median(after) < 0.5 * np.median(before[:, 16:48])


@pytest.mark.parametrize("corruption", ["smeared", "specular"])
def test_stereo_confidence_falls_where_the_input_is_corrupted(scene, corruption):
    """A smeared patch (a smudge on the lens, smoke) and a specular blob seen by the left eye only."""
    predictor, frames = scene
    left, right, gt = frames[1]
    corrupted = left.copy()
    if corruption == "smeared":
        corrupted[PATCH] = cv2.blur(left, (31, 31))[PATCH]
    else:
        cv2.circle(corrupted, (192, 128), 24, (255, 255, 255), -1)
        corrupted = cv2.GaussianBlur(corrupted, (0, 0), 2)
    before = stereo_confidence(predictor, left, right, gt)[PATCH]
    after = stereo_confidence(predictor, corrupted, right, gt)[PATCH]
    assert np.median(after) < 0.6 * np.median(before)


def test_the_confidence_ranks_errors_well_on_a_scene_it_was_never_tuned_on(scene):
    """Both rank the errors far better than chance (1); per scene they vary (docs/benchmarks.md: five scenes)."""
    predictor, frames = scene
    disparities, mono, stereo, truths = [], [], [], []
    for left, right, gt in frames:
        prediction = predictor.predict(torch.from_numpy(left)[None])
        disparities.append(prediction.disparity[0].numpy())
        mono.append(confidence(prediction.disparity)[0].numpy())
        stereo.append(stereo_confidence(predictor, left, right, gt))
        truths.append(gt)
    mono_ratio = evaluate_confidence(np.stack(disparities), mono, truths)["ause_ratio"]
    stereo_ratio = evaluate_confidence(np.stack(disparities), stereo, truths)["ause_ratio"]
    assert mono_ratio < 0.75 and stereo_ratio < 0.75, (mono_ratio, stereo_ratio)
    with pytest.raises(DaresError, match="2 confidences but 4 predicted disparities"):
        evaluate_confidence(np.stack(disparities), mono[:2], truths)


def test_infer_saves_confidence_and_eval_scores_it(tiny_model, tmp_path, capsys):
    """`dares infer --save-confidence` writes NAME_confidence.npy ((H,W) float32 in [0,1]) and a PNG beside the
    depth; `dares eval --pred-confidence` reports its AUSE beside the metrics and records it in metrics.json."""
    import json

    from dares_core.cli import main

    weights, seq = tiny_model
    out = tmp_path / "out"
    assert main(["infer", "--weights", str(weights), "--input", str(seq / "image_02" / "data"), "--out", str(out),
                 "--height", "28", "--width", "42", "--save-confidence", "--save-disp",
                 str(tmp_path / "disps.npy")]) == 0
    names = sorted(p.name[:-len("_depth.npy")] for p in out.glob("*_depth.npy"))
    assert names
    for name in names:
        trust = np.load(out / f"{name}_confidence.npy")
        depth = np.load(out / f"{name}_depth.npy")
        assert trust.dtype == np.float32 and trust.shape == depth.shape and 0 <= trust.min() <= trust.max() <= 1
        picture = cv2.imread(str(out / f"{name}_confidence.png"), cv2.IMREAD_UNCHANGED)
        assert picture.dtype == np.uint8 and picture.shape == depth.shape
    stacked = tmp_path / "confidence.npy"
    np.save(stacked, np.stack([np.load(out / f"{name}_confidence.npy") for name in names]))
    gt = tmp_path / "gt.npz"
    np.savez(gt, data=np.stack([np.load(out / f"{name}_depth.npy") * (1 + 0.1 * i) for i, name in
                                enumerate(names)]).astype(np.float32))
    capsys.readouterr()
    assert main(["eval", "--pred-disps", str(tmp_path / "disps.npy"), "--gt-depths", str(gt), "--pred-confidence",
                 str(stacked), "--out", str(tmp_path / "eval")]) == 0
    assert "confidence: AUSE" in capsys.readouterr().out
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())["confidence"]
    assert {"ause", "ause_random", "ause_ratio", "curve", "oracle"} <= set(record)
    good = np.stack([np.load(out / f"{name}_confidence.npy") for name in names])
    nan, outside = good.copy(), good * 2 + 0.1
    nan[0, 0, 0] = np.nan
    for bad, why in ((good[:1], "confidences but"), (nan, "must be finite and in [0,1]"),
                     (outside, "must be finite and in [0,1]"), (good[:, ::2, ::2], "neither its disparity's nor")):
        np.save(stacked, bad)
        assert main(["eval", "--pred-disps", str(tmp_path / "disps.npy"), "--gt-depths", str(gt), "--pred-confidence",
                     str(stacked), "--out", str(tmp_path / "eval"), "--force"]) == 2
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1, err
    np.savez(tmp_path / "c.npz", data=good)
    for path, why in ((tmp_path / "c.npz", "is an .npz: give the .npy"), (out, "is a folder: give one .npy")):
        assert main(["eval", "--pred-disps", str(tmp_path / "disps.npy"), "--gt-depths", str(gt), "--pred-confidence",
                     str(path), "--out", str(tmp_path / "eval"), "--force"]) == 2
        assert why in capsys.readouterr().err
    poses = tmp_path / "poses.npz"
    np.savez(poses, data=np.stack([np.eye(4)] * 3))
    assert main(["eval", "--pred-poses", str(poses), "--gt-poses", str(poses), "--pred-confidence", str(stacked)]) == 2
    assert "--pred-confidence scores depth" in capsys.readouterr().err
