"""dares_depth_node end to end on real rclpy (Fast DDS on loopback), started as its console entry point."""

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from helpers import TINY
from lifecycle_msgs.msg import Transition
from nav_msgs.msg import Odometry
from ros_harness import Harness, camera_info, rgb_image, start_node, stop_node
from sensor_msgs.msg import CompressedImage, Image

from dares_core.data.scared import gt_path, image_path, read_gt_depth
from dares_core.data.synthetic import SynthConfig, generate, sequence_folder
from dares_core.inference import DepthPredictor
from dares_core.model.depth_net import DaresDepthNet, DepthNetConfig
from dares_core.model.weights import load_depth_net, save_depth_net
from dares_core.names import TEMPORAL_TOLERANCE
from dares_ros.conversions import read_depth_image, read_point_cloud

# No instruments: the model here is random (one depth everywhere), so stereo scale returns SGBM's median over the
# pixels it matches, and textureless tools leave holes that bias it; test_demo measures the scale with instruments
# in view and a trained model.
CFG = SynthConfig(width=160, height=128, frames=4, sequences=1, seed=11, instruments=0)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("node")
    torch.manual_seed(0)
    weights = root / "tiny.safetensors"
    save_depth_net(DaresDepthNet(DepthNetConfig.dares("tiny", hf_config=TINY)), weights)
    scenes = generate(CFG, root / "scenes")
    folder = sequence_folder(0)
    frames = [
        {side: np.ascontiguousarray(cv2.imread(str(image_path(scenes, folder, f, side)))[..., ::-1]) for side in "lr"}
        | {"gt_m": read_gt_depth(gt_path(scenes, folder, f)) / 1000.0}
        for f in range(1, CFG.frames + 1)
    ]
    return root, weights, frames


@pytest.fixture(scope="module")
def relative_node(assets):
    root, weights, frames = assets
    ns = f"/t{os.getpid()}_rel"
    proc = start_node(ns, f"weights:={weights}", "device:=cpu", "input_height:=56", "input_width:=70",
                      "point_stride:=1", log=root / "relative.log")
    harness = Harness(ns)
    info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)
    assert harness.wait_for(lambda: harness.received["depth"], timeout=120,  # loaded and matched: each test alone
                            publish=lambda: harness.publish(rgb_image(frames[0]["l"]), info)), \
        (root / "relative.log").read_text()
    yield harness, frames, root / "relative.log", proc
    harness.close()
    stop_node(proc)


def test_outputs_follow_ros_conventions(relative_node):
    h, frames, _, proc = relative_node
    K = CFG.intrinsics()
    info = camera_info(K, CFG.width, CFG.height)
    stamps = []
    ok = h.wait_for(lambda: any(h.outputs_with_stamp("points", s) for s in stamps),
                    publish=lambda: stamps.append(h.publish(rgb_image(frames[0]["l"]), info)))
    assert ok, "no output from the node"
    stamp = next(s for s in stamps if h.outputs_with_stamp("points", s))
    h.wait_for(lambda: all(h.outputs_with_stamp(k, stamp) for k in ("depth", "info", "colored")), timeout=10)
    depth_msg = h.outputs_with_stamp("depth", stamp)[0]
    assert (depth_msg.encoding, depth_msg.height, depth_msg.width) == ("32FC1", CFG.height, CFG.width)
    assert depth_msg.header.frame_id == "cam_left_optical"
    depth = read_depth_image(depth_msg)
    assert np.isfinite(depth).all() and (depth > 0).all()
    info_msg = h.outputs_with_stamp("info", stamp)[0]
    np.testing.assert_allclose(np.array(info_msg.k).reshape(3, 3), K)
    colored = h.outputs_with_stamp("colored", stamp)[0]
    assert (colored.encoding, colored.height, colored.width) == ("bgr8", CFG.height, CFG.width)
    assert h.wait_for(lambda: h.outputs_with_stamp("confidence", stamp), timeout=10)
    confidence_msg = h.outputs_with_stamp("confidence", stamp)[0]  # the depth's header, 32FC1 in [0,1]
    assert (confidence_msg.encoding, confidence_msg.height, confidence_msg.width) == ("32FC1", CFG.height, CFG.width)
    assert confidence_msg.header == depth_msg.header
    confidence = read_depth_image(confidence_msg)
    assert ((confidence >= 0) & (confidence <= 1)).all()
    points, rgb = read_point_cloud(h.outputs_with_stamp("points", stamp)[0])
    assert points.shape == (CFG.height, CFG.width, 3)
    v, u = 40, 100
    p = points[v, u]
    assert p[2] == pytest.approx(depth[v, u], rel=1e-5)
    assert (K @ p / p[2])[:2] == pytest.approx([u, v], abs=1e-3)  # re-projects to its pixel
    assert (rgb[v, u] == frames[0]["l"][v, u]).all()
    assert h.wait_for(
        lambda: any(s.name.startswith("dares_depth_node") for d in h.received["diagnostics"] for s in d.status),
        timeout=5,
    )
    assert h.wait_for(lambda: "stage_own_ms" in latest_status(h)[2], timeout=10,
                      publish=lambda: h.publish(rgb_image(frames[0]["l"]), info))
    _, _, values = latest_status(h)  # the node's own cost, stage by stage (ms, medians over its window)
    stages = {k[len("stage_"):-len("_ms")]: float(v) for k, v in values.items() if k.startswith("stage_")}
    assert set(stages) >= {"receive", "preprocess", "network", "postprocess", "stereo_scale", "cloud", "preview",
                           "publish", "own"}, values
    assert all(ms >= 0 for ms in stages.values()) and stages["own"] >= stages["cloud"]
    assert proc.poll() is None


