"""The trainer's check at the end of each epoch, on the val split: what picks best.pt (median-scaled SCARED metrics
where the split has ground truth, the photometric error where it has none, the pose error for pose_only runs) and
the stereo consistency of data with a right eye."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import default_collate

from .data.scared import ScaredSequenceDataset, gt_path, image_path, read_gt_depth, read_sequence_calibration
from .evaluate import evaluate_depth
from .geometry import sigmoid_to_depth
from .preprocess import read_rgb, resize_like_official, to_unit_tensor
from .stereo_scale import StereoScale


class Validation:
    """validation() -> {metric: value} of a Trainer's models on its val split, logged to its writer; criterion:
    the metric that picks the best epoch ("" without a val split: the latest is the best)."""

    def __init__(self, trainer):
        self.t = trainer
        self.criterion = self._criterion()

    def _criterion(self) -> str:
        """What picks the best epoch: pose_error for pose_only runs; abs_rel where the val split has ground truth;
        else photometric, the depth step's reprojection error on the val frames (self-supervised: a recording of
        your own endoscope; the warps of the run's sources, neighbours or the other eye); "" without a val split (the
        latest epoch is the best)."""
        if self.t.cfg.pose_only:
            return "pose_error"
        if any(gt_path(self.t.root, e.folder, e.frame).is_file() for e in self.t.val_entries):
            return "abs_rel"
        return "photometric" if self.t.val_entries else ""

    @torch.no_grad()
    def __call__(self) -> dict:
        """Median-scaled SCARED metrics on (a spread of) the val split, when it has ground truth; for pose_only
        runs the pose error (pose_supervision's measure) on its items instead; without ground truth the
        photometric error. Stereo data also gets stereo_consistency's metrics."""
        if self.t.cfg.pose_only:
            return self._pose()
        metrics = self._photometric() if self.criterion == "photometric" else {}
        entries = [e for e in self.t.val_entries if gt_path(self.t.root, e.folder, e.frame).is_file()]
        if entries:
            entries = self._spread(entries)
            images = self._images(entries)
            gts = [read_gt_depth(gt_path(self.t.root, e.folder, e.frame), rows=rgb.shape[0])
                   for e, rgb in zip(entries, images)]
            metrics.update(evaluate_depth(self._disparities(images), gts).mean)
        metrics.update(self._stereo_consistency())
        for k, v in metrics.items():
            self.t.writer.add_scalar(f"val/{k}", v, self.t.global_step)
        return metrics

    def _images(self, entries: list) -> list[np.ndarray]:
        return [read_rgb(image_path(self.t.root, e.folder, e.frame, e.side)) for e in entries]

    def _disparities(self, images: list[np.ndarray]) -> np.ndarray:
        """The depth network's disparity (N,h,w) at the training size for val images (H,W,3), in eval mode."""
        net = self.t.models["depth"]
        was_training = net.training
        net.eval()
        disps = []
        for rgb in images:
            x = to_unit_tensor(resize_like_official(rgb, (self.t.cfg.height, self.t.cfg.width)))[None].to(self.t.device)
            with self.t.autocast():
                disp = net(x)[0].float()
            disps.append(sigmoid_to_depth(disp, self.t.cfg.min_depth, self.t.cfg.max_depth)[0][0, 0].cpu().numpy())
        net.train(was_training)
        return np.stack(disps)

    def _stereo_consistency(self) -> dict:
        """{"stereo_abs_rel", "stereo_rmse_mm"}: the median-scaled depth of (a spread of) the val frames against
        the stereo depth (SGBM) of their rectified pair with calibration.yaml's K and baseline, the SCARED metrics
        with stereo in place of ground truth: a check in mm that needs none. {} for data without a right eye."""
        entries = [e for e in self.t.val_entries if image_path(self.t.root, e.folder, e.frame, "r").is_file()
                   and (self.t.root / e.folder / "calibration.yaml").is_file()
                   and read_sequence_calibration(self.t.root / e.folder).get("baseline_mm")
                   and read_sequence_calibration(self.t.root / e.folder).get("rectified")]
        if not entries:
            return {}
        entries, matched, stereo, sgbm = self._spread(entries), [], [], StereoScale()
        for e, left in zip(entries, self._images(entries)):
            calibration = read_sequence_calibration(self.t.root / e.folder)
            right = read_rgb(image_path(self.t.root, e.folder, e.frame, "r"))
            depth = sgbm.stereo_depth(left, right, calibration["K"][0][0], calibration["baseline_mm"])
            if np.isfinite(depth).mean() >= sgbm.min_confidence:  # frames SGBM could match
                matched.append(left)
                stereo.append(np.nan_to_num(depth, nan=0.0))
        if not matched:
            return {}
        metrics = evaluate_depth(self._disparities(matched), stereo).mean
        return {"stereo_abs_rel": metrics["abs_rel"], "stereo_rmse_mm": metrics["rmse"]}

    def _spread(self, entries: list) -> list:
        """At most val_max_frames of `entries`, evenly spread."""
        if len(entries) <= self.t.cfg.val_max_frames:
            return entries
        return [entries[i] for i in np.linspace(0, len(entries) - 1, self.t.cfg.val_max_frames).astype(int)]

    def _photometric(self) -> dict:
        """{"photometric": the depth step's full-resolution reprojection term (the training's photometric error of
        the warped neighbours against the appearance-corrected target, over the occlusion mask) averaged over the
        val split's items (a spread of at most val_max_frames), the models in eval mode}."""
        cfg = self.t.cfg
        items = ScaredSequenceDataset(self.t.root, self._spread(self.t.val_entries), cfg.height, cfg.width,
                                      self.t.frame_ids, len(cfg.scales), stereo_baseline=cfg.stereo_baseline,
                                      ground_truth=cfg.depth_supervision > 0, poses=cfg.pose_supervision > 0,
                                      intrinsics=cfg.intrinsics)
        for model in self.t.models.values():
            model.eval()  # the next train step sets the modes again
        total = 0.0
        for start in range(0, len(items), cfg.batch_size):
            batch = default_collate([items[i] for i in range(start, min(start + cfg.batch_size, len(items)))])
            batch = {k: v.to(self.t.device) for k, v in batch.items()}
            with self.t.autocast():
                _, terms = self.t.process_batch(batch)
            total += float(terms["reprojection/0"]) * len(batch[("color", 0, 0)])
        photometric = total / len(items)
        self.t.writer.add_scalar("val/photometric", photometric, self.t.global_step)
        return {"photometric": photometric}

    def _pose(self) -> dict:
        """{"pose_error": pose_supervision_term over the val split's items (a spread of at most val_max_frames)}."""
        if not self.t.val_entries:
            return {}
        cfg = self.t.cfg
        items = ScaredSequenceDataset(self.t.root, self._spread(self.t.val_entries), cfg.height, cfg.width,
                                      self.t.frame_ids, 1, stereo_baseline=cfg.stereo_baseline, poses=True,
                                      intrinsics=cfg.intrinsics)
        for model in (self.t.models["pose_encoder"], self.t.models["pose"]):
            model.eval()  # the next train step sets the modes again
        errors = []
        for start in range(0, len(items), cfg.batch_size):
            batch = default_collate([items[i] for i in range(start, min(start + cfg.batch_size, len(items)))])
            batch = {k: v.to(self.t.device) for k, v in batch.items()}
            errors.append(float(self.t.pose_supervision_term(self.t.predict_poses(batch), batch)))
        return {"pose_error": float(np.mean(errors))}
