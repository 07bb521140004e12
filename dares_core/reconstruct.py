"""`dares reconstruct`: 3D from depth. Per-frame point clouds as the official evaluate_3d_reconstruction.py
writes them, or a sequence fused into one surface (a TSDF, open3d's VoxelBlockGrid, on CUDA when present).

Units: depth and poses in mm as everywhere in dares_core; open3d's TSDF works in metres (depth_scale 1000).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .data.scared import SplitEntry, image_path
from .errors import DaresError
from .evaluate import MAX_DEPTH, MIN_DEPTH
from .files import write_ply
from .preprocess import network_batch, read_rgb

OFFICIAL_SPLIT = Path(__file__).parent / "splits" / "endovis" / "3d_reconstruction.txt"


def official_cloud_name(entry: SplitEntry) -> str:
    """The official file name: sequence digit, keyframe digit and the frame, e.g. 1_1_000005.ply."""
    return f"{entry.folder[7]}_{entry.folder[-1]}_{entry.frame:06d}.ply"


def official_point_clouds(predictor, root: Path, entries: list[SplitEntry], gt_depths: np.ndarray, out: Path,
                          progress=None) -> list[Path]:
    """evaluate_3d_reconstruction.py, frame by frame: the official preprocessing at the network size, depth =
    1/disparity, median-scaled to gt_depths[i] (resized nearest to the prediction) over 1e-3..150 mm, clamped
    there, and an open3d RGBD cloud of the network-size image with the official intrinsics (metres: open3d's
    depth_scale 1000). As the official, gt_depths is the test split's gt_depths.npz and frame i takes its
    i-th entry, whichever frame that is: kept, so that the files compare with the paper's."""
    import cv2
    import open3d as o3d

    from .data.scared import OFFICIAL_K

    height, width = predictor.size
    K = OFFICIAL_K[:3, :3].astype(np.float64) * np.array([[width], [height], [1.0]])
    intrinsic = o3d.camera.PinholeCameraIntrinsic(width, height, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    written = []
    for i, entry in enumerate(entries):
        rgb = network_batch([read_rgb(image_path(root, entry.folder, entry.frame, entry.side))], (height, width))
        disparity = predictor.predict(rgb).disparity[0].float().cpu().numpy()
        depth = 1.0 / disparity
        gt = cv2.resize(gt_depths[i], (width, height), interpolation=cv2.INTER_NEAREST)
        depth = np.clip(scale_to_ground_truth(depth, gt), MIN_DEPTH, MAX_DEPTH)
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(rgb[0].numpy())), o3d.geometry.Image(depth.astype(np.float32)),
            convert_rgb_to_intensity=False)
        cloud = o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, intrinsic)
        path = out / official_cloud_name(entry)
        write_ply(path, cloud)
        written.append(path)
        if progress is not None:
            progress(1)
    return written


MIN_OBSERVATIONS = 3.0  # the surface is where at least this many frames saw it (open3d's default weight threshold)


