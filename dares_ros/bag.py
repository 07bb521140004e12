"""rosbag2 tools on the `rosbags` library: SCARED/synthetic sequences to bags, info, play, record, offline infer, eval.

Bags are rosbag2 folders (metadata.yaml + MCAP by default) that `ros2 bag play` reads. Messages are built by
dares_ros.conversions (the node's own code) and serialised with rclpy's CDR, so bag and live graph carry
identical bytes. Default topics are da Vinci style: /<rig>/left/image_raw, /<rig>/left/camera_info, right
likewise, /<rig>/ground_truth/depth (32FC1 m), /<rig>/ground_truth/pose, and /tf_static (left -> right eye).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from dares_core.data.scared import (
    gt_path,
    image_path,
    instrument_mask_path,
    read_camera_poses,
    read_gt_depth,
    sequence_frames,
)
from dares_core.errors import DaresError
from dares_core.files import BAG_ENTRIES, atomic_dir

from .conversions import (
    OUTPUT_QUEUE_DEPTH,
    depth_image,
    image_to_rgb8,
    read_depth_image,
    set_pose,
    stamp_key,
    time_msg,
    uint8_image,
)
from .graph import prepare_dds
from .names import OUTPUT_NAMESPACE, RIG

START_NS = 1_700_000_000 * 10**9  # fixed first stamp: the same sequence always gives the same bag
TYPESTORE = get_typestore(Stores.ROS2_KILTED)


def msgtype_of(msg) -> str:
    """'sensor_msgs/msg/Image' for an rclpy message instance."""
    return f"{type(msg).__module__.split('.')[0]}/msg/{type(msg).__name__}"


def message_class(msgtype: str):
    """The rclpy class of 'pkg/msg/Name', or None when its package is not installed."""
    pkg, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        return None


def _bag_qos(profile):
    """An rclpy QoSProfile as the rosbags Qos stored in metadata.yaml (the enums share rmw's numbering)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def t(duration):
        ns = duration.nanoseconds
        return QosTime(sec=ns // 10**9, nsec=ns % 10**9)

    return Qos(history=QosHistory(int(profile.history)), depth=profile.depth,
               reliability=QosReliability(int(profile.reliability)), durability=QosDurability(int(profile.durability)),
               deadline=t(profile.deadline), lifespan=t(profile.lifespan),
               liveliness=QosLiveliness(int(profile.liveliness)),
               liveliness_lease_duration=t(profile.liveliness_lease_duration),
               avoid_ros_namespace_conventions=profile.avoid_ros_namespace_conventions)


# What the publishers of our bags' topics offer, recorded per topic so that `ros2 bag play` offers the same:
TF_STATIC_QOS = _bag_qos(QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL))  # as tf2's static broadcaster
STREAM_QOS = _bag_qos(QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))  # images, camera_info, truth
NODE_OUTPUT_QOS = _bag_qos(QoSProfile(depth=OUTPUT_QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE))  # the node's


def default_qos(topic: str):
    """The QoS our tools record for `topic` when no publisher told us its own."""
    return TF_STATIC_QOS if topic == "/tf_static" else STREAM_QOS


