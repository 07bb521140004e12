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


def default_split_dir(data: Path) -> Path:
    """DATA/splits/endovis, or the only split folder under DATA/splits (e.g. `synthetic` from dares synth)."""
    splits = data / "splits"
    found = sorted(p for p in splits.iterdir() if p.is_dir()) if splits.is_dir() else []
    if (splits / "endovis").is_dir() or len(found) != 1:
        return splits / "endovis"
    return found[0]


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


# The official SCARED loader's intrinsics, normalised by image width (row 0) and height (row 1).
OFFICIAL_K = np.array([[0.82, 0, 0.5, 0], [0, 1.02, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)
JITTER = {"brightness": (0.8, 1.2), "contrast": (0.8, 1.2), "saturation": (0.8, 1.2), "hue": (-0.1, 0.1)}


def color_jitter(images: list, rng) -> list:
    """torchvision ColorJitter semantics (random order, factors from JITTER), the same draw for every image.

    images: tensors (3,H,W) in [0,1]. Written here because torchvision is not a dependency.
    """
    import torch
    from kornia.enhance import adjust_hue

    factors = {k: rng.uniform(*v) for k, v in JITTER.items()}
    order = list(rng.permutation(len(JITTER)))

    def gray(x):
        return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)

    def apply(x):
        for i in order:
            name = list(JITTER)[i]
            f = factors[name]
            if name == "brightness":
                x = x * f
            elif name == "contrast":
                x = (x - gray(x).mean()) * f + gray(x).mean()
            elif name == "saturation":
                x = (x - gray(x)) * f + gray(x)
            else:
                x = adjust_hue(x.unsqueeze(0), f * 2 * np.pi).squeeze(0)
            x = x.clamp(0, 1)
        return x

    with torch.no_grad():
        return [apply(x) for x in images]


class ScaredSequenceDataset:
    """Training/validation items of a split in the SCARED layout, as the official MonoDataset builds them.

    Item keys: ("color", f, s) and ("color_aug", f, s) (3,H/2^s,W/2^s) in [0,1] for f in frame_ids (ints and
    "s" for the other eye) and scales s; ("K", s), ("inv_K", s) (4,4); "stereo_T" (4,4) when "s" is used.
    stereo_baseline: model units (nominal mm for DARES); None reads calibration.yaml or falls back to 0.1.
    """

    def __init__(self, root: Path, entries: list[SplitEntry], height: int, width: int, frame_ids=(0, -1, 1),
                 num_scales: int = 4, train: bool = False, stereo_baseline: float | None = None, seed: int = 0):
        self.root, self.entries = Path(root), list(entries)
        self.height, self.width = height, width
        self.frame_ids, self.num_scales, self.train = list(frame_ids), num_scales, train
        self.stereo_baseline = stereo_baseline
        self.seed, self.epoch = seed, 0
        if not self.entries:
            raise DaresError(f"no frames in the split for {root}: check the split file")
        first = self.entries[0]
        for f in self.frame_ids:
            path = image_path(root, first.folder, first.frame + (0 if f == "s" else f), _side(first.side, f))
            if not path.is_file():
                raise DaresError(f"{path} not found: the data folder is not laid out as "
                                 "datasetN/keyframeM/image_02/data/%010d.png (run `dares prepare-scared` or `dares "
                                 "synth`)")

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on (seed, epoch, index): a resumed run sees the same data."""
        self.epoch = epoch

    def _baseline(self, folder: str) -> float:
        if self.stereo_baseline is not None:
            return self.stereo_baseline
        calib = self.root / folder / "calibration.yaml"
        if calib.is_file():
            import yaml

            return float(yaml.safe_load(calib.read_text()).get("baseline_mm", 0.1))
        return 0.1

    def _load(self, path: Path, flip: bool) -> np.ndarray:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DaresError(f"{path}: missing or unreadable frame; check the data folder")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(rgb[:, ::-1]) if flip else rgb

    def __getitem__(self, index: int) -> dict:
        import torch

        rng = np.random.default_rng([self.seed, self.epoch, index])
        entry = self.entries[index]
        do_aug = self.train and rng.random() > 0.5
        do_flip = self.train and rng.random() > 0.5
        item, raw = {}, {}
        for f in self.frame_ids:
            frame = entry.frame + (0 if f == "s" else f)
            image = self._load(image_path(self.root, entry.folder, frame, _side(entry.side, f)), do_flip)
            for s in range(self.num_scales):
                image = cv2.resize(image, (self.width // 2**s, self.height // 2**s), interpolation=cv2.INTER_LANCZOS4)
                raw[(f, s)] = torch.from_numpy(image).permute(2, 0, 1).float().div(255).clamp(0, 1)
        keys = list(raw)
        augmented = color_jitter([raw[k] for k in keys], rng) if do_aug else [raw[k] for k in keys]
        for (f, s), plain, aug in zip(keys, [raw[k] for k in keys], augmented):
            item[("color", f, s)], item[("color_aug", f, s)] = plain, aug
        for s in range(self.num_scales):
            K = OFFICIAL_K.copy()
            K[0] *= self.width // 2**s
            K[1] *= self.height // 2**s
            item[("K", s)], item[("inv_K", s)] = torch.from_numpy(K), torch.from_numpy(np.linalg.pinv(K))
        if "s" in self.frame_ids:
            T = np.eye(4, dtype=np.float32)
            T[0, 3] = (-1 if entry.side == "l" else 1) * (-1 if do_flip else 1) * self._baseline(entry.folder)
            item["stereo_T"] = torch.from_numpy(T)
        return item


def _side(side: str, frame_id) -> str:
    return {"l": "r", "r": "l"}[side] if frame_id == "s" else side
