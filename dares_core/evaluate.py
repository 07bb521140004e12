"""The SCARED evaluation protocol of DARES/AF-SfMLearner: depth metrics and pose ATE.

Depth (official evaluate_depth.py): each disparity is resized with cv2.resize to its ground truth, depth =
1/disparity, pixels with 1e-3 < gt < 150 are kept, depth is median-scaled per frame (unless metric),
clamped to [1e-3, 150], and AbsRel, SqRel, RMSE, RMSElog, d<1.25, d<1.25^2, d<1.25^3 are averaged over
frames. Pose (official evaluate_pose.py): 5-frame snippets chained from relative poses, aligned at the
first frame and in scale, ATE = RMSE of positions / snippet length; RE = mean rotation angle error. Temporal
stability (not part of the SCARED protocol): TAE, temporal_alignment_error.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import DaresError
from .files import atomic_file

MIN_DEPTH, MAX_DEPTH = 1e-3, 150.0
METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def depth_errors(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The seven metrics over matching 1-D arrays of valid ground truth and predicted depth."""
    thresh = np.maximum(gt / pred, pred / gt)
    return np.array([
        np.mean(np.abs(gt - pred) / gt),
        np.mean((gt - pred) ** 2 / gt),
        np.sqrt(np.mean((gt - pred) ** 2)),
        np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2)),
        (thresh < 1.25).mean(), (thresh < 1.25**2).mean(), (thresh < 1.25**3).mean(),
    ])


@dataclass
class DepthEvaluation:
    """mean: metric -> value; per_frame: (N,7); ratios: per-frame median scales (empty if metric)."""

    mean: dict
    per_frame: np.ndarray
    ratios: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def ratio_summary(self) -> dict:
        if not self.ratios.size:
            return {}
        med = float(np.median(self.ratios))
        return {"median": med, "std_over_median": float(np.std(self.ratios / med))}

    def table(self) -> str:
        head = " | ".join(f"{m:>8}" for m in METRICS)
        row = " | ".join(f"{self.mean[m]:8.3f}" for m in METRICS)
        text = f"{head}\n{row}\n(rmse and sq_rel in mm; abs_rel, rmse_log and a1-a3 unitless)"
        if self.ratios.size:
            r = self.ratio_summary()
            text = f"median-scale ratios: med {r['median']:.3f}, std/med {r['std_over_median']:.3f}\n{text}"
        return text


