"""`dares demo`: the whole product on built-in data, through a real ROS 2 graph (loopback only).

A synthetic da Vinci stereo sequence is written as a rosbag, replayed in step (each frame once the nodes answered
the one before, within a bound: the figures do not depend on the machine's speed or load) into dares_depth_node
(started as `ros2 run` starts it, stereo scale on) and dares_odometry_node, and the nodes' outputs are recorded into
a new bag together with the input left image and ground truth; a second replay at recorded timing measures the
achieved rate and latency.
Everything shown is read back from that recorded bag: the picture strip and video (input | predicted |
ground-truth depth on one mm scale), a point cloud (.ply and an oblique render), the camera trajectory
against the bag's ground-truth poses, the surface dares_fusion_node fused from the depth and those poses
(when the bag has them), and report.md with the SCARED metrics, the recovered stereo scale error, the
odometry's ATE and RE, the fused surface's distance to the true one, and the achieved rate and latency.
`--weights W --bag B [--pose-weights P]` runs the same flow on real data.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from dares_core.errors import DaresError
from dares_core.evaluate import evaluate_pose
from dares_core.files import atomic_dir, atomic_file, write_image
from dares_core.inference import network_input_size
from dares_core.model.weights import DEMO_MODEL, DEMO_POSE, load_depth_net
from dares_core.names import TEMPORAL_WEIGHT
from dares_core.pose import plot_trajectories
from dares_core.reconstruct import scale_translation, surface_distances, world_points
from dares_core.visualize import depth_range, depth_strip, render_point_cloud

from ..conversions import (
    compressed_to_rgb8,
    image_to_rgb8,
    intrinsics,
    pose_matrix,
    read_depth_image,
    read_mask,
    read_point_cloud,
    stamp_key,
)
from ..graph import prepare_dds
from ..names import DEPTH_STATUS, ODOMETRY_STATUS, OUTPUT_NAMESPACE
from . import bag as bags
from .bag import Topics
from .processes import node_process, node_session, wait_until_loaded

NAMESPACE = OUTPUT_NAMESPACE  # the node's namespace, as davinci.launch.py runs it
OUTPUTS = {"depth": f"{NAMESPACE}/depth/image", "info": f"{NAMESPACE}/depth/camera_info",
           "points": f"{NAMESPACE}/points"}
MAP = f"{NAMESPACE}/map/points"  # dares_fusion_node's, when the bag has ground-truth poses
ODOM = f"{NAMESPACE}/odom"  # dares_odometry_node's, when there are pose weights
FUSION = {"voxel_size": 0.001, "truncation": 0.004, "max_depth": 0.2, "publish_rate": 2.0, "device": "cpu",
          "min_observations": 1.0,  # a short demo on a loaded machine may fuse only a few frames
          "qos": "reliable",  # every frame: best effort loses some on a loaded machine, and the map with them
          "pose_source": "camera_pose"}  # the bag's true poses, not the odometry node's beside them
REPORT_TITLE = "# dares demo"


def check_demo_folder(out: Path) -> None:
    """Only a folder an earlier demo wrote (or an empty one) is ever replaced."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    report = out / "report.md"
    if not (out.is_dir() and report.is_file() and report.read_text().startswith(REPORT_TITLE)):
        raise DaresError(f"{out} exists and is not a dares demo output: pass another --out (the demo replaces its "
                         f"folder)")


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
        """Input and output rate, latency from each left image to its depth (both as received here)."""
        with self.cond:
            lefts, depths = dict(self.left), dict(self.depth)

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
                               "max": round(float(latency_ms.max()), 1)}}


class Progress:
    """Numbered step lines with their durations."""

    def __init__(self, steps: int, say=print):
        self.steps, self.say, self.n, self.t0 = steps, say, 0, None

    def step(self, text: str) -> None:
        self.done()
        self.n += 1
        self.t0 = time.monotonic()
        self.say(f"[{self.n}/{self.steps}] {text}")

    def done(self) -> None:
        if self.t0 is not None:
            self.say(f"      done in {time.monotonic() - self.t0:.1f} s")
            self.t0 = None


