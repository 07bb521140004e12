"""`dares infer`: depth for an image, a folder of images or a video, written as files.

Per frame NAME: NAME_depth.npy (float32, mm: nominal for DARES, true for networks that record their unit),
NAME_depth.png (uint16, DEPTH_PNG_UNITS_PER_MM units per mm, 0 = invalid), NAME_color.png (turbo colour map of
inverse depth), NAME.ply (points in mm, optical frame, with colours) when intrinsics are given, and with
--save-confidence NAME_confidence.npy ((H,W) float32 in [0,1], dares_core.confidence) and NAME_confidence.png
(uint8, 255 = 1).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from .commands.options import backend_options
from .errors import DaresError
from .files import check_output_folder, ensure_writable_output, write_image, write_npy, write_ply
from .geometry import backproject
from .inference import DepthPredictor
from .model.weights import load_depth_net
from .preprocess import network_batch, read_rgb, video_frames
from .visualize import colorize_inverse_depth

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
ANIMATIONS = {".gif"}  # read alone as a video; inside a folder of images, named and left out
DEPTH_PNG_UNITS_PER_MM = 100  # uint16 PNG: 0.01 mm per unit, up to 655 mm
BATCH = 8
NAME_MAX = 255  # bytes in a file name (ext4, xfs, btrfs)
FOCAL_RANGE = (1.0, 1e6)  # pixels: focal lengths outside it are no camera (a typo, a unit mixed up)
OUTPUT_SUFFIXES = ("_depth", "_color", "_confidence")  # the pictures this command writes: NAME_depth.png, ...

def list_frames(path: Path) -> tuple[int, Iterator[tuple[str, np.ndarray]]]:
    """(count, iterator of (name, RGB uint8 (H,W,3))) for an image, a folder of images or a video. Outputs are
    named after a file's stem; files whose stems collide (x.png and x.jpg) after stem and extension (x_png, x_jpg).
    A folder of `dares infer` outputs is refused (its pictures are no input)."""
    path = Path(path)
    if not path.exists():
        raise DaresError(f"input {path} not found: pass an image, a folder of images or a video")
    if not (path.is_dir() or path.is_file()):  # a pipe or a device: opening it would wait for a writer
        raise DaresError(f"input {path} is not a regular file (a pipe or a device): pass an image, a folder of "
                         "images or a video file")
    if path.is_dir():
        files, names = folder_images(path)
        return len(files), ((name, read_rgb(p, skip=True)) for name, p in zip(names, files))
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return 1, iter([(path.stem, read_rgb(path))])
    try:
        video = video_frames(path)
    except DaresError:
        raise DaresError(f"input {path} is neither an image nor a video OpenCV can open") from None
    return video.declared, _not_empty(path, ((f"frame_{i:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                                             for i, bgr in enumerate(video.frames, 1)))


def _not_empty(path: Path, frames: Iterator):
    """`frames`, refused with one line when there is none (a video of no frames: nothing to write is no success)."""
    empty = True
    for frame in frames:
        empty = False
        yield frame
    if empty:
        raise DaresError(f"input {path} holds no frame: pass a video with frames")


def folder_images(path: Path) -> tuple[list[Path], list[str]]:
    """The images of an input folder, in order, and the name each one's outputs take; refused when there are none
    or they are dares infer outputs (its pictures are no input)."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    animations = sorted(p.name for p in path.iterdir() if p.suffix.lower() in ANIMATIONS)
    if animations:
        print(f"input folder {path}: {', '.join(animations[:3])}{' ...' if len(animations) > 3 else ''} left out "
              "(an animation is read as a video: pass it alone as --input)", file=sys.stderr)
    odd = [p.name for p in files if not p.is_file()]
    if odd:  # a pipe named x.png would wait for a writer forever
        raise DaresError(f"input folder {path} holds {odd[0]}, which is not a regular file (a pipe, a device or a "
                         "folder): move it out, or give a folder of images")
    if not files:
        raise DaresError(f"input folder {path} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    ours = [p.name for p in files if p.stem.endswith(OUTPUT_SUFFIXES) and
            (path / f"{p.stem.rsplit('_', 1)[0]}_depth.npy").is_file()]
    if ours:
        raise DaresError(f"input folder {path} holds dares infer outputs ({', '.join(ours[:2])}): pass the folder "
                         "of input images")
    return files, output_names(files)


def output_names(files: list[Path]) -> list[str]:
    """The name each file's outputs take: its stem, or stem_extension where stems collide; refused if still not
    unique (x.png beside x_png.jpg and x.jpg)."""
    stems = Counter(p.stem for p in files)
    names = [p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix[1:].lower()}" for p in files]
    clash = [n for n, k in Counter(names).items() if k > 1]
    if clash:
        raise DaresError(f"several inputs would write outputs named {clash[0]}: rename them")
    long = [n for n in names if len(f"{n}_depth.npy".encode()) > NAME_MAX]
    if long:
        raise DaresError(f"the outputs of {long[0][:40]}... would have names over {NAME_MAX} bytes, more than a file "
                         "system takes: shorten the input's name")
    return names


