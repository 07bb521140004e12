"""The online depth stabiliser: depth carried along the optical flow and moved as the camera's motion says,
flicker reduced where views agree, large changes and masked pixels passed through at once, TAE of a real model's
depth lowered with true motion and with the pose network's."""

import shutil

import cv2
import numpy as np
import pytest
import torch

from dares_core.temporal import DepthStabiliser, carry_depth, stabilise_on_grid

K = np.array([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])


def texture(height: int = 60, width: int = 80, seed: int = 0) -> np.ndarray:
    """(H,W) uint8: smooth random texture the optical flow can follow."""
    noise = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.5)
    return cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


IMAGE = texture()


def moved(dz: float) -> np.ndarray:
    """The previous camera's points into a camera dz further along its optical axis."""
    T = np.eye(4)
    T[2, 3] = -dz
    return T


def blend_of(new: float, carried: float, weight: float, tolerance: float) -> float:
    """The stabiliser's blend of one pixel: the carried share falls as 1 - x**2 to none at the tolerance."""
    x = min(abs(carried - new) / (tolerance * new), 1.0)
    return new + weight * (1 - x * x) * (carried - new)


def test_depth_is_carried_along_the_flow_and_moved_by_the_camera():
    plane = np.full((60, 80), 50.0, np.float32)
    still = np.zeros((60, 80, 2), np.float32)
    np.testing.assert_allclose(carry_depth(plane, still, K, np.eye(4)), plane)
    closer = carry_depth(plane, still, K, moved(10.0))  # 10 further along the axis: the plane is 40 away
    np.testing.assert_allclose(closer, 40.0, rtol=1e-6)
    patch = plane.copy()
    patch[20:40, 30:50] = 20.0
    left = still + [3.0, 0.0]  # each pixel shows what was 3 pixels to its right: the scene moved left
    carried = carry_depth(patch, left, K, np.eye(4))
    np.testing.assert_array_equal(carried[:, :-3], patch[:, 3:])
    assert (carried[:, -3:] == 0).all()  # from beyond the previous frame: nothing carried


def test_a_moving_surface_is_followed_by_the_flow():
    """The scene moves 4 pixels to the right between two frames while the camera's motion says it stood still (an
    odometry error, or an instrument that moved): the flow still carries each depth to where its surface went, so
    the next depth, 4 % deeper, is blended with the right carried value even on the moving patch."""
    depth = np.full((60, 80), 50.0, np.float32)
    depth[20:40, 30:50] = 40.0
    shifted_image, shifted_depth = np.roll(IMAGE, 4, axis=1), np.roll(depth, 4, axis=1)
    stabiliser = DepthStabiliser(weight=0.5, tolerance=0.1, scale_weight=0.0)
    stabiliser(depth, IMAGE, K, None)
    out, blended = stabiliser(shifted_depth * 1.04, shifted_image, K, np.eye(4))
    assert blended > 0.8
    np.testing.assert_allclose(out[24:36, 44:54], blend_of(41.6, 40.0, 0.5, 0.1), rtol=1e-3)  # the patch's edge,
    # now where the plane was: the carried depth is the patch's, as the flow says, not the plane's
    np.testing.assert_allclose(out[5:15, 10:70], blend_of(52.0, 50.0, 0.5, 0.1), rtol=1e-3)


def test_flicker_is_reduced_where_views_agree_and_large_changes_pass_at_once():
    rng = np.random.default_rng(0)
    truth = np.full((60, 80), 50.0, np.float32)
    stabiliser = DepthStabiliser(weight=0.5, tolerance=0.05)
    raw, out = [], []
    for _ in range(30):  # a still camera, depth flickering 2 % in scale
        depth = truth * (1 + 0.02 * rng.standard_normal())
        stabilised, blended = stabiliser(depth, IMAGE, K, np.eye(4))
        raw.append(depth.mean())
        out.append(stabilised.mean())
    assert blended > 0.99
    assert np.std(np.diff(out)) < 0.7 * np.std(np.diff(raw))
    halved, blended = stabiliser(truth / 2, IMAGE, K, np.eye(4))  # the scene changed: no lag
    np.testing.assert_array_equal(halved, truth / 2)
    assert blended == 0.0


