"""`dares prepare-scared` on a small fake SCARED download written in the challenge's raw layout."""

import io
import json
import tarfile

import cv2
import numpy as np
import pytest
import yaml

from dares_core.cli import main
from dares_core.data.scared import gt_path, image_path, read_gt_depth

W, H, FRAMES = 64, 48, 3


def write_raw_keyframe(folder, seed):
    rng = np.random.default_rng(seed)
    data = folder / "data"
    data.mkdir(parents=True)
    video = cv2.VideoWriter(str(data / "rgb.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (W, 2 * H))
    stacks = []
    for i in range(FRAMES):
        stacked = np.zeros((2 * H, W, 3), np.uint8)
        stacked[:H] = (40 + 60 * i, 80, 160)  # left eye: flat colours a lossy codec keeps
        stacked[H:] = (200, 30 + 60 * i, 90)
        stacks.append(stacked)
        video.write(stacked)
    video.release()
    gts = []
    with tarfile.open(data / "scene_points.tar.gz", "w:gz") as tar, tarfile.open(data / "frame_data.tar.gz", "w:gz") as poses:
        for i in range(FRAMES):
            xyz = rng.uniform(10, 100, (2 * H, W, 3)).astype(np.float32)  # left over right, X Y Z
            gts.append(xyz[:H, :, 2])
            ok, buf = cv2.imencode(".tiff", xyz[..., ::-1].copy())  # stored X,Y,Z: OpenCV reads Z first
            assert ok
            for t, name, payload in ((tar, f"scene_points/scene_points{i:06d}.tiff", buf.tobytes()),
                                     (poses, f"frame_data/frame_data{i:06d}.json",
                                      json.dumps({"camera-pose": (np.eye(4) + i).tolist()}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload))
    fs = cv2.FileStorage(str(folder / "endoscope_calibration.yaml"), cv2.FILE_STORAGE_WRITE)
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    for name, value in (("M1", K), ("D1", np.zeros((1, 5))), ("M2", K), ("D2", np.zeros((1, 5))), ("R", np.eye(3)),
                        ("T", np.array([[-4.2], [0.1], [0.0]]))):
        fs.write(name, value)
    fs.release()
    return stacks, gts


@pytest.fixture
def raw(tmp_path):
    src = tmp_path / "raw"
    truth = {
        "dataset1/keyframe1": write_raw_keyframe(src / "dataset_1" / "keyframe_1", 0),
        "dataset8/keyframe1": write_raw_keyframe(src / "dataset_8" / "keyframe_0", 1),  # 8 and 9 count from 0
    }
    (src / "dataset_2" / "keyframe_1").mkdir(parents=True)  # a keyframe without its video
    splits = tmp_path / "mysplit"
    splits.mkdir()
    (splits / "test_files.txt").write_text("dataset1/keyframe1\t2\tl\ndataset8/keyframe1\t3\tl\n")
    (splits / "train_files.txt").write_text("dataset1/keyframe1\t2\tl\n")
    return src, splits, truth


def test_converts_frames_ground_truth_poses_and_calibration(raw, tmp_path, capsys):
    src, splits, truth = raw
    dst = tmp_path / "data"
    assert main(["prepare-scared", "--src", str(src), "--dst", str(dst), "--splits", str(splits)]) == 0
    out = capsys.readouterr().out
    assert "converted 2" in out and "skipped 1" in out and "dataset2/keyframe1: no data/rgb.mp4" in out
    for folder, (stacks, gts) in truth.items():
        for i in range(FRAMES):
            left = cv2.imread(str(image_path(dst, folder, i + 1, "l")))
            right = cv2.imread(str(image_path(dst, folder, i + 1, "r")))
            assert left.shape == right.shape == (H, W, 3)
            assert np.abs(left.astype(int) - stacks[i][:H]).mean() < 8  # mp4 is lossy
            assert np.abs(right.astype(int) - stacks[i][H:]).mean() < 8
            np.testing.assert_array_equal(read_gt_depth(gt_path(dst, folder, i + 1), rows=H), gts[i])
        poses = np.load(dst / folder / "camera_poses.npz")
        assert poses["poses"].shape == (FRAMES, 4, 4) and list(poses["frames"]) == [1, 2, 3]
        calib = yaml.safe_load((dst / folder / "calibration.yaml").read_text())
        assert calib["baseline_mm"] == pytest.approx(np.hypot(4.2, 0.1))
        P = np.array(calib["rectification"]["P_right"])
        assert -P[0, 3] / P[0, 0] == pytest.approx(np.hypot(4.2, 0.1), rel=1e-6)
    gt = np.load(dst / "splits" / "mysplit" / "gt_depths.npz")["data"]
    np.testing.assert_array_equal(gt, np.stack([truth["dataset1/keyframe1"][1][1], truth["dataset8/keyframe1"][1][2]]))


def test_rerun_resumes_and_partial_keyframes_are_redone(raw, tmp_path, capsys):
    src, splits, _ = raw
    dst = tmp_path / "data"
    assert main(["prepare-scared", "--src", str(src), "--dst", str(dst), "--splits", str(splits)]) == 0
    (dst / "dataset8/keyframe1/.prepared").unlink()  # as if interrupted mid-keyframe
    capsys.readouterr()
    assert main(["prepare-scared", "--src", str(src), "--dst", str(dst), "--splits", str(splits)]) == 0
    assert "converted 1, already done 1" in capsys.readouterr().out


def test_wrong_source_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["prepare-scared", "--src", str(tmp_path / "empty"), "--dst", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no dataset_N/keyframe_M folders" in err[0]
