"""The ROS graph as users run it: one of our bags replayed as `ros2 bag play` replays it (the recorded QoS; twice,
then looped) into the nodes davinci.launch.py starts with odometry and fusion on (image_proc's rectification stood in
for by a remap: synthetic images are rectified already), and every 3D display of the RViz config it opens resolved
through /tf and /tf_static as RViz resolves frames. Then dares.launch.py with docs/bags-and-rviz.md's remaps and the
shipped RViz config."""

import collections
import os
import subprocess
import threading
import time

import pytest
import rclpy
import yaml
from nav_msgs.msg import Path
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker

from dares_core.data.synthetic import SynthConfig, generate
from dares_core.model.weights import DEMO_MODEL, DEMO_POSE
from dares_ros.conversions import stamp_seconds
from dares_ros.launch_plan import SHIPPED_RVIZ, dares_plan, davinci_plan
from dares_ros.names import RIG
from dares_ros.tools.bag import open_reader, play_bag, write_sequence_bag
from dares_ros.tools.processes import spec_command, stop_node, wait_until_loaded

FRAMES = 16  # 0.64 s at 25 fps: a replay goes back further than sync.JUMP_BACK_S
DISPLAY_TYPES = {"PointCloud2": PointCloud2, "Path": Path, "Marker": Marker, "Image": Image}
READY = {"dares_depth_node": " loaded ", "dares_odometry_node": "odometry from", "dares_fusion_node": "fusing depth"}
LEFT, RIGHT = f"/{RIG}/left/image_raw", f"/{RIG}/right/image_raw"
AS_RECTIFIED = {f"/{RIG}/{eye}/image_raw": f"/{RIG}/{eye}/image_rect" for eye in ("left", "right")}


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graph")
    scenes = generate(SynthConfig(width=320, height=256, frames=FRAMES, sequences=1, seed=4), tmp / "scenes")
    write_sequence_bag(scenes / "dataset1" / "keyframe1", tmp / "synth.bag")
    reader = open_reader(tmp / "synth.bag")
    per_pass = reader.message_count
    reader.close()
    return tmp / "synth.bag", per_pass


class Recorder:
    """Every message of `topics` ({topic: type}) with its arrival order, and the TF edges seen on /tf and
    /tf_static: {(parent, child): [stamp s, ...]} (static edges hold None)."""

    def __init__(self, topics: dict):
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node("graph_recorder", context=self.context)
        self.lock = threading.Lock()
        self.messages = collections.defaultdict(list)
        self.edges = collections.defaultdict(list)
        for topic, kind in topics.items():
            self.node.create_subscription(kind, topic, lambda m, t=topic: self._keep(t, m), 50)
        self.node.create_subscription(TFMessage, "/tf", lambda m: self._edges(m, static=False), 100)
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)  # as tf2's static listener
        self.node.create_subscription(TFMessage, "/tf_static", lambda m: self._edges(m, static=True), latched)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _keep(self, topic, msg):
        with self.lock:
            self.messages[topic].append(msg)

    def _edges(self, msg, static):
        with self.lock:
            for t in msg.transforms:
                self.edges[(t.header.frame_id, t.child_frame_id)].append(None if static else
                                                                         stamp_seconds(t.header.stamp))

    def wait_for_publishers(self, topics, timeout: float = 30.0) -> None:
        """Until every topic has a publisher in the graph: outputs published before they match are lost."""
        deadline = time.monotonic() + timeout
        while any(self.node.count_publishers(t) == 0 for t in topics) and time.monotonic() < deadline:
            time.sleep(0.1)

    def stamps(self, topic):
        with self.lock:
            return [stamp_seconds(m.header.stamp) for m in self.messages[topic]]

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def unresolved(frame: str, stamp: float, fixed: str, edges: dict) -> str:
    """"" when `frame` at `stamp` transforms into `fixed` as tf2 (and RViz) would: a chain of TF edges, each static
    or with stamps around `stamp` (tf2 interpolates between them); else why not."""
    frontier, seen = [frame], {frame}
    while frontier:
        current = frontier.pop()
        if current == fixed:
            return ""
        for (parent, child), stamps in edges.items():
            if current not in (parent, child):
                continue
            dynamic = [s for s in stamps if s is not None]
            if dynamic and not min(dynamic) - 1e-6 <= stamp <= max(dynamic) + 1e-6:
                continue
            other = child if current == parent else parent
            if other not in seen:
                seen.add(other)
                frontier.append(other)
    return f"no transform from {frame} to {fixed} at {stamp:.3f} s (TF edges: {sorted(edges)})"


def passes(stamps: list) -> list:
    """Split stamps in arrival order wherever time went back: one list per replay."""
    out = [[]]
    for s in stamps:
        if out[-1] and s < out[-1][-1]:
            out.append([])
        out[-1].append(s)
    return out


