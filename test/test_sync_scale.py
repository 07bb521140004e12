"""Approximate-time stereo pairing and stereo scale recovery on synthetic scenes."""

import cv2
import numpy as np
import pytest

from dares_core.data.scared import gt_path, image_path, read_gt_depth
from dares_core.data.synthetic import SynthConfig, generate, sequence_folder
from dares_core.names import STEREO_MATCHERS
from dares_core.stereo_scale import LiveStereoScale, StereoScale
from dares_core.sync import JUMP_BACK_S, Order, StereoMatcher, Timeline


def test_pairs_within_tolerance_and_never_goes_back_in_time():
    m = StereoMatcher(tolerance=0.005)
    assert m.add("left", 1.000, "L1") is None
    assert m.add("right", 1.020, "R-late") is None  # too far from L1
    assert m.add("right", 1.003, "R1") == ("L1", "R1")
    assert m.add("left", 0.990, "L-old") is None  # older than the last pair: dropped
    assert m.add("left", 1.040, "L2") is None
    assert m.add("left", 1.040, "L2-dup") is None
    assert m.add("right", 1.041, "R2") in {("L2", "R2"), ("L2-dup", "R2")}
    assert m.add("right", 1.020, "R-stale") is None


def test_time_going_back_is_told_from_duplicates_and_reordering():
    t = Timeline()
    assert [t.order("left", s) for s in (1.00, 1.04, 1.04, 1.02, 1.08)] == [
        Order.NEW, Order.NEW, Order.DUPLICATE, Order.OUT_OF_ORDER, Order.NEW]
    assert t.jumps == 0
    assert t.order("left", 1.08 - JUMP_BACK_S - 0.01) is Order.TIME_WENT_BACK  # a long bag replayed
    assert t.jumps == 1 and "1.080 s, then" in t.went_back("left/image_rect", 0.57, "it restarts")
    assert t.order("left", 0.61) is Order.NEW


def test_a_short_bag_looped_goes_back_after_three_older_stamps():
    t = Timeline()
    stamps = [0.0, 0.04, 0.08, 0.12]  # shorter than JUMP_BACK_S
    assert all(t.order("left", s) is Order.NEW for s in stamps)
    assert [t.order("left", s) for s in stamps] == [Order.OUT_OF_ORDER, Order.OUT_OF_ORDER, Order.TIME_WENT_BACK,
                                                     Order.NEW]


def test_the_other_eye_starts_again_with_the_one_that_went_back():
    t = Timeline()
    for s in (5.0, 5.04):
        assert t.order("left", s) is Order.NEW and t.order("right", s) is Order.NEW
    assert t.order("right", 1.0) is Order.TIME_WENT_BACK  # the replay's first right image comes first
    assert t.order("left", 1.0) is Order.NEW  # its left partner is no duplicate, nor out of order
    assert t.jumps == 1


def test_a_restarted_matcher_pairs_stamps_it_paired_before():
    m = StereoMatcher(tolerance=0.005)
    assert m.add("left", 2.0, "L") is None and m.add("right", 2.0, "R") == ("L", "R")
    assert m.add("left", 2.0, "L again") is None  # a replay's stamp: not after the last pair
    m.restart()
    assert m.add("left", 2.0, "L again") is None and m.add("right", 2.0, "R again") == ("L again", "R again")


def test_the_gap_between_eyes_that_never_pair_is_kept():
    m = StereoMatcher(tolerance=0.005)
    m.add("left", 1.0, "L")
    m.add("right", 1.03, "R")
    assert m.nearest_gap == pytest.approx(0.03)


def test_queue_is_bounded():
    m = StereoMatcher(tolerance=0.001, queue_size=3)
    for i in range(10):
        m.add("left", float(i), i)
    assert len(m.queues["left"]) == 3


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    cfg = SynthConfig(width=320, height=256, frames=4, sequences=1, seed=2)
    return cfg, generate(cfg, tmp_path_factory.mktemp("scale") / "s")


@pytest.mark.parametrize("matcher", STEREO_MATCHERS)
def test_stereo_scale_recovers_metric_depth(scene, matcher):
    cfg, root = scene
    folder, K = sequence_folder(0), cfg.intrinsics()
    live = LiveStereoScale(StereoScale(downscale=1, num_disparities=48), matcher)
    for frame in (1, 2, 3, 4):
        left, right = (np.ascontiguousarray(cv2.imread(str(image_path(root, folder, frame, s)))[...,
                                                                                                ::-1]) for s in "lr")
        gt_mm = read_gt_depth(gt_path(root, folder, frame))
        noise = np.random.default_rng(frame).standard_normal(gt_mm.shape)
        model_depth = gt_mm / 37.0 * (1 + 0.05 * noise)  # up to scale
        scale = live.scale_for(left, right, model_depth, K[0, 0], cfg.baseline_mm / 1000)
    assert live.measurements == 4 and live.confidence > 0.2 and live.age() < 60
    assert scale == pytest.approx(37.0 / 1000, rel=0.05)  # metres per model unit


