"""What the network sees: the official DARES loader's preprocessing, written once.

The official MonoDataset reads uint8 RGB, resizes with PIL LANCZOS (antialiased when shrinking) to the
network size, and divides by 255 (torchvision ToTensor). Training, validation, `dares eval --weights --data`
and `dares infer` all go through `resize_like_official`, so the AbsRel logged while training and the one
`dares eval` reports come from the same inputs. The node and `bag infer` resize on the device instead
(DepthPredictor: bilinear, antialiased); `dares bench resize` measures how far that is from this (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from PIL import Image

from .errors import DaresError


def read_rgb(path: Path, skip: bool = False) -> np.ndarray | None:
    """RGB uint8 (H,W,3) of an image file; an unreadable one is an error, or with `skip` a warning and None."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        problem = f"{path}: not a readable image; remove it from the input or re-export it"
        if not skip:
            raise DaresError(problem)
        print(f"warning: {problem} (skipped)", file=sys.stderr)
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class Video(NamedTuple):
    declared: int  # frames the container says it holds
    fps: float  # 0 when it does not say
    frames: Iterator[np.ndarray]  # BGR (H,W,3) uint8


def video_frames(path: Path, partial: str = "the {read} read were written") -> Video:
    """A video's frames. One that ends before the frames it declares (cut short, damaged) raises DaresError after
    its last readable frame, naming both counts and then `partial` (what became of the frames read), and the
    command ends with status 2."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's lines on a damaged file: the one below says it
    video = cv2.VideoCapture(str(path))
    if not video.isOpened():
        raise DaresError(f"{path} is not a video OpenCV can open (or it is damaged)")
    declared = int(video.get(cv2.CAP_PROP_FRAME_COUNT))

    def frames():
        read = 0
        try:
            while True:
                ok, bgr = video.read()
                if not ok:
                    break
                read += 1
                yield bgr
        finally:
            video.release()
        if read < declared:
            raise DaresError(f"{path}: read {read} of the {declared} frames it declares (cut short or damaged); "
                             + partial.format(read=read))

    return Video(declared, video.get(cv2.CAP_PROP_FPS), frames())


def resize_like_official(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """rgb (H,W,3) uint8 -> (height, width, 3) uint8 by PIL LANCZOS, as the official loader's transforms.Resize;
    size: (height, width). An image already at that size is returned as it is."""
    height, width = size
    if rgb.shape[:2] == (height, width):
        return rgb
    return np.array(Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS))  # writable


def to_unit_tensor(rgb: np.ndarray) -> torch.Tensor:
    """rgb (H,W,3) uint8 -> (3,H,W) float32 in [0,1], as torchvision's ToTensor."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div(255)


def network_batch(images: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """RGB uint8 images (H,W,3) -> (B,height,width,3) uint8 at the network size, for DepthPredictor.predict."""
    return torch.from_numpy(np.stack([resize_like_official(rgb, size) for rgb in images]))
