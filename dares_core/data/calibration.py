"""Calibration files of a user's endoscope -> rectified frames and their calibration.yaml (`dares prepare-video`).

Three kinds are read: an OpenCV FileStorage YAML (one camera: camera_matrix and distortion_coefficients, as
OpenCV's calibration sample writes; a stereo pair: M1/K1, D1, M2/K2, D2, R, T, as SCARED's
endoscope_calibration.yaml), and ROS camera_info YAMLs (camera_calibration's files; two for a stereo pair).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..errors import DaresError

KINDS = "an OpenCV calibration YAML, a ROS camera_info YAML or SCARED's endoscope_calibration.yaml"


@dataclass
class Rectification:
    """How a recording's frames become rectified: K (3,3) the rectified intrinsics of the left eye as written,
    baseline_mm (None for one eye), maps[eye] cv2.remap maps (None: the frames are rectified already), size
    (width, height) of an eye's frame."""

    K: np.ndarray
    baseline_mm: float | None
    maps: list
    size: tuple[int, int]

    def apply(self, eye: int, rgb: np.ndarray) -> np.ndarray:
        return rgb if self.maps[eye] is None else cv2.remap(rgb, *self.maps[eye], cv2.INTER_LINEAR)

    def calibration_yaml(self, source: str) -> dict:
        """calibration.yaml's content for the rectified frames."""
        calibration = {"image_width": self.size[0], "image_height": self.size[1], "rectified": True, "units": "mm",
                       "K": self.K.tolist(), "D": [0.0] * 5, "source": source}
        if self.baseline_mm is not None:
            P_right = np.hstack([self.K, [[-self.K[0, 0] * self.baseline_mm], [0.0], [0.0]]])
            calibration.update(baseline_mm=self.baseline_mm, P_left=np.hstack([self.K, np.zeros((3, 1))]).tolist(),
                               P_right=P_right.tolist())
        return calibration


def _maps(K, D, R, P, size):
    """cv2 remap maps, or None where nothing moves (no distortion, R identity, P's 3x3 = K)."""
    if not np.any(D) and np.allclose(R, np.eye(3)) and np.allclose(P[:3, :3], K):
        return None
    return cv2.initUndistortRectifyMap(K, D, R, P[:3, :3], size, cv2.CV_16SC2)


def _check_size(path: Path, calibrated: tuple[int, int], size: tuple[int, int]) -> None:
    if calibrated != size:
        raise DaresError(f"{path} was calibrated at {calibrated[0]}x{calibrated[1]} but an eye's frames are "
                         f"{size[0]}x{size[1]}: calibrate at the video's size (or check --stereo)")


def _opencv(path: Path, size: tuple[int, int], stereo: bool) -> Rectification:
    if stereo:  # SCARED's endoscope_calibration.yaml, or any OpenCV stereo calibration of its keys
        from .prepare import read_calibration

        try:
            c = read_calibration(path)
        except DaresError:
            raise DaresError(f"{path} holds no stereo calibration (M1, D1, M2, D2, R, T): give one for a stereo "
                             "video, or pass --stereo mono") from None
        if not (0 < c["K1"][0, 2] < size[0] and 0 < c["K1"][1, 2] < size[1]):
            raise DaresError(f"{path}: its principal point ({c['K1'][0, 2]:.0f}, {c['K1'][1, 2]:.0f}) lies outside "
                             f"an eye's {size[0]}x{size[1]} frames: calibrate at the video's size (or check --stereo)")
        R1, R2, P1, P2, *_ = cv2.stereoRectify(c["K1"], c["D1"], c["K2"], c["D2"], size, c["R"],
                                               c["T"].reshape(3, 1), alpha=0)
        return Rectification(P1[:3, :3], float(np.linalg.norm(c["T"])),
                             [_maps(c["K1"], c["D1"], R1, P1, size), _maps(c["K2"], c["D2"], R2, P2, size)], size)
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    try:
        K, D = fs.getNode("camera_matrix").mat(), fs.getNode("distortion_coefficients").mat()
        calibrated = (int(fs.getNode("image_width").real()), int(fs.getNode("image_height").real()))
    finally:
        fs.release()
    if K is None or D is None:
        raise DaresError(f"{path}: no camera_matrix and distortion_coefficients: give {KINDS}")
    _check_size(path, calibrated, size)
    return Rectification(K, None, [_maps(K, D.ravel(), np.eye(3), K, size)], size)


def _ros(path: Path) -> dict:
    try:
        info = yaml.safe_load(path.read_text())
        return {"size": (int(info["image_width"]), int(info["image_height"])),
                "K": np.array(info["camera_matrix"]["data"], np.float64).reshape(3, 3),
                "D": np.array(info["distortion_coefficients"]["data"], np.float64),
                "R": np.array(info.get("rectification_matrix", {"data": np.eye(3).ravel()})["data"],
                              np.float64).reshape(3, 3),
                "P": np.array(info.get("projection_matrix", {"data": []})["data"] or
                              np.hstack([np.array(info["camera_matrix"]["data"]).reshape(3, 3), np.zeros((3, 1))]),
                              np.float64).reshape(3, 4)}
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError):
        raise DaresError(f"{path} is none of the calibrations read here (an OpenCV YAML starts with %YAML; a ROS "
                         "camera_info YAML has image_width, image_height and camera_matrix: data): give " + KINDS) \
            from None


def read_calibration_files(paths: list[Path], size: tuple[int, int], stereo: bool) -> Rectification:
    """The rectification of frames of `size` (width, height, one eye) from one calibration file (OpenCV or SCARED)
    or one or two ROS camera_info YAMLs (left, right)."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise DaresError(f"--calibration {path} not found: give {KINDS}")
    text = paths[0].read_text(errors="replace")
    if text.lstrip().startswith("%YAML"):
        if len(paths) > 1:
            raise DaresError(f"{paths[0]} is an OpenCV file, which holds a whole stereo calibration: give it alone")
        return _opencv(paths[0], size, stereo)
    if stereo and len(paths) != 2:
        raise DaresError("a stereo video with ROS camera_info YAMLs needs both: --calibration left.yaml right.yaml")
    eyes = [_ros(p) for p in paths[: 2 if stereo else 1]]
    for path, eye in zip(paths, eyes):
        _check_size(path, eye["size"], size)
    baseline = None
    if stereo:
        P = eyes[1]["P"]
        if not P[0, 0] > 0 or not -P[0, 3] / P[0, 0] > 0:
            raise DaresError(f"{paths[1]}: its projection_matrix has no baseline (Tx = -fx * B): give the right "
                             "camera's file of a stereo calibration")
        baseline = float(-P[0, 3] / P[0, 0]) * 1000.0  # camera_calibration's metres
    return Rectification(eyes[0]["P"][:3, :3], baseline,
                         [_maps(e["K"], e["D"], e["R"], e["P"], size) for e in eyes], size)