def test_masked_pixels_and_unknown_motion_are_never_blended():
    stabiliser = DepthStabiliser(weight=0.5, tolerance=0.1, scale_weight=0.0)
    first = np.full((60, 80), 50.0, np.float32)
    stabiliser(first, IMAGE, K, None)
    mask = np.zeros((60, 80), bool)
    mask[10:20, 10:20] = True  # an instrument
    second = first * 1.04
    out, _ = stabiliser(second, IMAGE, K, np.eye(4), mask)
    np.testing.assert_array_equal(out[mask], second[mask])
    assert np.allclose(out[~mask], blend_of(52.0, 50.0, 0.5, 0.1))  # 4 % apart: a little under half the weight
    out, blended = stabiliser(second * 1.01, IMAGE, K, None)
    np.testing.assert_array_equal(out, second * 1.01)
    assert blended == 0.0
    with pytest.raises(ValueError):
        DepthStabiliser(weight=1.0)


def test_a_jittering_scale_is_held_in_part_and_a_large_change_is_not():
    """scale_weight 0.5: a frame 8 % deeper overall (a relative network's scale jitter) is first pulled halfway (in
    log space) toward the previous output, then blended with it; a frame 50 % deeper is a real change and passes."""
    pulled = 1.08**0.5
    scene = (50 + 10 * np.random.default_rng(1).random((60, 80))).astype(np.float32)
    stabiliser = DepthStabiliser(weight=0.5, tolerance=0.1, scale_weight=0.5)
    stabiliser(scene, IMAGE, K, None)
    held, blended = stabiliser(scene * 1.08, IMAGE, K, np.eye(4))
    np.testing.assert_allclose(held, scene * blend_of(pulled, 1.0, 0.5, 0.1), rtol=1e-5)
    assert blended == 1.0
    passed, blended = stabiliser(scene * 1.5, IMAGE, K, np.eye(4))
    np.testing.assert_array_equal(passed, scene * 1.5)
    assert blended == 0.0


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """An unseen synthetic scene's test sequence: its folder, ground truth (N,H,W) mm (0: none), poses, K."""
    from dares_core.data.scared import gt_path, read_camera_poses, read_gt_depth
    from dares_core.data.synthetic import SynthConfig, generate

    cfg = SynthConfig(width=192, height=160, frames=12, sequences=3, seed=61)
    root = generate(cfg, tmp_path_factory.mktemp("temporal") / "scenes")
    folder = "dataset1/keyframe3"
    gt = np.stack([read_gt_depth(gt_path(root, folder, f)) for f in range(1, cfg.frames + 1)]).astype(np.float64)
    poses = read_camera_poses(root / folder)
    return root / folder, np.where((gt > 1e-3) & (gt < 150), gt, 0.0), np.stack([poses[f] for f in sorted(poses)]), \
        cfg.intrinsics()


def tae_and_abs_rel(depth, gt, poses, K):
    """TAE (depth scaled once for the sequence) and the SCARED AbsRel (median-scaled per frame) of depth (N,H,W)."""
    from dares_core.evaluate import evaluate_depth, sequence_scaled, temporal_alignment_error

    scaled = np.where(gt > 0, sequence_scaled(depth, gt), 0.0)
    return temporal_alignment_error(scaled, K, poses), evaluate_depth(1 / depth, list(gt)).mean["abs_rel"]