class BagWriter:
    """Writes messages into a new rosbag2 folder; the folder appears only when complete (atomic rename).

    Laid out as `ros2 bag record` does: NAME/metadata.yaml and NAME/NAME_0.mcap, the file named so in
    metadata.yaml and in the rosbag2 metadata record inside the MCAP (rosbags names the storage file after the
    folder it writes, so it writes NAME_0/ inside the temporary folder, whose contents then move up)."""

    def __init__(self, path: Path, force: bool = False, storage: str = "mcap"):
        self.path, self.force = Path(path), force
        self.plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
        self.connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self):
        self._atomic = atomic_dir(self.path, self.force, ours=BAG_ENTRIES)
        self._tmp = self._atomic.__enter__()
        self._storage = self._tmp / f"{self.path.name}_0"
        self.writer = Writer(self._storage, version=9, storage_plugin=self.plugin)
        self.writer.open()
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.writer.close()
            if exc_type is None:
                for f in self._storage.iterdir():
                    f.rename(self._tmp / f.name)
                self._storage.rmdir()
        except BaseException as e:  # a bag that failed to close is not committed
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        return self._atomic.__exit__(exc_type, exc, tb)

    def add_topic(self, topic: str, msgtype: str, offered_qos=()) -> None:
        """Declare a topic with the QoS profiles its publishers offered (kept in metadata.yaml and the MCAP);
        none given: default_qos(topic)."""
        self.connections[topic] = self.writer.add_connection(
            topic, msgtype, typestore=TYPESTORE, offered_qos_profiles=list(offered_qos) or [default_qos(topic)])

    def write_raw(self, topic: str, msgtype: str, data: bytes, stamp_ns: int) -> None:
        if topic not in self.connections:
            self.add_topic(topic, msgtype)
        self.writer.write(self.connections[topic], stamp_ns, data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write(self, topic: str, msg, stamp_ns: int) -> None:
        self.write_raw(topic, msgtype_of(msg), serialize_message(msg), stamp_ns)


def open_reader(path: Path) -> Reader:
    path = Path(path)
    if not path.exists():
        raise DaresError(f"bag {path} not found")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise DaresError(f"{path}: no metadata.yaml, so not a rosbag2 folder (re-index it with `ros2 bag reindex`)")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as e:  # rosbags raises several types for damaged bags
        raise DaresError(f"{path}: cannot be read as a rosbag2 ({type(e).__name__}: {e}); "
                         "it may be truncated") from None
    return reader


# --- sequences to bags ----------------------------------------------------------------------------------
def camera_infos(calib: dict, width: int, height: int) -> tuple[CameraInfo, CameraInfo, float]:
    """Left/right CameraInfo (ROS units: P[0,3] = -fx * B with B in metres) and the baseline in metres."""
    baseline_m = calib["baseline_mm"] / 1000.0
    infos = []
    if calib.get("rectified", False):
        Ks = [np.array(calib["K"])] * 2
        Ds = [calib["D"]] * 2
        Rs = [np.eye(3)] * 2
        Ps = [np.array(calib["P_left"], float), np.array(calib["P_right"], float)]
    else:  # raw SCARED: distorted images, R and P from stereoRectify so image_proc can rectify
        rect = calib["rectification"]
        Ks = [np.array(calib["K"]), np.array(calib["K_right"])]
        Ds = [calib["D"], calib["D_right"]]
        Rs = [np.array(rect["R1"]), np.array(rect["R2"])]
        Ps = [np.array(rect["P_left"], float), np.array(rect["P_right"], float)]
    for K, D, R, P in zip(Ks, Ds, Rs, Ps):
        P = P.copy()
        P[:, 3] /= 1000.0  # mm -> m
        info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
        info.k, info.r, info.p = K.ravel().tolist(), R.ravel().tolist(), P.ravel().tolist()
        info.d = [float(x) for x in D]
        infos.append(info)
    return infos[0], infos[1], baseline_m


def _tf_static(rig: str, baseline_m: float, stamp_ns: int) -> bytes:
    T = TYPESTORE.types
    stamp = T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    transform = T["geometry_msgs/msg/TransformStamped"](
        header=T["std_msgs/msg/Header"](stamp=stamp, frame_id=f"{rig}/left_optical"),
        child_frame_id=f"{rig}/right_optical",
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=baseline_m, y=0.0, z=0.0),
            rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
    return bytes(TYPESTORE.serialize_cdr(T["tf2_msgs/msg/TFMessage"](transforms=[transform]), "tf2_msgs/msg/TFMessage"))


def _image_msg(bgr: np.ndarray, compressed: bool):
    if compressed:
        msg = CompressedImage(format="jpeg")
        msg.data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        return msg
    return uint8_image(bgr, "bgr8")


def sequence_folders(path: Path) -> tuple[Path, list[str]]:
    """(data root, ['datasetN/keyframeM', ...]) for a keyframe folder or a dataset folder of keyframes."""
    path = Path(path).resolve()
    if (path / "image_02" / "data").is_dir():
        return path.parent.parent, [f"{path.parent.name}/{path.name}"]
    keyframes = sorted((p for p in path.glob("keyframe*") if (p / "image_02" / "data").is_dir()),
                       key=lambda p: int("".join(c for c in p.name if c.isdigit()) or 0))
    if not keyframes:
        raise DaresError(f"{path}: no image_02/data here or in keyframe*/: pass a prepared keyframe or dataset folder")
    return path.parent, [f"{path.name}/{k.name}" for k in keyframes]


def write_sequence_bag(source: Path, out: Path, compressed: bool = False, rig: str = RIG, force: bool = False,
                       storage: str = "mcap", progress=None) -> dict:
    """A prepared SCARED or synthetic keyframe (or dataset) -> a rosbag2 folder; returns {topic: count}."""
    root, folders = sequence_folders(source)
    prefix = f"/{rig}"
    suffix = "/compressed" if compressed else ""
    with BagWriter(out, force, storage) as bag:
        t_ns = START_NS
        for folder in folders:
            calib_file = root / folder / "calibration.yaml"
            if not calib_file.is_file():
                raise DaresError(f"{calib_file} not found: run `dares prepare-scared` or `dares synth` to write it")
            calib = yaml.safe_load(calib_file.read_text())
            left_info, right_info, baseline = camera_infos(calib, calib["image_width"], calib["image_height"])
            period_ns = int(round(1e9 / float(calib.get("fps") or 25.0)))
            bag.write_raw("/tf_static", "tf2_msgs/msg/TFMessage", _tf_static(rig, baseline, t_ns), t_ns)
            poses = read_camera_poses(root / folder)
            for frame in sequence_frames(root, folder):
                stamp = Header(frame_id=f"{rig}/left_optical")
                stamp.stamp = time_msg(t_ns)
                right_header = Header(stamp=stamp.stamp, frame_id=f"{rig}/right_optical")
                for side, header, info in (("l", stamp, left_info), ("r", right_header, right_info)):
                    eye = "left" if side == "l" else "right"
                    bgr = cv2.imread(str(image_path(root, folder, frame, side)))
                    if bgr is None:
                        raise DaresError(f"{image_path(root, folder, frame, side)} is missing or unreadable")
                    image = _image_msg(bgr, compressed)
                    image.header, info.header = header, header
                    bag.write(f"{prefix}/{eye}/camera_info", info, t_ns)
                    bag.write(f"{prefix}/{eye}/image_raw{suffix}", image, t_ns)
                gt = gt_path(root, folder, frame)
                if gt.is_file():
                    depth_m = read_gt_depth(gt, bgr.shape[0]) / 1000.0
                    bag.write(f"{prefix}/ground_truth/depth", depth_image(depth_m, stamp), t_ns)
                mask = instrument_mask_path(root, folder, frame)
                if mask.is_file():  # synthetic scenes: where the instruments are (mono8, 255 on them)
                    instruments = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
                    bag.write(f"{prefix}/ground_truth/instrument_mask", uint8_image(instruments, "mono8", stamp), t_ns)
                if frame in poses:
                    bag.write(f"{prefix}/ground_truth/pose", _pose_msg(poses[frame], stamp), t_ns)
                t_ns += period_ns
                if progress is not None:
                    progress(1)
    return dict(bag.counts)


def _pose_msg(T_mm: np.ndarray, header):
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped(header=Header(stamp=header.stamp, frame_id="world"))
    set_pose(msg.pose, T_mm, unit=1e-3)
    return msg


# --- info -----------------------------------------------------------------------------------------------
def bag_info(path: Path) -> dict:
    """Topics with type, count and rate, plus duration and storage."""
    reader = open_reader(path)
    try:
        duration = reader.duration / 1e9
        topics = {c.topic: {"type": c.msgtype, "count": c.msgcount,
                            "rate_hz": round((c.msgcount - 1) / duration,
                                             3) if duration > 0 and c.msgcount > 1 else 0.0}
                  for c in reader.connections}
        return {"path": str(path), "duration_s": round(duration, 6), "messages": reader.message_count,
                "start_ns": reader.start_time, "topics": topics}
    finally:
        reader.close()


@dataclass
class PlayStats:
    published: int = 0
    skipped_types: tuple = ()
    max_lateness_s: float = 0.0


def play_bag(path: Path, rate: float = 1.0, loop: bool = False, start: float = 0.0, topics=None, remaps=None,
             clock: bool = False, stop=None, context=None, wait_for: tuple = (), wait_timeout: float = 30.0,
             go=None, progress=None) -> PlayStats:
    """Publish a bag's messages with rclpy at recorded timing (scaled by `rate`) against a monotonic clock.

    remaps: {from: to}; clock: also publish /clock (rosgraph_msgs/Clock) for use_sim_time; stop: an Event;
    wait_for: bag topics that must have a subscriber before the first message (up to wait_timeout s);
    go: an Event that must be set before the first message (same timeout), e.g. a recorder's `ready`;
    progress: called with 1 per published message.
    """
    import rclpy
    from rosgraph_msgs.msg import Clock

    if rate <= 0:
        raise DaresError("--rate must be positive")
    reader = open_reader(path)
    remaps = remaps or {}
    own_context = context is None
    if own_context:
        context = _new_context()
    node = rclpy.create_node("dares_bag_play", context=context)
    stats = PlayStats()
    try:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        publishers, skipped = {}, []
        for c in connections:
            cls = message_class(c.msgtype)
            if cls is None:
                skipped.append(c.msgtype)
                continue
            publishers[c.topic] = node.create_publisher(cls, remaps.get(c.topic, c.topic), _play_qos(c))
        stats.skipped_types = tuple(sorted(set(skipped)))
        clock_pub = node.create_publisher(Clock, "/clock", 10) if clock else None
        missing = [t for t in wait_for if t not in publishers]
        if missing:
            raise DaresError(f"--wait-for topic(s) {', '.join(missing)} are not in {path}")
        deadline = time.monotonic() + wait_timeout
        while any(publishers[t].get_subscription_count() == 0 for t in wait_for):
            if time.monotonic() > deadline:
                raise DaresError(f"no subscriber to {', '.join(wait_for)} after {wait_timeout:.0f} s: is the node "
                                 f"running?")
            time.sleep(0.05)
        if go is not None and not go.wait(max(0.0, deadline - time.monotonic())):
            raise DaresError(f"playback was not released within {wait_timeout:.0f} s")
        time.sleep(0.5)  # let other subscribers match before the first message
        first = reader.start_time + int(start * 1e9)
        while True:
            t0 = time.monotonic()
            for conn, stamp, data in reader.messages(connections=[c for c in connections if c.topic in publishers]):
                if stamp < first:
                    continue
                target = t0 + (stamp - first) / 1e9 / rate
                while (delay := target - time.monotonic()) > 0:
                    if delay > 0.002:  # sleep most of the wait, then spin the last millisecond for precision
                        if stop is not None and stop.wait(min(delay - 0.001, 0.05)):
                            return stats
                        if stop is None:
                            time.sleep(delay - 0.001)
                stats.max_lateness_s = max(stats.max_lateness_s, time.monotonic() - target)
                if clock_pub is not None:
                    msg = Clock()
                    msg.clock = time_msg(stamp)
                    clock_pub.publish(msg)
                publishers[conn.topic].publish(bytes(data))
                stats.published += 1
                if progress is not None:
                    progress(1)
            if not loop or (stop is not None and stop.is_set()):
                return stats
    finally:
        reader.close()
        node.destroy_node()
        if own_context:
            rclpy.shutdown(context=context)


def _play_qos(connection):
    """The publisher QoS for replaying a bag topic, as `ros2 bag play` chooses it from the recorded offers:
    reliable if every recorded publisher was, transient local if every one was (so /tf_static reaches late
    joiners); bags that recorded none get default_qos."""
    from rosbags.interfaces import QosDurability, QosReliability

    offered = connection.ext.offered_qos_profiles or [default_qos(connection.topic)]
    reliable = all(q.reliability == QosReliability.RELIABLE for q in offered)
    latched = all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
    return QoSProfile(depth=max(q.depth for q in offered) or 10,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def _new_context():
    """An rclpy context of a bag tool's own, with the large-data Fast DDS profile (full-size images whole)."""
    import rclpy

    prepare_dds()
    context = rclpy.Context()
    rclpy.init(context=context)
    return context


def _matching_qos(infos):
    """A subscription QoS that receives from every publisher: best effort if any is, transient local if all are."""

    best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
    latched = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    return QoSProfile(depth=100,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def record_bag(topics: list[str], out: Path, duration: float | None = None, force: bool = False, stop=None,
               context=None, discovery_timeout: float | None = None, ready=None, say=None) -> dict:
    """Record live topics (serialized, as published) into a new MCAP bag until `duration` s or `stop` (an Event:
    the CLI sets it on Ctrl-C and SIGTERM), then close the bag whole, as `ros2 bag record` does. Each topic is
    subscribed once its first publisher appears, with a QoS that matches every publisher (their offers are
    kept in the bag). discovery_timeout: give up if a topic has no publisher by then (None: keep waiting);
    ready: an Event set once every topic is subscribed; say: called with progress lines."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    own_context = context is None
    if own_context:
        context = _new_context()
    node = rclpy.create_node("dares_bag_record", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    lock = threading.Lock()
    start = time.monotonic()

    def stopped() -> bool:
        return (stop is not None and stop.is_set()) or bool(duration and time.monotonic() - start >= duration)

    try:
        with BagWriter(out, force) as bag:
            def writer_for(topic, msgtype):
                def store(data):
                    with lock:
                        bag.write_raw(topic, msgtype, bytes(data), node.get_clock().now().nanoseconds)
                return store

            waiting, last_look, announced = list(topics), 0.0, False
            while not stopped():
                if waiting and time.monotonic() - last_look > 0.2:
                    last_look = time.monotonic()
                    known = dict(node.get_topic_names_and_types())
                    for topic in [t for t in waiting if t in known]:
                        msgtype = known[topic][0]
                        if message_class(msgtype) is None:
                            raise DaresError(f"{topic} is a {msgtype}, which has no Python bindings here: "
                                             "record it with `ros2 bag record`")
                        infos = node.get_publishers_info_by_topic(topic)
                        bag.add_topic(topic, msgtype, [_bag_qos(i.qos_profile) for i in infos])
                        node.create_subscription(message_class(msgtype), topic, writer_for(topic, msgtype),
                                                 _matching_qos(infos), raw=True)
                        waiting.remove(topic)
                    if not waiting:
                        for _ in range(10):  # let the subscriptions match their publishers
                            executor.spin_once(timeout_sec=0.05)
                        if ready is not None:
                            ready.set()
                    elif discovery_timeout is not None and time.monotonic() - start > discovery_timeout:
                        raise DaresError(f"no publisher of {', '.join(waiting)} found in {discovery_timeout:.0f} s: "
                                         "check the topic names")
                    elif say is not None and not announced:
                        say(f"waiting for publishers of {', '.join(waiting)} (Ctrl-C ends the recording)")
                        announced = True
                executor.spin_once(timeout_sec=0.05)
            with lock:
                return dict(bag.counts)
    finally:
        executor.shutdown()
        node.destroy_node()
        if own_context:
            rclpy.shutdown(context=context)


def repair_bag(source: Path, out: Path, force: bool = False) -> dict:
    """A recording a crash left unfinished (the `.NAME.*.partial` folder `bag record` was writing, or an .mcap
    with no metadata.yaml or no summary) -> a complete bag of every whole message, read record by record with
    mcap's stream reader, each topic with its recorded type and QoS. Returns {topic: count}."""
    from mcap.exceptions import McapError
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader
    from rosbags.rosbag2.metadata import parse_qos

    source = Path(source)
    files = [source] if source.is_file() else sorted(source.rglob("*.mcap"))
    if not files:
        raise DaresError(f"{source}: no .mcap file here to repair: give the folder a crashed `bag record` left")
    with BagWriter(out, force) as bag:
        for path in files:
            schemas, channels = {}, {}
            with open(path, "rb") as stream:
                try:
                    for record in StreamReader(stream).records:
                        if isinstance(record, Schema):
                            schemas[record.id] = record.name
                        elif isinstance(record, Channel):
                            channels[record.id] = record
                        elif isinstance(record, Message) and record.channel_id in channels:
                            channel = channels[record.channel_id]
                            msgtype = schemas[channel.schema_id]
                            if channel.topic not in bag.connections:
                                offered = channel.metadata.get("offered_qos_profiles")
                                bag.add_topic(channel.topic, msgtype, parse_qos(offered) if offered else ())
                            bag.write_raw(channel.topic, msgtype, bytes(record.data), record.log_time)
                except (McapError, EOFError, ValueError):  # the torn end of the file: what was whole is kept
                    pass
        return dict(bag.counts)


def read_messages(path: Path, topic: str, cls) -> list:
    """Every message of `topic` deserialised as `cls`, in bag order."""
    reader = open_reader(path)
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:  # rosbags reads every topic when given none
            return []
        return [deserialize_message(bytes(data), cls) for _, _, data in reader.messages(connections=conns)]
    finally:
        reader.close()


# --- offline inference and evaluation ----------------------------------------------------------------------


@dataclass
class Topics:
    """Input topics of a bag: left/right image (raw or compressed) and camera_info; ground truth if any.
    The one topic selection of every bag tool: rectified images before raw, raw before compressed."""

    left_image: str
    left_info: str
    right_image: str | None
    right_info: str | None
    gt_depth: str | None
    gt_instruments: str | None = None
    gt_pose: str | None = None

    @classmethod
    def of_bag(cls, path: Path) -> Topics:
        reader = open_reader(path)
        try:
            names = [c.topic for c in reader.connections]
        finally:
            reader.close()
        images = ("image_rect", "image_raw", "image_rect/compressed", "image_raw/compressed")
        return cls(pick_topic(names, tuple(f"left/{s}" for s in images), path),
                   pick_topic(names, ("left/camera_info",), path),
                   pick_topic(names, tuple(f"right/{s}" for s in images), path, required=False),
                   pick_topic(names, ("right/camera_info",), path, required=False),
                   pick_topic(names, ("ground_truth/depth",), path, required=False),
                   pick_topic(names, ("ground_truth/instrument_mask",), path, required=False),
                   pick_topic(names, ("ground_truth/pose",), path, required=False))

    @property
    def compressed(self) -> bool:
        return self.left_image.endswith("/compressed")

    @property
    def stereo(self) -> bool:
        return self.right_image is not None and self.right_info is not None




def pick_topic(names: list[str], suffixes: tuple[str, ...], path: Path, required: bool = True) -> str | None:
    """The topic ending in the first of `suffixes` (in order of preference) that one topic has: the one topic
    selection of every bag tool. Two candidates for a suffix, or none when required, is one line naming the fix."""
    for suffix in suffixes:
        found = sorted(t for t in names if t.endswith(suffix))
        if len(found) > 1:
            raise DaresError(f"{path}: {len(found)} topics end in {suffix} ({', '.join(found)}); "
                             "name the one to use, or replay a bag of one stereo rig")
        if found:
            return found[0]
    if required:
        raise DaresError(f"{path}: no topic ends in {' or '.join(suffixes)}; write the bag with da "
                         "Vinci-style names (`dares bag from-scared`) or name the topic")
    return None


def _named_topic(reader: Reader, topic: str) -> str:
    """A topic the user named: there, or one line listing what the bag has."""
    topics = [c.topic for c in reader.connections]
    if topic not in topics:
        raise DaresError(f"topic {topic} is not in the bag (it has {', '.join(sorted(topics))})")
    return topic


def infer_bag(bag: Path, weights: Path, out: Path, force: bool = False, image_topic: str | None = None,
              info_topic: str | None = None, device: str = "cpu", precision: str = "fp32", input_size=(None, None),
              point_stride: int = 4, fixed_scale: float | None = None, base_weights: Path | None = None,
              batch: int = 8, progress=None) -> dict:
    """Depth for every left image of `bag`, written with all input messages into a new bag; no ROS graph.

    Outputs under /dares: depth/image, depth/camera_info, points, as the node publishes them (same code);
    scale as the node's relative mode (model units read as mm) or `fixed_scale` metres per unit.
    """
    import torch

    from dares_core.inference import DepthPredictor
    from dares_core.model.weights import load_depth_net

    from .conversions import ConversionError, compressed_to_rgb8, depth_outputs

    found = Topics.of_bag(bag) if not (image_topic and info_topic) else None
    reader = open_reader(bag)
    image_topic = _named_topic(reader, image_topic) if image_topic else found.left_image
    info_topic = _named_topic(reader, info_topic) if info_topic else found.left_info
    image_cls = CompressedImage if image_topic.endswith("compressed") else Image
    predictor = DepthPredictor(load_depth_net(weights, base_weights=base_weights), input_size, device, precision)
    scale = fixed_scale if fixed_scale is not None else 1e-3
    infos = {stamp_key(m.header.stamp): m for m in read_messages(bag, info_topic, CameraInfo)}
    if not infos:
        raise DaresError(f"{info_topic} has no messages: the bag needs camera_info for the images")
    latest_info = next(iter(infos.values()))
    written = 0
    try:
        with BagWriter(out, force) as writer:
            pending = []

            def flush():
                nonlocal written
                if not pending:
                    return
                images = torch.from_numpy(np.stack([rgb for _, rgb, _, _ in pending]))
                depths = predictor.predict(images).depth.cpu().numpy()
                for (stamp_ns, rgb, msg, cam), depth in zip(pending, depths):
                    try:
                        out_msgs = depth_outputs((depth * scale).astype(np.float32), rgb, cam, msg.header,
                                                 point_stride, points=True, colored=False)
                    except ConversionError as e:  # the node's rule: the frame's camera_info must describe it
                        raise DaresError(f"{info_topic} at {stamp_ns} ns: {e}") from None
                    for key, topic in (("depth", "depth/image"), ("info", "depth/camera_info"), ("points", "points")):
                        writer.write(f"{OUTPUT_NAMESPACE}/{topic}", out_msgs[key], stamp_ns)
                    written += 1
                    if progress is not None:
                        progress(1)
                pending.clear()

            for conn in reader.connections:  # each input topic keeps the QoS its publishers offered
                if conn.topic not in writer.connections:
                    writer.add_topic(conn.topic, conn.msgtype, conn.ext.offered_qos_profiles)
            for topic, cls in (("depth/image", Image), ("depth/camera_info", CameraInfo), ("points", PointCloud2)):
                writer.add_topic(f"{OUTPUT_NAMESPACE}/{topic}", msgtype_of(cls()), [NODE_OUTPUT_QOS])
            for conn, stamp_ns, data in reader.messages():
                writer.write_raw(conn.topic, conn.msgtype, bytes(data), stamp_ns)
                if conn.topic == image_topic:
                    msg = deserialize_message(bytes(data), image_cls)
                    try:
                        rgb = compressed_to_rgb8(msg) if image_cls is CompressedImage else image_to_rgb8(msg)
                    except ConversionError as e:
                        raise DaresError(f"{image_topic} at {stamp_ns} ns: {e}") from None
                    key = stamp_key(msg.header.stamp)
                    info = latest_info = infos.get(key, latest_info)  # same stamp, else the latest seen
                    if pending and rgb.shape != pending[0][1].shape:
                        flush()
                    pending.append((stamp_ns, rgb, msg, info))
                    if len(pending) == batch:
                        flush()
            flush()
    finally:
        reader.close()
    return {"frames": written, "image_topic": image_topic, "input_size": list(predictor.size)}


def eval_bag(bag: Path, depth_topic: str = f"{OUTPUT_NAMESPACE}/depth/image", gt_topic: str | None = None,
             median_scaling: bool = True, region_topic: str | None = None):
    """SCARED metrics of a bag's depth against its ground-truth topic, frames paired by stamp; frames whose
    depth has no valid pixel are left out (and counted). With `region_topic` (a mask image topic, e.g. the
    synthetic instrument mask) the metrics cover its nonzero pixels, scaled as the whole frame. Returns
    (evaluation, frames left out)."""
    from dares_core.evaluate import evaluate_depth

    reader = open_reader(bag)
    try:
        topics = sorted(c.topic for c in reader.connections)
        gt_topic = _named_topic(reader, gt_topic) if gt_topic else pick_topic(topics, ("ground_truth/depth",), bag)
    finally:
        reader.close()
    if depth_topic not in topics:
        raise DaresError(f"{bag} has no {depth_topic}: run `dares bag infer` on it first, or name the depth topic with "
                         f"--depth-topic (it has {', '.join(topics)})")

    def by_stamp(topic):
        return {stamp_key(m.header.stamp): read_depth_image(m)
                for m in read_messages(bag, topic, Image)}

    preds, gts = by_stamp(depth_topic), by_stamp(gt_topic)
    stamps = sorted(set(preds) & set(gts))
    if not stamps:
        raise DaresError(f"no {depth_topic} message shares a stamp with {gt_topic}: run `dares bag infer` on this bag "
                         f"first")
    valid = {s: np.isfinite(preds[s]) & (preds[s] > 0) for s in stamps}
    empty = [s for s in stamps if not valid[s].any()]
    stamps = [s for s in stamps if valid[s].any()]
    if not stamps:
        raise DaresError(f"every {depth_topic} frame paired with ground truth is all NaN or zero: nothing to evaluate")
    disps = [1.0 / np.where(valid[s], preds[s] * 1000.0, np.inf) for s in stamps]
    disps = [np.where(d > 0, d, np.min(d[d > 0])) for d in disps]  # invalid pixels: farthest valid disparity
    regions = None
    if region_topic is not None:
        masks = {stamp_key(m.header.stamp): image_to_rgb8(m)[..., 0] > 0
                 for m in read_messages(bag, region_topic, Image)}
        regions = [masks.get(s, np.zeros(gts[s].shape, bool)) for s in stamps]
    evaluation = evaluate_depth(np.stack(disps).astype(np.float32), [gts[s] * 1000.0 for s in stamps], median_scaling,
                                regions=regions)
    return evaluation, len(empty)
