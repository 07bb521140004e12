"""dares demo's harness: the nodes started as `ros2 run` starts them, a bag replayed into them in step (each
frame once they answered the one before, within a bound) while their outputs are recorded, and again at the
camera's rate for the achieved rate and latency."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CompressedImage, Image, PointCloud2

from dares_core.errors import DaresError

from ...conversions import (
    stamp_key,
)
from ...names import DEPTH_STATUS, ODOMETRY_STATUS, OUTPUT_NAMESPACE
from .. import bag as bags
from ..bag import Topics
from ..processes import node_process, node_session, wait_until_loaded

NAMESPACE = OUTPUT_NAMESPACE  # the node's namespace, as davinci.launch.py runs it
OUTPUTS = {"depth": f"{NAMESPACE}/depth/image", "info": f"{NAMESPACE}/depth/camera_info",
           "points": f"{NAMESPACE}/points", "confidence": f"{NAMESPACE}/depth/confidence"}
MAP = f"{NAMESPACE}/map/points"  # dares_fusion_node's, when the bag has ground-truth poses
ODOM = f"{NAMESPACE}/odom"  # dares_odometry_node's, when there are pose weights
FUSION = {"voxel_size": 0.001, "truncation": 0.004, "max_depth": 0.2, "publish_rate": 2.0, "device": "cpu",
          "min_observations": 1.0,  # a short demo on a loaded machine may fuse only a few frames
          "qos": "reliable",  # every frame: best effort loses some on a loaded machine, and the map with them
          "pose_source": "camera_pose"}  # the bag's true poses, not the odometry node's beside them


class Arrivals:
    """When (monotonic s) each left image and its outputs reached a node of ours, by stamp: the pacing of a replay
    in step with the nodes, and the rate and latency of a replay at the camera's rate."""

    def __init__(self, node, topics: Topics, odometry: bool):
        self.left_topic = topics.left_image
        self.cond = threading.Condition()
        self.left, self.depth, self.odom, self.map = {}, {}, {}, {}
        self.skipped = 0  # frames the depth node skipped since it started (bad input; its diagnostics, once a second)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)
        image = CompressedImage if topics.compressed else Image
        node.create_subscription(image, topics.left_image, lambda m: self._seen(self.left, m), 100)
        node.create_subscription(Image, OUTPUTS["depth"], lambda m: self._seen(self.depth, m), 100)
        self.outputs = [self.depth]
        if topics.gt_pose:  # dares_fusion_node runs: its map is stamped with the last depth it fused
            node.create_subscription(PointCloud2, MAP, lambda m: self._seen(self.map, m), 10)
        if odometry:
            node.create_subscription(Odometry, ODOM, lambda m: self._seen(self.odom, m), 100)
            self.outputs.append(self.odom)

    def _seen(self, arrivals: dict, msg) -> None:
        with self.cond:
            arrivals.setdefault(stamp_key(msg.header.stamp), time.monotonic())
            self.cond.notify_all()

    def _diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == DEPTH_STATUS and status.hardware_id == f"{NAMESPACE}/dares_depth_node":
                with self.cond:
                    self.skipped = int({kv.key: kv.value for kv in status.values}.get("bad_inputs", self.skipped))
                    self.cond.notify_all()

    def wait_for_outputs(self, published: dict | None = None) -> None:
        """Until the left images published so far (play_bag's count; all seen, without one) have reached us and all
        have their outputs, or as many lack them as the depth node says it skipped (a bad frame in a recorded bag),
        or the bound passes without an output coming: ten times the longest an output has taken so far, at least
        10 s. A loaded machine stalls the nodes for seconds at a time; a bound it could pass would let the replay
        run ahead of them, and the figures would depend on the load."""
        with self.cond:
            self.cond.wait_for(lambda: len(self.left) >= (published or {}).get(self.left_topic, 0), timeout=10.0)
            while True:
                missing = [s for s in self.left if any(s not in out for out in self.outputs)]
                if len(missing) <= self.skipped:
                    return
                taken = [out[s] - self.left[s] for out in self.outputs for s in out if s in self.left]
                bound = max([10.0, *(10 * t for t in taken)])
                before, deadline = self._progress(), time.monotonic() + bound
                while self._progress() == before:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return  # no output and no skip within the bound: that frame got no output
                    self.cond.wait(remaining)

    def _progress(self) -> tuple[int, int]:
        """Outputs received and frames the depth node skipped: what ends a wait (a map, a left image or diagnostics
        that count no new skip do not)."""
        return sum(len(out) for out in self.outputs), self.skipped

    def wait_for_map(self, timeout: float = 10.0) -> None:
        """Until a map holding the newest left image's depth arrives (or `timeout` s)."""
        with self.cond:
            self.cond.wait_for(lambda: not self.left or max(self.left) in self.map, timeout)

    def timing(self) -> dict:
        """Input rate, the depth node's output rate (and the odometry node's), latency from each left image to its
        depth (both as received here)."""
        with self.cond:
            lefts, depths, odoms = dict(self.left), dict(self.depth), dict(self.odom)

        def rate(times):
            times = sorted(times)
            return round((len(times) - 1) / (times[-1] - times[0]), 2) if len(times) > 1 and times[-1] > times[0] \
                else 0.0

        answered = [s for s in lefts if s in depths]
        latency_ms = np.array([depths[s] - lefts[s] for s in answered] or [np.nan]) * 1000
        return {"input_frames": len(lefts), "depth_frames": len(answered), "dropped": len(lefts) - len(answered),
                "input_rate_hz": rate(lefts.values()), "output_rate_hz": rate(depths.values()),
                "latency_ms": {"median": round(float(np.median(latency_ms)), 1),
                               "p99": round(float(np.percentile(latency_ms, 99)), 1),
                               "max": round(float(latency_ms.max()), 1)},
                **({"odometry_rate_hz": rate(odoms.values())} if len(self.outputs) > 1 else {})}


