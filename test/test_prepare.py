"""`dares prepare-scared` on a small fake SCARED download written in the challenge's raw layout."""


import cv2
import numpy as np
import pytest
import yaml
from helpers import RAW_FRAMES as FRAMES
from helpers import RAW_H as H
from helpers import RAW_W as W
from helpers import write_raw_keyframe

from dares_core.cli import main
from dares_core.data.scared import gt_path, image_path, read_gt_depth


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
