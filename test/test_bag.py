"""rosbag2 tools: sequences to bags, SCARED intrinsics, playback timing, and the live round trip vs `bag infer`."""

import os
import threading
import time

import numpy as np
import pytest
import rclpy
import yaml
from helpers import write_raw_keyframe
from rclpy.executors import SingleThreadedExecutor
from ros_harness import start_node, stop_node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from dares_core.cli import main
from dares_core.data.prepare import prepare_scared
from dares_core.data.synthetic import SynthConfig, generate
from dares_ros.bag import bag_info, infer_bag, play_bag, read_messages, record_bag, write_sequence_bag
from dares_ros.conversions import compressed_to_rgb8, image_to_rgb8

RIG = "/jhu_daVinci"


@pytest.fixture(scope="module")
def synth_bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("bag")
    scenes = generate(SynthConfig(width=64, height=48, frames=8, sequences=1, seed=9), root / "scenes")
    return scenes, write_sequence_bag(scenes / "dataset1" / "keyframe1", root / "seq.bag"), root / "seq.bag"


def test_synthetic_sequence_bag_topics_and_camera_info(synth_bag, tmp_path):
    scenes, counts, bag = synth_bag
    info = bag_info(bag)
    assert sorted(p.name for p in bag.iterdir()) == ["metadata.yaml", "seq.bag_0.mcap"]  # named as ros2 bag does
    for topic in ("left/image_raw", "left/camera_info", "right/image_raw", "right/camera_info", "ground_truth/depth",
                  "ground_truth/pose"):
        assert info["topics"][f"{RIG}/{topic}"]["count"] == 8
        assert info["topics"][f"{RIG}/{topic}"]["rate_hz"] == pytest.approx(25.0)
    assert info["topics"]["/tf_static"]["type"] == "tf2_msgs/msg/TFMessage"
    right = read_messages(bag, f"{RIG}/right/camera_info", CameraInfo)[0]
    K = SynthConfig(width=64, height=48).intrinsics()
    assert -right.p[3] / right.p[0] == pytest.approx(0.0045)  # baseline in metres
    np.testing.assert_allclose(np.array(right.k).reshape(3, 3), K)
    images = read_messages(bag, f"{RIG}/left/image_raw", Image)
    gt = read_messages(bag, f"{RIG}/ground_truth/depth", Image)
    assert images[3].header.stamp == gt[3].header.stamp and gt[3].encoding == "32FC1"
    assert 0.03 < np.frombuffer(bytes(gt[3].data), np.float32).mean() < 0.15  # metres
    compressed = tmp_path / "c.bag"
    assert main(["bag", "from-synth", str(scenes / "dataset1"), "--out", str(compressed), "--compressed"]) == 0
    jpeg = read_messages(compressed, f"{RIG}/left/image_raw/compressed", CompressedImage)[0]
    assert np.abs(compressed_to_rgb8(jpeg).astype(int) - image_to_rgb8(images[0])).mean() < 6
    assert main(["bag", "from-synth", str(scenes / "dataset1"), "--out", str(compressed)]) == 2  # exists, no --force


def test_scared_keyframe_bag_has_rectified_intrinsics_and_baseline(tmp_path):
    write_raw_keyframe(tmp_path / "raw" / "dataset_1" / "keyframe_1", 0)
    splits = tmp_path / "s"
    splits.mkdir()
    (splits / "test_files.txt").write_text("dataset1/keyframe1\t1\tl\n")
    prepare_scared(tmp_path / "raw", tmp_path / "data", splits)
    bag = tmp_path / "scared.bag"
    assert main(["bag", "from-scared", str(tmp_path / "data" / "dataset1" / "keyframe1"), "--out", str(bag)]) == 0
    left = read_messages(bag, f"{RIG}/left/camera_info", CameraInfo)[0]
    right = read_messages(bag, f"{RIG}/right/camera_info", CameraInfo)[0]
    np.testing.assert_allclose(np.array(left.k).reshape(3, 3), [[50, 0, 32], [0, 50, 24], [0, 0, 1]])
    assert -right.p[3] / right.p[0] == pytest.approx(np.hypot(4.2, 0.1) / 1000, rel=1e-6)
    assert (left.width, left.height) == (64, 48)


def test_bad_bags_are_named(tmp_path, capsys):
    (tmp_path / "nometa").mkdir()
    assert main(["bag", "info", str(tmp_path / "nometa")]) == 2
    assert "no metadata.yaml" in capsys.readouterr().err
    assert main(["bag", "info", str(tmp_path / "missing")]) == 2
    assert f"bag {tmp_path / 'missing'} not found" in capsys.readouterr().err


