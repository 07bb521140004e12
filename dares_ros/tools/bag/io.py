"""Bag files: the typestore, QoS profiles, a writer, a reader, info, repair, and the one topic selection."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.typesys import Stores, get_typestore

from dares_core.errors import DaresError
from dares_core.files import BAG_ENTRIES, atomic_dir

from ...conversions import (
    OUTPUT_QUEUE_DEPTH,
)

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


def bag_qos(profile):
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
TF_STATIC_QOS = bag_qos(QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL))  # as tf2's static broadcaster
STREAM_QOS = bag_qos(QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))  # images, camera_info, truth
NODE_OUTPUT_QOS = bag_qos(QoSProfile(depth=OUTPUT_QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE))  # the node's


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
        hint = (f"a recording a crash left: `dares bag repair {path} --out BAG` makes a complete bag of it"
                if path.name.endswith(".partial") else "re-index it with `ros2 bag reindex`, or `dares bag repair "
                f"{path} --out BAG` if a recording of ours left it")
        raise DaresError(f"{path}: no metadata.yaml, so not a rosbag2 folder ({hint})")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as e:  # rosbags raises several types for damaged bags
        raise DaresError(f"{path}: cannot be read as a rosbag2 ({type(e).__name__}: {e}); "
                         "it may be truncated") from None
    return reader


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


def decode(data, cls):
    """The message of type `cls` that CDR bytes hold, or None where they hold none (a zero-length or damaged message
    in a recorded bag: the tools leave it out and say how many)."""
    try:
        return deserialize_message(bytes(data), cls)
    except Exception:  # rclpy raises its RMW errors, of several types
        return None


def read_messages(path: Path, topic: str, cls) -> list:
    """Every message of `topic` deserialised as `cls`, in bag order."""
    reader = open_reader(path)
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:  # rosbags reads every topic when given none
            return []
        return [msg for _, _, data in reader.messages(connections=conns) if (msg := decode(data, cls)) is not None]
    finally:
        reader.close()


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


def named_topic(reader: Reader, topic: str) -> str:
    """A topic the user named: there, or one line listing what the bag has."""
    topics = [c.topic for c in reader.connections]
    if topic not in topics:
        raise DaresError(f"topic {topic} is not in the bag (it has {', '.join(sorted(topics))})")
    return topic
