"""sensor_msgs conversions: every encoding, padding, endianness, bad messages, clouds and camera_info."""

import cv2
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from dares_core.camera import Uncalibrated
from dares_core.pipeline import eye_outputs
from dares_core.visualize import colorize_inverse_depth
from dares_ros.conversions import (
    IMAGE_ENCODINGS,
    ConversionError,
    FrameIds,
    compressed_to_rgb8,
    depth_image,
    image_to_rgb8,
    intrinsics,
    output_messages,
    point_cloud,
    read_mask,
    read_point_cloud,
    scale_camera_info,
    stereo_baseline,
)

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def encode(rgb, encoding, pad=0, bigendian=False):
    """An Image as a driver would publish it, built with OpenCV/numpy independently of the converter."""
    depth, channels, _ = IMAGE_ENCODINGS[encoding]
    order = {"rgb": rgb, "bgr": rgb[..., ::-1]}
    if encoding.startswith("mono"):
        pixels = rgb[..., :1]
    else:
        pixels = order[encoding[:3]]
        if channels == 4:
            pixels = np.concatenate([pixels, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
    if depth == 2:
        pixels = pixels.astype(np.uint16) * 257
        pixels = pixels.astype(">u2" if bigendian else "<u2")
    rows = pixels.reshape(rgb.shape[0], -1).view(np.uint8)
    rows = np.concatenate([rows, np.zeros((rows.shape[0], pad), np.uint8)], 1)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, is_bigendian=bigendian, step=rows.shape[1])
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
@pytest.mark.parametrize("pad,bigendian", [(0, False), (3, False), (2, True)])
def test_every_encoding_with_padding_and_endianness(encoding, pad, bigendian):
    out = image_to_rgb8(encode(RGB, encoding, pad, bigendian))
    expected = np.repeat(RGB[..., :1], 3, -1) if encoding.startswith("mono") else RGB
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("change,message", [
    (dict(encoding="32FC1"), "unsupported encoding"),
    (dict(step=5), "smaller than width"),
    (dict(height=50), "truncated"),
    (dict(width=0), "empty image"),
])
def test_bad_images_are_named(change, message):
    msg = encode(RGB, "rgb8")
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(ConversionError, match=message):
        image_to_rgb8(msg)


@settings(max_examples=300, deadline=None)
@given(encoding=st.sampled_from(sorted(IMAGE_ENCODINGS) + ["yuv422", "", "8UC3", "RGB8"]),
       height=st.integers(0, 9), width=st.integers(0, 9), step=st.integers(0, 80),
       length=st.integers(0, 400), bigendian=st.booleans())
def test_fuzzed_images_convert_or_raise_conversion_error(encoding, height, width, step, length, bigendian):
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=step)
    msg.data = bytes(np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8))
    try:
        out = image_to_rgb8(msg)
    except ConversionError as e:
        assert "\n" not in str(e)
    else:
        assert out.shape == (height, width, 3) and out.dtype == np.uint8


def test_masks_are_mono8_or_8uc1_with_their_padding():
    on = RGB[..., 0] > 127
    for encoding in ("mono8", "8UC1"):
        msg = encode(np.repeat(on[..., None].astype(np.uint8) * 255, 3, -1), "mono8", pad=3)
        msg.encoding = encoding
        np.testing.assert_array_equal(read_mask(msg), on)
    with pytest.raises(ConversionError, match="mask: encoding rgb8: publish the mask as mono8 or 8UC1"):
        read_mask(encode(RGB, "rgb8"))
    msg.data = bytes(msg.data)[:10]
    with pytest.raises(ConversionError, match="mask: data has 10 bytes"):
        read_mask(msg)


def test_compressed_jpeg_png_and_garbage():
    for fmt, ext in (("png", ".png"), ("jpeg", ".jpg")):
        msg = CompressedImage(format=fmt)
        msg.data = cv2.imencode(ext, RGB[..., ::-1])[1].tobytes()
        out = compressed_to_rgb8(msg)
        assert out.shape == RGB.shape
        if fmt == "png":
            np.testing.assert_array_equal(out, RGB)
    bad = CompressedImage(format="jpeg")
    bad.data = b"not an image"
    with pytest.raises(ConversionError, match="could not decode"):
        compressed_to_rgb8(bad)