class TsdfFusion:
    """Depth frames integrated into a truncated signed distance volume (open3d VoxelBlockGrid).

    voxel_mm: voxel edge; trunc_mm: truncation distance; max_depth_mm: depth beyond is not integrated.
    block_count: blocks (16^3 voxels, BLOCK_BYTES each) the grid has room for at first; open3d doubles the room
    whenever the surface reaches new blocks (a 40-frame synthetic sequence at 1 mm touches about 160)."""

    BLOCK_BYTES = 16**3 * (1 + 1 + 3) * 4  # tsdf, weight and colour, float32

    def __init__(self, voxel_mm: float = 1.0, trunc_mm: float = 4.0, max_depth_mm: float = 150.0,
                 device: str | None = None, block_count: int = 1000):
        import open3d as o3d
        import open3d.core as o3c

        if not 0 < voxel_mm < trunc_mm:
            raise DaresError(f"voxel {voxel_mm} mm, truncation {trunc_mm} mm: give 0 < --voxel-mm < --trunc-mm")
        self.device = o3c.Device(device or ("CUDA:0" if o3c.cuda.is_available() else "CPU:0"))
        self.voxel_m, self.max_depth_m = voxel_mm / 1000.0, max_depth_mm / 1000.0
        self.grid = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)), voxel_size=self.voxel_m, block_resolution=16, block_count=block_count,
            device=self.device)
        self.trunc_multiplier = trunc_mm / voxel_mm
        self.frames = 0
        self._touched: list[np.ndarray] = []  # (M,3) block keys each frame since the last points() integrated into
        self._surface: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # block key: its points and colours
        self._surface_threshold: float | None = None  # the weight threshold _surface was extracted at

    def integrate(self, rgb: np.ndarray, depth_mm: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray,
                  max_mib: float = math.inf) -> bool:
        """rgb (H,W,3) uint8; depth_mm (H,W), NaN or <= 0 invalid; K (3,3) pixels; T_world_cam (4,4) mm. Returns
        False, fusing nothing, where the frame would make the grid grow beyond max_mib MiB."""
        import open3d as o3d
        import open3d.core as o3c

        depth = np.nan_to_num(depth_mm, nan=0.0).clip(0, None).astype(np.float32)
        world_to_cam = scale_translation(np.linalg.inv(T_world_cam), 1e-3)  # open3d works in metres here
        depth_t = o3d.t.geometry.Image(o3c.Tensor(depth)).to(self.device)
        color_t = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(rgb).astype(np.float32) / 255.0)).to(self.device)
        intrinsic = o3c.Tensor(K.astype(np.float64))
        extrinsic = o3c.Tensor(world_to_cam.astype(np.float64))
        blocks = self.grid.compute_unique_block_coordinates(depth_t, intrinsic, extrinsic, 1000.0, self.max_depth_m,
                                                             self.trunc_multiplier)
        if math.isfinite(max_mib) and self._room_after(blocks) * self.BLOCK_BYTES > max_mib * 2**20:
            return False
        self.grid.integrate(blocks, depth_t, color_t, intrinsic, extrinsic, 1000.0, self.max_depth_m,
                            self.trunc_multiplier)
        self._touched.append(blocks.cpu().numpy())
        self.frames += 1
        return True

    def _room_after(self, blocks) -> int:
        """Blocks the grid will have room for once `blocks` (M,3) are in it: open3d grows its hash map to twice
        its room, or to what is needed if that is more, whenever it is full."""
        import open3d.core as o3c

        hashmap = self.grid.hashmap()
        found = int(hashmap.find(blocks)[1].to(o3c.int64).sum().item()) if len(blocks) else 0
        needed = hashmap.size() + len(blocks) - found
        room = hashmap.capacity()
        return room if needed <= room else max(2 * room, needed)

    def memory_mib(self) -> float:
        """MiB the grid's blocks take now (its room, used or not)."""
        return self.grid.hashmap().capacity() * self.BLOCK_BYTES / 2**20

    def points(self, min_observations: float = MIN_OBSERVATIONS, max_points: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The surface's points (N,3) float32 metres in the world frame and their colours (N,3) uint8, where more
        than `min_observations` frames saw it (open3d's weight threshold, 3 by default): the points open3d's
        extract_point_cloud gives, at most `max_points` of them (evenly thinned).

        Incremental: only the blocks integrated since the last call (and the blocks whose surface reaches into
        them) are extracted again, so a call costs what the frames since the last one touched, not the map's
        size. open3d extracts only whole grids, hence surface_points."""
        if self._surface_threshold != min_observations:  # every block again
            self._surface, self._surface_threshold = {}, min_observations
            self._touched = [self.grid.hashmap().key_tensor()[self.grid.hashmap().active_buf_indices()]
                             .cpu().numpy()] if self.frames else []
        if self._touched:
            touched = np.concatenate(self._touched)
            self._touched = []
            # a block's surface points reach one voxel into its +x, +y and +z neighbours
            dirty = np.unique(np.concatenate([touched - step for step in np.vstack([np.zeros(3), np.eye(3)])
                                              .astype(touched.dtype)]), axis=0)
            for key in map(tuple, dirty.tolist()):
                self._surface.pop(key, None)
            for key, block_points, block_colors in surface_points(self.grid, dirty, self.voxel_m, min_observations):
                self._surface[key] = (block_points, block_colors)
        count = sum(len(p) for p, _ in self._surface.values())
        step = max(1, math.ceil(count / max_points)) if max_points else 1
        if not count:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        blocks = list(self._surface.values())
        starts = -np.cumsum([0] + [len(p) for p, _ in blocks[:-1]]) % step  # every step-th point of them all
        return (np.concatenate([p[start::step] for (p, _), start in zip(blocks, starts)]),
                np.concatenate([c[start::step] for (_, c), start in zip(blocks, starts)]))

    def mesh(self, min_observations: float = MIN_OBSERVATIONS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The surface as triangles where at least `min_observations` frames saw it: vertices (V,3) float32
        metres in the world frame, triangles (T,3) int64 vertex indices, vertex colours (V,3) uint8."""
        if not self.frames:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.uint8)
        mesh = self.grid.extract_triangle_mesh(weight_threshold=min_observations).cpu()
        if "positions" not in mesh.vertex or "indices" not in mesh.triangle:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.uint8)
        colors = (mesh.vertex.colors.numpy().clip(0, 1) * 255).round().astype(np.uint8)
        return mesh.vertex.positions.numpy().astype(np.float32), mesh.triangle.indices.numpy().astype(np.int64), colors

    def surface(self):
        """(triangle mesh, point cloud), legacy open3d geometry in mm."""
        mesh = self.grid.extract_triangle_mesh(weight_threshold=MIN_OBSERVATIONS).to_legacy()
        cloud = self.grid.extract_point_cloud(weight_threshold=MIN_OBSERVATIONS).to_legacy()
        for geometry in (mesh, cloud):
            geometry.scale(1000.0, center=np.zeros(3))
        return mesh, cloud