def start_plan(plan, workdir):
    """The plan's dares_ros nodes as `ros2 launch` starts them (image_proc and rviz2 are not here), each loaded."""
    procs = []
    for spec in (n for n in plan.nodes if n.package == "dares_ros"):
        log = workdir / f"{spec.name}.log"
        with open(log, "w") as out:
            procs.append(subprocess.Popen(spec_command(spec), stdout=out, stderr=subprocess.STDOUT,
                                          env={**os.environ, **plan.environment}))
        wait_until_loaded(procs[-1], log, ready=READY[spec.name], node=spec.name)
    return procs


def test_replays_into_the_davinci_launch_give_stereo_depth_in_every_pass_and_frames_rviz_resolves(bag, tmp_path):
    path, per_pass = bag
    plan = davinci_plan({"weights": str(DEMO_MODEL), "device": "cpu", "odometry": "true", "pose_weights":
                         str(DEMO_POSE), "fusion": "true", "mesh": "true"})
    rviz = yaml.safe_load(plan.rviz_config)["Visualization Manager"]
    fixed = rviz["Global Options"]["Fixed Frame"]
    displays = {d["Topic"]["Value"]: DISPLAY_TYPES[d["Class"].split("/")[1]] for d in rviz["Displays"]}
    recorder = Recorder({**displays, "/dares/depth/image": Image})
    procs = start_plan(plan, tmp_path)
    try:
        recorder.wait_for_publishers([t for t, kind in displays.items() if kind is not Image] + ["/tf"])
        listening = {LEFT: 3, RIGHT: 1, "/tf_static": 1}  # the depth, odometry and fusion nodes read the left image
        for _ in range(2):  # played twice, as `ros2 bag play` twice
            play_bag(path, remaps=AS_RECTIFIED, wait_for=listening)
            time.sleep(1.5)  # the last frames through the nodes, and one map publication
        stop, played = threading.Event(), []
        looped = threading.Thread(target=lambda: played.append(
            play_bag(path, loop=True, stop=stop, remaps=AS_RECTIFIED, wait_for=listening)))
        looped.start()
        deadline = time.monotonic() + 60
        while len(passes(recorder.stamps("/dares/depth/image"))) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        looped.join(timeout=30)
        time.sleep(1.5)
        full = 2 + played[0].published // per_pass
        depth_passes = passes(recorder.stamps("/dares/depth/image"))
        logs = {p.name: p.read_text()[-1500:] for p in tmp_path.glob("*.log")}
        assert len(depth_passes) >= full >= 4, (full, [len(p) for p in depth_passes], logs)
        assert all(procs_alive := [p.poll() is None for p in procs]), procs_alive
        for name, consequence in (("dares_depth_node", "stereo pairing starts again"),
                                  ("dares_odometry_node", "a new trajectory starts"),
                                  ("dares_fusion_node", "a new map starts")):
            assert "time went back on" in (log := (tmp_path / f"{name}.log").read_text()) and consequence in log, name

        with recorder.lock:
            edges = dict(recorder.edges)
            messages = {t: list(recorder.messages[t]) for t in displays}
        assert ("jhu_daVinci/left_optical", "jhu_daVinci/right_optical") in edges  # the bag's /tf_static
        for topic, kind in displays.items():
            assert messages[topic], f"nothing on {topic}"
            if kind is Image:
                continue  # RViz shows images without TF
            for msg in messages[topic][-5:]:
                problem = unresolved(msg.header.frame_id, stamp_seconds(msg.header.stamp), fixed, edges)
                assert not problem, f"{topic}: {problem}"
    finally:
        for proc in procs:
            stop_node(proc)
        recorder.close()


def test_a_bag_into_dares_launch_with_the_readme_remaps_fits_the_shipped_rviz_config(bag, tmp_path):
    path, _ = bag
    plan = dares_plan({"weights": str(DEMO_MODEL), "device": "cpu", "camera": f"/{RIG}", "image": "image_raw"})
    fixed = SHIPPED_RVIZ[1]
    recorder = Recorder({"/dares/points": PointCloud2})
    procs = start_plan(plan, tmp_path)
    try:
        recorder.wait_for_publishers(["/dares/points"])
        play_bag(path, wait_for={LEFT: 1, "/tf_static": 1})
        deadline = time.monotonic() + 30
        while not recorder.stamps("/dares/points") and time.monotonic() < deadline:
            time.sleep(0.2)
        with recorder.lock:
            frames = {m.header.frame_id for m in recorder.messages["/dares/points"]}
            edges = dict(recorder.edges)
        assert frames == {fixed}, frames
        assert unresolved(f"{RIG}/right_optical", 0.0, fixed, edges) == ""  # the right eye through /tf_static
    finally:
        for proc in procs:
            stop_node(proc)
        recorder.close()
