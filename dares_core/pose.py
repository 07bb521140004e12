"""`dares pose`: camera motion from the pose network, as the official evaluate_pose.py computes and scores it.

For each frame i of a sequence the pose network sees (frame i+1, frame i), concatenated in that order, and
its output becomes T_i = transformation_from_parameters(axis-angle, translation): the transform that takes
points from camera i's frame into camera i+1's, the convention DARES trains it in (the target's points into
the source's) and that the official gt_poses_sq{1,2}.npz share. Positions chain as pose = pose @ T_i.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .data.scared import SplitEntry, image_path, read_camera_poses, read_split
from .errors import DaresError
from .evaluate import chain_positions
from .files import atomic_file
from .geometry import pose_from_axisangle
from .model.pose_net import PoseDecoder, ResnetEncoder
from .model.weights import read_tensors, safetensors_metadata
from .preprocess import read_rgb, resize_like_official, to_unit_tensor

OFFICIAL_SPLITS = Path(__file__).parent / "splits" / "endovis"  # test_files_sequence{1,2}.txt, gt_poses_sq{1,2}.npz


POSE_NETWORKS = ("pose_encoder", "pose")  # the two modules, as the official files and our checkpoints name them
POSE_FORMAT_TAG = "dares-pose"  # safetensors metadata of `dares export --network pose`
UNUSED_KEYS = ("encoder.fc.weight", "encoder.fc.bias")  # ResNet's classifier: in the layout, not in the forward


def _pose_states(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{"pose_encoder": state, "pose": state} of any supported pose weights (see load_pose_net)."""
    if path.is_dir() and (path / "pose_encoder.pth").is_file():
        return {name: read_tensors(path / f"{name}.pth")[0] for name in POSE_NETWORKS}
    if path.suffix == ".safetensors":
        state, metadata = read_tensors(path)
        if metadata.get("format") != POSE_FORMAT_TAG:
            raise DaresError(f"{path}: not a pose network export; write one with `dares export --network pose`")
        return {name: {k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")}
                for name in POSE_NETWORKS}
    if path.is_dir():
        found = [p for p in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt") if p.is_file()]
        if not found:
            raise DaresError(f"{path}: neither pose_encoder.pth + pose.pth nor checkpoints/last.pt; pass the "
                             "official weights folder or a `dares train` run")
        path = found[0]
    try:
        models = torch.load(path, map_location="cpu", weights_only=True)["models"]
        return {name: models[name] for name in POSE_NETWORKS}
    except Exception:  # a foreign or torn file: whatever torch raised, the fix is the same
        raise DaresError(f"{path}: not a `dares train` checkpoint with pose networks; pass the official weights "
                         "folder (pose_encoder.pth, pose.pth), a run folder or a pose export") from None


class PoseNet(torch.nn.Module):
    """Both pose networks as one: pairs (B,6,H,W) in [0,1] -> (axisangle (B,3) radians, translation (B,3) in the
    network's units), the motion of frame i to frame i+1 for a pair (frame i+1, frame i)."""

    def __init__(self, encoder: ResnetEncoder, decoder: PoseDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        axisangle, translation = self.decoder([self.encoder(pairs)])
        return axisangle[:, 0, 0], translation[:, 0, 0]


def load_pose_net(path: Path) -> PoseNet:
    """The pose encoder and decoder of an official/AF-SfMLearner weights folder (pose_encoder.pth, pose.pth),
    a `dares train` run folder (its checkpoints/best.pt, else last.pt) or such a checkpoint, or a `.safetensors`
    of `dares export --network pose` as one PoseNet; eval mode, CPU. Widths are read from the tensors (ResNet-18:
    64)."""
    path = Path(path)
    states = _pose_states(path)
    first, squeeze = states["pose_encoder"].get("encoder.conv1.weight"), states["pose"].get("net.0.weight")
    if first is None or squeeze is None:
        raise DaresError(f"{path}: lacks encoder.conv1.weight or net.0.weight; pass pose networks")
    encoder = ResnetEncoder(2, width=first.shape[0])
    decoder = PoseDecoder(encoder.num_ch_enc, hidden=squeeze.shape[0])
    for net, name in ((encoder, "pose_encoder"), (decoder, "pose")):
        expected, state = net.state_dict(), states[name]
        missing = sorted(set(expected) - set(state) - set(UNUSED_KEYS))
        if missing:
            raise DaresError(f"{path}: its {name} lacks {len(missing)} tensor(s), e.g. {missing[0]}")
        wrong = next((k for k in expected if k in state and state[k].shape != expected[k].shape), None)
        if wrong:
            raise DaresError(f"{path}: its {name} has {wrong} of shape {tuple(state[wrong].shape)}, the network "
                             f"{tuple(expected[wrong].shape)}; pass pose networks of one training run")
        net.load_state_dict({k: state[k] for k in expected if k in state}, strict=False)
    return PoseNet(encoder, decoder).eval()


@dataclass(frozen=True)
class PoseUnits:
    """What pose weights were trained for: input_size (height, width) of the pairs, and unit_mm, millimetres per
    unit of their translation (the depth unit of the run that trained them; 1, nominal mm, for DARES)."""

    input_size: tuple[int, int] = (256, 320)  # the official pose networks'
    unit_mm: float = 1.0


def save_pose_net(net: PoseNet, path: Path, units: PoseUnits = PoseUnits()) -> None:
    """Both pose networks in one safetensors file (keys `pose_encoder.*`, `pose.*`; the unused classifier
    left out) with their units in the metadata, atomically."""
    modules = zip(POSE_NETWORKS, (net.encoder, net.decoder))
    state = {f"{name}.{k}": v.detach().contiguous().cpu() for name, module in modules
             for k, v in module.state_dict().items() if not (name == "pose_encoder" and k in UNUSED_KEYS)}
    metadata = {"format": POSE_FORMAT_TAG, "input_size": json.dumps(list(units.input_size)),
                "unit_mm": repr(float(units.unit_mm))}
    with atomic_file(Path(path)) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def pose_units(path: Path) -> PoseUnits:
    """The units of the pose weights at `path`: a pose export's recorded ones; a `dares train` run's (run folder,
    or a checkpoint in its checkpoints/), from the depth network it saved, which shares them; else the official."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        metadata = safetensors_metadata(path)
        if "input_size" in metadata:
            return PoseUnits(tuple(json.loads(metadata["input_size"])), float(metadata.get("unit_mm", 1.0)))
        return PoseUnits()
    depth = (path if path.is_dir() else path.parent.parent) / "depth_model_last.safetensors"
    if depth.is_file():
        config = json.loads(safetensors_metadata(depth).get("config", "{}"))
        return PoseUnits(tuple(config.get("input_size") or PoseUnits.input_size), config.get("depth_unit_mm", 1.0))
    return PoseUnits()


def official_sequence(number: int) -> tuple[list[SplitEntry], np.ndarray]:
    """The official SCARED pose test sequence 1 or 2: its split lines and ground-truth relative poses."""
    if number not in (1, 2):
        raise DaresError(f"--sequence {number}: the official pose test sequences are 1 and 2")
    entries = read_split(OFFICIAL_SPLITS / f"test_files_sequence{number}.txt")
    return entries, np.load(OFFICIAL_SPLITS / f"gt_poses_sq{number}.npz")["data"]


def keyframe_sequence(root: Path, folder: str) -> tuple[list[SplitEntry], np.ndarray]:
    """Every frame of a keyframe folder with camera_poses.npz (camera-to-world, as `dares synth` and
    `dares prepare-scared` write it) but the last, and the ground-truth relative poses inv(P[i+1]) @ P[i]."""
    poses = read_camera_poses(Path(root) / folder)
    if not poses:
        raise DaresError(f"{Path(root) / folder / 'camera_poses.npz'} not found: pose ground truth comes from `dares "
                         "synth` or `dares prepare-scared`; for SCARED pose sequences pass --sequence 1 or 2")
    frames = sorted(poses)
    entries = [SplitEntry(folder, f, "l") for f in frames[:-1]]
    relative = np.stack([np.linalg.inv(poses[b]) @ poses[a] for a, b in zip(frames, frames[1:])])
    return entries, relative


@torch.no_grad()
def poses_of_pairs(network, pairs: torch.Tensor) -> np.ndarray:
    """pairs: (B,6,H,W) in [0,1], (frame i+1, frame i) stacked on channels -> (B,4,4) float64 T_i (camera i's
    points into camera i+1's), translation in the network's units. network: a PoseNet, or what runs it
    (PoseRunner's backend)."""
    axisangle, translation = network(pairs)
    return pose_from_axisangle(axisangle.double(), translation.double()).cpu().numpy()


class PoseRunner:
    """The pose network as deployed: on torch, or on ONNX Runtime (backend onnxruntime: dares_core.backends, fp32,
    checked against torch on a probe pair at start with `check`, and refused for torch, with one line, above the
    tolerance). __call__(pairs (B,6,H,W) in [0,1]) -> (B,4,4) as poses_of_pairs; `backend` names what runs and
    `backend_check` the difference measured."""

    def __init__(self, net: PoseNet, size: tuple[int, int], device: torch.device, backend: str = "torch",
                 providers: tuple = (), check: bool = True, say=print):
        from .backends import Graph, checked_onnxruntime, probe_image

        self.net = net.to(device).eval()
        self._network, self.backend, self.backend_check = self.net, "torch", None
        if backend == "onnxruntime":
            probe = probe_image(size, device)
            pair = torch.cat([probe.roll(5, dims=-1), probe], dim=1)  # a sideways step between the two frames
            graph = Graph(self.net, torch.rand(2, 6, *size, generator=torch.Generator().manual_seed(0)).to(device),
                          ("pairs",), ("axisangle", "translation"))
            network, self.backend_check = checked_onnxruntime(graph, self.net, pair, 1, "fp32", providers, check,
                                                              say)
            if network is not None:
                self._network, self.backend = network, f"onnxruntime {network.provider}"

    def __call__(self, pairs: torch.Tensor) -> np.ndarray:
        return poses_of_pairs(self._network, pairs)


@torch.no_grad()
def predict_relative_poses(network: PoseNet, root: Path, entries: list[SplitEntry], size: tuple[int, int] = (256, 320),
                           device: str | torch.device = "cpu", batch: int = 8, progress=None) -> np.ndarray:
    """(N,4,4) relative poses, one per entry: the network on (frame + 1, frame), each resized as the official
    loader does to size (height, width). Translation in the network's units (DARES: up to scale)."""
    network = network.to(device)
    out = []
    for start in range(0, len(entries), batch):
        chunk = entries[start:start + batch]
        pairs = []
        for e in chunk:
            paths = [image_path(root, e.folder, e.frame + step, e.side) for step in (1, 0)]
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise DaresError(f"{missing[0]} not found: is --data the folder holding {e.folder}?")
            pairs.append(torch.cat([to_unit_tensor(resize_like_official(read_rgb(p), size)) for p in paths]))
        out.append(poses_of_pairs(network, torch.stack(pairs).to(device)))
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(out)


def plot_trajectories(predicted: np.ndarray, ground_truth: np.ndarray, path: Path, title: str) -> None:
    """A PNG of the two chained trajectories (N,4,4 relative motions, translation in mm), top (x-z) and side (y-z)
    views, the prediction scaled to the ground truth by least squares as ATE aligns snippets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gt, pred = chain_positions(ground_truth)[0], chain_positions(predicted)[0]
    scale = float(np.sum(gt * pred) / max(np.sum(pred**2), 1e-12))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, (a, b, label) in zip(axes, ((0, 2, "top view (x, z)"), (1, 2, "side view (y, z)"))):
        ax.plot(gt[:, a], gt[:, b], "k-", label="ground truth")
        ax.plot(pred[:, a] * scale, pred[:, b] * scale, "r--", label=f"predicted (x{scale:.3g})")
        ax.set_title(label)
        ax.set_xlabel(f"{'xyz'[a]} (mm)")
        ax.set_ylabel(f"{'xyz'[b]} (mm)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
