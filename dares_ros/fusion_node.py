"""dares_fusion_node: depth images integrated over time into a TSDF map, the fused surface as a point cloud.

Inputs (remappable): depth/image (32FC1 metres, REP 118: dares_depth_node's), depth/camera_info, and the
camera's pose in the map frame from odom (nav_msgs/Odometry: dares_odometry_node's) or camera_pose
(geometry_msgs/PoseStamped: a robot's camera pose from kinematics, a bag's ground_truth/pose; pose_source picks one
when both are published), matched to the depth by stamp; image (the left image, optional) colours the surface;
with use_mask, mask (mono8 or 8UC1, nonzero on pixels to leave out: the instruments of a tool segmentation) keeps
what moves out of the map; with min_confidence, depth/confidence (32FC1 in [0,1], dares_depth_node's) leaves out the
pixels trusted less.
Outputs: map/points (PointCloud2 in the pose's frame, at publish_rate, at most max_points; extracted
incrementally, from the voxel blocks the frames since the last publish touched, so its cost does not grow with the
map), with publish_mesh map/mesh (visualization_msgs/Marker TRIANGLE_LIST, at most max_triangles), and
/diagnostics (with stage_integrate_ms per frame, stage_map_ms and stage_publish_ms per map: medians over 5 s).

A pose that is not a finite rigid transform, jumps more than max_jump from the last accepted one, or leaves
the map volume (max_extent around the first pose) is rejected with a diagnostic and never reaches the map.
Memory is bounded: a frame that would make the map's voxel blocks take more than max_map_mib is not fused (a
diagnostic says so). Setting the parameter reset to true starts a new map, and so does time going back (a bag
replayed or looped, a /clock reset): a map holds one uninterrupted stretch of time, as tf2's buffer does. Depth
images are rectified (REP 118), so their intrinsics are depth/camera_info's P. The subscription callbacks only
queue messages: a worker thread of the node's own matches them, integrates, extracts and publishes the map, so a
slow integration never holds the callbacks (nor loses messages behind them).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from dares_core.errors import DaresError
from dares_core.reconstruct import TsdfFusion, scale_translation
from dares_core.sync import Order, Timeline, nearest_by_stamp
from dares_core.timing import Stages

from .conversions import (
    OUTPUT_QUEUE_DEPTH,
    ConversionError,
    FrameIds,
    checked_intrinsics,
    diagnostic_array,
    image_to_rgb8,
    point_cloud,
    pose_matrix,
    read_depth_image,
    read_mask,
    stamp_seconds,
    triangle_marker,
)
from .graph import POSE_SOURCES, SUBSCRIPTION_QOS, run_node, subscribe_poses, subscription_qos
from .params import Param, ParamTable, Rule

QUEUE = 30  # depth images, poses and colour images waiting for their match
UNCOLOURED = 160  # grey of a surface seen without a colour image
STAGES_WINDOW_S = 5.0  # diagnostics give each stage's median ms over this many seconds
COLOUR_TIMEOUT_S = 2.0  # depth waits for its colour image only while images arrived this recently

O3D_DEVICES = {"auto": None, "cpu": "CPU:0", "cuda": "CUDA:0"}
PARAMETERS = ParamTable({
    "voxel_size": Param(0.001, "TSDF voxel edge in metres", range=(1e-5, 0.1)),
    "truncation": Param(0.004, "TSDF truncation distance in metres (more than voxel_size)", range=(1e-5, 1.0)),
    "max_depth": Param(0.15, "depth beyond this many metres is not integrated", range=(1e-3, 100.0)),
    "max_extent": Param(0.5, "the map volume: camera positions farther than this many metres from the first pose "
                             "(on any axis) are rejected", live=True, range=(1e-3, 1e3)),
    "max_map_mib": Param(1024.0, "MiB the map's voxel blocks may take (80 KiB per 16^3 voxels; the room doubles as "
                                 "the surface grows): a frame that needs more is not fused", live=True,
                         range=(1.0, 1e6)),
    "max_jump": Param(0.02, "metres a camera may move between two fused frames; a larger jump is rejected", live=True,
                      range=(1e-6, 100.0)),
    "sync_tolerance": Param(0.01, "seconds between a depth image's stamp and its pose's", live=True,
                            range=(1e-6, 10.0)),
    "publish_rate": Param(1.0, "map/points per second", range=(0.01, 1000.0)),
    "max_points": Param(200000, "map/points carries at most this many points (evenly thinned)", live=True,
                        range=(1, 10**9)),
    "min_observations": Param(3.0, "map/points shows surface seen by at least this many frames (open3d's weight "
                                   "threshold: fewer let single-frame noise in)", live=True, range=(1e-3, 1e6)),
    "publish_mesh": Param(False, "also publish map/mesh, the surface as triangles (visualization_msgs/Marker "
                                 "TRIANGLE_LIST; building and sending one takes about 1.2 s per 100000 triangles on a "
                                 "CPU core)", live=True),
    "max_triangles": Param(50000, "map/mesh carries at most this many triangles (evenly thinned)", live=True,
                           range=(1, 10**9)),
    "use_mask": Param(False, "leave out the depth pixels that mask marks (mono8 or 8UC1, nonzero: e.g. instruments, "
                             "which move and would smear into the map); each depth image then waits for its mask",
                      live=True),
    "min_confidence": Param(0.0, "leave out the depth pixels whose depth/confidence (dares_depth_node's) is below "
                                 "this; each depth image then waits for its confidence (0: not read)", live=True,
                            range=(0.0, 1.0)),
    "map_frame": Param("", "frame_id of map/points; empty: the pose messages' frame_id", live=True),
    "device": Param("auto", "TSDF device: auto (CUDA when open3d has it), cpu or cuda", choices=tuple(O3D_DEVICES)),
    "reset": Param(False, "set true to clear the map (it reads false again once cleared)", live=True),
    "pose_source": Param("any", "which poses are fused: odom, camera_pose, or any (both subscribed: publish only one, "
                                "as two trajectories in frames of their own do not line up)", choices=POSE_SOURCES),
    "qos": Param("sensor_data", "subscription QoS: sensor_data (best effort, keep last 5: matches any publisher) or "
                                "reliable (every frame of a reliable publisher such as a bag replay)",
                 choices=SUBSCRIPTION_QOS),
}, rules=(Rule(lambda v: v["voxel_size"] < v["truncation"], "parameter voxel_size must be below truncation (a few "
                                                            "voxels, e.g. voxel_size:=0.001 truncation:=0.004)"),))
SUMMARY = "dares_fusion_node: depth images and camera poses fused into a TSDF map, published as map/points."


class FusionNode(Node):
    def __init__(self):
        super().__init__("dares_fusion_node")
        problem = PARAMETERS.declare(self)
        if problem:
            raise DaresError(problem)
        self.depths: deque = deque(maxlen=QUEUE)  # (stamp s, depth (H,W) m, stamp message)
        self.poses: deque = deque(maxlen=QUEUE)  # (stamp s, T (4,4) m, frame_id)
        self.images: deque = deque(maxlen=QUEUE)  # (stamp s, rgb (H,W,3) uint8)
        self.masks: deque = deque(maxlen=QUEUE)  # (stamp s, leave out (H,W) bool)
        self.confidences: deque = deque(maxlen=QUEUE)  # (stamp s, confidence (H,W) in [0,1])
        self.info: CameraInfo | None = None
        self.image_received = -math.inf  # monotonic time of the last colour image
        self.counts = {"fused": 0, "rejected_poses": 0, "unmatched_depth": 0, "bad_inputs": 0, "map_full": 0}
        self.problem = ""
        self.timeline = Timeline()
        self.frame_ids = FrameIds(self.get_logger().warning)
        self.frame_id, self.last_stamp = "", None  # the map's frame and stamp: the last fused pose's, kept over clears
        self._new_map()
        self.map_mib = self.fusion.memory_mib()
        self.stages = Stages(STAGES_WINDOW_S)  # integrate (per frame), map and publish (per published map)
        self.lock = threading.RLock()  # the queues, info and counts: callbacks add, the worker takes
        self.wake, self.stop = threading.Event(), threading.Event()
        self.clear_request, self.publish_due = "", False  # what the worker is asked to do next
        self.worker = threading.Thread(target=self._work, name="dares-fusion", daemon=True)
        qos = subscription_qos(self.p("qos"))  # sensor_data, best effort: matches any publisher
        self.create_subscription(Image, "depth/image", self._on_depth, qos)
        self.create_subscription(CameraInfo, "depth/camera_info", self._on_info, qos)
        subscribe_poses(self, self.p("pose_source"), self._on_pose, qos)
        self.create_subscription(Image, "image", self._on_image, qos)
        self.create_subscription(Image, "mask", self._on_mask, qos)
        self.create_subscription(Image, "depth/confidence", self._on_confidence, qos)
        self.points_pub = self.create_publisher(PointCloud2, "map/points", OUTPUT_QUEUE_DEPTH)
        self.mesh_pub = self.create_publisher(Marker, "map/mesh", OUTPUT_QUEUE_DEPTH)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 5)
        self.create_timer(1.0 / self.p("publish_rate"), self._map_due)
        self.create_timer(1.0, self._publish_diagnostics)
        self.worker.start()
        self.get_logger().info(f"fusing depth/image with odom or camera_pose into a TSDF on {self.fusion.device}; "
                               f"map/points every {1 / self.p('publish_rate'):.1f} s")

    def p(self, name: str):
        return self.get_parameter(name).value

    def _clear_map(self, why: str) -> None:
        """A new, empty map (published once, so displays clear) and zeroed counts."""
        self._new_map()
        self.map_mib = self.fusion.memory_mib()
        self.published_frames = -1
        self.counts = dict.fromkeys(self.counts, 0)
        self.get_logger().info(why)

    def _new_map(self) -> None:
        room = min(1000, int(self.p("max_map_mib") * 2**20 // TsdfFusion.BLOCK_BYTES))  # blocks at first
        self.fusion = TsdfFusion(self.p("voxel_size") * 1000, self.p("truncation") * 1000, self.p("max_depth") * 1000,
                                 O3D_DEVICES[self.p("device")], block_count=max(1, room))
        self.origin: np.ndarray | None = None  # first accepted camera position, m
        self.last_T: np.ndarray | None = None
        self.published_frames = 0  # nothing to publish yet

    # --- inputs -------------------------------------------------------------------------------------
    def _on_info(self, msg: CameraInfo) -> None:
        with self.lock:
            self.info = msg
        self.wake.set()

    def _on_image(self, msg: Image) -> None:
        try:
            image = (stamp_seconds(msg.header.stamp), image_to_rgb8(msg))
        except ConversionError as e:
            self._bad_input(f"image: {e.problem}")
            return
        with self.lock:
            self.images.append(image)
            self.image_received = time.monotonic()
        self.wake.set()

    def _on_mask(self, msg: Image) -> None:
        if not self.p("use_mask"):
            return  # read only when used: a mask topic not asked for is neither decoded nor reported
        try:
            mask = (stamp_seconds(msg.header.stamp), read_mask(msg))
        except ConversionError as e:
            self._bad_input(str(e))
            return
        with self.lock:
            self.masks.append(mask)
        self.wake.set()

    def _on_confidence(self, msg: Image) -> None:
        if not self.p("min_confidence"):
            return  # read only when used
        if msg.encoding != "32FC1":
            self._bad_input(f"depth/confidence: encoding {msg.encoding}; publish 32FC1 in [0,1] (dares_depth_node's)")
            return
        with self.lock:
            self.confidences.append((stamp_seconds(msg.header.stamp), read_depth_image(msg)))
        self.wake.set()

    def _on_depth(self, msg: Image) -> None:
        try:
            if msg.encoding != "32FC1":
                raise ConversionError(f"encoding {msg.encoding}; publish 32FC1 metres (REP 118)", "depth/image")
            depth = read_depth_image(msg)
        except ConversionError as e:
            self._bad_input(str(e))
            return
        stamp = stamp_seconds(msg.header.stamp)
        order = self.timeline.order("depth", stamp)
        if order not in (Order.NEW, Order.TIME_WENT_BACK):
            self._bad_input(f"depth/image at {stamp:.3f} s is not after the last one: skipped (a duplicate or "
                            "out-of-order stamp)")
            return
        with self.lock:
            if order is Order.TIME_WENT_BACK:  # the worker clears the map before it fuses this depth
                self.clear_request = self.timeline.went_back("depth/image", stamp, "a new map starts")
                for queue in (self.depths, self.poses, self.images, self.masks, self.confidences):  # before the jump
                    kept = [e for e in queue if e[0] <= stamp + self.p("sync_tolerance")]
                    queue.clear()
                    queue.extend(kept)
            self.depths.append((stamp, depth, msg.header.stamp))
        self.wake.set()

    def _on_pose(self, header, pose) -> None:
        with self.lock:
            self.poses.append((stamp_seconds(header.stamp), pose_matrix(pose), self.frame_ids(header.frame_id)))
        self.wake.set()

    def _map_due(self) -> None:
        self.publish_due = True
        self.wake.set()

    def _bad_input(self, problem: str) -> None:
        with self.lock:
            self.counts["bad_inputs"] += 1
        self._note(problem)

    def _note(self, problem: str) -> None:
        if problem != self.problem:
            self.get_logger().warning(problem, throttle_duration_sec=5.0)
        self.problem = problem

    # --- fusion -------------------------------------------------------------------------------------
    def _work(self) -> None:
        """The worker: clear the map when asked, fuse every matched depth image, publish the map when due."""
        while not self.stop.is_set():
            self.wake.wait(timeout=0.1)
            self.wake.clear()
            with self.lock:
                why, self.clear_request = self.clear_request, ""
            if why:
                self._clear_map(why)
            while (matched := self._next_matched()) is not None:
                self._fuse(*matched)
            if self.publish_due:
                self.publish_due = False
                self._publish_map()

    def _next_matched(self):
        """The oldest queued depth image whose pose (with use_mask its mask; while images arrive, its colour image)
        has arrived, as _fuse's arguments, or None; drops one whose pose or mask can no longer come (newer ones
        have), counted. Under the lock: the callbacks keep queueing meanwhile."""
        with self.lock:
            return self._match()

    def _match(self):
        tolerance, min_confidence = self.p("sync_tolerance"), self.p("min_confidence")
        newest_pose = self.poses[-1][0] if self.poses else -math.inf
        colour_live = self.images and time.monotonic() - self.image_received < COLOUR_TIMEOUT_S
        newest_image = self.images[-1][0] if colour_live else math.inf
        companions = [(queue, what, fix) for queue, wanted, what, fix in (
            (self.masks, self.p("use_mask"), "mask", "publish mask with the depth's stamps, or set use_mask false"),
            (self.confidences, min_confidence > 0, "depth/confidence", "publish it with the depth's stamps "
             "(dares_depth_node's publish_confidence), or set min_confidence 0")) if wanted]
        while self.depths and self.info is not None:  # depth waits for the first camera_info
            stamp, depth, stamp_msg = self.depths[0]
            pose = self._at(self.poses, stamp)
            if pose is None and newest_pose <= stamp + tolerance:
                return None  # its pose may still come
            found = [self._at(queue, stamp) for queue, _, _ in companions]
            if any(f is None and (queue[-1][0] if queue else -math.inf) <= stamp + tolerance
                   for f, (queue, _, _) in zip(found, companions)):
                return None  # its mask or confidence may still come
            image = self._at(self.images, stamp)
            if pose is not None and image is None and newest_image <= stamp + tolerance:
                return None  # its colour image may still come
            self.depths.popleft()
            if pose is None:
                self.counts["unmatched_depth"] += 1
                self._note(f"depth/image at {stamp:.3f} s has no pose within sync_tolerance ({tolerance} s): "
                           "publish odom or camera_pose with the depth's stamps")
                continue
            left_out = self._left_out(stamp, depth.shape, found, companions, min_confidence)
            if left_out is None:
                continue
            depth = np.where(left_out, np.nan, depth)
            try:
                K = checked_intrinsics(self.info, depth.shape, "depth/camera_info")
            except ConversionError as e:
                self._bad_input(str(e))
                continue
            rgb = image[1] if image is not None and image[1].shape[:2] == depth.shape else None
            return stamp, stamp_msg, depth, K, pose[1], pose[2], rgb
        return None

    def _left_out(self, stamp: float, shape, found: list, companions: list, min_confidence: float):
        """The pixels (H,W) bool the found mask and confidence leave out of a depth image of `shape`, or None where
        one of them is missing or of another size (counted and said: the depth image is dropped)."""
        left_out = np.zeros(shape, bool)
        for entry, (_, what, fix) in zip(found, companions):
            if entry is None:
                self.counts["unmatched_depth"] += 1
                self._note(f"depth/image at {stamp:.3f} s has no {what} within sync_tolerance "
                           f"({self.p('sync_tolerance')} s): {fix}")
                return None
            if entry[1].shape != shape:
                self._bad_input(f"{what} is {entry[1].shape[1]}x{entry[1].shape[0]} but depth/image {shape[1]}x"
                                f"{shape[0]}: publish the {what} at the depth's size")
                return None
            left_out |= entry[1] if what == "mask" else entry[1] < min_confidence
        return left_out

    def _at(self, queue: deque, stamp: float):
        """The entry of `queue` nearest `stamp` within sync_tolerance, or None."""
        return nearest_by_stamp(queue, stamp, self.p("sync_tolerance"))

    def _fuse(self, stamp: float, stamp_msg, depth: np.ndarray, K: np.ndarray, T: np.ndarray, frame_id: str,
              rgb: np.ndarray | None) -> None:
        """stamp in s (and as a message); depth (H,W) m, K (3,3), T (4,4) camera-to-map m, rgb (H,W,3) uint8 or
        None (grey)."""
        problem = self._pose_problem(T)
        if problem:
            self.counts["rejected_poses"] += 1
            self._note(f"pose at {stamp:.3f} s rejected: {problem}")
            return
        if rgb is None:
            rgb = np.full((*depth.shape, 3), UNCOLOURED, np.uint8)
        with self.stages("integrate"):
            fused = self.fusion.integrate(rgb, depth * 1000, K, scale_translation(T, 1000), self.p("max_map_mib"))
        if not fused:
            self.counts["map_full"] += 1
            self._note(f"the map is full: it takes {self.fusion.memory_mib():.1f} MiB and this frame needs more "
                       f"than max_map_mib ({self.p('max_map_mib'):g}); set reset to start a new map, or raise "
                       "max_map_mib")
            return
        if self.origin is None:
            self.origin = T[:3, 3].copy()
        self.last_T, self.last_stamp, self.frame_id = T, stamp_msg, frame_id
        self.counts["fused"] += 1
        self.map_mib = self.fusion.memory_mib()

    def _pose_problem(self, T: np.ndarray) -> str:
        """Why a camera pose (4,4) m cannot be fused, or ""."""
        if not np.isfinite(T).all():
            return "not a finite rigid transform (NaN, infinity or a quaternion of norm other than 1)"
        if self.last_T is not None:
            jump = float(np.linalg.norm(T[:3, 3] - self.last_T[:3, 3]))
            if jump > self.p("max_jump"):
                return f"the camera jumped {jump * 1000:.0f} mm since the last fused frame (max_jump " \
                       f"{self.p('max_jump') * 1000:.0f} mm)"
        if self.origin is not None:
            offset = float(np.abs(T[:3, 3] - self.origin).max())
            if offset > self.p("max_extent"):
                return f"{offset:.3f} m from the first pose, outside the map volume (max_extent " \
                       f"{self.p('max_extent')} m); set reset to start a new map"
        return ""

    # --- outputs ------------------------------------------------------------------------------------
    def _publish_map(self) -> None:
        if self.p("reset"):
            self._clear_map("map cleared")
            self.set_parameters([Parameter("reset", value=False)])
        frame = self.frame_ids(self.p("map_frame") or self.frame_id)
        if self.fusion.frames == self.published_frames or not frame:  # no news, or nothing ever fused to clear
            return
        with self.stages("map"):
            points, colors = self.fusion.points(self.p("min_observations"), self.p("max_points"))
        header = Header(stamp=self.last_stamp or self.get_clock().now().to_msg(), frame_id=frame)
        with self.stages("publish"):
            self.points_pub.publish(point_cloud(points[None], colors[None], header))
        if self.p("publish_mesh"):
            vertices, triangles, vertex_colors = self.fusion.mesh(self.p("min_observations"))
            step = max(1, math.ceil(len(triangles) / self.p("max_triangles")))
            self.mesh_pub.publish(triangle_marker(vertices, triangles[::step], vertex_colors, header))
        self.published_frames = self.fusion.frames

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name="dares_fusion_node: map", hardware_id=self.get_fully_qualified_name())
        rejected = sum(n for name, n in self.counts.items() if name != "fused")
        if not self.counts["fused"]:
            status.level = DiagnosticStatus.WARN
            status.message = self.problem or ("waiting for depth/image with a matching pose" +
                                              (" and mask" if self.p("use_mask") else ""))
        elif rejected:
            status.level = DiagnosticStatus.WARN
            status.message = f"{self.counts['fused']} frames fused, {rejected} not: {self.problem}"
        else:
            status.level, status.message = DiagnosticStatus.OK, f"{self.counts['fused']} frames fused"
        values = {**{k: str(v) for k, v in self.counts.items()}, "last_problem": self.problem,
                  "device": str(self.fusion.device), "map_frame": self.frame_ids(self.p("map_frame") or self.frame_id),
                  "time_jumps_back": str(self.timeline.jumps),
                  "map_mib": f"{self.map_mib:.1f}",
                  **{f"stage_{name}_ms": f"{ms:.2f}" for name, ms in self.stages.medians_ms().items()}}
        self.diag_pub.publish(diagnostic_array(status, values, self.get_clock().now().to_msg()))


    def destroy_node(self):
        if getattr(self, "worker", None) is not None:  # a node stopped by a bad parameter never started one
            self.stop.set()
            self.worker.join(timeout=10.0)
        return super().destroy_node()


def main(args=None) -> None:
    run_node(FusionNode, "dares_fusion_node", PARAMETERS.usage("dares_fusion_node", SUMMARY), args)


if __name__ == "__main__":
    main()