def test_min_confidence_leaves_out_exactly_the_untrusted_points_live(relative_node):
    """min_confidence (live): the cloud leaves out (NaN) the points whose published confidence is below it, and
    only those; back at 0 none is left out."""
    h, frames, log, _ = relative_node
    info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)
    edges = frames[0]["l"].copy()
    edges[:, ::8] = 255 - edges[:, ::8]  # stripes the random network turns into depth edges

    def outputs():
        stamps = []
        assert h.wait_for(lambda: any(h.outputs_with_stamp("points", s) and h.outputs_with_stamp("confidence", s)
                                      for s in stamps), timeout=30,
                          publish=lambda: stamps.append(h.publish(rgb_image(edges), info))), log.read_text()[-2000:]
        stamp = next(s for s in stamps if h.outputs_with_stamp("points", s) and h.outputs_with_stamp("confidence", s))
        points, _ = read_point_cloud(h.outputs_with_stamp("points", stamp)[0])
        return points, read_depth_image(h.outputs_with_stamp("confidence", stamp)[0])

    _, confidence = outputs()
    threshold = float(np.median(confidence))
    assert confidence.min() < threshold  # a threshold that leaves some out
    try:
        assert h.set_parameter("min_confidence", threshold)
        time.sleep(0.5)  # a frame already on its way out was made before
        points, confidence = outputs()
        np.testing.assert_array_equal(np.isnan(points[..., 2]), confidence < threshold)
    finally:
        assert h.set_parameter("min_confidence", 0.0)
    time.sleep(0.5)
    points, _ = outputs()
    assert np.isfinite(points).all()


class StillCamera:
    """dares_depth_node stabilising one image a still camera sees (camera_pose, identity) under a namespace of its
    own: depth scaled live by fixed_scale (0.001 to start), temporal_weight 0.5, `params` more."""

    def __init__(self, assets, tmp_path, name: str, *params: str):
        _, weights, frames = assets
        self.image = rgb_image(frames[0]["l"])
        self.log = tmp_path / f"{name}.log"
        ns = f"/t{os.getpid()}_{name}"
        self.proc = start_node(ns, f"weights:={weights}", "device:=cpu", "input_height:=56", "input_width:=70",
                               "scale_mode:=fixed", "fixed_scale:=0.001", "temporal_weight:=0.5",
                               "temporal_pose_wait:=1.0", *params, log=self.log)
        self.h = Harness(ns)
        self.info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)
        self.pose = PoseStamped()
        self.pose.header.frame_id, self.pose.pose.orientation.w = "map", 1.0

    def send(self, also=list, with_pose=True):
        """The image, after the messages also() gives ((topic, msg): stamped first, as any pose within
        sync_tolerance of the image's stamp) and the camera pose."""
        stamp = self.h.now()
        for topic, msg in [*also(), *([("camera_pose", self.pose)] if with_pose else [])]:
            msg.header.stamp = stamp
            self.h.pub[topic].publish(msg)
        return self.h.publish(self.image, self.info)

    def depth(self, also=list, with_pose=True) -> np.ndarray:
        """The depth (H,W) metres of the next frame."""
        stamp = self.send(also, with_pose)
        assert self.h.wait_for(lambda: self.h.outputs_with_stamp("depth", stamp), timeout=30), \
            self.log.read_text()[-2000:]
        return read_depth_image(self.h.outputs_with_stamp("depth", stamp)[0])

    def start(self, also=list) -> np.ndarray:
        """The network's depth of the image, once the node answers (nothing changed: nothing to blend)."""
        assert self.h.wait_for(lambda: self.h.received["depth"], publish=lambda: self.send(also), timeout=60), \
            self.log.read_text()[-2000:]
        return self.depth(also)

    def close(self) -> None:
        self.h.close()
        stop_node(self.proc)


PULLED = 1.05**0.5  # a 5 % change of scale held halfway (temporal_scale_weight 0.5, in log space)
BLENDED = PULLED - 0.5 * (1 - ((PULLED - 1) / (TEMPORAL_TOLERANCE * PULLED)) ** 2) * (PULLED - 1)  # then blended
# half and half with the previous output where they agree, the share falling as 1 - x**2 of their difference


