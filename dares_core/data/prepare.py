"""`dares prepare-scared`: the SCARED challenge download -> the layout DARES reads, resumably.

Raw (per keyframe): dataset_N/keyframe_M/{endoscope_calibration.yaml, data/rgb.mp4 (left over right),
data/scene_points.tar.gz (scene_points%06d.tiff, XYZ mm, left over right), data/frame_data.tar.gz (per-frame
JSON with "camera-pose")}. Written: datasetN/keyframeM/image_02/data/%010d.png (left, frame = video index + 1),
image_03 (right), image_02/data/groundtruth/scene_points%06d.tiff, camera_poses.npz, calibration.yaml, and
splits/endovis/ with the split lists and the test split's gt_depths.npz (as official export_gt_depth.py).
Datasets 8 and 9 number keyframes from 0; they become 1-5 as in the official lists.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..errors import DaresError
from ..files import atomic_file, write_image, write_npz
from ..preprocess import video_frames
from .scared import SplitEntry, export_gt_depths, gt_path, image_path, read_split

SPLITS = Path(__file__).resolve().parents[1] / "splits" / "endovis"
DONE_MARKER = ".prepared"


@dataclass
class PrepareReport:
    converted: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "folder: why": no video to convert (not an error)
    failed: list[str] = field(default_factory=list)  # "folder: why": a damaged source, left to a re-run
    gt_export: str = ""


def _number(name: str, word: str) -> int | None:
    m = re.fullmatch(rf"{word}_?(\d+)", name)
    return int(m.group(1)) if m else None


def raw_keyframes(src: Path) -> list[tuple[Path, str]]:
    """(raw keyframe folder, output folder 'datasetN/keyframeM') for every keyframe under `src`."""
    found = []
    for ds in sorted(Path(src).iterdir()):
        n = _number(ds.name, "dataset") if ds.is_dir() else None
        if n is None:
            continue
        for kf in sorted(ds.iterdir()):
            m = _number(kf.name, "keyframe") if kf.is_dir() else None
            if m is not None:
                found.append((kf, f"dataset{n}/keyframe{m + 1 if n in (8, 9) else m}"))
    if not found:
        raise DaresError(f"{src}: no dataset_N/keyframe_M folders; pass the folder of the SCARED download")
    return found


def read_calibration(path: Path) -> dict:
    """endoscope_calibration.yaml (OpenCV FileStorage) -> our calibration dict, with rectified P matrices."""
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    if not fs.isOpened():
        raise DaresError(f"{path}: not an OpenCV calibration file")

    def matrix(*names):
        for name in names:
            node = fs.getNode(name)
            if not node.empty():
                return node.mat()
        raise DaresError(f"{path}: no {' or '.join(names)} matrix; is this endoscope_calibration.yaml?")

    K1, D1, K2, D2 = matrix("M1", "K1"), matrix("D1"), matrix("M2", "K2"), matrix("D2")
    R, T = matrix("R"), matrix("T").reshape(3)
    fs.release()
    return {"K1": K1, "D1": D1.ravel(), "K2": K2, "D2": D2.ravel(), "R": R, "T": T}


def calibration_yaml(calib: dict, width: int, height: int, fps: float) -> dict:
    """Our calibration.yaml: raw K/D per eye, baseline, and the cv2.stereoRectify result for rectified use."""
    R1, R2, P1, P2, Q, _, _ = cv2.stereoRectify(calib["K1"], calib["D1"], calib["K2"], calib["D2"], (width, height),
                                               calib["R"], calib["T"].reshape(3, 1), alpha=0)
    return {
        "image_width": width, "image_height": height, "rectified": False, "units": "mm", "fps": fps,
        "K": calib["K1"].tolist(), "D": calib["D1"].tolist(), "K_right": calib["K2"].tolist(),
        "D_right": calib["D2"].tolist(), "R": calib["R"].tolist(), "T": calib["T"].tolist(),
        "baseline_mm": float(np.linalg.norm(calib["T"])),
        "rectification": {"R1": R1.tolist(), "R2": R2.tolist(), "P_left": P1.tolist(), "P_right": P2.tolist(),
                          "Q": Q.tolist()},
    }


def _tar_members(path: Path, suffix: str):
    """(index, member bytes) of the numbered files in a tar.gz, by basename only (never extracted to paths)."""
    with tarfile.open(path, "r:*") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(suffix)]

        def index(m):
            digits = re.findall(r"(\d+)", Path(m.name).name)
            if not digits:
                raise DaresError(f"{path}: member {m.name} has no frame number")
            return int(digits[-1])

        for m in sorted(members, key=index):
            yield index(m), tar.extractfile(m).read()


def convert_keyframe(raw: Path, root: Path, folder: str) -> None:
    """Write one keyframe's frames, ground truth, poses and calibration under root/folder."""
    video_path = raw / "data" / "rgb.mp4"
    video = video_frames(video_path)
    fps = video.fps or 25.0
    frame, size = 0, None
    for stacked in video.frames:
        if stacked.shape[0] % 2:
            raise DaresError(f"{video_path}: frame height {stacked.shape[0]} is odd, expected left stacked over right")
        half = stacked.shape[0] // 2
        frame += 1
        write_image(image_path(root, folder, frame, "l"), stacked[:half])
        write_image(image_path(root, folder, frame, "r"), stacked[half:])
        size = (stacked.shape[1], half)
    if size is None:
        raise DaresError(f"{video_path}: no frames")
    seq = root / folder
    points = raw / "data" / "scene_points.tar.gz"
    if points.is_file():
        for index, data in _tar_members(points, ".tiff"):
            target = gt_path(root, folder, index + 1)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(target) as tmp:
                tmp.write_bytes(data)
    poses_tar = raw / "data" / "frame_data.tar.gz"
    if poses_tar.is_file():
        poses, frames = [], []
        for index, data in _tar_members(poses_tar, ".json"):
            poses.append(np.array(json.loads(data)["camera-pose"], dtype=np.float64).reshape(4, 4))
            frames.append(index + 1)
        write_npz(seq / "camera_poses.npz", poses=np.stack(poses), frames=np.array(frames))
    calib_file = raw / "endoscope_calibration.yaml"
    if calib_file.is_file():
        calib = calibration_yaml(read_calibration(calib_file), size[0], size[1], fps)
        with atomic_file(seq / "calibration.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(calib, sort_keys=False))


def prepare_scared(src: Path, dst: Path, splits: Path = SPLITS, progress=None) -> PrepareReport:
    """Convert every keyframe under `src` into `dst`; finished keyframes are skipped on a re-run.

    splits: folder of split lists copied to dst/splits/<its name> (default: the shipped endovis lists).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DaresError(f"{src}: not a folder; pass the root of the SCARED download (holding dataset_N)")
    report = PrepareReport()
    for raw, folder in raw_keyframes(src):
        marker = dst / folder / DONE_MARKER
        if marker.is_file():
            report.already_done.append(folder)
        elif not (raw / "data" / "rgb.mp4").is_file():
            report.skipped.append(f"{folder}: no data/rgb.mp4 in {raw}")
        else:
            try:
                convert_keyframe(raw, dst, folder)
            except (DaresError, tarfile.TarError, json.JSONDecodeError, KeyError, ValueError, cv2.error) as e:
                report.failed.append(f"{folder}: {e}")
            else:
                marker.write_text("done\n")
                report.converted.append(folder)
        if progress is not None:
            progress(1)
    report.gt_export = export_split(dst, Path(splits))
    return report


def export_split(dst: Path, splits: Path) -> str:
    """Copy split lists into dst/splits/<name> and export the test ground truth when every frame has it."""
    if not (splits / "test_files.txt").is_file():
        raise DaresError(f"{splits}: no test_files.txt; pass a folder of split lists (train/val/test_files.txt)")
    split_dir = dst / "splits" / splits.name
    split_dir.mkdir(parents=True, exist_ok=True)
    for f in splits.iterdir():
        if f.is_file() and f.name != "gt_depths.npz":
            shutil.copyfile(f, split_dir / f.name)
    entries: list[SplitEntry] = read_split(split_dir / "test_files.txt")
    missing = [e for e in entries if not gt_path(dst, e.folder, e.frame).is_file()]
    if missing:
        return (f"gt_depths.npz not written: {len(missing)} of {len(entries)} test frames lack ground truth "
                f"(first: {missing[0].folder} {missing[0].frame})")
    rows = cv2.imread(str(image_path(dst, entries[0].folder, entries[0].frame)), cv2.IMREAD_UNCHANGED).shape[0]
    n = export_gt_depths(dst, split_dir / "test_files.txt", split_dir / "gt_depths.npz", rows=rows)
    return f"wrote {split_dir / 'gt_depths.npz'} ({n} frames)"