def surface_points(grid, keys: np.ndarray, voxel_m: float, weight_threshold: float):
    """Yields (block key, points (N,3) float32 m, colours (N,3) uint8) for each block of `keys` (M,3) that is in
    `grid` (an open3d VoxelBlockGrid of tsdf, weight and colour) and holds surface: open3d's extract_point_cloud
    rule, for these blocks alone. A point lies where the TSDF changes sign between a voxel and its +x, +y or +z
    neighbour, both seen more than weight_threshold times, linearly interpolated (colour too)."""
    import open3d.core as o3c

    hashmap = grid.hashmap()
    res = grid.attribute("weight").shape[1]  # voxels per block edge; attributes are (blocks, z, y, x, channels)

    def gather(block_keys: np.ndarray, layer=()):
        """tsdf, weight (M,...), colour (M,...,3) of blocks (with `layer`, index of that part of each), and found
        (M,); weight 0 where a block is absent."""
        buf, found = hashmap.find(o3c.Tensor(np.ascontiguousarray(block_keys, np.int32), device=hashmap.device))
        index, found = buf[found].to(o3c.int64), found.cpu().numpy()
        values = []
        for name in ("tsdf", "weight", "color"):
            attribute = grid.attribute(name)
            part = (attribute.numpy()[(index.numpy(), *layer)] if attribute.is_cpu  # a view: numpy gathers fast,
                    else attribute[index].cpu().numpy()[(slice(None), *layer)])  # open3d's indexing slowly
            array = np.zeros((len(block_keys), *part.shape[1:]), np.float32)
            array[found] = part
            values.append(array)
        return values[0][..., 0], values[1][..., 0], values[2], found

    keys = np.asarray(keys, np.int64).reshape(-1, 3)
    tsdf, weight, color, found = gather(keys)
    keys, tsdf, weight, color = keys[found], tsdf[found], weight[found], color[found]
    blocks, points, colors = [], [], []
    for axis in range(3):  # x, y, z: array axes 3, 2, 1
        array_axis, step = 3 - axis, np.eye(3, dtype=np.int64)[axis]
        before = (slice(None),) * array_axis
        # each voxel's +axis neighbour: the next voxel of its block, or for its last layer the next block's first
        first = gather(keys + step, (*before[1:], slice(0, 1)))[:3]
        last, lo, hi = (before + (slice(a, b),) for a, b in ((res - 1, res), (0, res - 1), (1, res)))
        for (o_tsdf, o_weight, o_color), (n_tsdf, n_weight, n_color), offset in (
                ((tsdf[lo], weight[lo], color[lo]), (tsdf[hi], weight[hi], color[hi]), 0),
                ((tsdf[last], weight[last], color[last]), first, res - 1)):
            crossing = (o_weight > weight_threshold) & (n_weight > weight_threshold) & (o_tsdf * n_tsdf < 0)
            block, *zyx = np.nonzero(crossing)
            t_o, t_n = o_tsdf[(block, *zyx)], n_tsdf[(block, *zyx)]
            ratio = -t_o / (t_n - t_o)
            xyz = np.stack(zyx[::-1], 1).astype(np.float32) + keys[block].astype(np.float32) * res
            xyz[:, axis] += offset + ratio
            blocks.append(block)
            points.append(xyz * voxel_m)
            colors.append((1 - ratio[:, None]) * o_color[(block, *zyx)] + ratio[:, None] * n_color[(block, *zyx)])
    block, points, colors = np.concatenate(blocks), np.concatenate(points), np.concatenate(colors)
    order = np.argsort(block, kind="stable")
    bounds = np.searchsorted(block[order], np.arange(len(keys) + 1))
    points = points[order].astype(np.float32)
    colors = colors[order].clip(0, 255).round().astype(np.uint8)  # the grid keeps colour in 0..255
    for b, key in enumerate(map(tuple, keys.tolist())):
        if bounds[b + 1] > bounds[b]:
            yield key, points[bounds[b]:bounds[b + 1]], colors[bounds[b]:bounds[b + 1]]


