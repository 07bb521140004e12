"""The SCARED layout that DARES/AF-SfMLearner read, and the endovis split files.

Layout under a data root::

    datasetN/keyframeM/image_02/data/0000000001.png            left frames (image_03: right)
    datasetN/keyframeM/image_02/data/groundtruth/scene_points000000.tiff   XYZ mm, frame index - 1
    datasetN/keyframeM/image_02/data/instruments/0000000001.png          synthetic scenes: instrument mask
    splits/<name>/test_files.txt                                 lines "datasetN/keyframeM FRAME l"
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import DaresError
from ..files import atomic_file, write_image, write_npz
from ..preprocess import read_rgb, resize_like_official, to_unit_tensor

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


def instrument_mask_path(root: Path, folder: str, frame: int) -> Path:
    """The left eye's instrument mask (uint8 PNG, 255 on instruments) that `dares synth` writes beside the ground
    truth; SCARED itself has none."""
    return Path(root) / folder / SIDE_FOLDER["l"] / "data" / "instruments" / f"{frame:010d}.png"


def read_tissue_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H,W) bool, True on tissue, of an instrument mask (instrument_mask_path; any PNG, 8 or 16 bits, grey or
    colour: nonzero in any colour channel on instruments, alpha ignored), resized to size (width, height) by
    nearest neighbour when given."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if Path(path).is_file() else None
    if mask is None:
        raise DaresError(f"{path} is missing or unreadable: an instrument mask is a PNG, nonzero on instruments "
                         "(dares synth writes them beside its ground truth)")
    instruments = (mask[..., :3] != 0).any(axis=-1) if mask.ndim == 3 else mask != 0
    if size is not None:
        instruments = cv2.resize(instruments.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return ~instruments


def sequence_frames(root: Path, folder: str) -> list[int]:
    """The left-eye frame numbers of a keyframe folder, in order; one clear error when it has none."""
    frames = sorted(int(p.stem) for p in (Path(root) / folder / SIDE_FOLDER["l"] / "data").glob("*.png"))
    if not frames:
        raise DaresError(f"{Path(root) / folder}/image_02/data has no frames: is the data folder the one holding "
                         f"{folder}?")
    return frames


@functools.lru_cache(maxsize=256)
def read_camera_poses(sequence: Path) -> dict[int, np.ndarray]:
    """{frame: camera-to-world (4,4) mm} of a keyframe folder's camera_poses.npz (`dares synth`, `dares
    prepare-scared`); empty without one. Read once per folder (training with pose supervision asks per item)."""
    path = Path(sequence) / "camera_poses.npz"
    if not path.is_file():
        return {}
    data = np.load(path)
    return {int(f): pose for f, pose in zip(data["frames"], data["poses"])}


@functools.lru_cache(maxsize=64)
def read_sequence_calibration(sequence: Path) -> dict:
    """A keyframe folder's calibration.yaml (K, baseline_mm, P matrices, fps), as `dares synth` and `dares
    prepare-scared` write it; read once per folder (training asks per item)."""
    path = Path(sequence) / "calibration.yaml"
    if not path.is_file():
        raise DaresError(f"{path} not found: sequence folders need the calibration.yaml that `dares synth` and "
                         "`dares prepare-scared` write")
    import yaml

    return yaml.safe_load(path.read_text())


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


@dataclass(frozen=True)
class ColorJitter:
    """One draw of torchvision's ColorJitter with the official ranges (JITTER), applied as it applies them to
    PIL images: brightness, contrast, saturation (PIL ImageEnhance) and hue (a uint8 shift of HSV hue) in a
    random order. Written here because torchvision is not a dependency; test_official_parity checks it against
    torchvision's output."""

    order: tuple[int, ...]  # indices into JITTER, in the order applied
    factors: tuple[float, float, float, float]  # brightness, contrast, saturation, hue

    @classmethod
    def draw(cls, rng: np.random.Generator) -> ColorJitter:
        return cls(tuple(int(i) for i in rng.permutation(len(JITTER))),
                   tuple(float(rng.uniform(*r)) for r in JITTER.values()))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """rgb (H,W,3) uint8 -> jittered (H,W,3) uint8."""
        from PIL import Image, ImageEnhance

        image = Image.fromarray(rgb)
        enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
        for i in self.order:
            if i < 3:
                image = enhancers[i](image).enhance(self.factors[i])
            else:
                h, s, v = image.convert("HSV").split()
                hue = np.asarray(h, dtype=np.uint8) + np.uint8(np.int32(self.factors[3] * 255).astype(np.uint8))
                image = Image.merge("HSV", (Image.fromarray(hue), s, v)).convert("RGB")
        return np.array(image)


class ScaredSequenceDataset:
    """Training/validation items of a split in the SCARED layout, as the official MonoDataset builds them.

    Item keys: ("color", f, s) and ("color_aug", f, s) (3,H/2^s,W/2^s) in [0,1] for f in frame_ids (ints and
    "s" for the other eye) and scales s; ("K", s), ("inv_K", s) (4,4); "stereo_T" (4,4) when "s" is used;
    with ground_truth, "depth_gt" (1,H,W) mm at the network size (nearest; 0 where the frame has none); with
    poses, ("pose_gt", f) (4,4) for each temporal source f: the true motion that takes the target camera's points
    into source f's (the pose network's cam_T_cam), mm, mirrored with the images when they are flipped.
    stereo_baseline: model units (nominal mm for DARES); None reads calibration.yaml or falls back to 0.1.
    intrinsics: "official" (SCARED's K for every sequence, as DARES) or "calibration" (normalised_K).
    """

    def __init__(self, root: Path, entries: list[SplitEntry], height: int, width: int, frame_ids=(0, -1, 1),
                 num_scales: int = 4, train: bool = False, stereo_baseline: float | None = None, seed: int = 0,
                 jitter_per_item: bool = False, ground_truth: bool = False, poses: bool = False,
                 intrinsics: str = "official"):
        self.root, self.entries = Path(root), list(entries)
        self.height, self.width = height, width
        self.frame_ids, self.num_scales, self.train = list(frame_ids), num_scales, train
        self.stereo_baseline = stereo_baseline
        self.seed, self.epoch = seed, 0
        self.jitter_per_item, self.ground_truth, self.poses = jitter_per_item, ground_truth, poses
        self.intrinsics = intrinsics
        if not self.entries:
            raise DaresError(f"no frames in the split for {root}: check the split file")
        first = self.entries[0]
        for f in [f for f in self.frame_ids if f in (0, "s")]:  # the layout; neighbours below
            path = image_path(root, first.folder, first.frame, _side(first.side, f))
            if not path.is_file():
                raise DaresError(f"{path} not found: the data folder is not laid out as "
                                 "datasetN/keyframeM/image_02/data/%010d.png (run `dares prepare-scared` or `dares "
                                 "synth`)")
        offsets = [f for f in self.frame_ids if f not in ("s", 0)]
        for entry in self.entries:  # a neighbour beyond a sequence's ends: say so now, not mid-epoch as unreadable
            for f in offsets:
                if not image_path(root, entry.folder, entry.frame + f, entry.side).is_file():
                    raise DaresError(f"frame_ids {self.frame_ids} reach frame {entry.frame + f} of {entry.folder}, "
                                     f"which it does not have (for its frame {entry.frame} in the split): give "
                                     "offsets every listed frame has neighbours at, e.g. [0, -1, 1]")

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on (seed, epoch, index): a resumed run sees the same data."""
        self.epoch = epoch

    @staticmethod
    def calibrated_baseline(sequence: Path) -> float | None:
        """baseline_mm of a sequence folder's calibration.yaml, None without one."""
        if not (Path(sequence) / "calibration.yaml").is_file():
            return None
        value = read_sequence_calibration(Path(sequence)).get("baseline_mm")
        return float(value) if value else None

    def _baseline(self, folder: str) -> float:
        if self.stereo_baseline is not None:
            return self.stereo_baseline
        return self.calibrated_baseline(self.root / folder) or 0.1

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        entry = self.entries[index]
        do_aug = self.train and rng.random() > 0.5
        do_flip = self.train and rng.random() > 0.5
        item_jitter = ColorJitter.draw(rng) if do_aug and self.jitter_per_item else None
        item = {}
        for f in self.frame_ids:
            frame = entry.frame + (0 if f == "s" else f)
            image = read_rgb(image_path(self.root, entry.folder, frame, _side(entry.side, f)))
            if do_flip:
                image = image[:, ::-1]
            for s in range(self.num_scales):  # each scale from the one above, as the official
                image = resize_like_official(np.ascontiguousarray(image), (self.height // 2**s, self.width // 2**s))
                jitter = item_jitter or (ColorJitter.draw(rng) if do_aug else None)  # official: one per image
                item[("color", f, s)] = to_unit_tensor(image)
                item[("color_aug", f, s)] = to_unit_tensor(jitter(image)) if jitter else item[("color", f, s)]
        normalised = self.normalised_K(entry.folder, do_flip)
        for s in range(self.num_scales):
            K = normalised.copy()
            K[0] *= self.width // 2**s
            K[1] *= self.height // 2**s
            item[("K", s)], item[("inv_K", s)] = torch.from_numpy(K), torch.from_numpy(np.linalg.pinv(K))
        if "s" in self.frame_ids:
            T = np.eye(4, dtype=np.float32)
            T[0, 3] = (-1 if entry.side == "l" else 1) * (-1 if do_flip else 1) * self._baseline(entry.folder)
            item["stereo_T"] = torch.from_numpy(T)
        if self.ground_truth:
            item["depth_gt"] = torch.from_numpy(self._ground_truth(entry, do_flip))[None]
        if self.poses:
            item.update(self._true_motion(entry, do_flip))
        return item

    def normalised_K(self, folder: str, flip: bool) -> np.ndarray:
        """(4,4) intrinsics normalised by image width (row 0) and height (row 1): OFFICIAL_K (SCARED's, as DARES
        trains every sequence), or with intrinsics "calibration" the sequence's own rectified K from its
        calibration.yaml (a resize to the training size scales it per axis, so any aspect stays right; a
        horizontal flip mirrors its principal point)."""
        if self.intrinsics == "official":
            return OFFICIAL_K
        calibration = read_sequence_calibration(self.root / folder)
        if not calibration.get("rectified"):
            raise DaresError(f"{self.root / folder / 'calibration.yaml'} is of raw frames (distorted, as SCARED's): "
                             "intrinsics: calibration needs rectified ones (dares prepare-bag, prepare-video); use "
                             "intrinsics: official")
        K = np.eye(4, dtype=np.float32)
        K[:3, :3] = np.array(calibration["K"], np.float32)
        K[0] /= calibration["image_width"]
        K[1] /= calibration["image_height"]
        if flip:
            K[0, 2] = 1.0 - K[0, 2]
        return K

    def _true_motion(self, entry: SplitEntry, flip: bool) -> dict:
        """("pose_gt", f) for the temporal sources: inv(P_f) @ P_0 of camera_poses.npz; a horizontal flip mirrors
        it (x negated on both sides)."""
        poses = read_camera_poses(self.root / entry.folder)
        mirror = np.diag([-1.0, 1.0, 1.0, 1.0]) if flip else np.eye(4)
        out = {}
        for f in self.frame_ids:
            if f == "s":
                continue
            if entry.frame not in poses or entry.frame + f not in poses:
                raise DaresError(f"{self.root / entry.folder / 'camera_poses.npz'} has no pose for frame "
                                 f"{entry.frame + (f if entry.frame in poses else 0)}: pose supervision needs the "
                                 "camera pose of every frame (`dares synth` and `dares prepare-scared` write them)")
            motion = np.linalg.inv(poses[entry.frame + f]) @ poses[entry.frame]
            out[("pose_gt", f)] = torch.from_numpy((mirror @ motion @ mirror).astype(np.float32))
        return out

    def _ground_truth(self, entry: SplitEntry, flip: bool) -> np.ndarray:
        """The target frame's ground-truth depth (H,W) mm at the network size, nearest; zeros without one."""
        path = gt_path(self.root, entry.folder, entry.frame, entry.side)
        if not path.is_file():
            return np.zeros((self.height, self.width), np.float32)
        depth = cv2.resize(read_gt_depth(path), (self.width, self.height), interpolation=cv2.INTER_NEAREST)
        return np.ascontiguousarray(depth[:, ::-1] if flip else depth)


def _side(side: str, frame_id) -> str:
    return {"l": "r", "r": "l"}[side] if frame_id == "s" else side
