"""A recording of your own endoscope -> the layout `dares train` reads (`dares prepare-bag`, `dares prepare-video`).

DATA/<name>/image_02/data/%010d.png (left; image_03: right), calibration.yaml (rectified: the P of the frames as
written), camera_poses.npz (when poses were recorded: camera-to-world, mm) and recording.json (what was kept and
why). Only frames with camera motion are kept, numbered consecutively, so a frame's neighbours are frames the camera
moved between. DATA/splits/own/{train,val}_files.txt cover every recording under DATA: validation takes whole
blocks of frames, and the frames at block edges go to neither list, so no training frame has a validation
neighbour.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..errors import DaresError
from ..files import atomic_dir, atomic_file, interrupts_held, write_image, write_npz
from .scared import SIDE_FOLDER, SplitEntry, read_split, write_split

SPLIT_NAME = "own"  # DATA/splits/own: the lists of every prepared recording
MANIFEST = "recording.json"
OURS = ("image_02", "image_03", "calibration.yaml", "camera_poses.npz", MANIFEST)  # what --force may replace
MOTION_WIDTH = 160  # frames are compared for motion at this width


@dataclass(frozen=True)
class RecordingOptions:
    """min_motion_px: median image motion (optical flow, pixels of the full frame) a frame needs since the last
    kept one; block: frames per split block; val_every: every val_every-th block is validation."""

    min_motion_px: float = 2.0
    block: int = 50
    val_every: int = 5


@dataclass
class RecordingReport:
    name: str
    source: str
    frames_read: int = 0
    kept: int = 0
    still: int = 0  # near-duplicates of the last kept frame: the camera had not moved
    posed: bool = False
    train: list[int] = field(default_factory=list)
    val: list[int] = field(default_factory=list)
    already_done: bool = False

    def summary(self) -> str:
        if self.already_done:
            return f"{self.name}: already prepared from {self.source} (pass --force to prepare it again)"
        return (f"{self.name}: kept {self.kept} of {self.frames_read} frames ({self.still} left out: the camera had "
                f"not moved since the last kept one); train {len(self.train)}, val {len(self.val)} frames"
                + ("" if self.val else " (too few frames for a validation block: pass a smaller --block)")
                + ("; camera poses written" if self.posed else ""))


def motion_px(previous: np.ndarray, current: np.ndarray, full_width: int) -> float:
    """Median optical-flow magnitude between two gray frames at MOTION_WIDTH (h,w) uint8, in pixels of a frame
    full_width wide: the camera's motion (the median ignores instruments moving over a part of the view)."""
    flow = cv2.calcOpticalFlowFarneback(previous, current, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    return float(np.median(np.hypot(flow[..., 0], flow[..., 1]))) * full_width / previous.shape[1]


def _small_gray(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (MOTION_WIDTH, max(1, round(h * MOTION_WIDTH / w))),
                      interpolation=cv2.INTER_AREA)


def split_frames(count: int, options: RecordingOptions) -> tuple[list[int], list[int]]:
    """(train, val) frame numbers of frames 1..count: blocks of options.block frames, every val_every-th one (the
    last block when there are fewer) validation; the first and last frame of every block and of the recording go to
    neither (their neighbours would cross a block edge or the recording's end)."""
    blocks = math.ceil(count / options.block)
    val_blocks = {b for b in range(blocks) if b % options.val_every == options.val_every - 1}
    if not val_blocks and blocks >= 2:
        val_blocks = {blocks - 1}
    train, val = [], []
    for frame in range(2, count):
        b, position = divmod(frame - 1, options.block)
        if position in (0, options.block - 1) and blocks > 1:
            continue
        (val if b in val_blocks else train).append(frame)
    return train, val


def prepare_recording(frames: Iterable[tuple[float, np.ndarray, np.ndarray | None]], calibration: dict, data: Path,
                      name: str, source: str, poses: Callable[[float], np.ndarray | None] | None = None,
                      options: RecordingOptions = RecordingOptions(), force: bool = False, progress=None,
                      pose_source: str = "the pose topic") -> RecordingReport:
    """Write one recording under data/name (in one rename at the end: an interrupted run leaves nothing) and the
    splits of every recording under data. frames: (stamp s, left (H,W,3) uint8 RGB, right or None), in time order,
    rectified; calibration: calibration.yaml's content for them; poses(stamp) -> camera-to-world (4,4) mm, or None
    where the recording has no pose near that stamp. A recording already prepared from the same source with the same
    options is kept as it is (already_done)."""
    data, out = Path(data), Path(data) / name
    report = RecordingReport(name, source)
    manifest = out / MANIFEST
    if manifest.is_file() and not force:
        done = json.loads(manifest.read_text())
        if done.get("source") != source or done.get("options") != asdict(options):
            raise DaresError(f"{out} holds a recording prepared from {done.get('source')} with other options: pass "
                             "another --name, or --force to replace it")
        report.already_done = True
        write_splits(data)
        return report
    stamps, missing_pose, world = [], [], []
    with contextlib.ExitStack() as commit:
        with atomic_dir(out, force=force, ours=OURS) as stage:
            previous, size = None, None
            first = last = None
            for stamp, left, right in frames:
                report.frames_read += 1
                first, last = first if first is not None else stamp, stamp
                if progress is not None:
                    progress(1)
                size = size or left.shape[:2]
                if left.shape[:2] != size:
                    raise DaresError(f"{source}: the frame at {stamp:.3f} s is {left.shape[1]}x{left.shape[0]}, the "
                                     f"first was {size[1]}x{size[0]}: prepare each resolution as its own recording")
                gray = _small_gray(left)
                if previous is not None and motion_px(previous, gray, left.shape[1]) < options.min_motion_px:
                    report.still += 1
                    continue
                previous = gray
                report.kept += 1
                for side, image in (("l", left), ("r", right)):
                    if image is not None:
                        write_image(stage / SIDE_FOLDER[side] / "data" / f"{report.kept:010d}.png",
                                    cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                stamps.append(stamp)
                if poses is not None:
                    T = poses(stamp)
                    if T is None:
                        missing_pose.append(stamp)
                    else:
                        world.append(T)
            if not report.frames_read:
                raise DaresError(f"{source}: no frames")
            if report.kept < 3:
                raise DaresError(f"{source}: the camera moved (at least {options.min_motion_px:g} px since the last "
                                 f"kept frame) in {report.kept - 1} of {report.frames_read} frames; self-supervision "
                                 "needs a moving camera: record one moving over tissue, or lower --min-motion")
            if missing_pose:
                raise DaresError(f"{source}: {pose_source} has no pose near {len(missing_pose)} of the {report.kept} "
                                 f"kept frames (first at {missing_pose[0]:.3f} s): record the poses with the images, "
                                 "or prepare without them")
            if poses is not None:
                write_npz(stage / "camera_poses.npz", poses=np.stack(world), frames=np.arange(1, report.kept + 1))
                report.posed = True
            report.train, report.val = split_frames(report.kept, options)
            fps = (report.frames_read - 1) / (last - first) if last > first else None  # as recorded, before the still
            with atomic_file(stage / "calibration.yaml") as tmp:  # frames were left out
                tmp.write_text(yaml.safe_dump({**calibration, "fps": fps}, sort_keys=False))
            with atomic_file(stage / MANIFEST) as tmp:
                tmp.write_text(json.dumps({**asdict(report), "options": asdict(options), "stamps": stamps}, indent=1))
            commit.enter_context(interrupts_held())  # the rename and the splits that list it: both, or neither
        write_splits(data)
    return report


def write_splits(data: Path) -> Path:
    """DATA/splits/own/{train,val}_files.txt from the recording.json of every recording under DATA."""
    train, val = [], []
    for manifest in sorted(Path(data).glob(f"*/{MANIFEST}")):
        done = json.loads(manifest.read_text())
        name = manifest.parent.name
        train += [SplitEntry(name, f, "l") for f in done["train"]]
        val += [SplitEntry(name, f, "l") for f in done["val"]]
    split_dir = Path(data) / "splits" / SPLIT_NAME
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, entries in (("train", train), ("val", val)):
        path = split_dir / f"{name}_files.txt"
        if not path.is_file() or read_split(path) != entries:  # unchanged lists stay as they were
            write_split(path, entries)
    return split_dir



def video_recording(path: Path, calibration_files: list[Path], layout: str):
    """(frames for prepare_recording, calibration.yaml's content) of a video: each frame split into its eyes by
    `layout` and rectified with the calibration; stamps frame index / fps."""
    import itertools

    from ..preprocess import video_frames
    from .calibration import read_calibration_files

    video = video_frames(path, partial="nothing was prepared: re-encode the video, or cut it where it breaks")
    frames = iter(video.frames)
    first = next(frames, None)
    if first is None:
        raise DaresError(f"{path}: no frames")
    height, width = first.shape[:2]
    if layout == "side-by-side":
        eye_size = (width // 2, height)
        split = lambda rgb: (rgb[:, : width // 2], rgb[:, width // 2: 2 * (width // 2)])  # noqa: E731
    elif layout == "over-under":
        eye_size = (width, height // 2)
        split = lambda rgb: (rgb[: height // 2], rgb[height // 2: 2 * (height // 2)])  # noqa: E731
    else:
        eye_size, split = (width, height), lambda rgb: (rgb, None)  # noqa: E731
    rectification = read_calibration_files(calibration_files, eye_size, layout != "mono")
    fps = video.fps or 25.0

    def rectified():
        for index, bgr in enumerate(itertools.chain([first], frames)):
            left, right = split(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            yield (index / fps, rectification.apply(0, left),
                   None if right is None else rectification.apply(1, right))
    return rectified(), rectification.calibration_yaml(str(Path(path).resolve()))