def replay_through_node(bag: Path, topics: Topics, params: dict, recorded: Path, logs: Path,
                        rate: float = 1.0, progress=None, odometry: dict | None = None, timed: bool = True) -> dict:
    """Start the node (and with `odometry` parameters dares_odometry_node beside it), record their outputs (and
    the left image, camera_info and ground truth) while `bag` plays into them in step (each frame once the nodes
    have answered the one before, within a bound), so what is recorded does not depend on the machine's speed or
    load; then, with `timed`, play it again at recorded timing (`rate`) for the achieved rate and latency. Returns
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

    with contextlib.ExitStack() as nodes:
        proc, node = nodes.enter_context(node_session(NAMESPACE, params, logs, "dares_demo", remaps))
        if topics.gt_pose:  # the depth fused over time with the recorded camera poses
            fusion_remaps = {"camera_pose": topics.gt_pose}
            if not topics.compressed:
                fusion_remaps["image"] = topics.left_image
            nodes.enter_context(node_process(NAMESPACE, FUSION, logs / "fusion.log", fusion_remaps,
                                             "dares_fusion_node"))
        if odometry:  # camera motion from the pose network, in metres at its weights' recorded unit
            left = {k: v for k, v in remaps.items() if k.startswith("left/image_rect")}
            odometry_proc = nodes.enter_context(node_process(NAMESPACE, odometry, logs / "odometry.log", left,
                                                             "dares_odometry_node"))
        wait_until_loaded(proc, logs / "node.log")
        if odometry:  # its odom topic is in the graph as soon as the fusion node subscribes: wait for the node
            wait_until_loaded(odometry_proc, logs / "odometry.log", ready="odometry from",
                              node="dares_odometry_node")
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
        if timed and not failures:  # again at the camera's rate, as a live camera sends it: the nodes start
            at_rate = Arrivals(node, topics, bool(odometry))  # again (time went back) and keep up or drop frames
            bags.play_bag(bag, rate, topics=inputs, context=context, wait_for=readers)
            time.sleep(2.0)
            results["timing"] = at_rate.timing()
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


@dataclass
class RecordedFrame:
    """One input frame that got depth: rgb (H,W,3) uint8; depth_mm, gt_mm (H,W) or None."""

    stamp: tuple[int, int]
    rgb: np.ndarray
    depth_mm: np.ndarray
    gt_mm: np.ndarray | None


def _by_stamp(path: Path, topic: str, cls) -> dict:
    """{header stamp: (receive time s, message)} of one topic of a recorded bag."""
    reader = bags.open_reader(path)
    try:
        out = {}
        for _, t_ns, data in reader.messages(connections=[c for c in reader.connections if c.topic == topic]):
            msg = deserialize_message(bytes(data), cls)
            out[stamp_key(msg.header.stamp)] = (t_ns * 1e-9, msg)
        return out
    finally:
        reader.close()


def recorded_frames(path: Path, topics: Topics) -> list[RecordedFrame]:
    """The frames of a recorded demo bag that got depth, in stamp order."""
    lefts = _by_stamp(path, topics.left_image, CompressedImage if topics.compressed else Image)
    depths = _by_stamp(path, OUTPUTS["depth"], Image)
    gts = _by_stamp(path, topics.gt_depth, Image) if topics.gt_depth else {}
    to_rgb = compressed_to_rgb8 if topics.compressed else image_to_rgb8
    frames = [RecordedFrame(s, to_rgb(lefts[s][1]), read_depth_image(depths[s][1]) * 1000.0,
                            read_depth_image(gts[s][1]) * 1000.0 if s in gts else None)
              for s in sorted(set(lefts) & set(depths))]
    if not frames:
        raise DaresError(f"{path}: the node published no depth for the replayed frames; see the node log above")
    return frames


def write_pictures(frames: list[RecordedFrame], out: Path, fps: float) -> dict:
    """strip.png (three moments), demo.mp4 and demo.gif (every frame) on one depth scale; returns the scale."""
    from PIL import Image as PILImage

    has_gt = frames[0].gt_mm is not None
    near, far = depth_range(*[f.gt_mm if has_gt else f.depth_mm for f in frames])
    picks = sorted({int(round(q * (len(frames) - 1))) for q in (0.15, 0.5, 0.85)})
    strip = np.vstack([depth_strip(frames[i].rgb, frames[i].depth_mm, frames[i].gt_mm, near, far, titles=(k == 0))
                       for k, i in enumerate(picks)])
    write_image(out / "strip.png", strip)
    rows = [depth_strip(f.rgb, f.depth_mm, f.gt_mm, near, far) for f in frames]
    height, width = rows[0].shape[:2]
    with atomic_file(out / "demo.mp4") as tmp:
        video = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not video.isOpened():
            raise DaresError(f"OpenCV cannot write MPEG-4 video to {tmp.parent}: check opencv-python-headless")
        for row in rows:
            video.write(row)
        video.release()
    small = [PILImage.fromarray(cv2.cvtColor(cv2.resize(r, (width // 2, height // 2), interpolation=cv2.INTER_AREA),
                                             cv2.COLOR_BGR2RGB)) for r in rows]
    with atomic_file(out / "demo.gif") as tmp:
        small[0].save(tmp, save_all=True, append_images=small[1:], duration=int(round(1000 / fps)), loop=0)
    return {"near_mm": round(near, 1), "far_mm": round(far, 1)}


def write_point_cloud(recorded: Path, stamp: tuple[int, int], out: Path) -> int:
    """points.ply (metres, camera optical frame) of the node's published cloud at `stamp` and points.png."""
    _, msg = _by_stamp(recorded, OUTPUTS["points"], PointCloud2).get(stamp, (None, None))
    if msg is None:
        raise DaresError(f"{recorded}: no {OUTPUTS['points']} message for the chosen frame (points are best effort)")
    points, rgb = read_point_cloud(msg)
    valid = np.isfinite(points).all(-1)
    points, rgb = points[valid].astype(np.float64), rgb[valid]
    _write_ply(out / "points.ply", points, rgb)
    render_point_cloud(points * 1000.0, rgb, out / "points.png", f"{OUTPUTS['points']}: {len(points)} points")
    return len(points)


