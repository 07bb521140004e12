"""Procedural da Vinci-like stereo endoscopy with exact ground truth, written in the SCARED layout.

Each sequence looks into a tissue cavity: a height field Z = h(X, Y) (millimetres, world frame) made
of a bowl, folds and bumps, textured with procedural mucosa and vessels, and lit by a light at the
endoscope tip (inverse-square falloff, Blinn-Phong highlights, vignetting). A rectified stereo pair
moves along a smooth trajectory. Rays are intersected with the surface analytically (Newton on the
ray parameter; surface slopes are bounded so the first hit is the only hit), so depth is exact.

Written by hand because no library renders endoscopic scenes with exact depth and poses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..errors import DaresError
from ..files import SYNTH_ENTRIES, atomic_dir, write_image, write_npz
from .scared import SplitEntry, export_gt_depths, gt_path, image_path, write_scene_points, write_split

SPLIT_NAME = "synthetic"


@dataclass(frozen=True)
class SynthConfig:
    """What `dares synth` generates. Lengths in millimetres; focal lengths normalised by image size."""

    width: int = 1280
    height: int = 1024
    frames: int = 100
    sequences: int = 3
    seed: int = 0
    baseline_mm: float = 4.5
    fps: float = 25.0
    fx_norm: float = 0.82  # the official SCARED loader's normalised intrinsics
    fy_norm: float = 1.02
    noise: float = 0.004  # sensor noise std, image in [0, 1]

    def validate(self) -> None:
        if self.frames < 3 or self.sequences < 1 or self.width < 16 or self.height < 16:
            raise DaresError("synth needs --frames >= 3, --sequences >= 1 and an image of at least 16x16 pixels")

    def intrinsics(self) -> np.ndarray:
        """K (3,3) in pixels for the configured image size."""
        fx, fy = self.fx_norm * self.width, self.fy_norm * self.height
        return np.array([[fx, 0, 0.5 * self.width], [0, fy, 0.5 * self.height], [0, 0, 1]], dtype=np.float64)


class TissueSurface:
    """Height field Z = h(X, Y) in mm: cavity bowl + folds (sinusoids) + bumps (Gaussians)."""

    def __init__(self, rng: np.random.Generator):
        self.d0 = rng.uniform(70.0, 90.0)
        self.bowl = rng.uniform(0.08, 0.15)  # Z drops by bowl * r^2 / d0 towards the cavity walls
        self.tilt = rng.uniform(0.2, 0.35) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
        n_waves, n_bumps = 4, 3
        self.wave_dir = rng.uniform(0, np.pi, n_waves)
        self.wave_len = rng.uniform(25.0, 60.0, n_waves)
        slope = rng.dirichlet(np.ones(n_waves)) * 0.40  # total max slope of the folds
        self.wave_amp = slope * self.wave_len / (2 * np.pi)
        self.wave_phase = rng.uniform(0, 2 * np.pi, n_waves)
        self.bump_xy = rng.uniform(-30.0, 30.0, (n_bumps, 2))
        self.bump_sigma = rng.uniform(8.0, 18.0, n_bumps)
        bump_slope = rng.dirichlet(np.ones(n_bumps)) * 0.25 * rng.choice([-1.0, 1.0], n_bumps)
        self.bump_amp = bump_slope * self.bump_sigma / 0.607

    def height_and_gradient(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """h, dh/dX, dh/dY at world (X, Y) mm."""
        h = self.d0 - self.bowl * (X * X + Y * Y) / self.d0 + self.tilt[0] * X + self.tilt[1] * Y
        hx = -2 * self.bowl * X / self.d0 + self.tilt[0]
        hy = -2 * self.bowl * Y / self.d0 + self.tilt[1]
        for ang, lam, amp, ph in zip(self.wave_dir, self.wave_len, self.wave_amp, self.wave_phase):
            k = 2 * np.pi / lam
            cx, sy = np.cos(ang) * k, np.sin(ang) * k
            arg = cx * X + sy * Y + ph
            h = h + amp * np.sin(arg)
            c = amp * np.cos(arg)
            hx, hy = hx + c * cx, hy + c * sy
        for (bx, by), sig, amp in zip(self.bump_xy, self.bump_sigma, self.bump_amp):
            dx, dy = X - bx, Y - by
            g = amp * np.exp(-(dx * dx + dy * dy) / (2 * sig * sig))
            h = h - g  # positive amp bulges towards the camera
            hx, hy = hx + g * dx / sig**2, hy + g * dy / sig**2
        return h, hx, hy


class TissueTexture:
    """Albedo (RGB in [0,1]) over the surface's (X, Y) in mm: mottled mucosa with branching vessels."""

    def __init__(self, rng: np.random.Generator, extent_mm: float = 110.0, mm_per_px: float = 0.08):
        self.extent, self.res = extent_mm, mm_per_px
        n = int(2 * extent_mm / mm_per_px)
        mottle = np.zeros((n, n), np.float32)
        for cells, weight in ((8, 0.5), (32, 0.3), (128, 0.15), (512, 0.05)):
            grid = rng.standard_normal((cells, cells)).astype(np.float32)
            mottle += weight * cv2.resize(grid, (n, n), interpolation=cv2.INTER_CUBIC)
        mottle = (mottle - mottle.mean()) / (mottle.std() + 1e-6)
        base = np.array([0.78, 0.40, 0.36], np.float32) * (1 + 0.15 * mottle[..., None])
        base[..., 1:] *= (1 + 0.10 * mottle[..., None])
        vessels = np.zeros((n, n), np.float32)
        for _ in range(70):
            self._draw_vessel(rng, vessels, rng.uniform(0, n, 2), rng.uniform(0, 2 * np.pi), rng.uniform(2.0, 9.0), 0)
        vessels = cv2.GaussianBlur(vessels, (0, 0), 1.5)
        vessel_rgb = np.array([0.42, 0.06, 0.08], np.float32)
        a = np.clip(vessels, 0, 1)[..., None] * 0.85
        self.image = np.clip(base * (1 - a) + vessel_rgb * a, 0, 1)

    @staticmethod
    def _draw_vessel(rng, canvas, start, heading, width, depth):
        """A meandering vessel of `width` px that may branch into thinner ones (recursively)."""
        p, points = start, [start]
        for _ in range(int(rng.uniform(15, 50))):
            heading += rng.normal(0, 0.3)
            p = p + 12.0 * np.array([np.cos(heading), np.sin(heading)])
            points.append(p)
            if depth < 2 and rng.random() < 0.05:
                branch = heading + rng.choice([-1.0, 1.0]) * 0.8
                TissueTexture._draw_vessel(rng, canvas, p, branch, max(width * 0.6, 1.0), depth + 1)
        cv2.polylines(canvas, [np.round(np.array(points)).astype(np.int32)], False, 1.0, max(int(width), 1),
                      cv2.LINE_AA)

    def sample(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Albedo (H,W,3) at world (X, Y) mm, bilinear."""
        mx = ((X + self.extent) / self.res).astype(np.float32)
        my = ((Y + self.extent) / self.res).astype(np.float32)
        return cv2.remap(self.image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def rotation_xyz(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx from angles in radians."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def camera_trajectory(rng: np.random.Generator, frames: int, fps: float) -> np.ndarray:
    """Smooth camera-to-world poses (frames,4,4), mm: slow sinusoidal sway, push-in and small rotations."""
    t = np.arange(frames) / fps
    cycles = rng.uniform(0.08, 0.25, 6)  # Hz: slow sway, a few tenths of a millimetre per frame at 25 Hz
    phase = rng.uniform(0, 2 * np.pi, 6)
    amp = np.concatenate([rng.uniform(4, 8, 2), rng.uniform(5, 10, 1), np.deg2rad(rng.uniform(2, 5, 3))])
    wave = amp[None] * np.sin(2 * np.pi * cycles[None] * t[:, None] + phase[None])
    poses = np.tile(np.eye(4), (frames, 1, 1))
    for i, (x, y, z, rx, ry, rz) in enumerate(wave):
        poses[i, :3, :3] = rotation_xyz(rx, ry, rz)
        poses[i, :3, 3] = (x, y, z)
    return poses


def render_view(
    surface: TissueSurface, texture: TissueTexture, K: np.ndarray, size: tuple[int, int],
    T_world_cam: np.ndarray, light_pos: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one view. Returns (linear RGB radiance (H,W,3), camera-frame XYZ (H,W,3) mm)."""
    width, height = size
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    xn, yn = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    R, c = T_world_cam[:3, :3], T_world_cam[:3, 3]
    dx = R[0, 0] * xn + R[0, 1] * yn + R[0, 2]  # world ray with unit camera-z, so t = depth
    dy = R[1, 0] * xn + R[1, 1] * yn + R[1, 2]
    dz = R[2, 0] * xn + R[2, 1] * yn + R[2, 2]
    t = (surface.d0 - c[2]) / dz
    for _ in range(4):  # Newton: residual below 1e-8 mm after 4 steps for these bounded slopes
        X, Y = c[0] + t * dx, c[1] + t * dy
        h, hx, hy = surface.height_and_gradient(X, Y)
        f = c[2] + t * dz - h
        t = t - f / (dz - hx * dx - hy * dy)
    X, Y = c[0] + t * dx, c[1] + t * dy
    h, hx, hy = surface.height_and_gradient(X, Y)
    P = np.stack([X, Y, h], -1)
    normal = np.stack([hx, hy, -np.ones_like(hx)], -1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    to_light = light_pos - P
    r = np.linalg.norm(to_light, axis=-1, keepdims=True)
    to_light /= r
    to_eye = c - P
    to_eye /= np.linalg.norm(to_eye, axis=-1, keepdims=True)
    half = to_light + to_eye
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    diffuse = np.clip((normal * to_light).sum(-1, keepdims=True), 0, None)
    specular = np.clip((normal * half).sum(-1, keepdims=True), 0, None) ** 60
    falloff = (surface.d0 / r) ** 2
    albedo = texture.sample(X, Y)
    vignette = (1.0 / (1.0 + 0.35 * (xn * xn + yn * yn)) ** 2)[..., None]
    radiance = 0.95 * falloff * vignette * (albedo * diffuse + 0.35 * specular)
    xyz = np.stack([xn * t, yn * t, t], -1)
    return radiance, xyz


def to_srgb8(radiance: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Linear radiance to an 8-bit RGB image with gamma and sensor noise."""
    img = np.clip(radiance, 0, 1) ** (1 / 2.2)
    if noise > 0:
        img = img + rng.normal(0, noise, img.shape)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def calibration_dict(cfg: SynthConfig) -> dict:
    """The calibration written beside each sequence (rectified pair; P matrices in pixels and mm)."""
    K = cfg.intrinsics()
    P_left = np.hstack([K, np.zeros((3, 1))])
    P_right = P_left.copy()
    P_right[0, 3] = -K[0, 0] * cfg.baseline_mm
    return {
        "image_width": cfg.width, "image_height": cfg.height, "rectified": True, "units": "mm",
        "K": K.tolist(), "D": [0.0] * 5, "baseline_mm": cfg.baseline_mm, "fps": cfg.fps,
        "P_left": P_left.tolist(), "P_right": P_right.tolist(),
    }


def read_calibration(folder: Path) -> dict:
    """The calibration of one sequence folder, as written by `dares synth`."""
    path = Path(folder) / "calibration.yaml"
    if not path.is_file():
        raise DaresError(f"{path} not found: sequence folders need the calibration.yaml that `dares synth` writes")
    return yaml.safe_load(path.read_text())


def sequence_folder(index: int) -> str:
    """Relative folder of synthetic sequence `index` (0-based), SCARED-style."""
    return f"dataset1/keyframe{index + 1}"


def generate_sequence(cfg: SynthConfig, index: int, root: Path, progress=None) -> None:
    """Render and write sequence `index` under `root` (images, ground truth, poses, calibration)."""
    rng = np.random.default_rng([cfg.seed, index])
    surface, texture = TissueSurface(rng), TissueTexture(rng)
    poses = camera_trajectory(rng, cfg.frames, cfg.fps)
    K = cfg.intrinsics()
    folder = sequence_folder(index)
    seq = root / folder
    for i, T in enumerate(poses):
        frame = i + 1
        right_offset = T[:3, :3] @ np.array([cfg.baseline_mm, 0.0, 0.0])
        light = T[:3, 3] + 0.5 * right_offset  # the light guide sits between the two lenses
        T_right = T.copy()
        T_right[:3, 3] += right_offset
        left, xyz = render_view(surface, texture, K, (cfg.width, cfg.height), T, light)
        right, _ = render_view(surface, texture, K, (cfg.width, cfg.height), T_right, light)
        for side, view in (("l", left), ("r", right)):
            write_image(image_path(root, folder, frame, side), cv2.cvtColor(to_srgb8(view, rng, cfg.noise),
                                                                            cv2.COLOR_RGB2BGR))
        write_scene_points(gt_path(root, folder, frame, "l"), xyz)
        if progress is not None:
            progress(1)
    (seq / "calibration.yaml").write_text(yaml.safe_dump(calibration_dict(cfg), sort_keys=False))
    write_npz(seq / "camera_poses.npz", poses=poses, frames=np.arange(1, cfg.frames + 1))


def split_entries(cfg: SynthConfig) -> dict[str, list[SplitEntry]]:
    """Train / val / test lists: the last sequence is held out for test, the one before for val. Val and test
    never share a sequence: with fewer than 3 sequences val is empty (and with one, train is the test sequence)."""
    n = cfg.sequences
    test_seq = n - 1
    val_seqs = [n - 2] if n >= 3 else []
    train_seqs = [i for i in range(n) if i != test_seq and i not in val_seqs] or [0]
    inner = range(2, cfg.frames)  # frames with both neighbours, as the frame ids [0, -1, 1] need

    def lines(seqs, frames):
        return [SplitEntry(sequence_folder(s), f, "l") for s in seqs for f in frames]

    return {
        "train": lines(train_seqs, inner),
        "val": lines(val_seqs, inner),
        "test": lines([test_seq], range(1, cfg.frames + 1)),
    }


def generate(cfg: SynthConfig, out: Path, force: bool = False, progress=None) -> Path:
    """Write a whole synthetic dataset to `out` atomically; returns `out`.

    Result: the SCARED layout, `splits/synthetic/{train,val,test}_files.txt`, the test split's
    `gt_depths.npz` (as official export_gt_depth) and `scene.json` with the generating config.
    """
    cfg.validate()
    out = Path(out)
    with atomic_dir(out, force=force, ours=SYNTH_ENTRIES) as tmp:
        for s in range(cfg.sequences):
            generate_sequence(cfg, s, tmp, progress)
        split_dir = tmp / "splits" / SPLIT_NAME
        for name, entries in split_entries(cfg).items():
            write_split(split_dir / f"{name}_files.txt", entries)
        export_gt_depths(tmp, split_dir / "test_files.txt", split_dir / "gt_depths.npz")
        (tmp / "scene.json").write_text(json.dumps({"generator": "dares synth", "config": asdict(cfg)}, indent=2))
    return out