def test_tae_of_the_demo_model_falls_with_true_motion(scene):
    """An upper bound of what the stabiliser can do for the built-in model (the camera's true motion; a live system
    has odometry or kinematics): TAE falls, AbsRel holds."""
    from dares_core.inference import DepthPredictor
    from dares_core.model.weights import DEMO_MODEL, load_depth_net
    from dares_core.preprocess import network_batch, read_rgb

    folder, gt, poses, K = scene
    predictor = DepthPredictor(load_depth_net(DEMO_MODEL))
    frames = [read_rgb(p) for p in sorted((folder / "image_02" / "data").glob("*.png"))]
    depth = np.stack([predictor.predict(network_batch([rgb], predictor.size), output_size=rgb.shape[:2]).depth[0]
                      .numpy() for rgb in frames]).astype(np.float64)
    stabiliser = DepthStabiliser(weight=0.5, tolerance=0.05)
    out = np.stack([stabiliser(d, rgb, K, None if i == 0 else np.linalg.inv(poses[i]) @ poses[i - 1])[0]
                    for i, (d, rgb) in enumerate(zip(depth, frames))])
    (tae_before, abs_rel_before), (tae_after, abs_rel_after) = (tae_and_abs_rel(d, gt, poses, K) for d in (depth, out))
    assert tae_after < 0.9 * tae_before and abs_rel_after < 1.05 * abs_rel_before


def test_infer_temporal_lowers_tae_with_the_pose_networks_motion(scene, tmp_path):
    """dares infer --temporal on a folder of frames, the camera's motion from the built-in pose network (never the
    ground truth): TAE falls, AbsRel holds; without a motion source it says what it needs."""
    from dares_core.cli import main
    from dares_core.model.weights import DEMO_MODEL, DEMO_POSE, load_depth_net

    folder, gt, poses, K = scene
    frames = folder / "image_02" / "data"
    base = ["infer", "--weights", str(DEMO_MODEL), "--input", str(frames)]
    assert main([*base, "--out", str(tmp_path / "plain"), "--save-disp", str(tmp_path / "plain.npy")]) == 0
    assert main([*base, "--out", str(tmp_path / "temporal"), "--temporal", "--pose-weights", str(DEMO_POSE),
                 "--calibration", str(folder / "calibration.yaml"), "--save-disp", str(tmp_path / "temporal.npy")]) == 0
    plain, temporal = (np.stack([np.load(p) for p in sorted((tmp_path / name).glob("*_depth.npy"))]).astype(np.float64)
                       for name in ("plain", "temporal"))
    (tae_before, abs_rel_before), (tae_after, abs_rel_after) = (tae_and_abs_rel(d, gt, poses, K)
                                                                for d in (plain, temporal))
    assert tae_after < 0.95 * tae_before and abs_rel_after < 1.05 * abs_rel_before
    disparities = np.load(tmp_path / "temporal.npy")  # the stabilised depth's, in the official layout
    assert disparities.shape == np.load(tmp_path / "plain.npy").shape
    unit = load_depth_net(DEMO_MODEL).config.depth_unit_mm  # the network's depth unit, in mm
    as_depth = np.stack([unit / cv2.resize(d, temporal.shape[:0:-1]) for d in disparities])  # SCARED's conversion
    assert np.median(np.abs(as_depth / temporal - 1)) < 0.01 < np.median(np.abs(plain / temporal - 1)) * 10
    assert main([*base, "--out", str(tmp_path / "x"), "--temporal"]) == 2


