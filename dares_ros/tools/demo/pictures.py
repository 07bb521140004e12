"""dares demo's pictures and geometry files: the strip, video and GIF on one depth scale, the node's point cloud,
the fused surface and the camera trajectory."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from sensor_msgs.msg import PointCloud2

from dares_core.errors import DaresError
from dares_core.files import atomic_file, write_image, write_ply
from dares_core.pose import plot_trajectories
from dares_core.visualize import depth_range, depth_strip, render_point_cloud

from ...conversions import read_point_cloud
from .harness import MAP, ODOM, OUTPUTS
from .scoring import FusedSurface, OdometryScores, RecordedFrame, by_stamp


def write_pictures(frames: list[RecordedFrame], out: Path, fps: float) -> dict:
    """strip.png (three moments), demo.mp4 and demo.gif (every frame) on one depth scale; returns the scale."""
    from PIL import Image as PILImage

    has_gt = frames[0].gt_mm is not None
    near, far = depth_range(*[f.gt_mm if has_gt else f.depth_mm for f in frames])
    picks = sorted({int(round(q * (len(frames) - 1))) for q in (0.15, 0.5, 0.85)})
    strip = np.vstack([depth_strip(frames[i].rgb, frames[i].depth_mm, frames[i].gt_mm, near, far, titles=(k == 0),
                                   confidence=frames[i].confidence) for k, i in enumerate(picks)])
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
    _, msg = by_stamp(recorded, OUTPUTS["points"], PointCloud2).get(stamp, (None, None))
    if msg is None:
        raise DaresError(f"{recorded}: no {OUTPUTS['points']} message for the chosen frame (points are best effort)")
    points, rgb = read_point_cloud(msg)
    valid = np.isfinite(points).all(-1)
    points, rgb = points[valid].astype(np.float64), rgb[valid]
    write_ply(out / "points.ply", points, rgb)
    render_point_cloud(points * 1000.0, rgb, out / "points.png", f"{OUTPUTS['points']}: {len(points)} points")
    return len(points)


def write_fused_surface(out: Path, surface: FusedSurface) -> None:
    """fused.ply (metres, the poses' world frame) and fused.png, seen from the middle frame's camera."""
    points = surface.points_m
    write_ply(out / "fused.ply", points.astype(np.float64), surface.rgb)
    seen = (np.linalg.inv(surface.view_mm) @ np.c_[points * 1000.0, np.ones(len(points))].T).T[:, :3]
    render_point_cloud(seen, surface.rgb, out / "fused.png", f"{MAP}: {len(points)} points, seen from the middle "
                                                             "frame")


def write_trajectory(out: Path, motion: OdometryScores) -> None:
    """trajectory.png of dares_odometry_node's camera path against the bag's ground-truth poses."""
    s = motion.summary
    plot_trajectories(motion.predicted, motion.ground_truth, out / "trajectory.png",
                      f"{ODOM} against ground truth: ATE {s['ate_mm']:.3f} mm, RE {s['re_rad']:.4f} rad")