def scaled_prediction(i: int, disp: np.ndarray, gt: np.ndarray, median_scaling: bool = True,
                      pred_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
    """Frame i's depth as the SCARED protocol scores it: (pred (H,W) mm, its disparity resized to the ground truth
    and inverted, times pred_scale and the median ratio; valid (H,W) bool, ground truth in range; the ratio)."""
    if not np.isfinite(disp).all() or (disp <= 0).any():
        raise DaresError(f"predicted disparity of frame {i} has NaN, inf or non-positive values: check the model "
                         f"output")
    height, width = gt.shape[:2]
    pred = 1.0 / cv2.resize(np.asarray(disp, np.float32), (width, height))
    mask = (gt > MIN_DEPTH) & (gt < MAX_DEPTH)
    if not mask.any():
        raise DaresError(f"ground truth of frame {i} has no pixel in ({MIN_DEPTH}, {MAX_DEPTH}) mm")
    ratio = np.median(gt[mask]) / np.median(pred[mask] * pred_scale) if median_scaling else 1.0
    return pred * pred_scale * ratio, mask, float(ratio)


def evaluate_depth(pred_disps: np.ndarray, gt_depths, median_scaling: bool = True,
                   pred_scale: float = 1.0, regions=None) -> DepthEvaluation:
    """pred_disps: (N,h,w) disparities (official --save_pred_disps arrays); gt_depths: N arrays (H,W), mm.
    regions: N boolean (H,W) masks (e.g. instruments): the metrics over each frame's region only, its median
    scale still from the whole frame; frames whose region holds no valid pixel are left out."""
    if len(pred_disps) != len(gt_depths):
        raise DaresError(f"{len(pred_disps)} predicted disparities but {len(gt_depths)} ground-truth depths: "
                         "predict exactly the frames of the split's test_files.txt, in order")
    rows, ratios = [], []
    for i, (disp, gt) in enumerate(zip(pred_disps, gt_depths)):
        pred, mask, ratio = scaled_prediction(i, disp, gt, median_scaling, pred_scale)
        if regions is not None:
            mask = mask & regions[i]
            if not mask.any():
                continue
        if median_scaling:
            ratios.append(ratio)
        rows.append(depth_errors(gt[mask], np.clip(pred[mask], MIN_DEPTH, MAX_DEPTH)))
    if not rows:
        raise DaresError("no frame has a valid ground-truth pixel in its region: nothing to evaluate there")
    per_frame = np.array(rows)
    return DepthEvaluation(dict(zip(METRICS, per_frame.mean(0).tolist())), per_frame, np.array(ratios))


def evaluate_confidence(pred_disps: np.ndarray, confidences, gt_depths, median_scaling: bool = True) -> dict:
    """The sparsification scores (dares_core.confidence.ause) of per-pixel confidences (N arrays (h,w) in [0,1],
    resized to the ground truth) on the AbsRel of pred_disps scored as evaluate_depth does: {"ause", "ause_random"
    (means over frames), "ause_ratio" (their ratio: 1 is chance, 0 the oracle), "per_frame": [(ause, random)],
    "curve", "oracle" (mean sparsification curves, AbsRel of what is left after 0, 2, ..., 98 % removed)}."""
    from .confidence import ause

    if len(confidences) != len(pred_disps):
        raise DaresError(f"{len(confidences)} confidences but {len(pred_disps)} predicted disparities: give one per "
                         "frame, in the same order")
    wrong = next((i for i, (c, d, g) in enumerate(zip(confidences, pred_disps, gt_depths))
                  if np.shape(c) not in (np.shape(d), np.shape(g))), None)
    if wrong is not None:
        raise DaresError(f"the confidence of frame {wrong} is {np.shape(confidences[wrong])[1]}x"
                         f"{np.shape(confidences[wrong])[0]}, neither its disparity's nor its ground truth's size: "
                         "give the confidences of these predictions")
    scores = []
    for i, (disp, trust, gt) in enumerate(zip(pred_disps, confidences, gt_depths)):
        pred, mask, _ = scaled_prediction(i, disp, gt, median_scaling)
        gt_valid = gt[mask]
        errors = np.abs(gt_valid - np.clip(pred[mask], MIN_DEPTH, MAX_DEPTH)) / gt_valid
        trust = cv2.resize(np.asarray(trust, np.float32), gt.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        scores.append(ause(errors, trust[mask]))
    mean = {key: float(np.mean([s[key] for s in scores])) for key in ("ause", "ause_random")}
    return {**mean, "ause_ratio": mean["ause"] / mean["ause_random"] if mean["ause_random"] > 0 else float("nan"),
            "per_frame": [(s["ause"], s["ause_random"]) for s in scores],
            "curve": np.mean([s["curve"] for s in scores], 0).tolist(),
            "oracle": np.mean([s["oracle"] for s in scores], 0).tolist()}


def temporal_alignment_error(depths: np.ndarray, K: np.ndarray, poses: np.ndarray,
                             keep: np.ndarray | None = None) -> float:
    """TAE (Video Depth Anything, arXiv 2501.12375): each frame's depth carried into the next frame with the
    camera's motion and compared with that frame's depth by AbsRel over the pixels that land (nearest pixel, both
    depths valid), both directions, averaged over the consecutive pairs. depths (N,H,W) mm (<= 0 or NaN: none);
    K (3,3) pixels; poses (N,4,4) camera-to-world mm; keep (N,H,W) bool: pixels counted at both ends (tissue
    only: the instruments left out). Depth that holds still scores 0; the ground truth's own score is the floor
    that occlusions and moving instruments leave."""
    import torch

    from .geometry import backproject, project, sample_at_pixels, transform_points

    depth = torch.from_numpy(np.nan_to_num(np.asarray(depths, np.float64), nan=0.0))[:, None]
    kept = torch.ones_like(depth, dtype=torch.bool) if keep is None else torch.from_numpy(np.asarray(keep))[:, None]
    K_t = torch.from_numpy(np.asarray(K, np.float64))[None]
    errors = []
    for a, b in [(i, i + 1) for i in range(len(depth) - 1)] + [(i + 1, i) for i in range(len(depth) - 1)]:
        T = torch.from_numpy(np.linalg.inv(poses[b]) @ poses[a])[None]  # a's camera points into b's
        points = transform_points(T, backproject(depth[a:a + 1], K_t))
        uv = project(points, K_t)
        target = sample_at_pixels(depth[b:b + 1], uv, padding_mode="zeros", mode="nearest")
        target_kept = sample_at_pixels(kept[b:b + 1].double(), uv, padding_mode="zeros", mode="nearest") > 0.5
        h, w = depth.shape[-2:]
        inside = (uv[..., 0] >= 0) & (uv[..., 0] <= w - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= h - 1)
        valid = (depth[a:a + 1] > 0) & kept[a:a + 1] & (points[:, 2:3] > 0) & (target > 0) & target_kept \
            & inside[:, None]
        if valid.any():
            z = points[:, 2:3][valid]
            errors.append(float(((z - target[valid]).abs() / target[valid]).mean()))
    if not errors:
        raise DaresError("no pixel of any frame lands in its neighbour: TAE needs consecutive frames that overlap")
    return float(np.mean(errors))


def sequence_scaled(depths: np.ndarray, gt_depths: np.ndarray) -> np.ndarray:
    """depths (N,H,W) times one scale for the whole sequence: the median of gt / depth over every valid pixel
    (1e-3 < gt < 150 mm), so that flicker of scale between frames stays in the depth, as TAE should see it."""
    valid = (gt_depths > MIN_DEPTH) & (gt_depths < MAX_DEPTH) & np.isfinite(depths) & (depths > 0)
    return depths * np.median(gt_depths[valid] / depths[valid])


def temporal_errors(depth: np.ndarray, gt: np.ndarray, K: np.ndarray, poses: np.ndarray,
                    tissue: np.ndarray | None = None) -> dict:
    """TAE of predicted depth (N,H,W) scaled once for the sequence against ground truth gt (N,H,W) mm, over the
    pixels with ground truth in range, and the ground truth's own (the floor); with tissue (N,H,W) bool also both
    over the tissue alone: {"tae", "tae_floor"[, "tae_tissue", "tae_floor_tissue"]}."""
    gt = np.where((gt > MIN_DEPTH) & (gt < MAX_DEPTH), gt, 0.0)
    depth = np.where(gt > 0, sequence_scaled(depth, gt), 0.0)
    result = {"tae": temporal_alignment_error(depth, K, poses), "tae_floor": temporal_alignment_error(gt, K, poses)}
    if tissue is not None:
        result.update(tae_tissue=temporal_alignment_error(depth, K, poses, tissue),
                      tae_floor_tissue=temporal_alignment_error(gt, K, poses, tissue))
    return result


def split_temporal_errors(root: Path, split_file: Path, pred_disps: np.ndarray, gt_depths) -> dict:
    """TAE of a split's predictions over each run of consecutive frames of a sequence folder that has camera poses
    (camera_poses.npz) and a calibration.yaml: the predicted depth (1/disparity at the ground truth's size, as
    evaluate_depth) scaled once per run (sequence_scaled), the whole frame and the tissue alone (where the folder
    has instrument masks), and the ground truth's own TAE, the floor. {} when no run qualifies."""
    from .data.scared import (
        instrument_mask_path,
        read_camera_poses,
        read_sequence_calibration,
        read_split,
        read_tissue_mask,
    )

    entries = read_split(split_file)
    runs, current = [], []
    for i, e in enumerate(entries):
        if current and (e.folder != entries[current[-1]].folder or e.frame != entries[current[-1]].frame + 1):
            runs.append(current)
            current = []
        current.append(i)
    runs.append(current)
    results = {"tae": [], "tae_tissue": [], "tae_floor": [], "tae_floor_tissue": []}
    for run in (r for r in runs if len(r) >= 2):
        folder = Path(root) / entries[run[0]].folder
        poses = read_camera_poses(folder)
        if not (folder / "calibration.yaml").is_file() or any(entries[i].frame not in poses for i in run):
            continue
        calibration = read_sequence_calibration(folder)
        gt = np.stack([gt_depths[i] for i in run]).astype(np.float64)
        height, width = gt.shape[1:]
        K = np.diag([width / calibration["image_width"], height / calibration["image_height"], 1.0]) @ \
            np.array(calibration["K"], np.float64)
        pred = np.stack([1.0 / cv2.resize(np.asarray(pred_disps[i], np.float32), (width, height)) for i in run])
        P = np.stack([poses[entries[i].frame] for i in run])
        masks = [instrument_mask_path(root, entries[i].folder, entries[i].frame) for i in run]
        tissue = np.stack([read_tissue_mask(m, (width, height)) for m in masks]) \
            if all(m.is_file() for m in masks) else None
        for key, value in temporal_errors(pred, gt, K, P, tissue).items():
            results[key].append(value)
    if not results["tae"]:
        return {}
    return {**{k: float(np.mean(v)) for k, v in results.items() if v}, "sequences": len(results["tae"])}


def chain_positions(relative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera positions (n+1,3) and rotations (n+1,3,3) from n relative 4x4 poses, starting at identity."""
    pose = np.eye(4)
    xyz, rot = [pose[:3, 3].copy()], [pose[:3, :3].copy()]
    for T in relative:
        pose = pose @ T
        xyz.append(pose[:3, 3].copy())
        rot.append(pose[:3, :3].copy())
    return np.array(xyz), np.array(rot)


def snippet_ate(gt_xyz: np.ndarray, pred_xyz: np.ndarray) -> float:
    """RMSE of positions after aligning the first position and the scale, divided by the snippet length."""
    pred = pred_xyz + (gt_xyz[0] - pred_xyz[0])
    scale = np.sum(gt_xyz * pred) / np.sum(pred**2)
    return float(np.sqrt(np.sum((pred * scale - gt_xyz) ** 2)) / gt_xyz.shape[0])


def snippet_rotation_error(gt_rot: np.ndarray, pred_rot: np.ndarray) -> float:
    """Mean rotation angle (rad) of gt @ inv(pred) over the snippet."""
    total = 0.0
    for g, p in zip(gt_rot, pred_rot):
        R = g @ np.linalg.inv(p)
        s = np.linalg.norm([R[0, 1] - R[1, 0], R[1, 2] - R[2, 1], R[0, 2] - R[2, 0]])
        total += np.arctan2(s, np.trace(R) - 1)
    return float(total / len(gt_rot))


def evaluate_pose(pred_relative: np.ndarray, gt_relative: np.ndarray, track_length: int = 5) -> dict:
    """ATE and RE (mean, std) over every snippet of `track_length` frames, as official evaluate_pose; and
    still_ate_mean, the ATE of a camera predicted not to move (scale 0: the snippets' own motion), which
    puts ATE in proportion (ATE in the ground truth's length unit, RE in radians)."""
    if len(pred_relative) != len(gt_relative):
        raise DaresError(f"{len(pred_relative)} predicted poses but {len(gt_relative)} ground-truth poses: "
                         "predict one relative pose per consecutive frame pair of the trajectory")
    ates, res, still = [], [], []
    for i in range(len(gt_relative) - 1):
        gt_xyz, gt_rot = chain_positions(gt_relative[i:i + track_length - 1])
        pred_xyz, pred_rot = chain_positions(pred_relative[i:i + track_length - 1])
        ates.append(snippet_ate(gt_xyz, pred_xyz))
        res.append(snippet_rotation_error(gt_rot, pred_rot))
        still.append(float(np.sqrt(np.sum((gt_xyz - gt_xyz[0]) ** 2)) / gt_xyz.shape[0]))
    return {"ate_mean": float(np.mean(ates)), "ate_std": float(np.std(ates)),
            "re_mean": float(np.mean(res)), "re_std": float(np.std(res)), "snippets": len(ates),
            "still_ate_mean": float(np.mean(still))}


def predict_split_disparities(predictor, root: Path, split_file: Path, batch: int = 8, progress=None,
                              confidences: list | None = None) -> np.ndarray:
    """(N,h,w) inverse depth (1/mm) of a split's left frames at network resolution: the scaled disparities of
    official --save_pred_disps for DARES (unit 1), divided by the network's depth_unit_mm otherwise. confidences:
    a list that gets each frame's confidence (h,w) (dares_core.confidence, mono), or None."""
    from .confidence import confidence
    from .data.scared import image_path, read_split
    from .preprocess import network_batch, read_rgb

    entries = read_split(split_file)
    out = []
    for start in range(0, len(entries), batch):
        chunk = entries[start:start + batch]
        paths = [image_path(root, e.folder, e.frame, e.side) for e in chunk]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DaresError(f"{missing[0]} not found for {split_file}: is --data the folder holding "
                             f"datasetN/keyframeM?")
        images = network_batch([read_rgb(p) for p in paths], predictor.size)  # as the official loader
        disparity = predictor.predict(images).disparity.float()
        out.append(disparity.cpu().numpy() / predictor.net.config.depth_unit_mm)
        if confidences is not None:
            confidences.extend(confidence(disparity).cpu().numpy())
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(out)


SHAPES = {"(N,H,W) disparities": 3, "(N,H,W) depths in mm": 3, "(N,4,4) relative poses": 3,
          "(N,H,W) confidences": 3}


def _checked(array, path: Path, what: str, shape: str) -> np.ndarray:
    """`array` as `shape` says ((N,1,H,W) maps squeezed to (N,H,W)), finite where it must be, else one line."""
    if isinstance(array, np.ndarray) and array.dtype == bool and "confidences" in shape:
        array = array.astype(np.float32)  # trusted or not: a confidence of 1 or 0
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise DaresError(f"{path}: {what} must be a numeric {shape} array")
    if array.ndim == 4 and array.shape[1] == 1 and "H,W" in shape:
        array = array[:, 0]
    if array.ndim != SHAPES[shape] or (shape.startswith("(N,4,4)") and array.shape[1:] != (4, 4)):
        raise DaresError(f"{path}: {what} have shape {array.shape}, not {shape}")
    if shape.startswith("(N,4,4)") and not np.isfinite(array).all():
        raise DaresError(f"{path}: {what} hold NaN or inf: check the pose network's output")
    if "confidences" in shape and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
        raise DaresError(f"{path}: {what} must be finite and in [0,1] (dares infer --save-confidence writes "
                         f"them so); these hold {'NaN or inf' if not np.isfinite(array).all() else 'values outside'}")
    return array


def load_array(path: Path, what: str, shape: str) -> np.ndarray:
    """A .npy array (official --save_pred_disps) checked against `shape`."""
    path = Path(path)
    if path.is_dir():
        raise DaresError(f"{what} {path} is a folder: give one .npy holding them all, e.g. np.stack of its "
                         "NAME_*.npy in frame order")
    if not path.is_file():
        raise DaresError(f"{what} {path} not found")
    if path.suffix == ".npz":
        raise DaresError(f"{what} {path} is an .npz: give the .npy array itself")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for damaged or foreign files
        raise DaresError(f"{path}: not a readable .npy ({type(e).__name__}); write it again") from None
    return _checked(array, path, what, shape)


def load_npz_data(path: Path, what: str, shape: str) -> np.ndarray:
    """The `data` array of an official .npz (gt_depths.npz, gt_poses_sq*.npz), checked against `shape`."""
    path = Path(path)
    if not path.is_file():
        raise DaresError(f"{what} {path} not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            array = f["data"]
    except Exception as e:  # a .npy, a damaged file, no 'data' key
        raise DaresError(f"{path}: not an .npz with a 'data' array ({type(e).__name__}); give the official "
                         "gt_depths.npz / gt_poses_sq*.npz (`dares prepare-scared` writes them)") from None
    return _checked(array, path, what, shape)


def write_depth_report(evaluation: DepthEvaluation, out: Path, settings: dict, temporal: dict | None = None,
                       confidence: dict | None = None) -> None:
    """metrics.json (means, ratio summary, temporal stability and confidence scores (evaluate_confidence) when
    measured, settings) and per_frame.csv in `out`, atomically."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"metrics": evaluation.mean, "median_scale_ratio": evaluation.ratio_summary(),
              "frames": int(len(evaluation.per_frame)), **({"temporal": temporal} if temporal else {}),
              **({"confidence": confidence} if confidence else {}),
              "settings": settings}
    with atomic_file(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["frame", *METRICS, "median_scale_ratio"])
    for i, row in enumerate(evaluation.per_frame):
        ratio = evaluation.ratios[i] if evaluation.ratios.size else ""
        writer.writerow([i, *(f"{v:.6f}" for v in row), ratio if ratio == "" else f"{ratio:.6f}"])
    with atomic_file(out / "per_frame.csv") as tmp:
        tmp.write_text(buffer.getvalue())