def test_the_stabiliser_blends_depth_that_agrees_and_passes_what_does_not(assets, tmp_path):
    """A still camera over one image. With temporal_weight 0.5 a 5 % change of scale is held halfway, then blended
    with the previous output carried by the (null) motion; a change beyond temporal_tolerance passes through; a
    frame without a pose at its stamp goes out unstabilised, and says so. Odometry of another trajectory (5 mm
    nearer each frame), published first at the same stamps, is not taken with pose_source camera_pose."""
    camera = StillCamera(assets, tmp_path, "temporal", "pose_source:=camera_pose")
    odom = Odometry()
    odom.header.frame_id, odom.pose.pose.orientation.w = "odom", 1.0

    def nearer_odometry():
        odom.pose.pose.position.z += 0.005
        return [("odom", odom)]

    h = camera.h
    try:
        first = camera.start(nearer_odometry)
        assert h.set_parameter("fixed_scale", 0.00105)
        np.testing.assert_allclose(camera.depth(nearer_odometry), BLENDED * first, rtol=1e-5)
        assert h.set_parameter("fixed_scale", 0.002)
        np.testing.assert_allclose(camera.depth(nearer_odometry), 2.0 * first, rtol=1e-5)  # passes through
        assert h.set_parameter("fixed_scale", 0.0021)
        np.testing.assert_allclose(camera.depth(with_pose=False), 2.1 * first, rtol=1e-5)
        assert h.wait_for(lambda: int(latest_status(h)[2].get("temporal_unstabilised_frames", 0)) >= 1, timeout=10)
        values = latest_status(h)[2]
        assert float(values["temporal_blended_p50_pct"]) > 0 and float(values["stage_temporal_ms"]) > 0, values
        assert camera.proc.poll() is None
    finally:
        camera.close()


