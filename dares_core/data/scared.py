"""The SCARED layout that DARES/AF-SfMLearner read, and the endovis split files.

Layout under a data root::

    datasetN/keyframeM/image_02/data/0000000001.png            left frames (image_03: right)
    datasetN/keyframeM/image_02/data/groundtruth/scene_points000000.tiff   XYZ mm, frame index - 1
    splits/<name>/test_files.txt                                 lines "datasetN/keyframeM FRAME l"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import DaresError
from ..files import atomic_file, write_image, write_npz

SIDE_FOLDER = {"l": "image_02", "r": "image_03", "2": "image_02", "3": "image_03"}
GT_MAX_ROWS = 1024  # SCARED stacks left over right in scene_points; the left eye is rows 0:1024


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file: sequence folder, frame index, side ('l' or 'r')."""

    folder: str
    frame: int
    side: str


def image_path(root: Path, folder: str, frame: int, side: str = "l", ext: str = ".png") -> Path:
    return Path(root) / folder / SIDE_FOLDER[side] / "data" / f"{frame:010d}{ext}"


def gt_path(root: Path, folder: str, frame: int, side: str = "l") -> Path:
    return Path(root) / folder / SIDE_FOLDER[side] / "data" / "groundtruth" / f"scene_points{frame - 1:06d}.tiff"


def read_split(path: Path) -> list[SplitEntry]:
    """Parse a split file; one clear error for a missing file or a malformed line."""
    path = Path(path)
    if not path.is_file():
        raise DaresError(f"split file {path} not found: pass a file of lines 'datasetN/keyframeM FRAME l'")
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[1].lstrip("-").isdigit() or parts[2] not in SIDE_FOLDER:
            raise DaresError(f"{path}:{n}: expected 'datasetN/keyframeM FRAME l', got {line!r}")
        entries.append(SplitEntry(parts[0], int(parts[1]), parts[2]))
    return entries


def write_split(path: Path, entries: list[SplitEntry]) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text("".join(f"{e.folder} {e.frame} {e.side}\n" for e in entries))


def write_scene_points(path: Path, xyz_mm: np.ndarray) -> None:
    """Write an (H,W,3) float32 XYZ map (mm) as SCARED does: reading it back with OpenCV gives Z in channel 0."""
    zyx = np.ascontiguousarray(xyz_mm[..., ::-1].astype(np.float32))
    params = [cv2.IMWRITE_TIFF_COMPRESSION, cv2.IMWRITE_TIFF_COMPRESSION_ADOBE_DEFLATE,
              cv2.IMWRITE_TIFF_PREDICTOR, cv2.IMWRITE_TIFF_PREDICTOR_FLOATINGPOINT]
    write_image(path, zyx, params)


def read_gt_depth(path: Path, rows: int = GT_MAX_ROWS) -> np.ndarray:
    """Ground-truth depth (H,W) float32 mm from a scene_points tiff: Z channel, the left eye's `rows`, as official."""
    xyz = cv2.imread(str(path), cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    if xyz is None or xyz.ndim != 3:
        raise DaresError(f"{path}: not a 3-channel scene_points tiff; re-run `dares prepare-scared` or `dares synth`")
    return xyz[:rows, :, 0].astype(np.float32)


def export_gt_depths(root: Path, split_file: Path, out: Path, rows: int = GT_MAX_ROWS) -> int:
    """Write the split's ground truth to `out` (npz, key 'data', (N,H,W) float32 mm) as official export_gt_depth.

    Returns the number of frames written.
    """
    entries = read_split(split_file)
    depths = []
    for e in entries:
        p = gt_path(root, e.folder, e.frame, "l")
        if not p.is_file():
            raise DaresError(f"ground truth {p} not found for split line '{e.folder} {e.frame}': check --data root")
        depths.append(read_gt_depth(p, rows))
    write_npz(out, compressed=True, data=np.stack(depths))
    return len(depths)