def test_depth_image_is_rep118():
    depth = np.array([[0.05, np.nan], [0.1, 0.2]], np.float32)
    msg = depth_image(depth, Header(frame_id="cam"))
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("32FC1", 8, "cam")
    back = np.frombuffer(bytes(msg.data), np.float32).reshape(2, 2)
    np.testing.assert_array_equal(back, depth)


def test_point_cloud_round_trip_and_layout():
    points = np.random.default_rng(1).normal(size=(4, 6, 3)).astype(np.float32)
    points[0, 0] = np.nan
    msg = point_cloud(points, np.zeros((4, 6, 3), np.uint8) + np.array([10, 20, 30], np.uint8), Header())
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"] and msg.point_step == 16 and not msg.is_dense
    xyz, rgb = read_point_cloud(msg)
    np.testing.assert_array_equal(xyz, points)
    assert (rgb == [10, 20, 30]).all()


def test_camera_info_scaling_baseline_and_validation():
    info = CameraInfo(width=1280, height=1024)
    info.k = [1000.0, 0, 640, 0, 1000.0, 512, 0, 0, 1]
    info.p = [1000.0, 0, 640, -4.5, 0, 1000.0, 512, 0, 0, 0, 1, 0]
    small = scale_camera_info(info, 320, 256)
    assert (small.width, small.height) == (320, 256)
    np.testing.assert_allclose(intrinsics(small), [[250, 0, 160], [0, 250, 128], [0, 0, 1]])
    assert stereo_baseline(info) == pytest.approx(0.0045)
    assert stereo_baseline(small) == pytest.approx(0.0045)
    with pytest.raises(Uncalibrated, match="^left/camera_info: is uncalibrated") as raised:
        intrinsics(CameraInfo(), "left/camera_info")  # dVRK's placeholder: all zeros
    assert raised.value.topic == "left/camera_info" and "camera_calibration" in raised.value.problem
    broken = CameraInfo(k=[float("nan")] + [0.0] * 8)
    with pytest.raises(ConversionError, match="no valid intrinsics") as raised:
        intrinsics(broken, rectified=False)
    assert not isinstance(raised.value, Uncalibrated) and raised.value.problem.endswith("publish K")
    with pytest.raises(ConversionError, match="no stereo baseline") as raised:
        stereo_baseline(CameraInfo())
    assert raised.value.topic == "right/camera_info"
    with pytest.raises(ConversionError) as raised:
        image_to_rgb8(Image(encoding="yuv422", width=2, height=2, step=4, data=bytes(8)))
    assert raised.value.topic == "" and str(raised.value) == raised.value.problem  # the caller names the topic


def rectified_info(width=340, height=256) -> CameraInfo:
    """image_pipeline's camera_info of image_rect: the raw K (and D), the rectified P."""
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.1, -0.05, 0.0, 0.0, 0.0])
    info.k = [300.0, 0, 170, 0, 300.0, 128, 0, 0, 1]
    info.p = [260.0, 0, 160, -260.0 * 0.0045, 0, 260.0, 120, 0, 0, 0, 1, 0]
    return info


def test_rectified_images_are_measured_with_p_and_raw_ones_with_k():
    info = rectified_info()
    np.testing.assert_allclose(intrinsics(info), [[260, 0, 160], [0, 260, 120], [0, 0, 1]])
    np.testing.assert_allclose(intrinsics(info, rectified=False), [[300, 0, 170], [0, 300, 128], [0, 0, 1]])
    only_k = CameraInfo(k=info.k)  # a publisher that fills K alone: its images are taken as they are
    np.testing.assert_allclose(intrinsics(only_k), intrinsics(info, rectified=False))


def depth_outputs(depth, rgb, info, header, K):
    return output_messages(eye_outputs(depth, rgb, K), info, header)


