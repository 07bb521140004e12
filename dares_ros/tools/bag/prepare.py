"""`dares prepare-bag`: a rosbag2 recorded on the robot -> the layout `dares train` reads (dares_core.data.recording).

Images raw or compressed, one eye or both (paired by stamp); camera_info gives the calibration: rectified images
(image_rect*) keep their P; raw ones are rectified on the way with K, D, R and P, as image_proc would, unless they
need nothing (no distortion, R identity). Camera poses come from a PoseStamped or TransformStamped topic (dVRK's
CRTK measured_cp, a bag's ground_truth/pose), composed with a hand-eye transform (identity by default).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage

from dares_core.camera import Uncalibrated
from dares_core.data.recording import RecordingOptions, prepare_recording
from dares_core.errors import DaresError
from dares_core.reconstruct import scale_translation

from ...conversions import (
    ConversionError,
    compressed_to_rgb8,
    image_to_rgb8,
    intrinsics,
    pose_matrix,
    stereo_baseline,
)
from .io import decode, message_class, named_topic, open_reader, pick_topic

IMAGE_SUFFIXES = ("image_rect_color", "image_rect", "image_raw", "image_rect_color/compressed",
                  "image_rect/compressed", "image_raw/compressed")
PAIR_TOLERANCE_NS = 5_000_000  # left and right stamps within 5 ms are one pair
PENDING_NS = 1_000_000_000  # an image waits this long (bag time) for the other eye
POSE_TOLERANCE_S = 0.02  # a frame takes the pose nearest its stamp within this
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/TransformStamped")


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


class BagFrames:
    """(stamp s, left RGB, right RGB or None) of a bag's images in time order, rectified with `maps` ({eye: cv2 remap
    maps} for raw images that need it); left frames without a right one within PAIR_TOLERANCE_NS are counted in
    `unpaired` and left out of a stereo recording."""

    def __init__(self, path: Path, left: str, right: str | None, maps: dict, sizes: dict):
        self.path, self.topics, self.maps, self.sizes = path, {"left": left, "right": right}, maps, sizes
        self.unpaired = 0

    def _rgb(self, eye: str, msg) -> np.ndarray:
        try:
            rgb = compressed_to_rgb8(msg) if isinstance(msg, CompressedImage) else image_to_rgb8(msg)
        except ConversionError as e:
            raise DaresError(f"{self.path}: {self.topics[eye]}: {e.problem}") from None
        if rgb.shape[1::-1] != self.sizes[eye]:
            raise DaresError(f"{self.path}: {self.topics[eye]} has {rgb.shape[1]}x{rgb.shape[0]} images but its "
                             f"camera_info describes {self.sizes[eye][0]}x{self.sizes[eye][1]}: record the "
                             "camera_info of these images")
        if eye in self.maps:
            rgb = cv2.remap(rgb, *self.maps[eye], cv2.INTER_LINEAR)
        return rgb

    def __iter__(self):
        reader = open_reader(self.path)
        try:
            by_topic = {c.topic: c for c in reader.connections}
            eyes = {by_topic[t].topic: eye for eye, t in self.topics.items() if t}
            classes = {t: message_class(by_topic[t].msgtype) for t in eyes}
            pending = {"left": {}, "right": {}}  # stamp ns: message, waiting for the other eye
            paired = 0
            for conn, _, data in reader.messages(connections=[by_topic[t] for t in eyes]):
                eye = eyes[conn.topic]
                msg = decode(data, classes[conn.topic])
                if msg is None:  # zero-length or damaged: left out, as a frame without motion
                    continue
                stamp = _stamp_ns(msg)
                if not self.topics["right"]:
                    yield stamp * 1e-9, self._rgb("left", msg), None
                    continue
                other = pending["right" if eye == "left" else "left"]
                match = min(other, key=lambda s: abs(s - stamp), default=None)
                if match is None or abs(match - stamp) > PAIR_TOLERANCE_NS:
                    pending[eye][stamp] = msg
                    for side in pending:  # a frame a second older than the newest will find no partner now
                        for old in [s for s in pending[side] if s < stamp - PENDING_NS]:
                            del pending[side][old]
                            self.unpaired += side == "left"
                    continue
                partner = other.pop(match)
                left, right = (msg, partner) if eye == "left" else (partner, msg)
                stale = [s for s in pending["left"] if s < _stamp_ns(left)]  # older lefts can no longer pair
                self.unpaired += len(stale)
                for s in stale:
                    del pending["left"][s]
                for s in [s for s in pending["right"] if s < _stamp_ns(left)]:
                    del pending["right"][s]
                paired += 1
                yield _stamp_ns(left) * 1e-9, self._rgb("left", left), self._rgb("right", right)
            self.unpaired += len(pending["left"])
        finally:
            reader.close()
        if self.unpaired and not paired:
            raise DaresError(f"{self.path}: no left frame has a right frame within 5 ms ({self.topics['left']}, "
                             f"{self.topics['right']}): record both eyes of one camera, or pass --right-topic '' "
                             "for the left eye alone")


def _first(reader, topic: str, cls):
    conn = [c for c in reader.connections if c.topic == topic]
    for _, _, data in reader.messages(connections=conn):
        msg = decode(data, cls)
        if msg is not None:
            return msg
    return None


def _rectification(info: CameraInfo, topic: str, image_topic: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(the rectified 3x3 intrinsics of this eye's frames as written, cv2 remap maps or None)."""
    try:
        K = intrinsics(info, topic, rectified=True)  # P (K when P was never filled)
    except Uncalibrated:
        raise DaresError(f"{topic} is uncalibrated (K and P all zeros): calibrate the camera (ros2 run "
                         "camera_calibration cameracalibrator) and record its camera_info") from None
    except ConversionError as e:
        raise DaresError(f"{topic}: {e.problem}") from None
    raw_K = np.asarray(info.k, np.float64).reshape(3, 3)
    D, R = np.asarray(info.d, np.float64), np.asarray(info.r, np.float64).reshape(3, 3)
    if "image_rect" in image_topic or (not D.any() and np.allclose(R, np.eye(3))) or not raw_K.any():
        return K, None
    maps = cv2.initUndistortRectifyMap(raw_K, D, R, K, (info.width, info.height), cv2.CV_16SC2)
    return K, maps


