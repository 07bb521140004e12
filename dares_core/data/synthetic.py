"""Procedural da Vinci-like stereo endoscopy with exact ground truth, written in the SCARED layout.

Each sequence looks down a tissue lumen: a tube (millimetres, world frame) whose centreline turns, whose
radius has ring folds and bulges, closed at its far end, so that one view spans about 30 to 200 mm with
folds occluding the tissue behind them. One or two da Vinci-like instruments (8 mm shafts with a wrist
and two jaws) enter from the image border and move. Tissue is textured with mucosa and vessels (and
sometimes blood); instruments are metallic. A light at the endoscope tip gives inverse-square falloff and
specular highlights that move with it; there is vignetting, sometimes haze, and motion blur when the
camera moves fast. The rectified stereo pair advances, pans, rolls and pauses inside the lumen.

Geometry is triangle meshes ray-cast by open3d (Embree), so depth, the instrument mask and stereo
disparity (f * B / depth) are exact for every visible pixel. The scenes themselves are written by hand:
no library generates endoscopic scenes with ground truth.
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
from .scared import (
    SplitEntry,
    export_gt_depths,
    gt_path,
    image_path,
    instrument_mask_path,
    write_scene_points,
    write_split,
)

SPLIT_NAME = "synthetic"
TISSUE, INSTRUMENT = 0, 1  # what a pixel sees


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
    instruments: int = -1  # per sequence: 0, 1 or 2; -1 draws one or two

    def validate(self) -> None:
        if self.frames < 3 or self.sequences < 1 or self.width < 16 or self.height < 16:
            raise DaresError("synth needs --frames >= 3, --sequences >= 1 and an image of at least 16x16 pixels")
        if self.instruments not in (-1, 0, 1, 2):
            raise DaresError(f"--instruments {self.instruments}: give 0, 1 or 2 (or -1 for one or two at random)")

    def intrinsics(self) -> np.ndarray:
        """K (3,3) in pixels for the configured image size."""
        fx, fy = self.fx_norm * self.width, self.fy_norm * self.height
        return np.array([[fx, 0, 0.5 * self.width], [0, fy, 0.5 * self.height], [0, 0, 1]], dtype=np.float64)


def _mesh(vertices: np.ndarray, triangles: np.ndarray, normals: np.ndarray, texcoords: np.ndarray):
    """An open3d tensor triangle mesh with per-vertex normals and texture coordinates (float32)."""
    import open3d as o3d

    mesh = o3d.t.geometry.TriangleMesh()
    mesh.vertex.positions = o3d.core.Tensor(vertices.astype(np.float32))
    mesh.triangle.indices = o3d.core.Tensor(triangles.astype(np.int32))
    mesh.vertex.normals = o3d.core.Tensor(normals.astype(np.float32))
    mesh.vertex.texcoords = o3d.core.Tensor(texcoords.astype(np.float32))
    return mesh


def _grid_triangles(rows: int, cols: int) -> np.ndarray:
    """Two triangles per cell of a rows x cols vertex grid (row-major), (2*(rows-1)*(cols-1), 3)."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    a = (r * cols + c).ravel()
    return np.concatenate([np.stack([a, a + cols, a + 1], 1), np.stack([a + 1, a + cols, a + cols + 1], 1)])