def test_infer_temporal_never_blends_the_pixels_its_masks_mark(scene, tmp_path, capsys):
    """--temporal-masks: where a frame's mask (NAME.png, any size) marks instruments the depth is the plain depth
    times one scale (the frame's scale pull, nothing blended); elsewhere the previous output is blended in. A frame
    without a mask, or with an unreadable one, is written unstabilised, and the command names it and fails."""
    from dares_core.cli import main
    from dares_core.model.weights import DEMO_MODEL, DEMO_POSE

    folder = scene[0]
    frames = folder / "image_02" / "data"
    masks = tmp_path / "masks"
    masks.mkdir()
    for frame in sorted(frames.glob("*.png")):  # instruments on the left half, at twice the image's size
        mask = np.zeros((320, 384), np.uint8)
        mask[:, :192] = 255
        cv2.imwrite(str(masks / frame.name), mask)
    (masks / "0000000009.png").unlink()
    (masks / "0000000006.png").write_bytes(b"not a png")
    base = ["infer", "--weights", str(DEMO_MODEL), "--input", str(frames)]
    temporal = [*base, "--temporal", "--pose-weights", str(DEMO_POSE), "--calibration",
                str(folder / "calibration.yaml")]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*temporal, "--out", str(tmp_path / "masked"), "--temporal-masks", str(masks)]) == 2
    err = capsys.readouterr().err
    assert "2 frame(s) had no readable mask in" in err and "(0000000006.png, ...)" in err
    assert main([*base, "--out", str(tmp_path / "x"), "--temporal-masks", str(masks)]) == 2  # without --temporal
    plain, masked = ({p.name: np.load(p) for p in sorted((tmp_path / name).glob("*_depth.npy"))}
                     for name in ("plain", "masked"))
    assert len(masked) == 12 and all(np.array_equal(masked[name], plain[name]) for name in (
        "0000000006_depth.npy", "0000000009_depth.npy"))  # written unstabilised
    for name in ("0000000004_depth.npy", "0000000011_depth.npy"):  # stabilised frames (not the first after a restart)
        ratio = masked[name] / plain[name]
        assert np.ptp(ratio[:, :96]) < 1e-4  # the masked half: one scale
        assert np.ptp(ratio[:, 96:]) > 0.01  # the rest: blended pixel by pixel
    for odd, write in (("16-bit", lambda m: (m > 0).astype(np.uint16)),  # 1 on instruments
                       ("colour", lambda m: np.dstack([m > 0, 0 * m, 0 * m]).astype(np.uint8))):  # blue 1
        folder_of = tmp_path / odd
        folder_of.mkdir()
        for mask in masks.glob("*.png"):
            if mask.name != "0000000006.png":
                cv2.imwrite(str(folder_of / mask.name), write(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)))
        assert main([*temporal, "--out", str(tmp_path / f"{odd}-out"), "--temporal-masks", str(folder_of)]) == 2
        assert all(np.array_equal(np.load(tmp_path / f"{odd}-out" / name), depth) for name, depth in masked.items())
    misnamed = tmp_path / "misnamed"
    misnamed.mkdir()
    cv2.imwrite(str(misnamed / "mask_001.png"), np.zeros((8, 8), np.uint8))
    assert main([*temporal, "--out", str(tmp_path / "y"), "--temporal-masks", str(misnamed)]) == 2
    assert "has no mask named as a frame: the frame 0000000001 takes 0000000001.png" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()  # refused before any work
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (192, 160))
    for frame in sorted(frames.glob("*.png"))[:2]:
        writer.write(cv2.imread(str(frame)))
    writer.release()
    shutil.copy(masks / "0000000001.png", misnamed / "frame_000000.png")  # numbered from 0
    temporal[temporal.index(str(frames))] = str(video)
    assert main([*temporal, "--out", str(tmp_path / "z"), "--temporal-masks", str(misnamed)]) == 2
    assert "a video's frames are numbered from frame_000001" in capsys.readouterr().err


def test_a_live_node_stabilises_a_large_map_on_a_grid_and_corrects_every_pixel():
    """stabilise_on_grid: a 640x480 map is carried on every 4th pixel (K scaled to the grid); the blend of each grid
    pixel reaches its whole 4x4 block, and a patch that changed beyond the tolerance passes through, block for block."""
    big_K = K * [[8], [8], [1]]  # the same camera at 640x480
    depth, image = torch.full((480, 640), 50.0), np.repeat(texture(480, 640)[..., None], 3, axis=2)
    stabiliser = DepthStabiliser(weight=0.5, tolerance=0.1, scale_weight=0.0)
    out, blended = stabilise_on_grid(stabiliser, depth, image, big_K, None, pixels=160 * 120)
    assert torch.equal(out, depth) and blended == 0.0 and stabiliser.previous.shape == (120, 160)  # first: as it is
    moved_patch = depth * 1.04
    moved_patch[100:200, 200:300] = 80.0  # an instrument came in
    out, blended = stabilise_on_grid(stabiliser, moved_patch, image, big_K, np.eye(4), pixels=160 * 120)
    assert out.shape == (480, 640) and 0.9 < blended < 1.0
    expected = torch.tensor(blend_of(52.0, 50.0, 0.5, 0.1))
    assert torch.allclose(out[:100], expected) and torch.allclose(out[300:], expected)
    assert torch.equal(out[100:200, 200:300], moved_patch[100:200, 200:300])  # passed through