def read_hand_eye(path: Path) -> np.ndarray:
    """A hand-eye transform (4,4), translation in metres: 16 numbers (np.savetxt's format, or commas)."""
    try:
        values = np.array(Path(path).read_text().replace(",", " ").split(), dtype=np.float64)
    except (OSError, ValueError):
        raise DaresError(f"--hand-eye {path}: give a text file of 16 numbers, the 4x4 transform (metres)") from None
    if values.size != 16 or not np.allclose(values.reshape(4, 4)[3], [0, 0, 0, 1]) or not np.allclose(
            values.reshape(4, 4)[:3, :3] @ values.reshape(4, 4)[:3, :3].T, np.eye(3), atol=1e-4):
        raise DaresError(f"--hand-eye {path}: not a rigid 4x4 transform (16 numbers, last row 0 0 0 1)")
    return values.reshape(4, 4)


def _poses(path: Path, reader, topic: str, hand_eye: np.ndarray):
    """poses(stamp s) -> camera-to-world (4,4) mm nearest the stamp within POSE_TOLERANCE_S, or None."""
    conn = next(c for c in reader.connections if c.topic == topic)
    if conn.msgtype not in POSE_TYPES:
        raise DaresError(f"{path}: {topic} is a {conn.msgtype}; give a pose topic of type {' or '.join(POSE_TYPES)}")
    stamps, matrices = [], []
    for _, _, data in reader.messages(connections=[conn]):
        msg = decode(data, message_class(conn.msgtype))
        if msg is None:
            continue
        if hasattr(msg, "pose"):
            T = pose_matrix(msg.pose)
        else:
            t, q = msg.transform.translation, msg.transform.rotation
            from geometry_msgs.msg import Point, Pose, Quaternion
            T = pose_matrix(Pose(position=Point(x=t.x, y=t.y, z=t.z), orientation=Quaternion(x=q.x, y=q.y, z=q.z,
                                                                                               w=q.w)))
        if np.isfinite(T).all():
            stamps.append(_stamp_ns(msg) * 1e-9)
            matrices.append(scale_translation(T @ hand_eye, 1000.0))
    stamps = np.array(stamps)

    def at(stamp: float) -> np.ndarray | None:
        if not len(stamps):
            return None
        i = int(np.argmin(np.abs(stamps - stamp)))
        return matrices[i] if abs(stamps[i] - stamp) <= POSE_TOLERANCE_S else None
    return at


