"""Bags on a live graph: play (with the QoS each topic was recorded with) and record."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from dares_core.errors import DaresError

from ...conversions import (
    time_msg,
)
from ...graph import prepare_dds
from .io import BagWriter, bag_qos, default_qos, message_class, named_topic, open_reader

ACK_WAIT_S = 10.0  # how long a finished replay waits for its reliable subscribers to acknowledge the last messages


@dataclass
class PlayStats:
    published: int = 0
    skipped_types: tuple = ()
    max_lateness_s: float = 0.0


def play_bag(path: Path, rate: float = 1.0, loop: bool = False, start: float = 0.0, topics=None, remaps=None,
             clock: bool = False, stop=None, context=None, wait_for=(), wait_timeout: float = 30.0,
             go=None, progress=None, pace=None) -> PlayStats:
    """Publish a bag's messages with rclpy at recorded timing (scaled by `rate`) against a monotonic clock.

    topics: only these (each must be in the bag); start: seconds into the bag (before its end);
    remaps: {from: to}; clock: also publish /clock (rosgraph_msgs/Clock) for use_sim_time; stop: an Event;
    wait_for: bag topics that must have a subscriber before the first message (up to wait_timeout s), or
    {topic: how many subscribers} when several nodes must all be listening;
    go: an Event that must be set before the first message (same timeout), e.g. a recorder's `ready`;
    progress: called with 1 per published message; pace: called before each new instant of the bag (the messages
    of one recorded time are one instant) once the one before is out, with {bag topic: messages published so
    far}; it may block to hold playback in step with its consumers, and the time it holds shifts the rest of the
    schedule.
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
    stats, publishers = PlayStats(), {}
    try:
        for topic in topics or ():  # a selection that matches nothing never plays everything
            named_topic(reader, topic)
        duration = (reader.end_time - reader.start_time) / 1e9
        if not 0 <= start < max(duration, 1e-9):
            raise DaresError(f"--start {start:g} s is outside the bag ({duration:.2f} s long): give 0 to "
                             f"{duration:.2f}")
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        skipped = []
        for c in connections:
            cls = message_class(c.msgtype)
            if cls is None:
                skipped.append(c.msgtype)
                continue
            publishers[c.topic] = node.create_publisher(cls, remaps.get(c.topic, c.topic), _play_qos(c))
        stats.skipped_types = tuple(sorted(set(skipped)))
        clock_pub = node.create_publisher(Clock, "/clock", 10) if clock else None
        wanted = dict(wait_for) if isinstance(wait_for, dict) else dict.fromkeys(wait_for, 1)
        missing = [t for t in wanted if t not in publishers]
        if missing:
            raise DaresError(f"--wait-for topic(s) {', '.join(missing)} are not in {path}")
        if not publishers:
            raise DaresError(f"nothing to play: {path}'s selected topics have types without Python bindings here "
                             f"({', '.join(stats.skipped_types)})")
        deadline = time.monotonic() + wait_timeout
        while any(publishers[t].get_subscription_count() < n for t, n in wanted.items()):
            if time.monotonic() > deadline:
                raise DaresError(f"no subscriber to {', '.join(wanted)} after {wait_timeout:.0f} s: is the node "
                                 f"running?")
            time.sleep(0.05)
        if go is not None and not go.wait(max(0.0, deadline - time.monotonic())):
            raise DaresError(f"playback was not released within {wait_timeout:.0f} s")
        time.sleep(0.5)  # let other subscribers match before the first message
        first = reader.start_time + int(start * 1e9)
        sent = dict.fromkeys(publishers, 0)
        while True:
            t0, instant = time.monotonic(), None
            for conn, stamp, data in reader.messages(connections=[c for c in connections if c.topic in publishers]):
                if stamp < first:
                    continue
                if pace is not None and instant is not None and stamp != instant:
                    held = time.monotonic()
                    pace(sent)
                    t0 += time.monotonic() - held
                instant = stamp
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
                sent[conn.topic] += 1
                stats.published += 1
                if progress is not None:
                    progress(1)
            if not loop or (stop is not None and stop.is_set()):
                return stats
    finally:
        if stop is None or not stop.is_set():  # the last messages reach every reliable subscriber before their
            for publisher in publishers.values():  # publisher goes (a loaded one may need them sent again), as
                publisher.wait_for_all_acked(Duration(seconds=ACK_WAIT_S))  # ros2 bag play --wait-for-all-acked
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
    rclpy.init(args=[], context=context)  # not sys.argv: our own options are no ROS arguments
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
                        bag.add_topic(topic, msgtype, [bag_qos(i.qos_profile) for i in infos])
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
