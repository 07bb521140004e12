"""`dares train`: self-supervised DARES training as the official trainer does it, on a trainer a lab can trust.

Per batch, two steps (AF-SfMLearner/DARES): (0) the position (optical-flow) network alone learns to register
each source frame onto the target; (1) depth, pose and transform (brightness) networks learn from the
reprojection of the sources through depth and pose, compared with the target's appearance-corrected
version, masked by the flow's occlusion mask, plus transform and smoothness terms, over four scales.

Data order and augmentation depend only on (seed, epoch, index), and checkpoints hold every model,
optimiser, scheduler, step and RNG state, so a resumed run repeats an uninterrupted one step for step.
Launch on several GPUs with `torchrun --nproc_per_node N -m dares_core.cli train ...`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from .data.scared import ScaredSequenceDataset, default_split_dir, read_split
from .distributed import global_batchnorm
from .errors import DaresError
from .evaluate import MAX_DEPTH, MIN_DEPTH
from .files import atomic_file, check_output_folder
from .geometry import occlusion_mask, pose_from_axisangle, sigmoid_to_depth, warp_by_flow, warp_to_target
from .inference import resolve_device
from .losses import at_least_fp32, brightness_smoothness, masked_mean, reprojection_loss, smoothness_loss
from .model.appearance import PositionDecoder, TransformDecoder
from .model.depth_net import DaresDepthNet, DepthNetConfig
from .model.pose_net import ResnetEncoder, pose_network
from .model.weights import load_depth_net, read_tensors, save_depth_net
from .run_folder import trim_logs
from .train_config import TrainConfig
from .validation import Validation

AF_MODULES = ("pose_encoder", "pose", "position_encoder", "position", "transform_encoder", "transform")
CRASH_AT_VARIABLE = "DARES_CRASH_AT"  # fault injection for the crash-safety test: "POINT:N"
_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process the Nth time it passes `name` when DARES_CRASH_AT is "name:N" (the test of crash-safe
    training kills at named moments instead of after guessed delays). Points: step (a train step done),
    checkpoint-written (the temporary file written, not yet renamed), checkpoint-renamed."""
    wanted, _, count = os.environ.get(CRASH_AT_VARIABLE, "").partition(":")
    if wanted != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class Trainer:
    def __init__(self, cfg: TrainConfig):

        self.cfg = cfg
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if cfg.batch_size % self.world:
            raise DaresError(f"batch_size {cfg.batch_size} does not split over {self.world} processes")
        self.device = resolve_device(cfg.device)  # cuda without CUDA: an error
        if self.device.type == "cuda" and self.distributed:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.out = Path(cfg.out)
        self.frame_ids = [f if f == "s" else int(f) for f in cfg.frame_ids] + (["s"] if cfg.stereo else [])
        self.sources = self.frame_ids[1:]
        self.temporal = [f for f in self.sources if f != "s"]
        self.registers = bool(self.temporal) and not cfg.pose_only  # the position step runs (stereo-only: no frames)
        root = Path(cfg.data)
        split_dir = Path(cfg.split_dir) if cfg.split_dir else default_split_dir(root)
        make = lambda name, train: ScaredSequenceDataset(  # noqa: E731
            root, read_split(split_dir / f"{name}_files.txt"), cfg.height, cfg.width, self.frame_ids,
            len(cfg.scales), train, cfg.stereo_baseline, cfg.seed, cfg.jitter_per_item, cfg.depth_supervision > 0,
            cfg.pose_supervision > 0, cfg.intrinsics)
        self.train_set = make("train", True)
        if len(self.train_set) < cfg.batch_size:  # before the run folder is written: nothing to resume is left
            raise DaresError(f"the train split has {len(self.train_set)} frames, fewer than one batch of "
                             f"{cfg.batch_size}")
        self.val_entries = read_split(split_dir / "val_files.txt") if (split_dir / "val_files.txt").is_file() else []
        self.root = root
        self.validation = Validation(self)  # picks best.pt by its criterion

        torch.manual_seed(cfg.seed)
        self.models = self._build_models()
        self.optimizer = torch.optim.Adam(self._phase_parameters(1), cfg.learning_rate)
        self.optimizer_0 = torch.optim.Adam(self._phase_parameters(0), cfg.position_learning_rate)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.scheduler_step_size, 0.1)
        self.scheduler_0 = torch.optim.lr_scheduler.StepLR(self.optimizer_0, cfg.scheduler_step_size, 0.1)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16" and self.device.type == "cuda")
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best = math.inf
        self.writer = None

    # --- models ---------------------------------------------------------------------------------------
    def _build_models(self) -> dict:
        cfg = self.cfg
        if cfg.weights:
            depth = load_depth_net(Path(cfg.weights), mode="dares")
        else:
            depth = DaresDepthNet(DepthNetConfig.dares(cfg.encoder, cfg.lora_ranks, hf_config=cfg.hf_config or None))
        depth.config.input_size = [cfg.height, cfg.width]  # saved with it: inference runs where it was trained
        depth.config.depth_unit_mm = self._depth_unit_mm(depth.config.depth_unit_mm)
        models = {
            "depth": depth,
            "position_encoder": ResnetEncoder(2, cfg.af_width), "transform_encoder": ResnetEncoder(2, cfg.af_width),
        }
        models["pose_encoder"], models["pose"] = pose_network(cfg.af_width)
        models["position"] = PositionDecoder(models["position_encoder"].num_ch_enc, cfg.scales)
        models["transform"] = TransformDecoder(models["transform_encoder"].num_ch_enc, cfg.scales)
        if cfg.af_weights:
            for name in AF_MODULES:
                path = Path(cfg.af_weights) / f"{name}.pth"
                state, _ = read_tensors(path)
                missing = set(models[name].state_dict()) - set(state)
                if missing:
                    raise DaresError(f"{path}: {len(missing)} missing key(s) e.g. {sorted(missing)[0]}; pass "
                                     f"AF-SfMLearner weights")
                models[name].load_state_dict(state, strict=True)
        if self.distributed:  # batch statistics over the global batch, as one process would have them
            models = {k: global_batchnorm(m, self.device) for k, m in models.items()}
        return {k: m.to(self.device) for k, m in models.items()}

    def _depth_unit_mm(self, start: float) -> float:
        """Millimetres per unit of the depth this run learns: calibrated / nominal baseline when stereo training
        is given a nominal stereo_baseline (the calibration of the first training sequence); else `start`, the
        unit of the network the run starts from (1, nominal mm, for DARES and a new network): a self-supervised
        monocular run keeps the scale it starts with."""
        if not (self.cfg.stereo and self.cfg.stereo_baseline):
            return start
        calibrated = ScaredSequenceDataset.calibrated_baseline(self.root / self.train_set.entries[0].folder)
        return calibrated / self.cfg.stereo_baseline if calibrated else start

    def _phase_parameters(self, phase: int) -> list:
        if phase == 0:
            return [p for k in ("position_encoder", "position") for p in self.models[k].parameters()]
        params = self.models["depth"].trainable_parameters(self.cfg.train_backbone)
        return params + [p for k in ("pose_encoder", "pose", "transform_encoder",
                                     "transform") for p in self.models[k].parameters()]

    def _set_phase(self, phase: int) -> None:
        """Phase 0 trains the position nets only; phase 1 everything else (as official set_train_0/set_train)."""
        position = {"position_encoder", "position"}
        for name, model in self.models.items():
            training = (name in position) == (phase == 0)
            model.train(training)
            if name != "depth":
                for p in model.parameters():
                    p.requires_grad = training
        self.models["depth"].trainable_parameters(self.cfg.train_backbone)
        if phase == 0:
            for p in self.models["depth"].parameters():
                p.requires_grad = False

    def autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    # --- the method, in the official trainer's stages -------------------------------------------------
    def predict_appearance(self, inputs: dict, train_position: bool) -> dict:
        """Flow, registration, occlusion mask and appearance-corrected target per temporal source (official
        predict_poses_0, and the first half of predict_poses). Keys: ("position", s, f) flow (B,2,h,w) pixels;
        ("registration", s, f) the source warped by the flow (B,3,H,W); ("occlusion", f) (B,1,H,W);
        ("transform", s, f) brightness change and ("refined", s, f) corrected target (B,3,H,W)."""
        size, out = (self.cfg.height, self.cfg.width), {}
        target = inputs[("color", 0, 0)]
        up = lambda x: F.interpolate(x, size, mode="bilinear", align_corners=True)  # noqa: E731
        for f in self.temporal:
            with torch.set_grad_enabled(train_position):
                flow = self.models["position"](self.models["position_encoder"](
                    torch.cat([inputs[("color_aug", f, 0)], inputs[("color_aug", 0, 0)]], 1)))
                flow_reverse = self.models["position"](self.models["position_encoder"](
                    torch.cat([inputs[("color_aug", 0, 0)], inputs[("color_aug", f, 0)]], 1)))
            out[("occlusion", f)] = occlusion_mask(up(flow_reverse[0]).detach())
            for s in self.cfg.scales:
                out[("position", s, f)] = flow[s]
                out[("registration", s, f)] = warp_by_flow(inputs[("color", f, 0)], up(flow[s]),
                                                           self.cfg.flow_warp_align_corners)
            with torch.set_grad_enabled(not train_position):
                transform = self.models["transform"](self.models["transform_encoder"](
                    torch.cat([out[("registration", 0, f)], target], 1)))
            for s in self.cfg.scales:
                out[("transform", s, f)] = up(transform[s])
                out[("refined", s, f)] = (out[("transform", s, f)] * out[("occlusion", f)] + target).clamp(0, 1)
        return out

    def predict_poses(self, inputs: dict) -> dict:
        """("cam_T_cam", f): (B,4,4) transform from the target camera to source f's (official predict_poses):
        the pose network's for temporal sources, the known baseline for the other eye "s"."""
        poses = {}
        for f in self.temporal:
            axisangle, translation = self.models["pose"]([self.models["pose_encoder"](
                torch.cat([inputs[("color_aug", f, 0)], inputs[("color_aug", 0, 0)]], 1))])
            poses[("cam_T_cam", f)] = pose_from_axisangle(at_least_fp32(axisangle[:, 0, 0]),
                                                          at_least_fp32(translation[:, 0, 0]))
        if "s" in self.sources:
            poses[("cam_T_cam", "s")] = inputs["stereo_T"]
        return poses

    def generate_images_pred(self, inputs: dict, outputs: dict) -> None:
        """Each scale's disparity, upsampled to full size, to depth; each source warped onto the target through
        it (official generate_images_pred): ("depth", s) (B,1,H,W) model units, ("warped", s, f) (B,3,H,W)."""
        cfg, size = self.cfg, (self.cfg.height, self.cfg.width)
        K = inputs[("K", 0)][:, :3, :3]
        for s in cfg.scales:
            _, depth = sigmoid_to_depth(F.interpolate(outputs[("disp", s)], size, mode="bilinear",
                                                      align_corners=True), cfg.min_depth, cfg.max_depth)
            outputs[("depth", s)] = depth
            for f in self.sources:
                outputs[("warped", s, f)], _ = warp_to_target(inputs[("color", f, 0)], at_least_fp32(depth), K,
                                                              outputs[("cam_T_cam", f)])

    def compute_losses_0(self, inputs: dict, outputs: dict) -> dict[str, torch.Tensor]:
        """The position step's loss and its terms per scale s (official compute_losses_0):
        registration/s (reprojection of the registered source against the corrected target, over the
        occlusion mask) and position_smoothness/s (of the flow), each the mean over sources; loss/s; loss."""
        terms, total = {}, 0.0
        for s in self.cfg.scales:
            registration = smooth = 0.0
            for f in self.temporal:
                registration += masked_mean(reprojection_loss(
                    outputs[("registration", s, f)], outputs[("refined", s, f)].detach(), self.cfg.reprojection),
                    outputs[("occlusion", f)])
                smooth += smoothness_loss(outputs[("position", s, f)], inputs[("color", 0, s)])
            n = len(self.temporal)
            terms[f"registration/{s}"], terms[f"position_smoothness/{s}"] = registration / n, smooth / n
            terms[f"loss/{s}"] = registration / n + self.cfg.position_smoothness * (smooth / n) / 2**s
            total += terms[f"loss/{s}"]
        terms["loss"] = total / len(self.cfg.scales)
        return terms

    def compute_losses(self, inputs: dict, outputs: dict) -> dict[str, torch.Tensor]:
        """The depth step's loss and its terms per scale s (official compute_losses): reprojection/s (warped
        sources against the corrected target, over the occlusion mask), transform/s (the correction's
        departure from the registration), brightness_smoothness/s, smoothness/s (of the mean-normalised
        disparity); loss/s; loss."""
        cfg, target, terms, total = self.cfg, inputs[("color", 0, 0)], {}, 0.0
        for s in cfg.scales:
            maps, masks, identity = [], [], []
            transform = bright = 0.0
            for f in self.sources:
                reference = outputs[("refined", s, f)] if f != "s" else target
                mask = outputs[("occlusion", f)] if f != "s" else torch.ones_like(target[:, :1])
                maps.append(reprojection_loss(outputs[("warped", s, f)], reference, cfg.reprojection))
                masks.append(mask)
                if cfg.automask:
                    identity.append(reprojection_loss(inputs[("color", f, 0)], target, cfg.reprojection))
                if f != "s":
                    registered = outputs[("registration", 0, f)].detach()
                    transform += masked_mean((outputs[("refined", s, f)] - registered).abs().mean(1, True), mask)
                    bright += brightness_smoothness(outputs[("transform", s, f)], target,
                                                    outputs[("registration", s, f)].detach(), mask)
            if cfg.min_reprojection or cfg.automask:
                stack = torch.cat(maps, 1)
                if cfg.automask:
                    same = torch.cat(identity, 1)
                    stack = torch.cat([stack, same + 1e-5 * torch.randn_like(same)], 1)
                reprojection = masked_mean(stack.min(1, keepdim=True)[0], torch.cat(masks, 1).min(1, keepdim=True)[0])
            else:
                reprojection = sum(masked_mean(m, k) for m, k in zip(maps, masks)) / len(maps)
            disp = outputs[("disp", s)]
            smooth = smoothness_loss(disp / (disp.mean((2, 3), keepdim=True) + 1e-7), inputs[("color", 0, s)])
            n = max(len(self.temporal), 1)
            terms.update({f"reprojection/{s}": reprojection, f"transform/{s}": transform / n,
                          f"brightness_smoothness/{s}": bright / n, f"smoothness/{s}": smooth})
            terms[f"loss/{s}"] = (reprojection + cfg.transform_constraint * transform / n
                                  + cfg.transform_smoothness * bright / n + cfg.disparity_smoothness * smooth / 2**s)
            if cfg.depth_supervision:
                terms[f"depth_supervision/{s}"] = self.depth_supervision_loss(outputs[("depth", s)], inputs["depth_gt"])
                terms[f"loss/{s}"] = terms[f"loss/{s}"] + cfg.depth_supervision * terms[f"depth_supervision/{s}"]
            total += terms[f"loss/{s}"]
        terms["loss"] = total / len(cfg.scales)
        if cfg.pose_supervision:
            terms["pose_supervision"] = self.pose_supervision_term(outputs, inputs)
            terms["loss"] = terms["loss"] + cfg.pose_supervision * terms["pose_supervision"]
        return terms

    def pose_supervision_term(self, outputs: dict, inputs: dict) -> torch.Tensor:
        """pose_supervision_loss averaged over the temporal sources."""
        errors = [self.pose_supervision_loss(outputs[("cam_T_cam", f)], inputs[("pose_gt", f)]) for f in self.temporal]
        return sum(errors) / len(errors)

    def depth_supervision_loss(self, depth: torch.Tensor, ground_truth: torch.Tensor) -> torch.Tensor:
        """Mean |log(depth in mm) - log(ground truth)| over pixels with ground truth in the evaluated range;
        depth (B,1,H,W) in the network's unit, ground_truth (B,1,H,W) mm (0: none). Not part of DARES: an option
        for data with ground truth (synthetic scenes, SCARED keyframes)."""
        valid = ((ground_truth > MIN_DEPTH) & (ground_truth < MAX_DEPTH)).to(depth.dtype)
        mm = at_least_fp32(depth) * self.models["depth"].config.depth_unit_mm
        error = (mm.clamp_min(1e-6).log() - ground_truth.clamp_min(MIN_DEPTH).log()).abs()
        return masked_mean(error, valid)

    def pose_supervision_loss(self, predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """sum |predicted - truth| / sum |truth - identity| over the top 3x4 of the batch's motions: the pose
        network's error in proportion to the motion. predicted (B,4,4) translation in the network's unit, truth
        (B,4,4) mm. Not part of DARES: an option for data with camera poses (synthetic scenes, kinematics)."""
        truth = truth.clone()
        truth[:, :3, 3] = truth[:, :3, 3] / self.models["depth"].config.depth_unit_mm
        motion = (truth - torch.eye(4, device=truth.device))[:, :3].abs().sum()
        return (at_least_fp32(predicted) - truth)[:, :3].abs().sum() / motion.clamp_min(1e-9)

    def process_batch_0(self, inputs: dict) -> tuple[dict, dict]:
        """The position step's forward pass: (outputs, loss terms)."""
        outputs = self.predict_appearance(inputs, train_position=True)
        return outputs, self.compute_losses_0(inputs, outputs)

    def process_pose_batch(self, inputs: dict) -> tuple[dict, dict]:
        """pose_only's forward pass: the pose network's motions and their supervision term."""
        outputs = self.predict_poses(inputs)
        error = self.pose_supervision_term(outputs, inputs)
        return outputs, {"pose_supervision": error, "loss": self.cfg.pose_supervision * error}

    def process_batch(self, inputs: dict) -> tuple[dict, dict]:
        """The depth step's forward pass: (outputs, loss terms)."""
        outputs = {("disp", s): d for s, d in
                   self.models["depth"](inputs[("color_aug", 0, 0)], scales=tuple(self.cfg.scales)).items()}
        outputs.update(self.predict_appearance(inputs, train_position=False))
        outputs.update(self.predict_poses(inputs))
        self.generate_images_pred(inputs, outputs)
        return outputs, self.compute_losses(inputs, outputs)

    def _all_reduce_gradients(self, phase: int) -> None:
        """Average the phase's gradients over processes (data parallel over torch.distributed)."""
        if not self.distributed:
            return
        for p in self._phase_parameters(phase):
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def train_step(self, inputs: dict) -> dict:
        """One batch: the position step, then the depth step. Returns {"loss": float, "loss_position": float,
        "terms": {name: float} (each step's terms, the position step's prefixed "position/"), "out", "inputs"}."""
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        terms_0 = {}
        if self.registers:
            _, terms_0 = self._optimise(0, self.process_batch_0, self.optimizer_0, inputs)
        process = self.process_pose_batch if self.cfg.pose_only else self.process_batch
        out, terms = self._optimise(1, process, self.optimizer, inputs)
        self.scaler.update()
        named = {**terms, **{f"position/{k}": v for k, v in terms_0.items()}}
        values = torch.stack([torch.as_tensor(v, device=self.device).detach().double() for v in named.values()])
        if self.distributed:
            dist.all_reduce(values)
            values /= self.world
        if not torch.isfinite(values).all():
            raise DaresError(f"loss became {values[0].item()} at step {self.global_step}: lower the learning rate "
                             "or use --precision fp32; the last good checkpoint is kept")
        named = dict(zip(named, values.tolist()))  # one transfer from the device for every term
        return {"loss": named["loss"], "loss_position": named.get("position/loss", 0.0), "terms": named,
                "out": out, "inputs": inputs}

    def _optimise(self, phase: int, process, optimizer, inputs: dict):
        """One of the step's two optimisations: `process` (process_batch_0 or process_batch) in phase `phase`
        under autocast, its loss backwards (scaled; gradients averaged over processes), then `optimizer`."""
        self._set_phase(phase)
        with self.autocast():
            out, terms = process(inputs)
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["loss"]).backward()
        self._all_reduce_gradients(phase)
        self.scaler.step(optimizer)
        return out, terms

    # --- loop -----------------------------------------------------------------------------------------

    def _loader(self, epoch: int):
        from torch.utils.data import DataLoader

        self.train_set.set_epoch(epoch)
        order = torch.randperm(len(self.train_set),
                               generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch))
        per_rank = self.cfg.batch_size // self.world
        batches = len(order) // self.cfg.batch_size
        if self.cfg.max_steps_per_epoch:
            batches = min(batches, self.cfg.max_steps_per_epoch)
        indices = []
        for b in range(self.step_in_epoch, batches):  # a resumed epoch skips the batches already done
            chunk = order[b * self.cfg.batch_size:(b + 1) * self.cfg.batch_size]
            indices += chunk[self.rank * per_rank:(self.rank + 1) * per_rank].tolist()
        loader = DataLoader(torch.utils.data.Subset(self.train_set, indices), per_rank, shuffle=False,
                            num_workers=self.cfg.num_workers, drop_last=True,
                            pin_memory=self.device.type == "cuda", persistent_workers=False)
        return loader, batches

    def fit(self, progress: bool = True) -> dict:
        from tqdm import tqdm

        cfg = self.cfg
        if self.rank == 0:  # room for last.pt and its temporary copy while it is written, before any step
            check_output_folder(self.out, force=True, need_mb=2.2 * self.checkpoint_mb())
            self.out.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.out / "config.yaml") as tmp:
                tmp.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"))
        start_epoch = self.epoch
        for epoch in range(start_epoch, cfg.num_epochs):
            self.epoch = epoch
            loader, batches = self._loader(epoch)
            bar = tqdm(total=batches, initial=self.step_in_epoch, desc=f"epoch {epoch + 1}/{cfg.num_epochs}",
                       unit="batch", disable=not progress or self.rank != 0, dynamic_ncols=True)
            tick = time.perf_counter()
            for inputs in loader:
                result = self.train_step(inputs)
                self.step_in_epoch += 1
                self.global_step += 1
                crash_point("step")
                now = time.perf_counter()
                images_per_s = cfg.batch_size / max(now - tick, 1e-9)
                tick = now
                bar.set_postfix(loss=f"{result['loss']:.4f}", img_s=f"{images_per_s:.1f}")
                bar.update(1)
                if self.rank == 0:
                    self._log_step(result, images_per_s)
            bar.close()
            self.scheduler.step()
            if self.registers:
                self.scheduler_0.step()
            self.epoch, self.step_in_epoch = epoch + 1, 0
            metrics = self.validation() if self.rank == 0 else {}
            if self.rank == 0:
                self._end_epoch(metrics)
        if self.writer is not None:
            self.writer.close()
        return {"epoch": self.epoch, "step": self.global_step, "best": self.best, "score": self.validation.criterion}

    def _log_step(self, result: dict, images_per_s: float) -> None:
        with open(self.out / "losses.jsonl", "a") as f:
            f.write(json.dumps({"step": self.global_step, "epoch": self.epoch, "loss": result["loss"],
                                "loss_position": result["loss_position"]}) + "\n")
        w = self.writer
        for name, value in result["terms"].items():  # loss, loss/s, reprojection/s, ..., position/...
            w.add_scalar(f"train/{name}", value, self.global_step)
        w.add_scalar("lr", self.optimizer.param_groups[0]["lr"], self.global_step)
        w.add_scalar("images_per_s", images_per_s, self.global_step)
        if (self.global_step % self.cfg.log_every == 1 or self.cfg.log_every == 1) and not self.cfg.pose_only:
            out, inputs = result["out"], result["inputs"]
            w.add_image("target", inputs[("color", 0, 0)][0].float().clamp(0, 1), self.global_step)
            disp = out[("disp", 0)][0].detach().float()
            w.add_image("disparity", (disp - disp.min()) / (disp.max() - disp.min() + 1e-7), self.global_step)
            w.add_image("warped", out[("warped", 0, self.sources[0])][0].detach().float().clamp(0, 1), self.global_step)

    def _end_epoch(self, metrics: dict) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"epoch": self.epoch, "step": self.global_step, **metrics}) + "\n")
        score = metrics.get(self.validation.criterion, math.inf)
        improved = not self.validation.criterion or score < self.best  # without a val split the latest is the best
        self.best = min(self.best, score)
        adapters_only = self.models["depth"].config.has_adapters and not self.cfg.train_backbone
        self.save_checkpoint(self.out / "checkpoints" / "last.pt")
        save_depth_net(self.models["depth"], self.out / "depth_model_last.safetensors", adapters_only=adapters_only)
        if improved:  # best.pt is last.pt now: a hard link, no second copy on disk
            link_or_copy(self.out / "checkpoints" / "last.pt", self.out / "checkpoints" / "best.pt")
            save_depth_net(self.models["depth"], self.out / "depth_model.safetensors", adapters_only=adapters_only)

    # --- checkpoints ----------------------------------------------------------------------------------
    def _saved(self, name: str) -> dict:
        """What a checkpoint keeps of a model: all of it, but of the depth network only what trains (the frozen
        foundation model is rebuilt from cfg.weights, or the seed, on resume)."""
        state = self.models[name].state_dict()
        if name != "depth" or self.cfg.train_backbone:
            return state
        return {k: v for k, v in state.items() if not k.startswith("backbone.") or "lora_" in k}

    def checkpoint_mb(self) -> float:
        """The size of one checkpoint once the optimisers hold their two Adam moments per trained value."""
        values = sum(v.numel() * v.element_size() for k in self.models for v in self._saved(k).values())
        moments = sum(2 * p.numel() * p.element_size() for phase in (0, 1) for p in self._phase_parameters(phase))
        return (values + moments) / 2**20

    def state(self) -> dict:
        return {
            "models": {k: self._saved(k) for k in self.models},
            "optimizer": self.optimizer.state_dict(), "optimizer_0": self.optimizer_0.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scheduler_0": self.scheduler_0.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "best": self.best, "config": json.dumps(dataclasses.asdict(self.cfg)),
            "rng": self._rng_state(),
        }

    def save_checkpoint(self, path: Path) -> None:
        """Atomically: a crash mid-write leaves the previous checkpoint intact."""
        with atomic_file(path) as tmp:
            try:
                torch.save(self.state(), tmp)
            except RuntimeError as e:  # torch's zip writer reports a failed write (a full disk) as RuntimeError
                raise DaresError(f"could not write checkpoint {path} ({str(e).splitlines()[0][:80]}): the disk is "
                                 "full or over the file size limit; free space, then --resume the run (or run it "
                                 "again with --force if it saved no checkpoint)") from None
            crash_point("checkpoint-written")
        crash_point("checkpoint-renamed")

    def load_checkpoint(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            if path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file():
                raise DaresError(f"{path.parent.parent} saved no checkpoint before it stopped: nothing to resume; "
                                 "start it again with --force")
            raise DaresError(f"checkpoint {path} not found: pass --resume RUN_DIR or a .pt written by dares train")
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:  # a torn or foreign file: say which and how to go on
            raise DaresError(f"{path}: not a readable training checkpoint ({type(e).__name__}); "
                             "resume from checkpoints/best.pt or start again") from None
        for k, m in self.models.items():
            result = m.load_state_dict(state["models"][k], strict=k != "depth")
            if k == "depth" and (result.unexpected_keys or set(result.missing_keys) & set(self._saved("depth"))):
                raise DaresError(f"{path}: its depth network does not match this configuration; resume with the "
                                 "config.yaml and --weights of the run that wrote it")
        self.optimizer.load_state_dict(state["optimizer"])
        self.optimizer_0.load_state_dict(state["optimizer_0"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scheduler_0.load_state_dict(state["scheduler_0"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.best = state["global_step"], state["best"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if torch.cuda.is_available() and "cuda" in rng:
            torch.cuda.set_rng_state_all([t.cpu() for t in rng["cuda"]])
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        np.random.set_state(("MT19937", rng["numpy_key"].numpy().astype(np.uint32), *rng["numpy_rest"]))

    @staticmethod
    def _rng_state() -> dict:
        """Every global RNG, in types torch.load(weights_only=True) accepts."""
        version, internal, gauss = random.getstate()
        _, key, pos, has_gauss, cached = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss],
                 "numpy_key": torch.from_numpy(key.astype(np.int64)),
                 "numpy_rest": [int(pos), int(has_gauss), float(cached)]}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state


def link_or_copy(source: Path, target: Path) -> None:
    """Make `target` the same file as `source` (a hard link; a copy where links are not possible), atomically."""
    tmp = target.with_name(f".{target.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


def run_training(cfg: TrainConfig, resume: Path | None = None, progress: bool = True) -> dict:
    """Train (optionally resuming from a run folder or checkpoint); returns a summary."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and cfg.device in ("cuda", "auto") else "gloo")
    try:
        trainer = Trainer(cfg)
        if resume is not None:
            resume = Path(resume)
            if resume.is_dir():
                for torn in (resume / "checkpoints").glob(".*.partial*"):  # a write that a crash interrupted
                    torn.unlink()
            trainer.load_checkpoint(resume / "checkpoints" / "last.pt" if resume.is_dir() else resume)
            if resume.is_dir():
                trim_logs(resume, trainer.global_step)
        return trainer.fit(progress)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
