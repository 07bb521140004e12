"""rosbag2 tools: sequences to bags, SCARED intrinsics, playback timing, and the live round trip vs `bag infer`."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from helpers import matched_publisher, write_raw_keyframe
from rclpy.executors import SingleThreadedExecutor
from ros_harness import start_node, stop_node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from dares_core.cli import main
from dares_core.data.prepare import prepare_scared
from dares_core.data.synthetic import SynthConfig, generate
from dares_ros.conversions import compressed_to_rgb8, image_to_rgb8
from dares_ros.tools.bag import bag_info, infer_bag, play_bag, read_messages, record_bag, write_sequence_bag
from dares_ros.tools.processes import wait_until_loaded

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


def mcap_metadata(mcap: Path) -> dict:
    """The rosbag2 metadata record inside an MCAP file (its serialized_metadata YAML), read from the bytes."""
    data = mcap.read_bytes()
    at = data.rindex(b"serialized_metadata") + len(b"serialized_metadata")
    length = int.from_bytes(data[at:at + 4], "little")
    return yaml.safe_load(data[at + 4:at + 4 + length].decode())


def offered_qos(bag: Path) -> dict:
    """{topic: offered_qos_profiles} from metadata.yaml, checked equal to the MCAP's own record; and the file
    names both list."""
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    files = info["relative_file_paths"]
    assert files == [f"{bag.name}_0.mcap"] and {p.name for p in bag.iterdir()} == {"metadata.yaml", *files}
    inside = mcap_metadata(bag / files[0])
    assert inside["relative_file_paths"] == files and [f["path"] for f in inside["files"]] == files
    topics = {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
              for t in info["topics_with_message_count"]}
    assert topics == {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
                      for t in inside["topics_with_message_count"]}
    return topics


def test_every_topic_carries_its_publishers_qos_and_the_files_their_names(synth_bag, tiny_model, tmp_path):
    """ros2 bag play replays each topic with the recorded offer: /tf_static must be transient local (RViz's and
    tf2's static listeners are), and no topic may have an empty list (rosbag2 calls that invalid)."""
    _, _, bag = synth_bag
    topics = offered_qos(bag)
    assert all(len(profiles) == 1 for profiles in topics.values()), topics
    tf_static = topics["/tf_static"][0]
    assert (tf_static["reliability"], tf_static["durability"], tf_static["history"], tf_static["depth"]) == (
        "reliable", "transient_local", "keep_last", 1)
    for topic in (f"{RIG}/left/image_raw", f"{RIG}/right/camera_info", f"{RIG}/ground_truth/depth"):
        assert (topics[topic][0]["reliability"], topics[topic][0]["durability"]) == ("reliable", "volatile")
    weights, _ = tiny_model
    inferred = tmp_path / "inferred.bag"
    infer_bag(bag, weights, inferred, input_size=(28, 42))
    out_topics = offered_qos(inferred)
    assert {t: q for t, q in out_topics.items() if t in topics} == topics  # every input topic's offer, copied
    for topic in ("/dares/depth/image", "/dares/depth/camera_info", "/dares/points"):
        assert (out_topics[topic][0]["reliability"], out_topics[topic][0]["depth"]) == ("reliable", 5)  # the node's


def test_a_transient_local_topic_reaches_a_subscriber_that_joins_during_playback(tmp_path):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from dares_ros.tools.bag import STREAM_QOS, TF_STATIC_QOS, BagWriter

    latched, stream = f"/latched{os.getpid()}", f"/stream{os.getpid()}"
    with BagWriter(tmp_path / "latched.bag") as writer:
        writer.add_topic(latched, "sensor_msgs/msg/CameraInfo", [TF_STATIC_QOS])
        writer.add_topic(stream, "sensor_msgs/msg/CameraInfo", [STREAM_QOS])
        writer.write(latched, CameraInfo(width=7), 0)
        for i in range(1, 40):  # two seconds of playback after the latched message
            writer.write(stream, CameraInfo(width=i), i * 50_000_000)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("late_joiner", context=context)
    published, received = threading.Event(), []
    player = threading.Thread(target=play_bag, args=(tmp_path / "latched.bag",),
                              kwargs=dict(context=context, progress=lambda n: published.set()))
    try:
        player.start()
        assert published.wait(30)  # the latched message is out; now join
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(CameraInfo, latched, received.append, qos)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        player.join(timeout=30)
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert [m.width for m in received] == [7]


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
    wait_until_loaded(proc, tmp_path / "node.log", timeout=60)
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


def test_bag_infer_picks_topics_as_the_demo_does(synth_bag, tiny_model, tmp_path):
    """A bag with image_raw and image_rect: every bag tool takes image_rect (one topic selection)."""
    from dares_ros.tools.bag import BagWriter, Topics

    weights, _ = tiny_model
    _, _, bag = synth_bag
    both = tmp_path / "both.bag"
    with BagWriter(both) as writer:
        for topic, msg in ((f"{RIG}/left/camera_info", read_messages(bag, f"{RIG}/left/camera_info", CameraInfo)[0]),
                           (f"{RIG}/left/image_raw", read_messages(bag, f"{RIG}/left/image_raw", Image)[0]),
                           (f"{RIG}/left/image_rect", read_messages(bag, f"{RIG}/left/image_raw", Image)[1])):
            writer.write(topic, msg, 1)
    assert Topics.of_bag(both).left_image == f"{RIG}/left/image_rect"
    result = infer_bag(both, weights, tmp_path / "out.bag", input_size=(28, 42))
    assert result["image_topic"] == f"{RIG}/left/image_rect"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_record_waits_for_a_late_publisher_and_ctrl_c_or_sigterm_keep_the_bag(tmp_path, stop_signal):
    """`dares bag record` without --duration: started before the publisher, it waits (saying so); Ctrl-C and
    SIGTERM end it with a complete, readable bag, as `ros2 bag record` does, and nothing partial is left."""
    topic, out = f"/rec{os.getpid()}_{int(stop_signal)}", tmp_path / "rec.bag"
    recorder = subprocess.Popen([sys.executable, "-m", "dares_core.cli", "bag", "record", topic, "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"))
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(recorder.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not any("waiting for publishers" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(f"waiting for publishers of {topic}" in line for line in lines), lines
    with matched_publisher(CameraInfo, topic) as publisher:
        for i in range(20):
            publisher.publish(CameraInfo(width=i + 1))
            time.sleep(0.05)
        time.sleep(1.0)
        recorder.send_signal(stop_signal)
        recorder.wait(timeout=60)
    reader.join(timeout=10)
    assert recorder.returncode == 0, lines
    assert bag_info(out)["topics"][topic]["count"] == 20
    assert [m.width for m in read_messages(out, topic, CameraInfo)] == list(range(1, 21))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.bag"]  # no partial folder beside it


def test_bag_infer_applies_the_nodes_camera_info_rule(synth_bag, tiny_model, tmp_path):
    """camera_info of another size than its images, or with intrinsics that are no camera (NaN): `bag infer` refuses
    with one line naming the topic, as the node skips such frames; it never rescales K silently. An uncalibrated
    one (K all zeros, a raw image topic: measured with K) gives depth without points, as the node, and is counted."""
    from dares_core.errors import DaresError
    from dares_ros.tools.bag import BagWriter, bag_info

    weights, _ = tiny_model
    _, _, bag = synth_bag
    image = read_messages(bag, f"{RIG}/left/image_raw", Image)[0]
    info = read_messages(bag, f"{RIG}/left/camera_info", CameraInfo)[0]
    doubled, broken, zero = CameraInfo(), CameraInfo(), CameraInfo()
    for msg in (doubled, broken, zero):
        msg.header, msg.width, msg.height, msg.p = info.header, info.width, info.height, info.p
    doubled.width, doubled.height, doubled.k = 2 * info.width, 2 * info.height, [2 * v for v in info.k]
    broken.k = [float("nan")] * 9
    zero.k = [0.0] * 9
    for name, cam in (("doubled", doubled), ("broken", broken), ("zero", zero)):
        with BagWriter(tmp_path / f"{name}.bag") as writer:
            writer.write(f"{RIG}/left/camera_info", cam, 1)
            writer.write(f"{RIG}/left/image_raw", image, 1)
    for name, message in (("doubled", f"is {2 * info.width}x{2 * info.height} but the image is"),
                          ("broken", "no valid intrinsics")):
        with pytest.raises(DaresError, match=message) as raised:
            infer_bag(tmp_path / f"{name}.bag", weights, tmp_path / f"{name}_out.bag", input_size=(28, 42))
        assert f"{RIG}/left/camera_info" in str(raised.value) and not (tmp_path / f"{name}_out.bag").exists()
    result = infer_bag(tmp_path / "zero.bag", weights, tmp_path / "zero_out.bag", input_size=(28, 42))
    topics = bag_info(tmp_path / "zero_out.bag")["topics"]
    assert result["uncalibrated"] == 1 and topics["/dares/depth/image"]["count"] == 1
    assert topics["/dares/points"]["count"] == 0


def test_a_recording_killed_mid_way_is_repaired_into_a_complete_bag(tmp_path):
    """SIGKILL leaves the hidden partial folder (no metadata.yaml, no MCAP summary); `dares bag repair` turns
    every whole message in it into a complete bag with the recorded type and QoS."""
    topic, out = f"/crash{os.getpid()}", tmp_path / "rec.bag"
    recorder = subprocess.Popen([sys.executable, "-m", "dares_core.cli", "bag", "record", topic, "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"))
    with matched_publisher(Image, topic, depth=50) as publisher:
        time.sleep(1.0)
        for i in range(300):  # 9 KiB each: the recorder's 1 MiB chunks reach the disk
            msg = Image(height=48, width=64, encoding="rgb8", step=192, data=bytes([i % 256]) * (48 * 192))
            msg.header.stamp.sec = i + 1
            publisher.publish(msg)
            time.sleep(0.01)
        time.sleep(2.0)
        recorder.kill()
        recorder.wait(timeout=30)
    assert not out.exists()
    partial = next(tmp_path.glob(".rec.bag.*.partial"))
    repaired = tmp_path / "repaired.bag"
    assert main(["bag", "repair", str(partial), "--out", str(repaired)]) == 0
    images = read_messages(repaired, topic, Image)
    assert len(images) >= 100 and [m.header.stamp.sec for m in images] == list(range(1, len(images) + 1))
    assert bytes(images[-1].data) == bytes([(len(images) - 1) % 256]) * (48 * 192)
    assert offered_qos(repaired)[topic][0]["reliability"] == "reliable"  # the publisher's offer, kept