def test_the_stabiliser_never_blends_what_the_mask_marks(assets, tmp_path):
    """temporal_use_mask: an instrument mask at half the image's size marks the top-left quarter. A 5 % change of
    scale is held halfway over the whole frame, then blended everywhere but the quarter, which keeps the new depth;
    a frame whose mask never comes goes out unstabilised, and the node says why."""
    camera = StillCamera(assets, tmp_path, "masked", "temporal_use_mask:=true")
    small = np.zeros((CFG.height // 2, CFG.width // 2), np.uint8)
    small[:CFG.height // 4, :CFG.width // 4] = 255
    mask = Image(height=small.shape[0], width=small.shape[1], encoding="mono8", step=small.shape[1],
                 data=small.tobytes())

    def with_mask():
        return [("mask", mask)]

    try:
        first = camera.start(with_mask)
        assert camera.h.set_parameter("fixed_scale", 0.00105)
        out = camera.depth(with_mask)
        top, left = CFG.height // 2, CFG.width // 2
        np.testing.assert_allclose(out[2:top - 2, 2:left - 2], PULLED * first[2:top - 2, 2:left - 2], rtol=1e-5)
        np.testing.assert_allclose(out[top + 2:, left + 2:], BLENDED * first[top + 2:, left + 2:], rtol=1e-5)
        np.testing.assert_allclose(camera.depth(), 1.05 * first, rtol=1e-5)  # its mask never came
        assert camera.h.wait_for(lambda: "no mask at this frame's stamp" in latest_status(camera.h)[1], timeout=10)
        assert camera.proc.poll() is None
    finally:
        camera.close()


def test_point_stride_changes_live(relative_node):
    h, frames, _, _ = relative_node
    info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)
    assert h.set_parameter("point_stride", 4)
    stamps = []
    assert h.wait_for(
        lambda: any(m.width == CFG.width // 4 and m.header.stamp in stamps for m in h.received["points"]),
        publish=lambda: stamps.append(h.publish(rgb_image(frames[1]["l"]), info)),
        timeout=30,
    )
    assert not h.set_parameter("scale_mode", "magic")
    assert not h.set_parameter("input_width", 99)  # read-only
    h.set_parameter("point_stride", 1)


def _bad_inputs():
    good = rgb_image(np.zeros((CFG.height, CFG.width, 3), np.uint8))
    wrong_encoding = rgb_image(np.zeros((CFG.height, CFG.width, 3), np.uint8))
    wrong_encoding.encoding = "yuv422"
    truncated = rgb_image(np.zeros((CFG.height, CFG.width, 3), np.uint8))
    truncated.data = bytes(truncated.data)[:100]
    padded_step = rgb_image(np.zeros((CFG.height, CFG.width, 3), np.uint8))
    padded_step.step = 7
    nan_info = camera_info(np.full((3, 3), np.nan), CFG.width, CFG.height)
    return {
        "unsupported encoding 'yuv422'": (wrong_encoding, None),
        "the message is truncated": (truncated, None),
        "smaller than width": (padded_step, None),
        "no valid intrinsics": (good, nan_info),
    }


def test_bad_input_is_reported_skipped_and_survived(relative_node):
    h, frames, log, proc = relative_node
    info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)
    for problem, (image, bad_info) in _bad_inputs().items():
        bad_stamp = h.publish(image, bad_info or info)
        assert h.wait_for(lambda problem=problem: problem in log.read_text(), timeout=15), problem
        assert not h.outputs_with_stamp("depth", bad_stamp)  # skipped
        stamps = []  # good data returns: the node recovers
        assert h.wait_for(
            lambda stamps=stamps: any(h.outputs_with_stamp("depth", s) for s in stamps),
            publish=lambda stamps=stamps: stamps.append(h.publish(rgb_image(frames[2]["l"]), info)),
            timeout=30,
        ), problem
    # the image size changes mid-stream, camera_info with it
    small = cv2.resize(frames[3]["l"], (CFG.width // 2, CFG.height // 2))
    small_info = camera_info(np.diag([0.5, 0.5, 1.0]) @ CFG.intrinsics(), CFG.width // 2, CFG.height // 2)
    stamps = []
    assert h.wait_for(
        lambda: any(m.width == CFG.width // 2 and m.header.stamp in stamps for m in h.received["depth"]),
        publish=lambda: stamps.append(h.publish(rgb_image(small), small_info)),
        timeout=30,
    )
    # an image whose camera_info describes another size is refused
    h.publish(rgb_image(frames[0]["l"]), small_info)
    assert h.wait_for(lambda: "publish camera_info matching the images" in log.read_text(), timeout=10)
    assert proc.poll() is None


def test_an_unreadable_message_on_a_reliable_stream_is_named_as_such_and_depth_goes_on(assets, tmp_path):
    """One empty payload (b'') on left/image_rect with qos reliable: the transport drops it as lost and holds the good
    frames behind it a moment; the node's line says what that means on a reliable stream, not the best-effort
    advice about large images, and depth returns."""
    _, weights, frames = assets
    ns = f"/t{os.getpid()}_unreadable"
    log = tmp_path / "node.log"
    proc = start_node(ns, f"weights:={weights}", "device:=cpu", "input_height:=56", "input_width:=70",
                      "qos:=reliable", log=log)
    h = Harness(ns)
    info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)
    try:
        assert h.wait_for(lambda: h.received["depth"], timeout=120,
                          publish=lambda: h.publish(rgb_image(frames[0]["l"]), info)), log.read_text()
        h.pub["left"].publish(b"")  # a serialized message of nothing
        stamps = []
        assert h.wait_for(lambda: any(h.outputs_with_stamp("depth", s) for s in stamps), timeout=30,
                          publish=lambda: stamps.append(h.publish(rgb_image(frames[1]["l"]), info)))
        assert h.wait_for(lambda: "messages lost in transport" in log.read_text(), timeout=10), log.read_text()
        text = log.read_text()
        assert "with qos reliable, a message no subscriber could read" in text and "512 KiB" not in text
        assert proc.poll() is None
    finally:
        h.close()
        stop_node(proc)


def test_an_uncalibrated_camera_gives_depth_without_points(relative_node):
    """dVRK's placeholder camera_info (the image size, K and P all zeros): depth and its camera_info are published
    in relative scale, no cloud, and the log and diagnostics say to calibrate."""
    h, frames, log, proc = relative_node
    placeholder = camera_info(np.zeros((3, 3)), CFG.width, CFG.height)
    stamps = []
    assert h.wait_for(lambda: any(h.outputs_with_stamp("depth", s) for s in stamps),
                      publish=lambda: stamps.append(h.publish(rgb_image(frames[1]["l"]), placeholder)), timeout=30)
    stamp = next(s for s in stamps if h.outputs_with_stamp("depth", s))
    assert h.wait_for(lambda: h.outputs_with_stamp("info", stamp), timeout=10)
    assert np.isfinite(read_depth_image(h.outputs_with_stamp("depth", stamp)[0])).all()
    info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)
    later = h.publish(rgb_image(frames[1]["l"]), info)  # points follow a calibrated frame, never this one
    assert h.wait_for(lambda: h.outputs_with_stamp("points", later), timeout=30)
    assert not h.outputs_with_stamp("points", stamp)
    assert "calibrate the camera" in log.read_text()
    assert h.wait_for(lambda: any("uncalibrated" in s.message for d in h.received["diagnostics"] for s in d.status),
                      publish=lambda: h.publish(rgb_image(frames[1]["l"]), placeholder), timeout=10)
    assert proc.poll() is None


def test_a_frame_id_with_a_leading_slash_is_published_without_it(relative_node):
    h, frames, log, _ = relative_node
    info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)
    stamps = []
    assert h.wait_for(lambda: any(h.outputs_with_stamp("points", s) for s in stamps),
                      publish=lambda: stamps.append(h.publish(rgb_image(frames[0]["l"]), info,
                                                              frame_id="/jhu_daVinci/left_frame")), timeout=30)
    stamp = next(s for s in stamps if h.outputs_with_stamp("points", s))
    assert h.outputs_with_stamp("points", stamp)[0].header.frame_id == "jhu_daVinci/left_frame"
    assert log.read_text().count("starts with '/'") == 1


LOSSY_PUBLISHER = """
import sys, time, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("lossy_camera")
pub = node.create_publisher(Image, sys.argv[1], qos_profile_sensor_data)
msg = Image(height=1024, width=1280, encoding="bgr8", step=3 * 1280, data=bytes(1024 * 1280 * 3))
for _ in range(40):
    msg.header.stamp = node.get_clock().now().to_msg()
    pub.publish(msg)
    time.sleep(0.1)
"""


def test_images_lost_in_transport_are_reported_with_the_fix(relative_node, tmp_path):
    """A camera publishing 1280x1024 best effort without the large-data profile: Fast DDS loses the frames
    (its shared-memory segments hold 512 KiB); the node says so and names the profile."""
    h, _, log, proc = relative_node
    plain = tmp_path / "plain.xml"  # Fast DDS defaults: what a camera driver started elsewhere has
    plain.write_text(
        '<dds xmlns="http://www.eprosima.com"><profiles><participant profile_name="plain" '
        'is_default_profile="true"><rtps/></participant></profiles></dds>'
    )
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(plain))
    camera = subprocess.run(
        [sys.executable, "-c", LOSSY_PUBLISHER, f"{h.ns}/left/image_rect"],
        env=env,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert camera.returncode == 0, camera.stderr[-1000:]
    assert h.wait_for(lambda: "messages lost in transport" in log.read_text(), timeout=10), log.read_text()[-1000:]
    assert "fastdds_large_data.xml" in log.read_text()
    assert h.wait_for(
        lambda: any(
            int(dict((v.key, v.value) for v in s.values).get("lost_in_transport", 0)) > 0
            for d in h.received["diagnostics"]
            for s in d.status
        ),
        timeout=5,
    )
    assert proc.poll() is None


def test_stereo_mode_recovers_metric_depth(assets):
    """A rectified pair as image_pipeline publishes it: camera_info with the raw K (here 25 % longer focal length,
    another centre) and the rectified P the images follow. Depth scale and cloud follow P. Dense SGBM: with this
    model's constant depth the scale is the median stereo depth of the matched pixels, which for sparse matches
    depends on where they fall (test_sync_scale and test_demo measure the sparse matcher's scale)."""
    root, weights, frames = assets
    ns = f"/t{os.getpid()}_stereo"
    log = root / "stereo.log"
    proc = start_node(ns, f"weights:={weights}", "device:=cpu", "input_height:=56", "input_width:=70",
                      "scale_mode:=stereo", "stereo_matcher:=sgbm", "stereo_downscale:=1", "stereo_num_disparities:=32",
                      "stereo_max_age:=1.0", log=log)
    h = Harness(ns)
    try:
        K = CFG.intrinsics()
        raw_K = np.diag([1.25, 1.25, 1.0]) @ K + np.array([[0, 0, 9.0], [0, 0, -6.0], [0, 0, 0]])
        baseline = CFG.baseline_mm / 1000
        left_info = camera_info(raw_K, CFG.width, CFG.height, rectified=K)
        right_info = camera_info(raw_K, CFG.width, CFG.height, baseline, rectified=K)
        sent = {}

        def publish():
            i = len(sent) % len(frames)
            stamp = h.publish(rgb_image(frames[i]["l"]), left_info, rgb_image(frames[i]["r"]), right_info)
            sent[(stamp.sec, stamp.nanosec)] = i

        assert h.wait_for(lambda: len(h.received["depth"]) >= 6, publish=publish, timeout=90), log.read_text()[-2000:]
        errors = []
        for msg in h.received["depth"][3:]:
            gt = frames[sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)]]["gt_m"]
            errors.append(abs(np.median(read_depth_image(msg)) / np.median(gt) - 1))
        assert max(errors) < 0.10, errors  # with K's focal length it would be 25 % off
        msg = h.received["points"][-1]
        points, _ = read_point_cloud(msg)  # every 4th pixel (point_stride 4)
        v, u = 10, 30
        assert (K @ points[v, u] / points[v, u, 2])[:2] == pytest.approx([4 * u, 4 * v], abs=1e-3)
        # SGBM finds no match on a blank right eye: depth goes on with the last scale, and once it is
        # older than stereo_max_age the node says so
        blank = rgb_image(np.zeros_like(frames[0]["r"]))
        count = len(h.received["depth"])
        assert h.wait_for(lambda: "the stereo scale is" in log.read_text() and len(h.received["depth"]) > count,
                          publish=lambda: h.publish(rgb_image(frames[0]["l"]), left_info, blank, right_info),
                          timeout=30), log.read_text()[-2000:]
        assert "old (stereo_max_age 1 s)" in log.read_text()
        # a right eye of another size is refused, the node goes on
        small = cv2.resize(frames[0]["r"], (CFG.width // 2, CFG.height // 2))
        h.publish(rgb_image(frames[0]["l"]), left_info, rgb_image(small), right_info)
        assert h.wait_for(lambda: "publish a rectified pair of one size" in log.read_text(), timeout=10)
        assert proc.poll() is None
    finally:
        h.close()
        stop_node(proc)


def test_both_eyes_at_full_size_in_one_batch(assets):
    """eyes: both at 1280x1024: each eye's depth is the model's depth of that eye's image, and the large outputs
    (5 MiB depth, 1.3 MiB clouds) reach best-effort subscribers in another process (the Fast DDS large-data
    profile; without it Fast DDS drops nearly every best-effort message over 512 KiB)."""
    root, weights, frames = assets
    ns = f"/t{os.getpid()}_eyes"
    log = root / "eyes.log"
    proc = start_node(ns, f"weights:={weights}", "device:=cpu", "input_height:=56", "input_width:=70", "eyes:=both",
                      "point_stride:=4", "publish_colored:=false", log=log)
    h = Harness(ns)
    try:
        width, height = 1280, 1024
        K = np.diag([width / CFG.width, height / CFG.height, 1.0]) @ CFG.intrinsics()
        left_info, right_info = camera_info(K, width, height), camera_info(K, width, height, CFG.baseline_mm / 1000)
        left, right = (cv2.resize(frames[1][side], (width, height)) for side in "lr")
        stamps = []
        assert h.wait_for(
            lambda: any(h.outputs_with_stamp("points", s) and h.outputs_with_stamp("right_points", s) for s in stamps),
            publish=lambda: stamps.append(h.publish(rgb_image(left), left_info, rgb_image(right), right_info)),
            timeout=90,
            period=0.5,
        ), log.read_text()[-2000:]
        stamp = next(s for s in stamps if h.outputs_with_stamp("points", s) and h.outputs_with_stamp("right_points", s))
        assert h.wait_for(
            lambda: h.outputs_with_stamp("depth", stamp) and h.outputs_with_stamp("right_depth", stamp), timeout=10
        )
        predictor = DepthPredictor(load_depth_net(weights), (56, 70), "cpu")
        expected = predictor.predict(torch.from_numpy(np.stack([left, right]))).depth.numpy() * 1e-3  # mm -> m
        for i, key in enumerate(("depth", "right_depth")):
            msg = h.outputs_with_stamp(key, stamp)[0]
            assert (msg.height, msg.width) == (height, width)
            np.testing.assert_allclose(read_depth_image(msg), expected[i], rtol=1e-4)
        assert h.outputs_with_stamp("right_depth", stamp)[0].header.frame_id == "cam_right_optical"
        np.testing.assert_allclose(np.array(h.outputs_with_stamp("right_info", stamp)[0].p), right_info.p)
        points, _ = read_point_cloud(h.outputs_with_stamp("right_points", stamp)[0])
        assert points.shape == (height // 4, width // 4, 3)
        v, u = 100, 200
        assert points[v, u, 2] == pytest.approx(expected[1][4 * v, 4 * u], rel=1e-4)
        assert proc.poll() is None
    finally:
        h.close()
        stop_node(proc)


def test_lifecycle_mode_with_compressed_input(assets):
    root, weights, frames = assets
    ns = f"/t{os.getpid()}_lc"
    log = root / "lifecycle.log"
    proc = start_node(ns, "device:=cpu", "input_height:=56", "input_width:=70", "lifecycle:=true",
                      "input_transport:=compressed", log=log)
    h = Harness(ns)
    try:
        info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)

        def jpeg():
            msg = CompressedImage(format="jpeg")
            msg.data = cv2.imencode(".jpg", frames[0]["l"][..., ::-1])[1].tobytes()
            return msg

        assert not h.change_state(Transition.TRANSITION_CONFIGURE)  # no weights yet: configure fails
        assert "no weights set" in log.read_text()
        assert h.set_parameter("weights", str(weights))
        assert h.change_state(Transition.TRANSITION_CONFIGURE)
        assert not h.wait_for(
            lambda: h.received["depth"], publish=lambda: h.publish(jpeg(), info), timeout=3
        )  # inactive
        assert h.change_state(Transition.TRANSITION_ACTIVATE)
        assert h.wait_for(lambda: h.received["depth"], publish=lambda: h.publish(jpeg(), info), timeout=30)
        msg = h.received["depth"][-1]
        assert (msg.encoding, msg.height, msg.width) == ("32FC1", CFG.height, CFG.width)
        assert h.change_state(Transition.TRANSITION_DEACTIVATE)
    finally:
        h.close()
        stop_node(proc)


BAD_PARAMETERS = {  # kind: (-p argument, what the one line must name)
    "unknown choice": ("scale_mode:=magic", "parameter scale_mode: 'magic' is not allowed: give one of relative"),
    "out of range": ("point_stride:=0", "parameter point_stride: 0 is not allowed: give integer from 1 to 64"),
    "wrong type": ("fixed_scale:=abc", "parameter fixed_scale: 'abc' is not allowed: give double"),
}


def bare_node_command(namespace: str, *params: str) -> list[str]:
    """`ros2 run dares_ros dares_depth_node --ros-args -p ...` without a params file: rcl drops a -p value whose
    type differs from the same parameter's in a params file, so a wrong type reaches the node only this way."""
    cmd = [str(Path(sys.executable).parent / "dares_depth_node"), "--ros-args", "-r", f"__ns:={namespace}"]
    return cmd + [arg for param in params for arg in ("-p", param)]


@pytest.mark.parametrize("kind", BAD_PARAMETERS)
def test_invalid_parameters_stop_a_self_starting_node_with_one_line(assets, kind):
    root, weights, _ = assets
    argument, line = BAD_PARAMETERS[kind]
    cmd = bare_node_command(f"/t{os.getpid()}_bad", f"weights:={weights}", "device:=cpu", argument)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"))
    assert run.returncode == 2, run.stdout + run.stderr
    assert line in run.stderr + run.stdout and "Traceback" not in run.stderr


@pytest.mark.parametrize("kind", BAD_PARAMETERS)
def test_invalid_parameters_fail_a_lifecycle_nodes_configure(assets, kind):
    root, weights, _ = assets
    argument, line = BAD_PARAMETERS[kind]
    ns, log = f"/t{os.getpid()}_badlc", root / f"bad_lifecycle_{kind.replace(' ', '_')}.log"
    cmd = bare_node_command(ns, f"weights:={weights}", "device:=cpu", "lifecycle:=true", argument)
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1"))
    h = Harness(ns)
    try:
        assert not h.change_state(Transition.TRANSITION_CONFIGURE)
        assert line in log.read_text() and proc.poll() is None
    finally:
        h.close()
        stop_node(proc)


def test_live_parameter_changes_are_checked_by_the_same_rule(relative_node):
    h, _, _, _ = relative_node
    assert not h.set_parameter("point_stride", 0) and not h.set_parameter("scale_mode", "magic")
    assert not h.set_parameter("fixed_scale", "abc")
    assert h.set_parameter("fixed_scale", 2) and h.set_parameter("point_stride", 1)  # an integer serves a double


def test_network_input_size_comes_from_the_checkpoint_unless_given(tmp_path):
    from dares_core.model.weights import DEMO_MODEL

    for extra, size in (((), "128x160"), (("input_height:=32", "input_width:=48"), "32x48")):
        log = tmp_path / f"{size}.log"
        proc = start_node(f"/t{os.getpid()}_size", f"weights:={DEMO_MODEL}", "device:=cpu", *extra, log=log)
        try:
            deadline = time.monotonic() + 60
            while " loaded " not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            assert f"network input {size}" in log.read_text()
        finally:
            stop_node(proc)


def latest_status(h):
    """(level, message, values) of the newest diagnostics status of the node under the harness's namespace."""
    with h.lock:
        for array in reversed(h.received["diagnostics"]):
            for status in array.status:
                if status.hardware_id == f"{h.ns}/dares_depth_node":
                    return status.level, status.message, {v.key: v.value for v in status.values}
    return None, "", {}


def test_dares_depth_node_help_lists_the_parameters_and_exits():
    run = subprocess.run([str(Path(sys.executable).parent / "dares_depth_node"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and "usage: dares_depth_node" in run.stdout
    assert all(f"  {name}" in run.stdout for name in ("weights", "scale_mode", "input_height", "lifecycle"))


def test_unreadable_weights_are_named_in_the_log_and_diagnostics(assets, tmp_path):
    bad = tmp_path / "text.pth"
    bad.write_text("not a checkpoint\n" * 10)
    ns, log = f"/t{os.getpid()}_badweights", tmp_path / "node.log"
    proc = start_node(ns, f"weights:={bad}", "device:=cpu", log=log)
    h = Harness(ns)
    try:
        assert h.wait_for(lambda: latest_status(h)[0] is not None, timeout=60)
        level, message, _ = latest_status(h)
        assert level == DiagnosticStatus.ERROR and f"{bad}: not a readable PyTorch checkpoint" in message
        assert f"{bad}: not a readable PyTorch checkpoint" in log.read_text() and proc.poll() is None
        assert "Traceback" not in log.read_text()
    finally:
        h.close()
        stop_node(proc)


def test_stereo_mode_without_right_images_says_so(assets, tmp_path):
    root, weights, frames = assets
    ns, log = f"/t{os.getpid()}_noright", tmp_path / "node.log"
    proc = start_node(ns, f"weights:={weights}", "device:=cpu", "input_height:=56", "input_width:=70",
                      "scale_mode:=stereo", log=log)
    h = Harness(ns)
    try:
        info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)
        image = rgb_image(frames[0]["l"])
        assert h.wait_for(lambda: "right/image_rect: no right image in the last 5 s; remap" in log.read_text(),
                          publish=lambda: h.publish(image, info), timeout=60), log.read_text()[-1000:]
        h.wait_for(lambda: "right" in latest_status(h)[1], publish=lambda: h.publish(image, info), timeout=10)
        level, message, _ = latest_status(h)
        assert level == DiagnosticStatus.ERROR and "publishing nothing" in message and "right/image_rect" in message

        def apart():  # right images stamped 50 ms after their left ones: they arrive, but never pair
            stamp = h.publish(image, info)
            late = rgb_image(frames[0]["r"])
            late.header.frame_id, late.header.stamp = "cam_right_optical", stamp
            late.header.stamp.nanosec = (stamp.nanosec + 50_000_000) % 1_000_000_000
            late.header.stamp.sec = stamp.sec + (stamp.nanosec + 50_000_000) // 1_000_000_000
            h.pub["right"].publish(late)

        assert h.wait_for(lambda: "right images arrive but none matched a left stamp within sync_tolerance 0.01 s in "
                                  "the last 5 s (nearest 0.050 s apart)" in log.read_text(), publish=apart,
                          timeout=60), log.read_text()[-1000:]
        assert not h.received["depth"]
    finally:
        h.close()
        stop_node(proc)


def test_diagnostics_tell_what_is_published_now(assets, tmp_path):
    """ERROR while every frame is rejected, WARN while frames pass with recent problems, OK once a whole window
    passes cleanly (last_error cleared); latency is measured from receipt, so a replayed bag's old stamps show
    in stamp_age, not in latency."""
    root, weights, frames = assets
    ns, log = f"/t{os.getpid()}_diag", tmp_path / "node.log"
    proc = start_node(ns, f"weights:={weights}", "device:=cpu", "input_height:=56", "input_width:=70", log=log)
    h = Harness(ns)
    try:
        info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)
        bad = rgb_image(frames[0]["l"])
        bad.encoding = "yuv422"
        assert h.wait_for(lambda: latest_status(h)[0] == DiagnosticStatus.ERROR,
                          publish=lambda: h.publish(bad, info), timeout=60), latest_status(h)
        assert "publishing nothing" in latest_status(h)[1] and "yuv422" in latest_status(h)[1]

        def publish_old():  # stamped as a bag recorded long ago and replayed now would be
            msg, cam = rgb_image(frames[1]["l"]), camera_info(CFG.intrinsics(), CFG.width, CFG.height)
            for m in (cam, msg):
                m.header.stamp.sec, m.header.frame_id = 1_000_000, "cam_left_optical"
            h.pub["left_info"].publish(cam)
            h.pub["left"].publish(msg)

        assert h.wait_for(lambda: latest_status(h)[0] == DiagnosticStatus.WARN, publish=publish_old, timeout=30)
        assert h.wait_for(lambda: latest_status(h)[0] == DiagnosticStatus.OK, publish=publish_old, timeout=30)
        level, message, values = latest_status(h)
        assert message.startswith("publishing depth at") and values["last_error"] == ""
        assert float(values["rate_hz"]) > 0 and float(values["stamp_age_p50_s"]) > 1e8
        assert float(values["latency_p50_s"]) < float(values["stamp_age_p50_s"]) / 1e6
    finally:
        h.close()
        stop_node(proc)


def test_the_onnxruntime_backend_runs_checked_and_says_so_in_diagnostics(assets, tmp_path):
    """backend onnxruntime: the node exports its graph once, checks it against torch on a probe image, runs it on the
    first provider there is (TensorRT and CUDA are named missing on a CPU-only install), and its depth is torch's."""
    root, weights, frames = assets
    ns = f"/t{os.getpid()}_onnx"
    log = tmp_path / "onnx.log"
    os.environ["DARES_CACHE"] = str(tmp_path / "cache")  # the node inherits it
    try:
        proc = start_node(ns, f"weights:={weights}", "device:=cpu", "input_height:=56", "input_width:=70",
                          "backend:=onnxruntime", log=log)
    finally:
        del os.environ["DARES_CACHE"]
    h = Harness(ns)
    info = camera_info(CFG.intrinsics(), CFG.width, CFG.height)
    try:
        assert h.wait_for(lambda: h.received["depth"], timeout=120,
                          publish=lambda: h.publish(rgb_image(frames[0]["l"]), info)), log.read_text()
        assert h.wait_for(lambda: latest_status(h)[2].get("backend", "").startswith("onnxruntime"), timeout=10,
                          publish=lambda: h.publish(rgb_image(frames[0]["l"]), info)), log.read_text()
        values = latest_status(h)[2]
        assert values["backend"] == "onnxruntime CPUExecutionProvider"
        assert float(values["backend_check_rel_diff"]) < 1e-3
        text = log.read_text()
        assert "TensorrtExecutionProvider) is not in this install" in text and "checked against torch" in text
        assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
        torch_mm = DepthPredictor(load_depth_net(weights), (56, 70)).predict(
            torch.from_numpy(frames[0]["l"])[None]).depth[0].numpy()
        np.testing.assert_allclose(read_depth_image(h.received["depth"][-1]), torch_mm * 1e-3, rtol=1e-4)
    finally:
        h.close()
        stop_node(proc)