IN_STEP_ONLY = ("qos", "stereo_rate", "temporal_pose_wait", "scale_source")  # the in-step replay's settings (every
# frame, in order, however loaded the machine), which the timed replay leaves at the nodes' defaults, as a user would


@contextlib.contextmanager
def demo_nodes(topics: Topics, params: dict, odometry: dict | None, fusion: dict, logs: Path, remaps: dict):
    """The demo's graph, each node loaded: dares_depth_node with `params` (and a local rclpy node of this process
    beside it), dares_fusion_node with `fusion` where the bag has camera poses, dares_odometry_node with `odometry`.
    Yields (the depth node's process, the local node); they log into `logs` (node.log, fusion.log, odometry.log)."""
    with contextlib.ExitStack() as nodes:
        proc, node = nodes.enter_context(node_session(NAMESPACE, params, logs, "dares_demo", remaps))
        if topics.gt_pose:  # the depth fused over time with the recorded camera poses
            fusion_remaps = {"camera_pose": topics.gt_pose}
            if not topics.compressed:
                fusion_remaps["image"] = topics.left_image
            nodes.enter_context(node_process(NAMESPACE, fusion, logs / "fusion.log", fusion_remaps,
                                             "dares_fusion_node"))
        if odometry:  # camera motion from the pose network, in metres at its weights' recorded unit
            left = {k: v for k, v in remaps.items() if k.startswith("left/image_rect")}
            odometry_proc = nodes.enter_context(node_process(NAMESPACE, odometry, logs / "odometry.log", left,
                                                             "dares_odometry_node"))
        wait_until_loaded(proc, logs / "node.log")
        if odometry:  # its odom topic is in the graph as soon as the fusion node subscribes: wait for the node
            wait_until_loaded(odometry_proc, logs / "odometry.log", ready="odometry from",
                              node="dares_odometry_node")
        yield proc, node