def read_calibration(path: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(K (3,3) pixels, (width, height) it refers to or None) from our calibration.yaml (K: 3x3 or 9 values) or a
    ROS camera_info YAML as camera_calibration writes it (camera_matrix: {rows, cols, data}); checked: finite,
    fx and fy positive, last row 0 0 1, a positive image size."""
    path = Path(path)
    if not path.is_file():
        raise DaresError(f"calibration {path} not found: pass a calibration.yaml with K")
    try:
        calib = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DaresError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(calib, dict):
        raise DaresError(f"{path}: expected a mapping with K (or camera_matrix), got {type(calib).__name__}")
    camera_matrix = calib.get("camera_matrix")  # the ROS camera_info YAML layout
    K = calib["K"] if "K" in calib else camera_matrix.get("data") if isinstance(camera_matrix, dict) else None
    try:
        K = np.array(K, np.float64).reshape(3, 3)
    except (TypeError, ValueError):
        raise DaresError(f"{path}: K (or camera_matrix.data) must be 3x3 numbers, got {K!r:.60}") from None
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise DaresError(f"{path}: K must be finite with positive fx and fy and last row 0 0 1, got "
                         f"{K.ravel().tolist()}")
    size = calib.get("image_width"), calib.get("image_height")
    if size == (None, None):
        return K, None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise DaresError(f"{path}: image_width and image_height must be positive integers, got {size}")
    return K, size


def intrinsics_from_args(args: argparse.Namespace) -> tuple[np.ndarray, tuple[int, int] | None] | None:
    """(K (3,3) pixels, image size it refers to or None) from --fx/--fy/--cx/--cy or --calibration."""
    given = [getattr(args, k) for k in ("fx", "fy", "cx", "cy")]
    if args.calibration is not None:
        K, size = read_calibration(args.calibration)
        return checked_focal(K, str(args.calibration)), size
    if any(v is not None for v in given):
        if any(v is None for v in given):
            raise DaresError("point clouds need all of --fx --fy --cx --cy (pixels of the input image)")
        fx, fy, cx, cy = given
        return checked_focal(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64), "--fx/--fy"), None
    return None


def checked_focal(K: np.ndarray, source: str) -> np.ndarray:
    """K, refused with one line naming `source` where fx or fy lies outside FOCAL_RANGE pixels."""
    low, high = FOCAL_RANGE
    if not (low <= K[0, 0] <= high and low <= K[1, 1] <= high):
        raise DaresError(f"{source}: fx {K[0, 0]:g} and fy {K[1, 1]:g} must be {low:g} to {high:g} pixels (a "
                         "camera's focal length in pixels of its image): check the calibration")
    return K


def scaled_intrinsics(K: np.ndarray, calib_size, image_size) -> np.ndarray:
    """K for `image_size` (w,h) when it was calibrated at `calib_size` (w,h): the same camera resized, so of the same
    aspect; refused (one line) for another aspect (another camera, width and height swapped) and where the principal
    point falls outside the image (a calibration of another image)."""
    width, height = image_size
    if calib_size and None not in calib_size and tuple(calib_size) != tuple(image_size):
        if abs(calib_size[0] / calib_size[1] - width / height) > 0.01 * width / height:
            raise DaresError(f"the calibration is for {calib_size[0]}x{calib_size[1]} images but the frames are "
                             f"{width}x{height}, of another aspect: give the calibration of these frames")
        K = np.diag([width / calib_size[0], height / calib_size[1], 1.0]) @ K
    if not (0 < K[0, 2] < width and 0 < K[1, 2] < height):
        raise DaresError(f"the calibration's principal point ({K[0, 2]:g}, {K[1, 2]:g}) lies outside the "
                         f"{width}x{height} frames: give the calibration of these frames")
    return K


def depth_png(depth_mm: np.ndarray) -> np.ndarray:
    """uint16 depth image: DEPTH_PNG_UNITS_PER_MM units per mm, 0 where invalid or out of range."""
    scaled = np.nan_to_num(depth_mm * DEPTH_PNG_UNITS_PER_MM, nan=0.0)
    return np.where((scaled > 0) & (scaled < 65535), np.round(scaled), 0).astype(np.uint16)


def frame_points(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(H*W,3) points of depth (H,W) back-projected with K (3,3), in depth's unit; NaN rows where depth is invalid."""
    points = backproject(torch.from_numpy(depth)[None, None].float(), torch.from_numpy(K).float()[None])
    return points[0].permute(1, 2, 0).reshape(-1, 3).numpy()


def run_infer(args: argparse.Namespace) -> None:
    """`dares infer` with its parsed arguments (commands/infer.py)."""
    from tqdm import tqdm

    out: Path = args.out
    check_output_folder(out, args.force)
    if args.save_disp is not None:  # checked before the frames are processed, not after
        ensure_writable_output(args.save_disp, args.force, option="--save-disp", one_file=True)
    intrinsics = intrinsics_from_args(args)
    temporal = TemporalInference.from_args(args, intrinsics)
    count, frames = list_frames(args.input)
    net = load_depth_net(args.weights, base_weights=args.base_weights)
    predictor = DepthPredictor(net, (args.height, args.width), args.device, args.precision, args.min_depth,
                               args.max_depth, compile=args.compile, batch_size=min(BATCH, count or BATCH),
                               **backend_options(args))
    disparities = []  # the output folder appears with the first frame's files (atomic_file makes it)
    with tqdm(total=count or None, desc="infer", unit="frame", dynamic_ncols=True) as bar:
        batch: list[tuple[str, np.ndarray]] = []
        skipped, short = 0, None
        try:
            for name, rgb in frames:
                if rgb is None:
                    skipped += 1
                    bar.update(1)
                    continue
                batch.append((name, rgb))
                if len(batch) == BATCH:
                    disparities += _infer_batch(predictor, batch, out, intrinsics, temporal, args.save_confidence)
                    bar.update(len(batch))
                    batch = []
        except DaresError as e:  # a video cut short: the frames read are still written, then it is said
            short = e
        if batch:
            disparities += _infer_batch(predictor, batch, out, intrinsics, temporal, args.save_confidence)
            bar.update(len(batch))
    if args.save_disp is not None and disparities:
        write_npy(args.save_disp, np.stack(disparities).astype(np.float32))
    print(f"wrote depth for {len(disparities)} frame(s) to {out}")
    if short is not None:
        raise short
    if skipped:
        rows = (f"; {args.save_disp} holds the other {len(disparities)} frames' rows, in name order"
                if args.save_disp is not None and disparities else "")
        raise DaresError(f"{skipped} unreadable image(s) skipped (named above); the other frames were written{rows}")
    if temporal is not None and temporal.unmasked:
        names = temporal.unmasked
        raise DaresError(f"{len(names)} frame(s) had no readable mask in {args.temporal_masks} ({names[0]}.png"
                         f"{', ...' if len(names) > 1 else ''}) and were written unstabilised: give every frame its "
                         "NAME.png (nonzero on instruments)")


def check_mask_folder(masks: Path, names: list[str] | None) -> None:
    """Refuse a --temporal-masks folder that is none, holds no NAME.png, or (names: a folder input's frames) none
    named as a frame; a video's frames are numbered from frame_000001."""
    if not masks.is_dir():
        raise DaresError(f"--temporal-masks {masks} {'is a file' if masks.exists() else 'not found'}: give the "
                         "folder of your instrument masks, NAME.png per frame")
    if not any(masks.glob("*.png")):
        raise DaresError(f"--temporal-masks {masks} holds no .png file: name each frame's mask NAME.png (8-bit or "
                         "16-bit, grey or colour, nonzero on instruments)")
    if names is not None and not any((masks / f"{name}.png").is_file() for name in names):
        raise DaresError(f"--temporal-masks {masks} has no mask named as a frame: the frame {names[0]} takes "
                         f"{names[0]}.png")
    if names is None and (masks / "frame_000000.png").is_file():
        raise DaresError(f"--temporal-masks {masks} has frame_000000.png: a video's frames are numbered from "
                         "frame_000001, the first")


class TemporalInference:
    """`dares infer --temporal`: each frame's depth stabilised (dares_core.temporal) with the previous output,
    carried along the optical flow between the frames and moved by the camera's motion from the previous frame, as
    the pose network (--pose-weights) estimates it, in millimetres at its recorded unit, on `backend` as the depth
    network (pose.PoseRunner)."""

    def __init__(self, pose_weights: Path, K: np.ndarray, calib_size, weight: float, tolerance: float,
                 scale_weight: float, masks: Path | None = None, backend: str = "torch", providers: tuple = ()):
        from .pose import PoseRunner, load_pose_net, pose_units
        from .temporal import DepthStabiliser

        network = load_pose_net(pose_weights)  # a bad file: one line naming it, before its units
        self.units = pose_units(pose_weights)
        self.pose_net = PoseRunner(network, self.units.input_size, torch.device("cpu"), backend, providers,
                                   say=lambda line: print(line, file=sys.stderr))
        self.K, self.calib_size = K, calib_size
        self.stabiliser = DepthStabiliser(weight, tolerance, scale_weight)
        self.previous: np.ndarray | None = None  # the previous frame, at the pose network's input size
        self.masks = masks  # a folder of instrument masks, NAME.png per frame: pixels never blended
        self.unmasked: list[str] = []  # frames written unstabilised: no readable mask of theirs in `masks`

    @classmethod
    def from_args(cls, args: argparse.Namespace, intrinsics) -> TemporalInference | None:
        if args.temporal_masks is not None and not args.temporal:
            raise DaresError("--temporal-masks keeps instruments out of the stabiliser: add --temporal")
        if not args.temporal:
            return None
        if args.pose_weights is None or intrinsics is None:
            raise DaresError("--temporal carries each depth into the next frame: give --pose-weights (the camera's "
                             "motion) and the intrinsics (--calibration, or --fx --fy --cx --cy)")
        masks = args.temporal_masks
        if masks is not None:
            check_mask_folder(masks, folder_images(args.input)[1] if args.input.is_dir() else None)
        return cls(args.pose_weights, *intrinsics, args.temporal_weight, args.temporal_tolerance,
                   args.temporal_scale_weight, masks, **backend_options(args))

    def __call__(self, name: str, rgb: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
        """The stabilised depth (H,W) mm of the next frame (in order), named `name` (its outputs' name); unchanged,
        and the stabiliser started again, where a mask folder was given and has no readable NAME.png."""
        from .data.scared import read_tissue_mask
        from .preprocess import resize_like_official, to_unit_tensor
        from .reconstruct import scale_translation

        small = to_unit_tensor(resize_like_official(rgb, self.units.input_size))
        motion = None
        if self.previous is not None and self.previous.shape == small.shape:
            T = self.pose_net(torch.cat([small, self.previous])[None])[0]
            motion = scale_translation(T, self.units.unit_mm)  # the previous camera's points into this one's, mm
        self.previous = small
        mask = None
        if self.masks is not None:
            try:
                mask = ~read_tissue_mask(self.masks / f"{name}.png", (rgb.shape[1], rgb.shape[0]))
            except DaresError:  # missing or unreadable: named at the end
                self.unmasked.append(name)
                self.stabiliser.reset()
                return depth_mm
        K = scaled_intrinsics(self.K, self.calib_size, (rgb.shape[1], rgb.shape[0]))
        return self.stabiliser(depth_mm, rgb, K, motion, mask)[0]


def _infer_batch(predictor: DepthPredictor, batch, out: Path, intrinsics,
                 temporal: TemporalInference | None = None, save_confidence: bool = False) -> list[np.ndarray]:
    from .confidence import confidence

    shapes = {rgb.shape for _, rgb in batch}
    groups = [batch] if len(shapes) == 1 else [[item] for item in batch]  # mixed sizes: one at a time
    disparities = []
    for group in groups:
        size = group[0][1].shape[:2]
        pred = predictor.predict(network_batch([rgb for _, rgb in group], predictor.size), output_size=size)
        trust = confidence(pred.disparity, size).cpu().numpy() if save_confidence else [None] * len(group)
        for (name, rgb), disp, depth, conf in zip(group, pred.disparity.cpu().numpy(), pred.depth.cpu().numpy(),
                                                  trust):
            if temporal is not None:  # the stabilised depth's disparity (network unit) at the network's size
                depth = temporal(name, rgb, depth)
                disp = cv2.resize(predictor.net.config.depth_unit_mm / depth, disp.shape[::-1],
                                  interpolation=cv2.INTER_AREA)
            _write_frame(out, name, rgb, depth, intrinsics, conf)
            disparities.append(disp)
    return disparities


def _write_frame(out: Path, name: str, rgb: np.ndarray, depth: np.ndarray, intrinsics,
                 confidence: np.ndarray | None = None) -> None:
    """A frame's outputs (module docstring), all or none: interrupted halfway, the ones written are removed."""
    paths = [out / f"{name}{suffix}" for suffix in ("_depth.npy", "_depth.png", "_color.png")]
    if intrinsics is not None:
        paths.append(out / f"{name}.ply")
    if confidence is not None:
        paths += [out / f"{name}_confidence.npy", out / f"{name}_confidence.png"]
    try:
        write_npy(paths[0], depth.astype(np.float32))
        write_image(paths[1], depth_png(depth))
        write_image(paths[2], colorize_inverse_depth(depth))
        if intrinsics is not None:
            K = scaled_intrinsics(intrinsics[0], intrinsics[1], (rgb.shape[1], rgb.shape[0]))
            write_ply(paths[3], frame_points(depth, K), rgb.reshape(-1, 3))
        if confidence is not None:
            write_npy(paths[-2], confidence.astype(np.float32))
            write_image(paths[-1], np.round(255 * confidence).astype(np.uint8))
    except BaseException:  # Ctrl-C, SIGTERM, a full disk: no frame is left with some of its files
        for path in paths:
            path.unlink(missing_ok=True)
        raise
