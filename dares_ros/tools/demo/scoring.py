"""dares demo's figures, read back from the recorded bag: the frames that got depth, their temporal stability,
the fused surface's distance to the true one and the odometry's ATE and RE."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from dares_core.errors import DaresError
from dares_core.evaluate import evaluate_pose
from dares_core.reconstruct import scale_translation, surface_distances, world_points

from ...conversions import (
    compressed_to_rgb8,
    image_to_rgb8,
    intrinsics,
    pose_matrix,
    read_depth_image,
    read_mask,
    read_point_cloud,
    stamp_key,
)
from .. import bag as bags
from ..bag import Topics
from .harness import MAP, ODOM, OUTPUTS


@dataclass
class RecordedFrame:
    """One input frame that got depth: rgb (H,W,3) uint8; depth_mm, gt_mm (H,W) or None; confidence (H,W) in [0,1]
    or None."""

    stamp: tuple[int, int]
    rgb: np.ndarray
    depth_mm: np.ndarray
    gt_mm: np.ndarray | None
    confidence: np.ndarray | None = None


def by_stamp(path: Path, topic: str, cls) -> dict:
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
    lefts = by_stamp(path, topics.left_image, CompressedImage if topics.compressed else Image)
    depths = by_stamp(path, OUTPUTS["depth"], Image)
    gts = by_stamp(path, topics.gt_depth, Image) if topics.gt_depth else {}
    confidences = by_stamp(path, OUTPUTS["confidence"], Image)
    to_rgb = compressed_to_rgb8 if topics.compressed else image_to_rgb8
    frames = [RecordedFrame(s, to_rgb(lefts[s][1]), read_depth_image(depths[s][1]) * 1000.0,
                            read_depth_image(gts[s][1]) * 1000.0 if s in gts else None,
                            read_depth_image(confidences[s][1]) if s in confidences else None)
              for s in sorted(set(lefts) & set(depths))]
    if not frames:
        raise DaresError(f"{path}: the node published no depth for the replayed frames; see the node log above")
    return frames


def confidence_scores(frames: list[RecordedFrame]) -> dict | None:
    """AUSE of the node's depth/confidence against the ground truth (dares_core.confidence.ause: AbsRel of each
    frame's depth, median-scaled, over its pixels with ground truth and depth), as a fraction of random's; None
    without ground truth or confidence."""
    from dares_core.confidence import ause
    from dares_core.evaluate import MAX_DEPTH, MIN_DEPTH

    scores = []
    for f in frames:
        if f.gt_mm is None or f.confidence is None:
            continue
        valid = (f.gt_mm > MIN_DEPTH) & (f.gt_mm < MAX_DEPTH) & np.isfinite(f.depth_mm) & (f.depth_mm > 0)
        if valid.sum() < 100:
            continue
        depth = f.depth_mm[valid] * np.median(f.gt_mm[valid]) / np.median(f.depth_mm[valid])
        errors = np.abs(np.clip(depth, MIN_DEPTH, MAX_DEPTH) - f.gt_mm[valid]) / f.gt_mm[valid]
        scores.append(ause(errors, f.confidence[valid]))
    if not scores:
        return None
    mine, random = (float(np.mean([s[k] for s in scores])) for k in ("ause", "ause_random"))
    return {"frames": len(scores), "ause": round(mine, 4), "ause_random": round(random, 4),
            "ause_ratio": round(mine / random, 3) if random > 0 else None}


def temporal_stability(recorded: Path, topics: Topics, frames: list[RecordedFrame]) -> dict:
    """TAE of the node's depth over the recorded frames with the bag's camera poses (scaled once for the sequence),
    the whole frame and the tissue alone (the bag's instrument mask), beside the ground truth's own, the floor."""
    from dares_core.evaluate import temporal_errors

    poses = {s: scale_translation(pose_matrix(m.pose), 1000) for s, (_, m) in
             by_stamp(recorded, topics.gt_pose, PoseStamped).items()}
    frames = [f for f in frames if f.gt_mm is not None and f.stamp in poses]
    if len(frames) < 2:
        return {}
    K = intrinsics(next(iter(by_stamp(recorded, topics.left_info, CameraInfo).values()))[1])
    masks = by_stamp(recorded, topics.gt_instruments, Image) if topics.gt_instruments else {}
    tissue = np.stack([~read_mask(masks[f.stamp][1]) for f in frames]) \
        if masks and all(f.stamp in masks for f in frames) else None
    result = temporal_errors(np.stack([f.depth_mm for f in frames]), np.stack([f.gt_mm for f in frames]), K,
                             np.stack([poses[f.stamp] for f in frames]), tissue)
    return {k: round(v, 4) for k, v in result.items()}


@dataclass
class FusedSurface:
    """dares_fusion_node's last map: points_m (N,3) metres in the poses' world frame, rgb (N,3) uint8, view_mm
    (4,4) the middle frame's camera pose (mm, to look from), and summary: its points and its distances in mm to the
    ground-truth surface of the frames (accuracy, completeness, Chamfer)."""

    points_m: np.ndarray
    rgb: np.ndarray
    view_mm: np.ndarray
    summary: dict


def fused_surface(recorded: Path, topics: Topics, frames: list[RecordedFrame]) -> FusedSurface:
    """The fused map against the ground-truth surface (the node's depth keeps its own scale, ground truth is
    metric, so a scale error shows)."""
    maps = by_stamp(recorded, MAP, PointCloud2)
    if not maps:
        raise DaresError(f"{recorded}: dares_fusion_node published no {MAP} (it needs depth and "
                         f"{topics.gt_pose} with matching stamps)")
    _, last = max(maps.values(), key=lambda received: received[0])  # the map after the last frame
    points, rgb = (a.reshape(-1, 3) for a in read_point_cloud(last))
    if not len(points):
        raise DaresError(f"{recorded}: the last {MAP} is empty: dares_fusion_node fused no frame (its poses were "
                         "rejected or never matched the depth)")
    poses = {s: pose_matrix(m.pose) for s, (_, m) in by_stamp(recorded, topics.gt_pose, PoseStamped).items()}
    K = intrinsics(next(iter(by_stamp(recorded, topics.left_info, CameraInfo).values()))[1])
    truth = [world_points(f.gt_mm, K, scale_translation(poses[f.stamp], 1000), stride=4) for f in frames
             if f.gt_mm is not None and f.stamp in poses]
    distances = surface_distances(points * 1000.0, np.concatenate(truth)) if truth else {}
    return FusedSurface(points, rgb, scale_translation(poses[frames[len(frames) // 2].stamp], 1000),
                        {"points": len(points), **{k: round(v, 2) for k, v in distances.items()}})


@dataclass
class OdometryScores:
    """dares_odometry_node's motion against the bag's: predicted and ground_truth (N,4,4) relative poses (camera
    i's points into camera i+1's, mm) and summary: the official ATE (mm, 5-frame snippets, scale-aligned), RE
    (rad), the ATE of a camera that stands still and the predicted path length over the true one."""

    predicted: np.ndarray
    ground_truth: np.ndarray
    summary: dict


def odometry_scores(recorded: Path, topics: Topics) -> OdometryScores:
    """The odometry over the frames both it and the ground truth have."""
    odoms = {s: pose_matrix(m.pose.pose) for s, (_, m) in by_stamp(recorded, ODOM, Odometry).items()}
    truth = {s: pose_matrix(m.pose) for s, (_, m) in by_stamp(recorded, topics.gt_pose, PoseStamped).items()}
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
    return OdometryScores(predicted, ground_truth, {
        "frames": len(stamps), "ate_mm": round(scores["ate_mean"], 4), "ate_std_mm": round(scores["ate_std"], 4),
        "re_rad": round(scores["re_mean"], 5), "still_ate_mm": round(scores["still_ate_mean"], 4),
        "path_length_ratio": round(length, 3)})