def test_play_keeps_recorded_timing(tmp_path):
    cfg = SynthConfig(width=32, height=32, frames=100, sequences=1, fps=30.0, seed=1)
    scenes = generate(cfg, tmp_path / "s")
    bag = tmp_path / "b"
    write_sequence_bag(scenes / "dataset1" / "keyframe1", bag)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("timing_probe", context=context)
    arrivals = []
    node.create_subscription(Image, f"/t{os.getpid()}/left", lambda m: arrivals.append(
        (time.monotonic(), m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)), 200)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        stats = play_bag(
            bag,
            topics=[f"{RIG}/left/image_raw"],
            remaps={f"{RIG}/left/image_raw": f"/t{os.getpid()}/left"},
            context=context,
        )
        time.sleep(0.5)
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert stats.published == 100 and len(arrivals) == 100
    arrival, stamp = np.array(arrivals).T
    assert (np.diff(stamp) > 0).all()  # in recorded order
    # the playback rate over 50-frame spans (1.67 s), median over spans: 1 at recorded timing and free of drift;
    # a loaded machine delays single messages by milliseconds, which moves this by a few percent at most
    rates = (stamp[50:] - stamp[:-50]) / (arrival[50:] - arrival[:-50])
    assert np.median(rates) == pytest.approx(1.0, abs=0.05)
    assert arrival[-1] - arrival[0] >= (stamp[-1] - stamp[0]) * 0.98  # never faster than recorded


def test_round_trip_play_node_record_equals_bag_infer(tiny_model, synth_bag, tmp_path):
    weights, _ = tiny_model
    _, _, bag = synth_bag
    offline = tmp_path / "offline.bag"
    infer_bag(bag, weights, offline, input_size=(28, 42), point_stride=4)
    ns = f"/rt{os.getpid()}"
    remaps = {
        "left/image_rect": f"{RIG}/left/image_raw",
        "left/camera_info": f"{RIG}/left/camera_info",
        "right/image_rect": f"{RIG}/right/image_raw",
        "right/camera_info": f"{RIG}/right/camera_info",
    }
    proc = start_node(
        ns,
        f"weights:={weights}",
        "device:=cpu",
        "input_height:=28",
        "input_width:=42",
        "qos:=reliable",
        log=tmp_path / "node.log",
        remaps=remaps,
    )
    stop, ready = threading.Event(), threading.Event()
    recorded = tmp_path / "live.bag"
    deadline = time.monotonic() + 60
    while "loaded" not in (tmp_path / "node.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    recorder = threading.Thread(
        target=record_bag,
        args=([f"{ns}/depth/image", f"{ns}/points"], recorded),
        kwargs=dict(stop=stop, discovery_timeout=30, ready=ready),
    )
    try:
        recorder.start()
        assert ready.wait(40), "the recorder found no depth publisher"
        play_bag(bag, rate=0.25, wait_for=(f"{RIG}/left/image_raw", f"{RIG}/left/camera_info"))
        time.sleep(2)
    finally:
        stop.set()
        recorder.join(timeout=30)
        stop_node(proc)
    live = {
        (m.header.stamp.sec, m.header.stamp.nanosec): m for m in read_messages(recorded, f"{ns}/depth/image", Image)
    }
    off = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in read_messages(offline, "/dares/depth/image", Image)}
    common = sorted(set(live) & set(off))
    topics = yaml.safe_load((recorded / "metadata.yaml").read_text())["rosbag2_bagfile_information"][
        "topics_with_message_count"
    ]
    points_qos = next(
        t["topic_metadata"]["offered_qos_profiles"] for t in topics if t["topic_metadata"]["name"] == f"{ns}/points"
    )
    assert [q["reliability"] for q in points_qos] == ["reliable"]  # the publisher's offer, kept for ros2 bag play
    assert len(read_messages(recorded, f"{ns}/points", PointCloud2)) >= 1  # recorded with a matching QoS
    assert len(common) >= 6, (len(live), (tmp_path / "node.log").read_text()[-1500:])
    for stamp in common:
        a = np.frombuffer(bytes(live[stamp].data), np.float32)
        b = np.frombuffer(bytes(off[stamp].data), np.float32)
        np.testing.assert_allclose(a, b, rtol=1e-5)