def surface_distances(reconstruction: np.ndarray, reference: np.ndarray) -> dict:
    """Accuracy (mean distance of reconstructed points to the reference), completeness (reference to
    reconstruction) and their mean, the Chamfer distance; points (N,3) mm."""
    import open3d as o3d

    def cloud(points):
        return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))

    accuracy = np.asarray(cloud(reconstruction).compute_point_cloud_distance(cloud(reference)))
    completeness = np.asarray(cloud(reference).compute_point_cloud_distance(cloud(reconstruction)))
    return {"accuracy_mm": float(accuracy.mean()), "completeness_mm": float(completeness.mean()),
            "chamfer_mm": float((accuracy.mean() + completeness.mean()) / 2)}


def world_points(depth_mm: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray, stride: int = 1) -> np.ndarray:
    """Valid pixels of a depth map (H,W) mm as world points (N,3) mm, every `stride`-th pixel each way."""
    import torch

    from .geometry import backproject, scale_intrinsics, transform_points

    depth = torch.from_numpy(np.ascontiguousarray(depth_mm[::stride, ::stride], np.float64))[None, None]
    K_strided = scale_intrinsics(torch.from_numpy(np.asarray(K, np.float64)), 1 / stride, 1 / stride)
    points = transform_points(torch.from_numpy(np.asarray(T_world_cam, np.float64))[None],
                              backproject(depth, K_strided[None]))[0].reshape(3, -1).T.numpy()
    valid = np.isfinite(depth_mm[::stride, ::stride]) & (depth_mm[::stride, ::stride] > 0)
    return points[valid.reshape(-1)]


