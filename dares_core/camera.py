"""An eye's calibration as a camera_info gives it, and the intrinsics rule every consumer follows (image_pipeline's):
a rectified image (image_rect) is measured with P, a raw one with K; the calibration describes the image it comes
with and is never rescaled silently."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FrameProblem


class Uncalibrated(FrameProblem):
    """The calibration carries no intrinsics (dVRK's uncalibrated placeholder has K all zeros): depth can still be
    had in relative scale, but neither a point cloud nor a stereo scale."""


@dataclass(frozen=True)
class Camera:
    """K (3,3) and P (3,4) in pixels of a width x height image (sensor_msgs/CameraInfo's k, p, width, height)."""

    K: np.ndarray
    P: np.ndarray
    width: int
    height: int

    @classmethod
    def of(cls, k, p, width: int, height: int) -> Camera:
        return cls(np.asarray(k, np.float64).reshape(3, 3), np.asarray(p, np.float64).reshape(3, 4), width, height)

    def intrinsics(self, topic: str = "camera_info", rectified: bool = True) -> np.ndarray:
        """The (3,3) intrinsics of the image: the left 3x3 of P for rectified images (K when P was never filled), K
        for raw ones. Uncalibrated when they are all zeros; FrameProblem when they are not a pinhole camera."""
        name, M = ("P", self.P[:, :3]) if rectified and self.P.any() else ("K", self.K)
        if not M.any():
            raise Uncalibrated(f"is uncalibrated ({name} all zeros): depth is published in relative scale, without "
                               "points or stereo scale; calibrate the camera (ros2 run camera_calibration "
                               "cameracalibrator) and publish its camera_info", topic)
        if not np.isfinite(M).all() or M[0, 0] <= 0 or M[1, 1] <= 0:
            raise FrameProblem(f"no valid intrinsics ({name} = {M.ravel().tolist()}): calibrate the camera and "
                               f"publish {name}", topic)
        return M.copy()

    def checked(self, image_shape, topic: str = "camera_info", rectified: bool = True) -> np.ndarray:
        """intrinsics() for an image of `image_shape` (H,W,...), refused when the calibration is of another size."""
        K = self.intrinsics(topic, rectified)
        if (self.width, self.height) != (image_shape[1], image_shape[0]):
            raise FrameProblem(f"is {self.width}x{self.height} but the image is {image_shape[1]}x{image_shape[0]}; "
                               "publish camera_info matching the images", topic)
        return K

    def baseline(self, topic: str = "right/camera_info") -> float:
        """The stereo baseline in metres of a rectified right camera's projection: B = -P[0,3] / P[0,0]."""
        P = self.P
        with np.errstate(all="ignore"):
            baseline = -P[0, 3] / P[0, 0] if P[0, 0] > 0 else np.nan
        if not (np.isfinite(baseline) and baseline > 0):  # also a Tx so small that B underflows to 0
            raise FrameProblem(f"no stereo baseline (P[0,3] = {P[0, 3]}): publish the rectified right P with Tx = "
                               "-fx*B", topic)
        return float(baseline)
