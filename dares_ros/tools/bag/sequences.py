"""SCARED-layout and synthetic sequences to bags (`dares bag from-scared`): images, camera_info, ground truth, TF."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml
from sensor_msgs.msg import CameraInfo, CompressedImage
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

from ...conversions import (
    depth_image,
    set_pose,
    time_msg,
    uint8_image,
)
from ...names import RIG
from .io import START_NS, TYPESTORE, BagWriter


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