def replay_through_node(bag: Path, topics: Topics, params: dict, recorded: Path, logs: Path,
                        rate: float = 1.0, progress=None, odometry: dict | None = None, timed: bool = True) -> dict:
    """Start the node (and with `odometry` parameters dares_odometry_node beside it), record their outputs (and
    the left image, camera_info and ground truth) while `bag` plays into them in step (each frame once the nodes
    have answered the one before, within a bound), so what is recorded does not depend on the machine's speed or
    load; then, with `timed`, play it again at recorded timing (`rate`) into the nodes started afresh as a user
    launches them (IN_STEP_ONLY at their defaults) for each node's achieved rate and the latency. Returns
    {"published": n, "recorded": {topic: count}, "timing": {...} (with timed)}. The nodes log into `logs`
    (node.log, fusion.log, odometry.log)."""

    remaps = {"left/image_rect": topics.left_image, "left/camera_info": topics.left_info}
    if topics.stereo:
        remaps.update({"right/image_rect": topics.right_image, "right/camera_info": topics.right_info})
    if topics.compressed:
        params = dict(params, input_transport="compressed")
        odometry = odometry and dict(odometry, input_transport="compressed")
        remaps = {k + "/compressed" if k.endswith("image_rect") else k: v for k, v in remaps.items()}
    ground_truth = [t for t in (topics.gt_depth, topics.gt_instruments, topics.gt_pose) if t]
    record = [topics.left_image, topics.left_info, *ground_truth, *OUTPUTS.values(), *([MAP] if topics.gt_pose else []),
              *([ODOM] if odometry else [])]
    results, failures = {}, []
    ready, stop = threading.Event(), threading.Event()

    def guarded(name, fn):
        def run():
            try:
                results[name] = fn()
            except Exception as e:  # surfaced in the calling thread below
                failures.append(e)
                ready.set()
                stop.set()
        return threading.Thread(target=run, name=f"dares-demo-{name}", daemon=True)

    with demo_nodes(topics, params, odometry, FUSION, logs, remaps) as (proc, node):
        context = node.context
        recorder = guarded("recorded", lambda: bags.record_bag(record, recorded, stop=stop, context=context,
                                                               discovery_timeout=60.0, ready=ready))
        in_step = Arrivals(node, topics, bool(odometry))
        if odometry:  # the depth node's stabiliser and our pacing read every pose
            wait_for_odometry_readers(node, 2)
        # every reader of a frame's inputs listens before the first frame: of the left image the pacing, depth,
        # odometry and fusion; of the poses fusion; the recorder of both while it records; of the depth (the depth
        # node's output, which no replay can hold back) the pacing and fusion, seen in the graph
        readers = {topics.left_image: 2 + bool(odometry) + bool(topics.gt_pose and not topics.compressed)}
        if topics.gt_pose:
            readers[topics.gt_pose] = 1
        wait_for_subscribers(node, OUTPUTS["depth"], 1 + bool(topics.gt_pose))
        inputs = [t for t in bags.bag_info(bag)["topics"] if not t.startswith(f"{NAMESPACE}/")]  # a recorded
        # demo's bag holds outputs too: the nodes make them anew
        player = guarded("published", lambda: bags.play_bag(bag, rate, topics=inputs, context=context, go=ready,
                                                            wait_timeout=90.0,
                                                            wait_for={t: n + 1 for t, n in readers.items()},
                                                            progress=progress, pace=in_step.wait_for_outputs).published)
        player.start()
        time.sleep(0.5)  # the player's publishers exist before the recorder looks for them
        recorder.start()
        while player.is_alive():
            player.join(timeout=0.2)
            if proc.poll() is not None:
                stop.set()
                failures.append(DaresError(f"the depth node exited during playback (status {proc.returncode}): "
                                           "see node.log"))
                break
        in_step.wait_for_outputs({topics.left_image: bags.bag_info(bag)["topics"][topics.left_image]["count"]})
        if topics.gt_pose:
            in_step.wait_for_map()
        time.sleep(0.5)  # the recorder writes what reached it
        stop.set()
        recorder.join(timeout=30)
    if timed and not failures:  # again at the camera's rate, as a live camera sends it, into the nodes as a user
        # launches them (the in-step settings at their defaults): they keep up or drop frames
        launched, launched_odometry, launched_fusion = ({k: v for k, v in p.items() if k not in IN_STEP_ONLY} if p
                                                        else p for p in (params, odometry, FUSION))
        (logs / "timed").mkdir(exist_ok=True)
        with demo_nodes(topics, launched, launched_odometry, launched_fusion, logs / "timed", remaps) as (_, node):
            at_rate = Arrivals(node, topics, bool(odometry))
            wait_for_subscribers(node, OUTPUTS["depth"], 1 + bool(topics.gt_pose))
            bags.play_bag(bag, rate, topics=inputs, context=node.context, wait_for=readers)
            time.sleep(2.0)
            results["timing"] = {**at_rate.timing(), "parameters": {k: str(v) for k, v in launched.items()}}
    if failures:
        raise failures[0] if isinstance(failures[0], DaresError) else DaresError(f"replay failed: {failures[0]}")
    return results


def wait_for_odometry_readers(node, count: int, timeout: float = 60.0) -> None:
    """Until dares_odometry_node's diagnostics say its odom publisher has matched `count` subscriptions: a pose
    published before a reader matched is lost to it (the depth node's stabiliser would then start a frame late on
    some runs and not on others, and the figures would depend on discovery timing)."""
    matched = threading.Event()

    def seen(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == ODOMETRY_STATUS and status.hardware_id == f"{NAMESPACE}/dares_odometry_node" and \
                    int({kv.key: kv.value for kv in status.values}.get("odom_subscribers", "0")) >= count:
                matched.set()

    subscription = node.create_subscription(DiagnosticArray, "/diagnostics", seen, 10)
    try:
        if not matched.wait(timeout):
            raise DaresError(f"{ODOM} has not matched its {count} readers after {timeout:.0f} s: see odometry.log")
    finally:
        node.destroy_subscription(subscription)


def wait_for_subscribers(node, topic: str, count: int, timeout: float = 60.0) -> None:
    """Until the graph shows `count` subscriptions to `topic` (a node's output: one published before its readers
    match is lost to them)."""
    deadline = time.monotonic() + timeout
    while node.count_subscribers(topic) < count:
        if time.monotonic() > deadline:
            raise DaresError(f"{topic} has {node.count_subscribers(topic)} of its {count} readers after "
                             f"{timeout:.0f} s: see the node logs")
        time.sleep(0.05)