def scale_to_ground_truth(depth: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """depth (H,W) times median(gt) / median(depth) over the pixels with ground truth in the SCARED range
    (1e-3..150 mm) and a finite prediction, as the SCARED protocol scales each frame."""
    valid = (gt > MIN_DEPTH) & (gt < MAX_DEPTH) & np.isfinite(depth)
    return depth * np.median(gt[valid]) / np.median(depth[valid])


def scale_translation(T: np.ndarray, factor: float) -> np.ndarray:
    """A copy of the (4,4) transform T with its translation times `factor` (a unit change: 1000 for m -> mm)."""
    T = np.array(T, dtype=np.float64)
    T[:3, 3] *= factor
    return T


def chain_poses(relative: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Camera-to-world poses (N+1,4,4) from relative poses T_i (camera i's points into camera i+1's, as the pose
    network and `dares pose` give them): P[i+1] = P[i] @ inv(T_i)."""
    poses = [np.eye(4) if start is None else start]
    for T in relative:
        poses.append(poses[-1] @ np.linalg.inv(T))
    return np.stack(poses)


def fuse_keyframe(root: Path, folder: str, fusion: TsdfFusion, K_image: np.ndarray, depth_of, poses: dict,
                  frames: list[int], ground_truth_of=None, ground_truth_poses: dict | None = None,
                  progress=None) -> np.ndarray | None:
    """Integrate a keyframe folder's frames: depth_of(frame, rgb) -> depth (H,W) mm, poses[frame] camera-to-world
    mm. With ground_truth_of(frame) -> depth (H,W) mm and ground_truth_poses, returns the ground-truth surface
    those frames show within the fused depth range (world points (N,3) mm, thinned to half a voxel), the
    reference of surface_distances; else None."""
    reference = []
    for frame in frames:
        rgb = read_rgb(image_path(root, folder, frame))
        fusion.integrate(rgb, depth_of(frame, rgb), K_image, poses[frame])
        if ground_truth_of is not None:
            gt = ground_truth_of(frame)
            gt = np.where(gt < fusion.max_depth_m * 1000.0, gt, np.nan)
            reference.append(world_points(gt, K_image, ground_truth_poses[frame], stride=2))
        if progress is not None:
            progress(1)
    if not reference:
        return None
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.concatenate(reference)))
    return np.asarray(cloud.voxel_down_sample(fusion.voxel_m * 1000.0 / 2).points)


def why_empty(fusion: TsdfFusion, every: int) -> str:
    """Why a fused reconstruction has no surface, in one line: too little overlap for the observation threshold,
    or no depth inside the volume at all."""
    if len(fusion.points(min_observations=1.0)[0]):
        return (f"the surface is where at least {MIN_OBSERVATIONS:g} frames saw a point, and none of the "
                f"{fusion.frames} fused frames (--every {every}) overlap that much: fuse more frames (a smaller "
                "--every, a longer keyframe)")
    return f"nothing was fused from {fusion.frames} frames: check --max-depth-mm against the depth, and the poses"


def network_poses(root: Path, folder: str, frames: list[int], gt_poses: dict, pose_weights: Path,
                  device) -> dict:
    """Camera-to-world poses (4,4) mm of consecutive `frames` of a keyframe folder chained from the pose network,
    started at the first frame's ground-truth pose (identity without), translation scaled to the ground-truth path
    length when there is one."""
    from .pose import load_pose_net, pose_units, predict_relative_poses

    network = load_pose_net(pose_weights)
    steps = [SplitEntry(folder, f, "l") for f in frames[:-1]]  # pairs (f, f + 1)
    relative = predict_relative_poses(network, root, steps, pose_units(pose_weights).input_size, device)
    if gt_poses:
        gt_steps = [np.linalg.norm(gt_poses[b][:3, 3] - gt_poses[a][:3, 3]) for a, b in zip(frames, frames[1:])]
        relative[:, :3, 3] *= sum(gt_steps) / max(np.linalg.norm(relative[:, :3, 3], axis=1).sum(), 1e-12)
    return dict(zip(frames, chain_poses(relative, gt_poses.get(frames[0]))))


def write_fused(out: Path, mesh, cloud, title: str) -> None:
    """mesh.ply, points.ply (mm, world frame) and render.png of a fused surface (TsdfFusion.surface())."""
    from .visualize import render_point_cloud

    out.mkdir(parents=True, exist_ok=True)
    write_ply(out / "mesh.ply", mesh)
    write_ply(out / "points.ply", cloud)
    points = np.asarray(cloud.points)
    shown = np.random.default_rng(0).choice(len(points), min(len(points), 30000), replace=False)
    render_point_cloud(points[shown], (np.asarray(cloud.colors)[shown] * 255).astype(np.uint8), out / "render.png",
                       title)
