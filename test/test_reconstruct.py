"""3D reconstruction: a synthetic sequence fused from ground truth lands on the ground-truth surface within a
voxel; the official per-frame protocol's files; poses chained back from relative poses; the fusion node's
incrementally extracted map is open3d's surface."""

import json

import numpy as np
import open3d as o3d
import pytest
import torch
from helpers import TINY

from dares_core import reconstruct
from dares_core.cli import main
from dares_core.data.scared import SplitEntry, gt_path, image_path, read_camera_poses, read_gt_depth, write_split
from dares_core.data.synthetic import SynthConfig, generate, sequence_folder
from dares_core.model.depth_net import DaresDepthNet, DepthNetConfig
from dares_core.model.weights import save_depth_net
from dares_core.pose import keyframe_sequence
from dares_core.preprocess import read_rgb
from dares_core.reconstruct import TsdfFusion, chain_poses

CFG = SynthConfig(width=192, height=160, frames=8, sequences=1, seed=9)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate(CFG, tmp_path_factory.mktemp("rec") / "scenes")


def test_ground_truth_fused_is_the_ground_truth_surface_within_a_voxel(scenes, tmp_path):
    out = tmp_path / "fused"
    assert main(["reconstruct", "--data", str(scenes), "--keyframe", sequence_folder(0), "--depth", "gt",
                 "--voxel-mm", "1.5", "--trunc-mm", "6", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == CFG.frames
    assert metrics["accuracy_mm"] < 1.5 and metrics["completeness_mm"] < 1.5  # within a voxel, both ways
    mesh = o3d.io.read_triangle_mesh(str(out / "mesh.ply"))
    assert len(mesh.triangles) > 1000 and mesh.has_vertex_colors()
    assert (out / "render.png").stat().st_size > 5000
    # a user's file in the folder survives --force; ours are replaced
    (out / "notes.txt").write_text("mine")
    assert main(["reconstruct", "--data", str(scenes), "--keyframe", sequence_folder(0), "--depth", "gt",
                 "--out", str(out)]) == 2
    assert main(["reconstruct", "--data", str(scenes), "--keyframe", sequence_folder(0), "--depth", "gt",
                 "--every", "2", "--out", str(out), "--force"]) == 0
    assert json.loads((out / "metrics.json").read_text())["frames"] == CFG.frames // 2
    assert (out / "notes.txt").read_text() == "mine"


def test_relative_poses_chain_back_to_the_trajectory(scenes):
    _, relative = keyframe_sequence(scenes, sequence_folder(0))
    poses = np.load(scenes / sequence_folder(0) / "camera_poses.npz")["poses"]
    np.testing.assert_allclose(chain_poses(relative, poses[0]), poses, atol=1e-9)


def test_official_protocol_writes_the_official_files_in_metres(scenes, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_depth_net(DaresDepthNet(DepthNetConfig.dares("tiny", hf_config=TINY)), weights)
    split = tmp_path / "3d.txt"
    write_split(split, [SplitEntry(sequence_folder(0), f, "l") for f in (2, 5)])
    gt = np.load(scenes / "splits" / "synthetic" / "gt_depths.npz")["data"]  # the test split's, as official
    out = tmp_path / "official"
    assert main(["reconstruct", "--protocol", "official", "--data", str(scenes), "--weights", str(weights),
                 "--split-file", str(split), "--gt-depths", str(scenes / "splits" / "synthetic" / "gt_depths.npz"),
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["1_1_000002.ply", "1_1_000005.ply"]
    cloud = np.asarray(o3d.io.read_point_cloud(str(out / "1_1_000002.ply")).points)
    assert len(cloud) == 256 * 320  # every pixel of the network-size image
    valid = gt[0][(gt[0] > 1e-3) & (gt[0] < 150)]
    assert np.median(cloud[:, 2]) == pytest.approx(np.median(valid) / 1000, rel=0.05)  # median-scaled, metres


def assert_same_surface(fusion: TsdfFusion, threshold: float) -> int:
    """fusion.points() (incremental) gives open3d's points as a multiset (a crossing at a voxel corner is found
    along two axes), with their colours; returns the count."""
    points, colors = fusion.points(threshold)
    cloud = fusion.grid.extract_point_cloud(weight_threshold=threshold).cpu()
    reference = cloud.point.positions.numpy() if "positions" in cloud.point else np.zeros((0, 3))
    ours, theirs = (np.round(p * 2e5).astype(np.int64) for p in (points, reference))  # 5 um
    for a, b in zip(np.unique(ours, axis=0, return_counts=True), np.unique(theirs, axis=0, return_counts=True)):
        assert np.array_equal(a, b)
    reference_colors = {tuple(k): c for k, c in zip(theirs.tolist(), cloud.point.colors.numpy() * 255)}
    keys, counts = np.unique(ours, axis=0, return_counts=True)
    single = {tuple(k) for k in keys[counts == 1].tolist()}
    assert all(np.abs(reference_colors[k] - c).max() <= 1 for k, c in zip(map(tuple, ours.tolist()), colors)
               if k in single)  # rounding
    return len(points)


def test_the_published_map_is_open3ds_surface_extracted_from_the_blocks_that_changed(scenes, monkeypatch):
    folder = scenes / sequence_folder(0)
    poses = read_camera_poses(folder)
    K = CFG.intrinsics()
    fusion = TsdfFusion(1.0, 4.0)
    extracted = []
    real = reconstruct.surface_points
    monkeypatch.setattr(reconstruct, "surface_points",
                        lambda grid, keys, *a: extracted.append(len(keys)) or real(grid, keys, *a))
    counts = []
    for frame in sorted(poses):
        rgb = read_rgb(image_path(scenes, sequence_folder(0), frame))
        fusion.integrate(rgb, read_gt_depth(gt_path(scenes, sequence_folder(0), frame)), K, poses[frame])
        if frame in (4, 6, CFG.frames):  # first after four frames (seen more than 3 times), then two by two
            counts.append(assert_same_surface(fusion, 3.0))
    assert counts[-1] > 1000
    assert assert_same_surface(fusion, 1.0) > counts[-1]  # another threshold: every block again, more surface
    blocks = fusion.grid.hashmap().size()
    # a frame that sees a small patch only: the next map extracts the blocks around that patch, not the map
    depth = np.full((CFG.height, CFG.width), np.nan, np.float32)
    depth[70:80, 90:100] = read_gt_depth(gt_path(scenes, sequence_folder(0), CFG.frames))[70:80, 90:100]
    fusion.integrate(rgb, depth, K, poses[CFG.frames])
    extracted.clear()
    assert_same_surface(fusion, 1.0)
    assert 0 < extracted[0] < blocks / 4
    points, _ = fusion.points(1.0, max_points=1000)  # evenly thinned
    assert 900 < len(points) <= 1000