def write_fused_surface(recorded: Path, topics: Topics, frames: list[RecordedFrame], out: Path) -> dict:
    """fused.ply (metres, the poses' world frame) and fused.png (seen from the middle frame's camera) of
    dares_fusion_node's last map, with its distances in mm to the ground-truth surface of the frames
    (accuracy, completeness, Chamfer; the node's depth keeps its own scale, ground truth is metric)."""
    maps = _by_stamp(recorded, MAP, PointCloud2)
    if not maps:
        raise DaresError(f"{recorded}: dares_fusion_node published no {MAP} (it needs depth and "
                         f"{topics.gt_pose} with matching stamps)")
    _, last = max(maps.values(), key=lambda received: received[0])  # the map after the last frame
    points, rgb = (a.reshape(-1, 3) for a in read_point_cloud(last))
    if not len(points):
        raise DaresError(f"{recorded}: the last {MAP} is empty: dares_fusion_node fused no frame (its poses were "
                         "rejected or never matched the depth)")
    poses = {s: pose_matrix(m.pose) for s, (_, m) in _by_stamp(recorded, topics.gt_pose, PoseStamped).items()}
    K = intrinsics(next(iter(_by_stamp(recorded, topics.left_info, CameraInfo).values()))[1])
    truth = [world_points(f.gt_mm, K, scale_translation(poses[f.stamp], 1000), stride=4) for f in frames
             if f.gt_mm is not None and f.stamp in poses]
    distances = surface_distances(points * 1000.0, np.concatenate(truth)) if truth else {}
    _write_ply(out / "fused.ply", points.astype(np.float64), rgb)
    middle = scale_translation(poses[frames[len(frames) // 2].stamp], 1000)
    seen = (np.linalg.inv(middle) @ np.c_[points * 1000.0, np.ones(len(points))].T).T[:, :3]
    render_point_cloud(seen, rgb, out / "fused.png", f"{MAP}: {len(points)} points, seen from the middle frame")
    return {"points": len(points), **{k: round(v, 2) for k, v in distances.items()}}


def temporal_stability(recorded: Path, topics: Topics, frames: list[RecordedFrame]) -> dict:
    """TAE of the node's depth over the recorded frames with the bag's camera poses (scaled once for the sequence),
    the whole frame and the tissue alone (the bag's instrument mask), beside the ground truth's own, the floor."""
    from dares_core.evaluate import temporal_errors

    poses = {s: scale_translation(pose_matrix(m.pose), 1000) for s, (_, m) in
             _by_stamp(recorded, topics.gt_pose, PoseStamped).items()}
    frames = [f for f in frames if f.gt_mm is not None and f.stamp in poses]
    if len(frames) < 2:
        return {}
    K = intrinsics(next(iter(_by_stamp(recorded, topics.left_info, CameraInfo).values()))[1])
    masks = _by_stamp(recorded, topics.gt_instruments, Image) if topics.gt_instruments else {}
    tissue = np.stack([~read_mask(masks[f.stamp][1]) for f in frames]) \
        if masks and all(f.stamp in masks for f in frames) else None
    result = temporal_errors(np.stack([f.depth_mm for f in frames]), np.stack([f.gt_mm for f in frames]), K,
                             np.stack([poses[f.stamp] for f in frames]), tissue)
    return {k: round(v, 4) for k, v in result.items()}


def write_trajectory(recorded: Path, topics: Topics, out: Path) -> dict:
    """trajectory.png of dares_odometry_node's camera path against the bag's ground-truth poses, and the official
    ATE (mm, 5-frame snippets, scale-aligned) and RE (rad) over the frames both have, with the ATE of a camera
    that stands still and the predicted path length over the true one (the odometry's own metric scale)."""
    odoms = {s: pose_matrix(m.pose.pose) for s, (_, m) in _by_stamp(recorded, ODOM, Odometry).items()}
    truth = {s: pose_matrix(m.pose) for s, (_, m) in _by_stamp(recorded, topics.gt_pose, PoseStamped).items()}
    stamps = sorted(set(odoms) & set(truth))
    if len(stamps) < 3:
        raise DaresError(f"{recorded}: dares_odometry_node published {len(odoms)} poses, {len(stamps)} of them at "
                         f"frames with ground truth; see odometry.log")

    def relative(poses):  # T_i: camera i's points into camera i+1's, mm
        poses = [scale_translation(poses[s], 1000) for s in stamps]
        return np.stack([np.linalg.inv(b) @ a for a, b in zip(poses, poses[1:])])

    predicted, ground_truth = relative(odoms), relative(truth)
    scores = evaluate_pose(predicted, ground_truth)
    length = float(np.linalg.norm(predicted[:, :3, 3], axis=1).sum() / np.linalg.norm(ground_truth[:, :3, 3],
                                                                                      axis=1).sum())
    plot_trajectories(predicted, ground_truth, out / "trajectory.png",
                      f"{ODOM} against ground truth: ATE {scores['ate_mean']:.3f} mm, RE {scores['re_mean']:.4f} rad")
    return {"frames": len(stamps), "ate_mm": round(scores["ate_mean"], 4), "ate_std_mm": round(scores["ate_std"], 4),
            "re_rad": round(scores["re_mean"], 5), "still_ate_mm": round(scores["still_ate_mean"], 4),
            "path_length_ratio": round(length, 3)}


def _write_ply(path: Path, points_m: np.ndarray, rgb: np.ndarray) -> None:
    """A coloured point cloud (N,3) metres, (N,3) uint8 as PLY, atomically."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points_m))
    cloud.colors = o3d.utility.Vector3dVector(rgb / 255.0)
    with atomic_file(path) as tmp:
        if not o3d.io.write_point_cloud(str(tmp), cloud):
            raise DaresError(f"could not write {path}")


def _metrics_table(rows: dict) -> str:
    from dares_core.evaluate import METRICS

    names = ("AbsRel", "SqRel", "RMSE (mm)", "RMSElog", "δ<1.25", "δ<1.25²", "δ<1.25³")
    lines = ["| scaling | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, evaluation in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{evaluation.mean[m]:.3f}" for m in METRICS) + " |")
    return "\n".join(lines)


def write_report(out: Path, summary: dict, metric_rows: dict) -> None:
    s, t = summary, summary["timing"]
    lines = [REPORT_TITLE, "",
             f"{s['source']} was replayed into `dares_depth_node` on a ROS 2 graph (ROS_DOMAIN_ID {s['domain_id']}, "
             "loopback only) in step with the nodes (each frame once they answered the one before), so these figures "
             "do not depend on the machine's speed or load; the node's outputs were recorded into `recorded_bag/`, "
             "and everything below but the rate and latency is read back from that bag.", "",
             f"- model: {s['model']}; pose network: {s['pose_weights']}",
             f"- device {s['device']}, {s['precision']}, network input {s['input_size'][0]}x{s['input_size'][1]}, "
             f"scale mode `{s['scale_mode']}`", ""]
    if s["model_is_demo"]:
        lines += ["The built-in model is a tiny Depth-Anything-V2-architecture network, and its pose network a small "
                  "ResNet, trained by `dares train` on synthetic scenes (docs/demo_model.md): they show the pipeline "
                  "working, not DARES accuracy. For real data run `dares demo --weights depth_model.pth "
                  "--pose-weights weights/ --bag your_scared_bag` with the official DARES checkpoint and pose "
                  "weights.", ""]
    if metric_rows:
        lines += ["## Depth against ground truth (SCARED protocol)", "",
                  f"{s['frames_with_depth']} frames, ground truth capped at 150 mm. Median-scaled is the protocol of "
                  "the paper; metric uses the node's own scale. \"Instruments only\" covers the pixels of the "
                  "synthetic instrument mask (each frame scaled as a whole): tools are where surgeons need depth "
                  "most.", "", _metrics_table(metric_rows), ""]
    if s.get("temporal"):
        m = s["temporal"]
        tissue = (f" (tissue alone {m['tae_tissue']}; its floor {m['tae_floor_tissue']})" if "tae_tissue" in m
                  else "")
        lines += ["## Temporal stability", "",
                  "TAE (temporal alignment error, Video Depth Anything): each frame's depth carried into the next "
                  "with the bag's camera motion and compared there by AbsRel, both directions, the depth scaled once "
                  f"for the whole sequence. **TAE {m['tae']}**{tissue}; the ground truth's own TAE, the floor that "
                  f"occlusions and moving instruments leave: {m['tae_floor']}.", ""]
    if "stereo_scale_error" in s:
        lines += ["## Stereo scale", "",
                  f"The node recovers metric scale from the rectified pair (SGBM). Ground truth / predicted depth, "
                  f"median over frames: {s['stereo_scale_ratio']:.3f}, a scale error of "
                  f"**{100 * s['stereo_scale_error']:+.1f} %** (frame-to-frame spread "
                  f"{100 * s['stereo_scale_spread']:.1f} %).", ""]
    if "fused" in s:
        f = s["fused"]
        lines += ["## Fused surface", "",
                  "`dares_fusion_node` fused the node's depth with the bag's camera poses (`ground_truth/pose`) into a "
                  f"TSDF (1 mm voxels): {f['points']} points. Against the ground-truth surface of the same frames: "
                  f"accuracy {f.get('accuracy_mm')} mm, completeness {f.get('completeness_mm')} mm, **Chamfer "
                  f"{f.get('chamfer_mm')} mm** (the depth keeps the node's own scale, so a scale error shows here).",
                  ""]
    if "odometry" in s:
        o = s["odometry"]
        lines += ["## Camera motion", "",
                  "`dares_odometry_node` chained the pose network's frame-to-frame motion, in metres at the unit its "
                  "weights record (`scale_source: fixed`; live, `depth_node` takes the depth node's scale, which "
                  "reaches it once a second, at moments a replay does not repeat). Against the bag's ground-truth "
                  f"poses over {o['frames']} frames, "
                  "as official evaluate_pose.py scores it (5-frame snippets, scale-aligned): "
                  f"**ATE {o['ate_mm']} mm** (std {o['ate_std_mm']}; a camera predicted to stand still scores "
                  f"{o['still_ate_mm']} mm), RE {o['re_rad']} rad. Path length against the true one, unaligned: "
                  f"{o['path_length_ratio']}.", ""]
    lines += ["## Rate and latency", "",
              f"A second replay at {s['rate']}x recorded timing, as a live camera sends frames: input "
              f"{t['input_frames']} frames at {t['input_rate_hz']} Hz; depth for {t['depth_frames']} "
              f"({t['dropped']} dropped by the node's latest-frame policy) at {t['output_rate_hz']} Hz. "
              f"Latency from the input image to its depth image, both as received by the recorder: "
              f"median {t['latency_ms']['median']} ms, p99 {t['latency_ms']['p99']} ms, max {t['latency_ms']['max']} "
              f"ms.",
              "", "## Files", "",
              "- `strip.png`: input | predicted depth | ground-truth depth at three moments, one colour scale "
              f"({s['depth_scale']['near_mm']}-{s['depth_scale']['far_mm']} mm)",
              "- `demo.mp4`, `demo.gif`: the same for every frame",
              f"- `points.ply` (metres, optical frame, {s['points']} points) and `points.png`: the node's point cloud "
              "of the middle frame",
              *(["- `fused.ply` (metres, world frame) and `fused.png`: the fused surface"] if "fused" in s else []),
              *(["- `trajectory.png`: the odometry against ground truth, top and side views"] if "odometry" in s
                else []),
              "- `recorded_bag/`: the recorded rosbag2 (MCAP); `dares bag info recorded_bag`, `ros2 bag play "
              "recorded_bag`",
              "- `summary.json`: these figures for scripts", ""]
    with atomic_file(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))


@contextlib.contextmanager
def logs_kept_on_failure():
    """A folder for the nodes' logs, removed when the block ends (the demo moves it into its output first) but
    kept, and named in the message, when a DaresError ends the block after a node has logged."""
    logs = Path(tempfile.mkdtemp(prefix="dares-demo-logs-"))
    keep = False
    try:
        yield logs
    except DaresError as e:
        keep = logs.is_dir() and any(logs.iterdir())
        if keep:
            raise DaresError(f"{e} (the nodes' logs are kept in {logs})") from None
        raise
    finally:
        if not keep:
            shutil.rmtree(logs, ignore_errors=True)


def demo_parameters(model: Path, input_size: tuple[int, int], scale_mode: str, pose_weights: Path | None,
                    device: str = "cpu", precision: str = "fp32",
                    temporal_weight: float = TEMPORAL_WEIGHT) -> tuple[dict, dict | None]:
    """The demo's parameters of dares_depth_node and, with `pose_weights`, of dares_odometry_node (else None);
    temporal_weight: the depth node's stabiliser with the odometry's poses (0: off; without odometry it is off)."""
    params = {"weights": model, "device": device, "precision": precision, "input_height": input_size[0],
              "input_width": input_size[1], "scale_mode": scale_mode, "point_stride": 2, "publish_colored": "false",
              "qos": "reliable",
              "stereo_rate": 0.0}  # stereo scale from every frame, in order: the same figures on any machine
    # metres at the pose weights' recorded unit (scale_source fixed): the depth node's scale reaches a live
    # odometry node through diagnostics once a second, at moments no replay repeats
    odometry = pose_weights and {"pose_weights": pose_weights, "device": device, "qos": "reliable",
                                 "scale_source": "fixed"}
    if odometry and temporal_weight:  # each frame waits for its own pose, which the odometry node gives every
        # frame, however loaded the machine (a bounded wait would make figures of load)
        params.update(temporal_weight=temporal_weight, temporal_pose_wait=60.0)
    return params, odometry


def run_demo(out: Path = Path("demo_out"), weights: Path | None = None, bag: Path | None = None,
             input_size: tuple[int, int] | None = None, rate: float = 1.0, frames: int = 40,
             size: tuple[int, int] = (320, 256), device: str = "cpu", precision: str = "fp32",
             scale_mode: str | None = None, pose_weights: Path | None = None, say=print) -> dict:
    """The demo flow (see the module docstring); writes `out` in one rename at the end and returns the summary."""
    import os

    from tqdm import tqdm

    from dares_core.data.synthetic import SynthConfig, generate, sequence_folder

    prepare_dds(local_only=True)  # the demo graph never leaves this machine
    out = Path(out).resolve()
    check_demo_folder(out)
    if bag is not None and weights is None:
        raise DaresError("--bag needs --weights too: the built-in model is trained on synthetic scenes only")
    progress = Progress(5 if bag is None else 4, say)
    say(f"dares demo: writing {out}")
    with logs_kept_on_failure() as logs, tempfile.TemporaryDirectory(prefix="dares-demo-") as tmp, \
            atomic_dir(out, force=True) as stage:
        work = Path(tmp)
        if bag is None:
            progress.step(f"synthesising a {frames}-frame da Vinci stereo sequence ({size[0]}x{size[1]}) with ground "
                          f"truth")
            cfg = SynthConfig(width=size[0], height=size[1], frames=frames, sequences=1, seed=7)
            root = generate(cfg, work / "scenes")
            bags.write_sequence_bag(root / sequence_folder(0), work / "input_bag")
            bag = work / "input_bag"
            source = f"A synthetic {size[0]}x{size[1]} stereo sequence ({frames} frames, {cfg.fps:g} Hz)"
        else:
            source = f"`{bag}`"
        topics = Topics.of_bag(bag)
        scale_mode = scale_mode or ("stereo" if topics.stereo else "relative")
        if scale_mode == "stereo" and not topics.stereo:
            raise DaresError(f"{bag}: stereo scale needs right image and camera_info topics; "
                             "pass --scale-mode relative")
        model = Path(weights) if weights else DEMO_MODEL
        input_size = network_input_size(load_depth_net(model), input_size or (None, None))  # the model's own
        pose_weights = pose_weights or (DEMO_POSE if weights is None else None)
        params, odometry = demo_parameters(model, input_size, scale_mode, pose_weights, device, precision)
        progress.step(f"replaying the bag into dares_depth_node ({model.name}, {device}, {scale_mode} scale) "
                      "and recording its outputs")
        total = bags.bag_info(bag)["messages"]
        with tqdm(total=total, desc="play", unit="msg", dynamic_ncols=True, leave=False) as bar:
            replay = replay_through_node(bag, topics, params, stage / "recorded_bag", logs, rate, bar.update,
                                         odometry)
        progress.step("reading the recorded bag back and evaluating against ground truth")
        recorded = stage / "recorded_bag"
        frame_list, timing = recorded_frames(recorded, topics), replay["timing"]
        summary = {"source": source, "rate": rate, "domain_id": int(os.environ.get("ROS_DOMAIN_ID", "0")),
                   "model": "the built-in demo model (tiny, synthetic-trained)" if weights is None else str(model),
                   "model_is_demo": weights is None, "device": device, "precision": precision,
                   "pose_weights": ("the built-in demo pose network" if pose_weights == DEMO_POSE
                                    else str(pose_weights or "none")),
                   "input_size": list(input_size), "scale_mode": scale_mode, "timing": timing,
                   "frames_with_depth": len(frame_list),
                   "recorded_messages": replay["recorded"]}
        metric_rows = {}
        if topics.gt_depth:
            scaled, _ = bags.eval_bag(recorded, OUTPUTS["depth"], topics.gt_depth, median_scaling=True)
            metric_rows["median-scaled"] = scaled
            summary["metrics_median_scaled"] = scaled.mean
            if topics.gt_instruments:  # where surgeons need depth most, scaled as the whole frame
                on_instruments, _ = bags.eval_bag(recorded, OUTPUTS["depth"], topics.gt_depth, median_scaling=True,
                                                  region_topic=topics.gt_instruments)
                metric_rows["median-scaled, instruments only"] = on_instruments
                summary["metrics_instruments"] = on_instruments.mean
            if scale_mode != "relative":
                metric, _ = bags.eval_bag(recorded, OUTPUTS["depth"], topics.gt_depth, median_scaling=False)
                metric_rows[f"metric ({scale_mode} scale)"] = metric
                summary["metrics_metric"] = metric.mean
            if scale_mode == "stereo":
                ratio = scaled.ratio_summary()
                summary.update(stereo_scale_ratio=ratio["median"], stereo_scale_error=ratio["median"] - 1.0,
                               stereo_scale_spread=ratio["std_over_median"])
        progress.step("drawing the picture strip, video and point cloud")
        fps = timing["input_rate_hz"] / rate if timing["input_rate_hz"] else 25.0
        summary["depth_scale"] = write_pictures(frame_list, stage, fps)
        summary["points"] = write_point_cloud(recorded, frame_list[len(frame_list) // 2].stamp, stage)
        if topics.gt_pose:
            summary["temporal"] = temporal_stability(recorded, topics, frame_list)
            summary["fused"] = write_fused_surface(recorded, topics, frame_list, stage)
            if odometry:
                summary["odometry"] = write_trajectory(recorded, topics, stage)
        progress.step("writing report.md")
        write_report(stage, summary, metric_rows)
        with atomic_file(stage / "summary.json") as f:
            f.write_text(json.dumps(summary, indent=2) + "\n")
        shutil.move(logs, stage / "logs")
        progress.done()
    _print_summary(out, summary, say)
    return summary


def _print_summary(out: Path, s: dict, say) -> None:
    t = s["timing"]
    say(f"\ndepth for {t['depth_frames']}/{t['input_frames']} frames at {t['output_rate_hz']} Hz, "
        f"latency median {t['latency_ms']['median']} ms, p99 {t['latency_ms']['p99']} ms")
    if "metrics_median_scaled" in s:
        m = s["metrics_median_scaled"]
        say(f"SCARED metrics (median-scaled): AbsRel {m['abs_rel']:.3f}, RMSE {m['rmse']:.2f} mm, δ<1.25 {m['a1']:.3f}")
    if "stereo_scale_error" in s:
        say(f"stereo scale error: {100 * s['stereo_scale_error']:+.1f} %")
    if s.get("temporal"):
        say(f"TAE {s['temporal']['tae']} (the ground truth's own: {s['temporal']['tae_floor']})")
    if "fused" in s:
        say(f"fused surface: {s['fused']['points']} points, Chamfer {s['fused'].get('chamfer_mm')} mm to the true "
            "surface")
    if "odometry" in s:
        o = s["odometry"]
        say(f"odometry: ATE {o['ate_mm']} mm (a still camera: {o['still_ate_mm']} mm), RE {o['re_rad']} rad")
    if s["model_is_demo"]:
        say("the built-in models are tiny and trained on synthetic scenes; real weights: "
            "dares demo --weights depth_model.pth --pose-weights weights/ --bag BAG")
    fused = ", fused.ply, fused.png" if "fused" in s else ""
    trajectory = ", trajectory.png" if "odometry" in s else ""
    say(f"wrote {out}/: report.md, strip.png, demo.mp4, demo.gif, points.ply, points.png{fused}{trajectory}, "
        "recorded_bag/, logs/")