def test_depth_outputs_follow_the_intrinsics_they_are_given():
    info = rectified_info()
    header = Header(frame_id="cam")
    depth = np.full((256, 340), 0.05, np.float32)
    rgb = np.zeros((256, 340, 3), np.uint8)
    K = intrinsics(info)
    out = depth_outputs(depth, rgb, info, header, K)
    points, _ = read_point_cloud(out["points"])
    v, u = 40, 300
    assert (K @ points[v, u] / points[v, u, 2])[:2] == pytest.approx([u, v], abs=1e-3)  # through P, not K
    np.testing.assert_allclose(np.array(out["info"].p).reshape(3, 4), np.array(info.p).reshape(3, 4))
    raw = depth_outputs(depth, rgb, info, header, intrinsics(info, rectified=False))
    np.testing.assert_allclose(np.array(raw["info"].p).reshape(3, 4)[:, :3], intrinsics(info, rectified=False))
    uncalibrated = depth_outputs(depth, rgb, CameraInfo(), header, None)  # depth, info and colour; no cloud
    assert set(uncalibrated) == {"depth", "info", "colored"}
    assert (uncalibrated["info"].width, uncalibrated["info"].height) == (340, 256)


def test_frame_ids_lose_a_leading_slash_with_one_warning():
    warnings = []
    names = FrameIds(warnings.append)
    assert names("/jhu_daVinci/left_frame") == names("/jhu_daVinci/left_frame") == "jhu_daVinci/left_frame"
    assert names("cam_optical") == "cam_optical"
    assert len(warnings) == 1 and "tf2 rejects" in warnings[0]


finite_or_not = st.one_of(st.floats(-1e4, 1e4), st.just(float("nan")), st.just(float("inf")), st.just(0.0))


@settings(max_examples=300, deadline=None)
@given(k=st.lists(finite_or_not, min_size=9, max_size=9), p=st.lists(finite_or_not, min_size=12, max_size=12),
       width=st.integers(0, 4096), height=st.integers(0, 4096), out_w=st.integers(1, 4096), out_h=st.integers(1, 4096))
@example(k=[1.0] * 9, p=[2.0, 0.0, 0.0, -5e-324] + [0.0] * 8, width=1, height=1, out_w=1, out_h=1)  # B underflows to 0
def test_fuzzed_camera_info_is_valid_or_a_conversion_error(k, p, width, height, out_w, out_h):
    info = CameraInfo(width=width, height=height)
    info.k, info.p = k, p
    for call in (lambda: intrinsics(info), lambda: intrinsics(info, rectified=False), lambda: stereo_baseline(info),
                 lambda: scale_camera_info(info, out_w, out_h)):
        try:
            result = call()
        except ConversionError as e:
            assert "\n" not in str(e)
            continue
        if isinstance(result, np.ndarray):  # K: positive finite focal lengths
            assert np.isfinite(result).all() and result[0, 0] > 0 and result[1, 1] > 0
        elif isinstance(result, float):  # baseline
            assert result > 0
        else:
            assert (result.width, result.height) == (out_w, out_h)


def test_colored_depth_is_warm_near_and_the_same_from_a_tensor():
    depth = np.linspace(0.05, 0.15, 64 * 80, dtype=np.float32).reshape(64, 80)  # far along rows
    depth[0, 0] = np.nan
    colored = colorize_inverse_depth(depth)
    assert colored.shape == (64, 80, 3) and colored.dtype == np.uint8
    assert (colored == colorize_inverse_depth(torch.from_numpy(depth))).all()
    near, far = colored[0, 1].astype(int), colored[-1, -1].astype(int)  # BGR
    assert near[2] > near[0] and far[0] > far[2]


def test_stamps_convert_one_way_everywhere():
    from dares_ros.conversions import stamp_key, stamp_seconds, time_msg

    t = time_msg(1_700_000_123_456_789_012)
    assert stamp_key(t) == (1_700_000_123, 456_789_012)
    assert stamp_seconds(t) == pytest.approx(1_700_000_123.456789, abs=1e-6)
    assert stamp_key(time_msg(999_999_999)) == (0, 999_999_999)