def prepare_bag(path: Path, data: Path, name: str | None = None, left_topic: str | None = None,
                right_topic: str | None = None, pose_topic: str | None = None, hand_eye: Path | None = None,
                options: RecordingOptions | None = None, force: bool = False, progress=None):
    """Prepare one bag as recording `name` (default: the bag folder's name) under `data`; returns
    (RecordingReport, unpaired left frames)."""
    path = Path(path)
    reader = open_reader(path)
    try:
        topics = [c.topic for c in reader.connections]
        left = named_topic(reader, left_topic) if left_topic else pick_topic(
            topics, tuple(f"left/{s}" for s in IMAGE_SUFFIXES), path)
        if right_topic == "":  # the left eye alone
            right = None
        elif right_topic:
            right = named_topic(reader, right_topic)
        else:
            right = pick_topic(topics, tuple(f"right/{s}" for s in IMAGE_SUFFIXES), path, required=False)
        Ks, maps, infos = {}, {}, {}
        for eye, image_topic in (("left", left), ("right", right)):
            if image_topic is None:
                continue
            info_topic = image_topic.rsplit("/", 2 if image_topic.endswith("/compressed") else 1)[0] + "/camera_info"
            info = _first(reader, info_topic, CameraInfo) if info_topic in topics else None
            if info is None:
                raise DaresError(f"{path} has no {info_topic}: record the camera_info topics with the images "
                                 f"(ros2 bag record {image_topic} {info_topic} ...)")
            Ks[eye], eye_maps = _rectification(info, info_topic, image_topic)
            infos[eye] = info
            if eye_maps is not None:
                maps[eye] = eye_maps
        pose_topic = pose_topic if pose_topic is not None else pick_topic(topics, ("ground_truth/pose",), path,
                                                                           required=False)
        if pose_topic:
            named_topic(reader, pose_topic)
        poses = _poses(path, reader, pose_topic, read_hand_eye(hand_eye) if hand_eye else np.eye(4)) \
            if pose_topic else None
    finally:
        reader.close()
    info = infos["left"]
    calibration = {"image_width": int(info.width), "image_height": int(info.height), "rectified": True,
                   "units": "mm", "K": Ks["left"].tolist(), "D": [0.0] * 5, "source": str(path.resolve()),
                   "images": left + (f" + {right}" if right else "")
                   + ("; rectified here with camera_info's K, D, R and P" if maps else "")}
    if right:
        try:
            baseline_mm = stereo_baseline(infos["right"], right) * 1000.0
        except ConversionError as e:
            raise DaresError(f"{path}: {e.problem}") from None
        P_right = np.hstack([Ks["right"], [[-Ks["right"][0, 0] * baseline_mm], [0], [0]]])
        calibration.update(baseline_mm=baseline_mm, P_left=np.hstack([Ks["left"], np.zeros((3, 1))]).tolist(),
                           P_right=P_right.tolist())
    frames = BagFrames(path, left, right, maps, {eye: (int(i.width), int(i.height)) for eye, i in infos.items()})
    report = prepare_recording(frames, calibration, data, name or path.resolve().name, str(path.resolve()), poses,
                               options or RecordingOptions(), force, progress,
                               f"{pose_topic} (--pose-topic '' prepares without poses)")
    return report, frames.unpaired