@pytest.mark.parametrize("matcher", STEREO_MATCHERS)
def test_a_blank_eye_gives_no_scale(scene, matcher):
    cfg, root = scene
    left = np.ascontiguousarray(cv2.imread(str(image_path(root, sequence_folder(0), 1, "l")))[..., ::-1])
    live = LiveStereoScale(StereoScale(downscale=1, num_disparities=48), matcher)
    scale = live.scale_for(left, np.zeros_like(left), np.ones(left.shape[:2], np.float32), 500.0, 0.0045)
    assert np.isnan(scale) and live.confidence < 0.05 and live.age() == np.inf


def test_images_too_narrow_for_the_disparity_range_have_no_stereo_depth():
    """SGBM cannot search 64 disparities in a 40-pixel row: no depth anywhere, not an OpenCV error."""
    left = cv2.resize(np.random.default_rng(0).integers(0, 255, (15, 40, 3), dtype=np.uint8), (80, 30))
    right = np.roll(left, -4, axis=1)  # 4 px of disparity
    depth = StereoScale().stereo_depth(left, right, 50.0, 4.5)  # 40 wide at half size
    assert depth.shape == (30, 80) and np.isnan(depth).all()
    assert np.isfinite(StereoScale(num_disparities=16).stereo_depth(left, right, 50.0, 4.5)).any()


def rectified_pair(texture: np.ndarray, disparity: int) -> tuple[np.ndarray, np.ndarray]:
    """A rectified pair of a fronto-parallel surface of `texture` (H,W) in [0,1]: the right eye sees it `disparity`
    pixels to the left."""
    left = np.clip(texture * 255, 0, 255).astype(np.uint8)
    right = np.roll(left, -disparity, axis=1)
    return np.repeat(left[..., None], 3, 2), np.repeat(right[..., None], 3, 2)


def textures(height: int = 256, width: int = 320) -> dict:
    """The pairs the sparse matcher meets in surgery: a periodic weave (gauze, mesh, a calibration target), tissue of
    little texture, tissue under a specular highlight, and a blank frame (a lens against tissue)."""
    rng = np.random.default_rng(3)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = rng.normal(0, 0.02, (height, width))
    smooth = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 6)
    smooth = (smooth - smooth.min()) / np.ptp(smooth)
    highlight = np.exp(-((u - width / 2) ** 2 + (v - height / 2) ** 2) / (2 * 40.0**2))
    return {"periodic": 0.5 + 0.4 * np.sin(2 * np.pi * u / 4.0) * np.sin(2 * np.pi * v / 7.0) + noise,
            "low texture": 0.45 + 0.1 * smooth + noise / 4,
            "specular": np.minimum(0.3 + 0.5 * smooth + noise + 1.5 * highlight, 1.0),
            "blank": np.full((height, width), 0.5)}


@pytest.mark.parametrize("kind", ["periodic", "low texture", "specular", "blank"])
def test_the_sparse_scale_falls_back_on_sgbm_wherever_sgbm_finds_one(kind):
    """A periodic texture aliases Lucas-Kanade's pyramid (0 % of the grid matched where SGBM matches most of it): the
    scale then comes from SGBM on the same pair, and says so (source, fallbacks). Where neither matches (a blank
    frame) there is no scale (NaN: the node's one line "too few stereo matches for a first scale")."""
    disparity, fx, baseline = 4, 400.0, 5.0  # pixels at full size; depth fx*B/d = 500 (baseline units)
    left, right = rectified_pair(textures()[kind], disparity)
    model_depth = np.full(left.shape[:2], 250.0)  # the network's depth, half the true one: the scale is 2
    stereo = LiveStereoScale(StereoScale(), "sparse")
    scale = stereo.scale_for(left, right, model_depth, fx, baseline)
    sgbm = StereoScale().stereo_depth(left, right, fx, baseline)
    sgbm_finds_one = np.isfinite(sgbm).mean() >= StereoScale().min_confidence
    if kind == "blank":
        assert not sgbm_finds_one and np.isnan(scale)
        return
    assert sgbm_finds_one, kind  # the pair is one stereo can be had from
    assert scale == pytest.approx(2.0, rel=0.05), (kind, stereo.source, stereo.fallbacks)
    if kind == "periodic":
        sparse, matched = StereoScale().sparse_ratios(left, right, model_depth, fx, baseline)
        assert matched < StereoScale().min_confidence  # what the sparse matcher alone finds
        assert stereo.source == "sgbm" and stereo.fallbacks == 1