class Lumen:
    """A tissue tube: centreline C(s) (s: arc length, mm) that turns, radius r(s, theta) with ring folds
    (inward ridges) and bulges, a closed far end. `frame(s)` gives (C, T, N, B): point, tangent, normal,
    binormal; texture coordinates are (s, theta * mean radius) in mm."""

    def __init__(self, rng: np.random.Generator, length: float = 240.0, step: float = 1.0, around: int = 160):
        self.s = np.arange(0.0, length + step, step)
        turns = rng.uniform(0.004, 0.012, 2)  # rad/mm: gentle bends, a turn of 20-70 degrees over the view
        waves = rng.uniform(60.0, 160.0, (2, 2))
        phases = rng.uniform(0, 2 * np.pi, (2, 2))
        bend = [t * np.sin(2 * np.pi * self.s[:, None] / w[None] + p[None]).sum(1) * w.mean() / (2 * np.pi)
                for t, w, p in zip(turns, waves, phases)]
        yaw, pitch = bend[0] - bend[0][0], bend[1] - bend[1][0]
        T = np.stack([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)], 1)
        self.C = np.cumsum(T * step, 0) - T[0] * step
        self.T = T
        self.N = np.cross(np.array([0.0, 1.0, 0.0]), T)
        self.N /= np.linalg.norm(self.N, axis=1, keepdims=True)
        self.B = np.cross(T, self.N)  # with N: the image x and y of a camera looking along T
        self.radius = rng.uniform(26.0, 36.0)
        self.folds = np.sort(rng.uniform(25.0, length - 20.0, int(rng.integers(4, 8))))
        self.fold_depth = rng.uniform(0.15, 0.4, len(self.folds))
        self.fold_width = rng.uniform(3.0, 7.0, len(self.folds))
        self.fold_angle = rng.uniform(0, 2 * np.pi, len(self.folds))
        self.bulges = np.stack([rng.uniform(20.0, length, 6), rng.uniform(0, 2 * np.pi, 6),
                                rng.uniform(8.0, 20.0, 6), rng.uniform(-0.25, 0.2, 6)], 1)
        theta = np.linspace(0, 2 * np.pi, around + 1)  # the seam's vertices doubled: texture continuous
        S, TH = np.meshgrid(self.s, theta, indexing="ij")
        R = self.radius_at(S, TH)
        radial = np.cos(TH)[..., None] * self.N[:, None] + np.sin(TH)[..., None] * self.B[:, None]
        V = self.C[:, None] + R[..., None] * radial
        normals = self._vertex_normals(V)
        texcoords = np.stack([S, TH * self.radius], -1)
        rows, cols = V.shape[:2]
        tris = _grid_triangles(rows, cols)
        cap_centre = len(self.s) * cols  # the far end, a disc closing the tube
        last = (rows - 1) * cols + np.arange(cols - 1)
        cap = np.stack([np.full(cols - 1, cap_centre), last + 1, last], 1)
        self.mesh = _mesh(np.concatenate([V.reshape(-1, 3), self.C[-1:]]), np.concatenate([tris, cap]),
                          np.concatenate([normals.reshape(-1, 3), -self.T[-1:]]),
                          np.concatenate([texcoords.reshape(-1, 2), [[self.s[-1], 0.0]]]))

    def radius_at(self, s: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """r(s, theta) mm: the base radius narrowed by folds and pushed by bulges."""
        r = np.full(np.broadcast(s, theta).shape, self.radius)
        for s0, depth, width, angle in zip(self.folds, self.fold_depth, self.fold_width, self.fold_angle):
            r = r * (1 - depth * np.exp(-((s - s0) / width) ** 2) * (0.65 + 0.35 * np.cos(theta - angle)))
        for s0, angle, width, amount in self.bulges:
            d_angle = np.angle(np.exp(1j * (theta - angle)))
            r = r * (1 + amount * np.exp(-((s - s0) ** 2 + (d_angle * self.radius) ** 2) / (2 * width**2)))
        return r

    @staticmethod
    def _vertex_normals(V: np.ndarray) -> np.ndarray:
        """Unit normals (pointing into the tube) of a grid of vertices (rows, cols, 3) from central differences."""
        ds = np.gradient(V, axis=0)
        dt = np.gradient(V, axis=1)
        n = np.cross(ds, dt)
        return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)

    def frame(self, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(point, tangent, normal, binormal) of the centreline at arc length s (linear interpolation)."""
        i = int(np.clip(np.searchsorted(self.s, s) - 1, 0, len(self.s) - 2))
        w = (s - self.s[i]) / (self.s[i + 1] - self.s[i])
        pick = [(1 - w) * a[i] + w * a[i + 1] for a in (self.C, self.T, self.N, self.B)]
        return pick[0], *(v / np.linalg.norm(v) for v in pick[1:])


class Instrument:
    """A da Vinci-like instrument: an 8 mm shaft from a port outside the view, a wrist and two jaws that open
    and close; its tip moves slowly. Defined in the frame of the camera's first pose (mm)."""

    SHAFT_RADIUS, WRIST_LENGTH, JAW_LENGTH = 4.0, 6.0, 11.0

    def __init__(self, rng: np.random.Generator, side: float, T_world_cam0: np.ndarray):
        self.T0 = T_world_cam0
        self.port = np.array([side * rng.uniform(22.0, 30.0), rng.uniform(-16.0, 16.0), rng.uniform(8.0, 20.0)])
        self.tip = np.array([side * rng.uniform(0.0, 12.0), rng.uniform(-10.0, 10.0), rng.uniform(48.0, 80.0)])
        self.sway = rng.uniform(3.0, 8.0, 3) * np.array([1.0, 1.0, 1.5])
        self.rate = rng.uniform(0.15, 0.45, 4)  # Hz: x, y, z of the tip, jaw opening
        self.phase = rng.uniform(0, 2 * np.pi, 4)
        self.roll = rng.uniform(0, np.pi)

    def mesh(self, time: float):
        """The instrument at `time` s as a tensor mesh in world coordinates."""
        import open3d as o3d

        tip = self.tip + self.sway * np.sin(2 * np.pi * self.rate[:3] * time + self.phase[:3])
        opening = np.deg2rad(14.0 * (1 + np.sin(2 * np.pi * self.rate[3] * time + self.phase[3])))
        axis = tip - self.port
        axis /= np.linalg.norm(axis)
        R = _rotation_to(axis) @ rotation_xyz(0.0, 0.0, self.roll)  # local z along the shaft
        parts = []
        # 5 mm segments: ray casting (float32) is 0.1 mm off on triangles as long as the whole shaft
        shaft = o3d.geometry.TriangleMesh.create_cylinder(self.SHAFT_RADIUS, 200.0, 32, 40)
        shaft.translate((0, 0, -100.0))  # ends at the wrist
        wrist = o3d.geometry.TriangleMesh.create_cylinder(0.8 * self.SHAFT_RADIUS, self.WRIST_LENGTH, 32, 1)
        wrist.translate((0, 0, self.WRIST_LENGTH / 2))
        parts += [shaft, wrist]
        for sign in (-1.0, 1.0):
            jaw = o3d.geometry.TriangleMesh.create_box(1.6, 2.6, self.JAW_LENGTH)
            jaw.translate((-0.8 + sign * 0.9, -1.3, 0.0))
            jaw.rotate(rotation_xyz(0.0, sign * opening, 0.0), center=(0, 0, 0))
            jaw.translate((0, 0, self.WRIST_LENGTH))
            parts.append(jaw)
        whole = parts[0]
        for part in parts[1:]:
            whole += part
        whole.compute_vertex_normals()
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, tip - axis * self.WRIST_LENGTH
        whole.transform(self.T0 @ T)
        mesh = o3d.t.geometry.TriangleMesh.from_legacy(whole)
        mesh.vertex.texcoords = o3d.core.Tensor(np.zeros((len(whole.vertices), 2), np.float32))
        return mesh


def _rotation_to(axis: np.ndarray) -> np.ndarray:
    """A rotation taking +z to the unit vector `axis`."""
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(z, axis), float(np.dot(z, axis))
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


class TissueTexture:
    """Albedo (RGB in [0,1]) over texture coordinates (mm): mottled mucosa with branching vessels and, in some
    scenes, blood."""

    def __init__(self, rng: np.random.Generator, extent_mm: float = 260.0, mm_per_px: float = 0.12):
        self.extent, self.res = extent_mm, mm_per_px
        n = int(extent_mm / mm_per_px)
        mottle = np.zeros((n, n), np.float32)
        for cells, weight in ((8, 0.5), (32, 0.3), (128, 0.15), (512, 0.05)):
            grid = rng.standard_normal((cells, cells)).astype(np.float32)
            mottle += weight * cv2.resize(grid, (n, n), interpolation=cv2.INTER_CUBIC)
        mottle = (mottle - mottle.mean()) / (mottle.std() + 1e-6)
        base = np.array([0.78, 0.40, 0.36], np.float32) * (1 + 0.15 * mottle[..., None])
        base[..., 1:] *= (1 + 0.10 * mottle[..., None])
        vessels = np.zeros((n, n), np.float32)
        for _ in range(120):
            self._draw_vessel(rng, vessels, rng.uniform(0, n, 2), rng.uniform(0, 2 * np.pi), rng.uniform(2.0, 7.0), 0)
        vessels = cv2.GaussianBlur(vessels, (0, 0), 1.2)
        a = np.clip(vessels, 0, 1)[..., None] * 0.85
        image = base * (1 - a) + np.array([0.42, 0.06, 0.08], np.float32) * a
        if rng.random() < 0.4:  # blood: dark red stains
            stains = np.zeros((n, n), np.float32)
            for _ in range(int(rng.integers(2, 6))):
                centre = tuple(int(c) for c in rng.uniform(0, n, 2))
                cv2.circle(stains, centre, int(rng.uniform(20, 120)), 1.0, -1)
            stains = cv2.GaussianBlur(stains, (0, 0), 15)[..., None] * 0.8
            image = image * (1 - stains) + np.array([0.30, 0.02, 0.03], np.float32) * stains
        self.image = np.clip(image, 0, 1)

    @staticmethod
    def _draw_vessel(rng, canvas, start, heading, width, depth):
        """A meandering vessel of `width` px that may branch into thinner ones (recursively)."""
        p, points = start, [start]
        for _ in range(int(rng.uniform(15, 50))):
            heading += rng.normal(0, 0.3)
            p = p + 10.0 * np.array([np.cos(heading), np.sin(heading)])
            points.append(p)
            if depth < 2 and rng.random() < 0.05:
                branch = heading + rng.choice([-1.0, 1.0]) * 0.8
                TissueTexture._draw_vessel(rng, canvas, p, branch, max(width * 0.6, 1.0), depth + 1)
        cv2.polylines(canvas, [np.round(np.array(points)).astype(np.int32)], False, 1.0, max(int(width), 1),
                      cv2.LINE_AA)

    def sample(self, uv: np.ndarray) -> np.ndarray:
        """Albedo (...,3) at texture coordinates uv (...,2) mm, bilinear, mirrored beyond the extent."""
        mx = (uv[..., 0] / self.res).astype(np.float32)
        my = ((uv[..., 1] + self.extent / 2) / self.res).astype(np.float32)
        return cv2.remap(self.image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def rotation_xyz(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx from angles in radians."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def camera_trajectory(rng: np.random.Generator, lumen: Lumen, frames: int, fps: float) -> np.ndarray:
    """Camera-to-world poses (frames,4,4), mm, inside the lumen looking down it: it advances and withdraws
    with pauses at either end (a clipped sinusoid), sways sideways, pans and rolls slowly."""
    t = np.arange(frames) / fps
    rate, phase = rng.uniform(0.08, 0.2), rng.uniform(0, 2 * np.pi)
    advance = rng.uniform(8.0, 18.0) * np.clip(1.6 * np.sin(2 * np.pi * rate * t + phase), -1, 1)
    s = rng.uniform(18.0, 28.0) + advance + rng.uniform(8.0, 18.0)
    waves = rng.uniform(0.05, 0.25, 5)
    phases = rng.uniform(0, 2 * np.pi, 5)
    amp = np.concatenate([rng.uniform(2.0, 5.0, 2), np.deg2rad(rng.uniform(3.0, 8.0, 2)),
                          np.deg2rad(rng.uniform(4.0, 12.0, 1))])
    sway, pan, roll = np.split(amp[None] * np.sin(2 * np.pi * waves[None] * t[:, None] + phases[None]), [2, 4], 1)
    poses = np.tile(np.eye(4), (frames, 1, 1))
    for i in range(frames):
        C, T, N, B = lumen.frame(s[i])
        base = np.stack([N, B, T], 1)  # camera x, y (down), z (forward) in the world
        poses[i, :3, :3] = base @ rotation_xyz(pan[i, 1], pan[i, 0], roll[i, 0])
        poses[i, :3, 3] = C + sway[i, 0] * N + sway[i, 1] * B
    return poses


@dataclass(frozen=True)
class Optics:
    """Per-sequence camera and light effects: haze density (1/mm, 0 = clear), highlight strength, exposure."""

    haze: float
    specular: float
    exposure: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Optics:
        haze = rng.uniform(0.002, 0.006) if rng.random() < 0.3 else 0.0  # smoke from cautery
        return cls(haze, rng.uniform(0.25, 0.5), rng.uniform(0.9, 1.2))


class RayScene:
    """Triangle meshes ray-cast by open3d (Embree), with smooth normals and texture coordinates at the hits."""

    def __init__(self):
        import open3d as o3d

        self.scene = o3d.t.geometry.RaycastingScene()
        self.attributes: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def add(self, mesh) -> int:
        """Add a tensor mesh with vertex normals and texcoords; returns its geometry id."""
        gid = self.scene.add_triangles(mesh)
        self.attributes[gid] = (mesh.triangle.indices.numpy(), mesh.vertex.normals.numpy(),
                                mesh.vertex.texcoords.numpy())
        return gid

    def cast(self, origin: np.ndarray, directions: np.ndarray):
        """Rays from `origin` (3,) along `directions` (N,3) -> (t (N,) in direction lengths, inf on a miss;
        geometry ids (N,); unit normals (N,3); texture coordinates (N,2))."""
        import open3d as o3d

        rays = np.concatenate([np.broadcast_to(origin, directions.shape), directions], 1).astype(np.float32)
        hit = self.scene.cast_rays(o3d.core.Tensor(rays))
        t, geometry = hit["t_hit"].numpy().astype(np.float64), hit["geometry_ids"].numpy()
        primitive, bary = hit["primitive_ids"].numpy(), hit["primitive_uvs"].numpy().astype(np.float64)
        weights = np.stack([1 - bary.sum(1), bary[:, 0], bary[:, 1]], 1)
        normals, uv = np.zeros((len(t), 3)), np.zeros((len(t), 2))
        for gid, (triangles, vertex_normals, texcoords) in self.attributes.items():
            sel = geometry == gid
            corners = triangles[primitive[sel]]
            normals[sel] = np.einsum("nk,nkc->nc", weights[sel], vertex_normals[corners])
            uv[sel] = np.einsum("nk,nkc->nc", weights[sel], texcoords[corners])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        return t, geometry, normals, uv


def render_view(scene: RayScene, instrument_ids: set[int], texture: TissueTexture, optics: Optics, K: np.ndarray,
                size: tuple[int, int], T_world_cam: np.ndarray, light_pos: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one view. Returns (linear RGB radiance (H,W,3), camera-frame XYZ (H,W,3) mm (0 where nothing is
    hit), what each pixel sees (H,W) uint8: TISSUE or INSTRUMENT)."""
    width, height = size
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    xn, yn = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    R, c = T_world_cam[:3, :3], T_world_cam[:3, 3]
    directions = np.stack([xn, yn, np.ones_like(xn)], -1) @ R.T  # unit camera z: the ray parameter is depth
    t, geometry, normal, uv = scene.cast(c, directions.reshape(-1, 3))
    seen = np.isfinite(t).reshape(height, width)
    depth = np.where(seen, t.reshape(height, width), 0.0)
    on_instrument = np.isin(geometry.reshape(height, width), list(instrument_ids)) & seen
    P = c + directions * depth[..., None]
    normal = normal.reshape(height, width, 3)
    normal *= np.where((normal * directions).sum(-1, keepdims=True) > 0, -1.0, 1.0)  # facing the camera
    to_light = light_pos - P
    r = np.maximum(np.linalg.norm(to_light, axis=-1, keepdims=True), 1e-6)
    to_light /= r
    to_eye = -directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    half = to_light + to_eye
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    diffuse = np.clip((normal * to_light).sum(-1, keepdims=True), 0, None)
    gloss = (normal * half).sum(-1, keepdims=True).clip(0, None)
    metal = np.array([0.30, 0.31, 0.33])  # brushed steel
    albedo = np.where(on_instrument[..., None], metal, texture.sample(uv.reshape(height, width, 2)))
    specular = np.where(on_instrument[..., None], 1.0 * gloss**120, optics.specular * gloss**50)
    falloff = (40.0 / r) ** 2
    vignette = (1.0 / (1.0 + 0.35 * (xn * xn + yn * yn)) ** 2)[..., None]
    radiance = optics.exposure * falloff * vignette * (albedo * diffuse + specular)
    if optics.haze:
        through = np.exp(-optics.haze * depth)[..., None]
        radiance = radiance * through + np.array([0.55, 0.5, 0.5]) * 0.5 * (1 - through)
    radiance = np.where(seen[..., None], radiance, 0.0)
    xyz = np.stack([xn * depth, yn * depth, depth], -1)
    return radiance, xyz, np.where(on_instrument, INSTRUMENT, TISSUE).astype(np.uint8)


def motion_blur(radiance: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """Blur (H,W,3) along the image motion `shift_px` (2,) of one exposure; none below a pixel."""
    length = float(np.hypot(*shift_px))
    if length < 1.0:
        return radiance
    n = int(np.ceil(length)) | 1
    kernel = np.zeros((n, n), np.float32)
    d = shift_px / length * (n - 1) / 2
    cv2.line(kernel, (int(round(n / 2 - d[0] - 0.5)), int(round(n / 2 - d[1] - 0.5))),
             (int(round(n / 2 + d[0] - 0.5)), int(round(n / 2 + d[1] - 0.5))), 1.0, 1, cv2.LINE_AA)
    return cv2.filter2D(radiance.astype(np.float32), -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


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


def sequence_folder(index: int) -> str:
    """Relative folder of synthetic sequence `index` (0-based), SCARED-style."""
    return f"dataset1/keyframe{index + 1}"


@dataclass
class Sequence:
    """Everything one synthetic sequence is made of, drawn from (seed, index): the lumen, its texture, the
    camera poses (frames,4,4) camera-to-world mm, the instruments and the optics."""

    lumen: Lumen
    texture: TissueTexture
    poses: np.ndarray
    instruments: list[Instrument]
    optics: Optics

    @classmethod
    def draw(cls, cfg: SynthConfig, index: int) -> Sequence:
        rng = np.random.default_rng([cfg.seed, index])
        lumen = Lumen(rng)
        texture = TissueTexture(rng)
        poses = camera_trajectory(rng, lumen, cfg.frames, cfg.fps)
        count = cfg.instruments if cfg.instruments >= 0 else int(rng.integers(1, 3))
        sides = [-1.0, 1.0] if count == 2 else list(rng.choice([-1.0, 1.0], count))
        instruments = [Instrument(rng, side, poses[0]) for side in sides]
        return cls(lumen, texture, poses, instruments, Optics.draw(rng))

    def instrument_meshes(self, time: float) -> list:
        """The instruments at `time` s, world frame."""
        return [instrument.mesh(time) for instrument in self.instruments]

    def scene(self, time: float) -> tuple[RayScene, set[int]]:
        """The ray-casting scene at `time` s and the geometry ids of its instruments."""
        scene = RayScene()
        scene.add(self.lumen.mesh)
        return scene, {scene.add(mesh) for mesh in self.instrument_meshes(time)}


def image_motion(K: np.ndarray, T_before: np.ndarray, T_now: np.ndarray, depth_mm: float = 60.0) -> np.ndarray:
    """Pixel shift (2,) of the point `depth_mm` ahead of the camera between two camera-to-world poses."""
    point = T_before[:3, :3] @ np.array([0.0, 0.0, depth_mm]) + T_before[:3, 3]
    cam = T_now[:3, :3].T @ (point - T_now[:3, 3])
    return (K @ cam)[:2] / cam[2] - K[:2, 2]


def generate_sequence(cfg: SynthConfig, index: int, root: Path, progress=None) -> None:
    """Render and write sequence `index` under `root` (images, ground truth depth and instrument mask of the
    left eye, camera poses, calibration)."""
    sequence = Sequence.draw(cfg, index)
    rng = np.random.default_rng([cfg.seed, index, 1])  # sensor noise
    K = cfg.intrinsics()
    folder = sequence_folder(index)
    for i, T in enumerate(sequence.poses):
        frame = i + 1
        scene, instrument_ids = sequence.scene(i / cfg.fps)
        right_offset = T[:3, :3] @ np.array([cfg.baseline_mm, 0.0, 0.0])
        light = T[:3, 3] + 0.5 * right_offset  # the light guide sits between the two lenses
        T_right = T.copy()
        T_right[:3, 3] += right_offset
        blur = 0.5 * image_motion(K, sequence.poses[max(i - 1, 0)], T)  # half a frame of exposure
        views = {}
        for side, pose in (("l", T), ("r", T_right)):
            views[side] = render_view(scene, instrument_ids, sequence.texture, sequence.optics, K,
                                      (cfg.width, cfg.height), pose, light)
            radiance = motion_blur(views[side][0], blur)
            write_image(image_path(root, folder, frame, side),
                        cv2.cvtColor(to_srgb8(radiance, rng, cfg.noise), cv2.COLOR_RGB2BGR))
        _, xyz, seen = views["l"]
        write_scene_points(gt_path(root, folder, frame, "l"), xyz)
        write_image(instrument_mask_path(root, folder, frame), (seen == INSTRUMENT).astype(np.uint8) * 255)
        if progress is not None:
            progress(1)
    seq = root / folder
    (seq / "calibration.yaml").write_text(yaml.safe_dump(calibration_dict(cfg), sort_keys=False))
    write_npz(seq / "camera_poses.npz", poses=sequence.poses, frames=np.arange(1, cfg.frames + 1))


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


def write_stereo_video(keyframe: Path, path: Path, fps: float, layout: str = "side-by-side") -> Path:
    """A keyframe's left and right frames side by side (or over-under) in one MJPG video at high quality, as a
    stereo endoscope's capture card records them (what `dares prepare-video` reads)."""
    lefts = sorted((Path(keyframe) / "image_02" / "data").glob("*.png"))
    writer = None
    for left_path in lefts:
        left, right = cv2.imread(str(left_path)), cv2.imread(str(Path(keyframe) / "image_03" / "data" / left_path.name))
        both = np.hstack([left, right]) if layout == "side-by-side" else np.vstack([left, right])
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, both.shape[1::-1])
            writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
        writer.write(both)
    writer.release()
    return path


def write_opencv_stereo_calibration(path: Path, K: np.ndarray, baseline_mm: float) -> Path:
    """An OpenCV stereo calibration YAML (M1 D1 M2 D2 R T, T in mm) of a rectified rig: both eyes K (3,3), no
    distortion, the right eye baseline_mm along x."""
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    for name, value in (("M1", K), ("D1", np.zeros((1, 5))), ("M2", K), ("D2", np.zeros((1, 5))), ("R", np.eye(3)),
                        ("T", np.array([[-baseline_mm], [0.0], [0.0]]))):
        fs.write(name, value)
    fs.release()
    return path
