"""`dares train`'s options: TrainConfig, grouped under headers as monodepth2's options.py, every value checked
before any work. Defaults are the official DARES options; lengths in model units (nominal mm)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import DaresError
from .model.pose_net import OFFICIAL_WIDTH
from .names import INTRINSICS, PRECISIONS, REPROJECTIONS

PATH_OPTIONS = ("data", "out", "split_dir", "weights", "af_weights")  # TrainConfig keys that name files or folders


class _NoAliases(yaml.SafeLoader):
    """YAML without aliases: nine nested anchors make billions of values from a few lines (an alias bomb)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases (*name) are not read here: write the values out")
        return super().compose_node(parent, index)


def safe_yaml(text: str):
    """yaml.safe_load without aliases."""
    return yaml.load(text, Loader=_NoAliases)  # noqa: S506  (a SafeLoader)


@dataclass
class TrainConfig:
    """Defaults are the official DARES options (options.py); lengths in model units (nominal mm)."""

    # DATA
    data: str = ""
    out: str = "runs/dares"
    split_dir: str = ""  # default: DATA/splits/endovis, or the only folder under DATA/splits
    height: int = 256
    width: int = 320
    intrinsics: str = "official"  # official: SCARED's normalised K, as DARES; calibration: each sequence's own
    # MODEL
    encoder: str = "vits"
    weights: str = ""  # DAv2 HF folder / .pth (fresh LoRA), DARES depth_model.pth or ours; empty: random init
    hf_config: dict = field(default_factory=dict)  # a custom (e.g. tiny) Depth Anything architecture
    lora_ranks: list | None = None
    af_weights: str = ""  # folder with AF-SfMLearner pose_encoder.pth, pose.pth, position*.pth, transform*.pth
    af_width: int = OFFICIAL_WIDTH  # first-layer channels of the pose/position/transform ResNets (64: ResNet-18)
    train_backbone: bool = False
    # METHOD (the official loss and its Monodepth2 variants)
    frame_ids: list = field(default_factory=lambda: [0, -1, 1])
    scales: list = field(default_factory=lambda: [0, 1, 2, 3])
    min_depth: float = 0.1
    max_depth: float = 150.0
    disparity_smoothness: float = 1e-4
    position_smoothness: float = 1e-3
    transform_constraint: float = 0.01
    transform_smoothness: float = 0.01
    reprojection: str = "ms_ssim"  # ms_ssim (DARES) | ssim (Monodepth2 3x3 at 0.85) | l1
    min_reprojection: bool = False  # Monodepth2 per-pixel minimum over sources
    automask: bool = False  # Monodepth2 auto-masking of static pixels
    stereo: bool = False  # add the other eye ("s") with the known baseline (Monodepth2 "MS")
    stereo_baseline: float | None = None  # model units; None: calibration.yaml baseline_mm, else 0.1
    # OPTIMISATION
    batch_size: int = 12
    learning_rate: float = 1e-4
    position_learning_rate: float = 1e-4
    scheduler_step_size: int = 10
    num_epochs: int = 20
    # IMPROVEMENTS on the official method, off by default (docs/scared.md)
    flow_warp_align_corners: bool = False  # flow warp where zero flow is the identity (official: half-pixel shift)
    jitter_per_item: bool = False  # one colour jitter for all frames and scales of an item (official: one per image)
    depth_supervision: float = 0.0  # weight of |log depth - log ground truth| where the data has it; 0 as official
    pose_supervision: float = 0.0  # weight of the pose error in proportion to the true motion; 0 as official
    pose_only: bool = False  # train only the pose pair, by pose_supervision (depth and appearance nets untouched)
    # RUNTIME
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 with loss scaling, CUDA only)
    device: str = "auto"  # auto: cuda when present, else cpu; naming cuda without CUDA is an error
    num_workers: int = 2
    seed: int = 0
    log_every: int = 50
    val_max_frames: int = 200
    max_steps_per_epoch: int = 0  # 0: whole epochs; >0 caps them (smoke runs)

    @classmethod
    def from_sources(cls, config_file: Path | None, overrides: dict) -> TrainConfig:
        """The config of a YAML file (or none) with `overrides` on top, every value checked for its field's type and
        range before any work (one line naming the key and what it accepts)."""
        values = {}
        if config_file is not None:
            if not Path(config_file).is_file():
                raise DaresError(f"config {config_file} not found")
            try:
                values = safe_yaml(Path(config_file).read_text()) or {}
            except yaml.YAMLError as e:
                raise DaresError(f"config {config_file}: not valid YAML ({str(e).splitlines()[0]})") from None
            if not isinstance(values, dict):
                raise DaresError(f"config {config_file}: expected a mapping of training options, got "
                                 f"{type(values).__name__}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise DaresError(f"unknown training option(s) {', '.join(unknown)}: see `dares train --help` for the names")
        values = {k: checked_option(k, fields[k], v) for k, v in values.items()}
        for key in PATH_OPTIONS:  # stored absolute in the run's config.yaml: it resumes from any folder
            if values.get(key):
                values[key] = str(Path(values[key]).expanduser().resolve())
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.height % 32 or self.width % 32 or min(self.height, self.width) < 64:
            raise DaresError(f"height and width must be multiples of 32 and at least 64 (got {self.height}x"
                             f"{self.width}), as official (256x320): the pose network halves them five times")
        if not self.frame_ids or self.frame_ids[0] != 0 or not all(
                f == "s" or (type(f) is int) for f in self.frame_ids):
            raise DaresError(f"frame_ids {self.frame_ids!r}: give frame offsets (integers) and 's' (the other eye), "
                             "starting with 0 (the target frame)")
        if not self.scales or not set(self.scales) <= {0, 1, 2, 3} or not all(type(x) is int for x in self.scales):
            raise DaresError(f"scales {self.scales!r}: give some of 0, 1, 2, 3 (the head's resolutions)")
        if not self.min_depth < self.max_depth:
            raise DaresError(f"min_depth {self.min_depth:g} must be below max_depth {self.max_depth:g}")
        if self.reprojection not in REPROJECTIONS or self.precision not in PRECISIONS or \
                self.intrinsics not in INTRINSICS:
            raise DaresError(f"reprojection is one of {', '.join(REPROJECTIONS)}, precision one of "
                             f"{', '.join(PRECISIONS)} and intrinsics one of {', '.join(INTRINSICS)}")
        if not self.data:
            raise DaresError("no training data: pass --data DIR (a SCARED-layout folder)")
        if self.pose_only and not self.pose_supervision:
            raise DaresError("pose_only trains the pose network by pose_supervision alone: set pose_supervision > 0")
        if self.pose_supervision and not [f for f in self.frame_ids if f != "s" and f != 0]:
            raise DaresError("pose_supervision needs temporal neighbours in frame_ids (e.g. [0, -1, 1])")
        if not self.stereo and not [f for f in self.frame_ids[1:] if f != 0]:
            raise DaresError(f"frame_ids {self.frame_ids!r} has no source frame to reproject: add temporal "
                             "neighbours (e.g. [0, -1, 1]) or the other eye ('s', or stereo: true)")
        if self.weights and (self.hf_config or self.lora_ranks):
            raise DaresError("hf_config and lora_ranks shape a new network, and --weights brings its own: drop "
                             "them, or drop --weights")
        if self.af_weights and self.af_width != OFFICIAL_WIDTH:
            raise DaresError(f"af_weights are ResNet-18 networks (af_width {OFFICIAL_WIDTH}), af_width is "
                             f"{self.af_width}: drop one of the two")


OPTION_TYPES = {"int": ((int,), "an integer"), "float": ((int, float), "a number"), "str": ((str,), "text"),
                "bool": ((bool,), "true or false"), "list": ((list,), "a list"), "dict": ((dict,), "a mapping")}
# (lowest, highest) of numeric options, inclusive; sizes far beyond any machine's memory are refused before work
OPTION_RANGES = {
    "height": (32, 4096), "width": (32, 4096), "batch_size": (1, 4096), "num_epochs": (1, 10**6),
    "scheduler_step_size": (1, 10**6), "num_workers": (0, 256), "log_every": (1, 10**9), "val_max_frames": (1, 10**6),
    "max_steps_per_epoch": (0, 10**9), "af_width": (1, 1024), "seed": (0, 2**32 - 1),
    "learning_rate": (1e-12, 10.0), "position_learning_rate": (1e-12, 10.0), "min_depth": (1e-9, 1e9),
    "max_depth": (1e-9, 1e9), "stereo_baseline": (1e-9, 1e9),
    **dict.fromkeys(("disparity_smoothness", "position_smoothness", "transform_constraint", "transform_smoothness",
                     "depth_supervision", "pose_supervision"), (0.0, 1e6)),
}


def checked_option(name: str, annotation: str, value):
    """`value` for the TrainConfig field `name` of type `annotation` ("float", "float | None", ...), or DaresError.
    Numbers written as YAML reads them as text (1e-4) are taken as numbers."""
    kind = annotation.split("|")[0].strip()
    if value is None and annotation.endswith("| None"):
        return None
    types, words = OPTION_TYPES[kind]
    if kind == "float" and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = isinstance(value, types) and not (kind in ("int", "float") and isinstance(value, bool))
    if ok and kind == "float":
        value = float(value)
        ok = math.isfinite(value)
    low, high = OPTION_RANGES.get(name, (None, None))
    if ok and low is not None:
        ok = low <= value <= high
        words = f"{words} from {low:g} to {high:g}"
    if not ok:
        raise DaresError(f"training option {name}: {value!r} is not allowed: give {words}")
    return value


def run_config(config_file: Path | None, overrides: dict, resume: Path | None = None) -> TrainConfig:
    """The config of a run: a run folder resumes with its config.yaml under the overrides given (and in place);
    else the config file (or the defaults) with the overrides on top."""
    if resume is not None and not (resume.is_file() or (resume / "config.yaml").is_file()):
        raise DaresError(f"--resume {resume}: no run there; give a run folder (holding config.yaml) or a "
                         "checkpoint .pt")
    if resume is not None and (resume / "config.yaml").is_file():  # a run folder resumes in place
        base = {**yaml.safe_load((resume / "config.yaml").read_text()), "out": str(resume.resolve())}
        return TrainConfig.from_sources(None, {**base, **{k: v for k, v in overrides.items() if v is not None}})
    return TrainConfig.from_sources(config_file, overrides)
