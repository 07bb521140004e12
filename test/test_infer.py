"""`dares infer` on images, folders and videos: every output file, the official --save-disp array, errors."""

import json
import shutil

import cv2
import numpy as np
import open3d as o3d
import pytest
import torch
import yaml

from dares_core.cli import main
from dares_core.errors import DaresError
from dares_core.infer import DEPTH_PNG_UNITS_PER_MM


def test_folder_writes_every_output_and_official_disparities(tiny_model, tmp_path):
    weights, seq = tiny_model
    out, disp_file = tmp_path / "out", tmp_path / "disps.npy"
    args = [
        "infer",
        "--weights",
        str(weights),
        "--input",
        str(seq / "image_02" / "data"),
        "--out",
        str(out),
        "--height",
        "56",
        "--width",
        "70",
        "--save-disp",
        str(disp_file),
        "--calibration",
        str(seq / "calibration.yaml"),
    ]
    assert main(args) == 0
    disps = np.load(disp_file)
    assert disps.shape == (3, 56, 70) and disps.dtype == np.float32
    assert (disps >= 1 / 150 - 1e-6).all() and (disps <= 1 / 0.1 + 1e-3).all()  # disp_to_depth(·, 0.1, 150)
    K = np.array(yaml.safe_load((seq / "calibration.yaml").read_text())["K"])
    for i, name in enumerate(f"{f:010d}" for f in (1, 2, 3)):
        depth = np.load(out / f"{name}_depth.npy")
        assert depth.shape == (48, 64) and depth.dtype == np.float32
        # the SCARED protocol's conversion of the saved disparity gives the written depth
        np.testing.assert_allclose(1 / cv2.resize(disps[i], (64, 48)), depth, rtol=1e-4)
        png = cv2.imread(str(out / f"{name}_depth.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16
        np.testing.assert_allclose(png / DEPTH_PNG_UNITS_PER_MM, depth, atol=0.01)
        assert cv2.imread(str(out / f"{name}_color.png")).shape == (48, 64, 3)
        cloud = np.asarray(o3d.io.read_point_cloud(str(out / f"{name}.ply")).points)
        assert cloud.shape == (48 * 64, 3)
        u, v = 10, 20
        p = cloud[v * 64 + u]
        assert p[2] == pytest.approx(depth[v, u], rel=1e-5)
        assert (K @ p / p[2])[:2] == pytest.approx([u, v], abs=1e-3)  # the point re-projects to its pixel


def test_a_frame_interrupted_while_its_files_are_written_leaves_none_of_them(tiny_model, tmp_path, monkeypatch):
    """Ctrl-C between a frame's depth files and its point cloud: the frames before are whole, that one is absent."""
    import dares_core.infer as infer

    weights, seq = tiny_model
    write_ply, calls = infer.write_ply, []

    def interrupted_second(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        write_ply(*args)

    monkeypatch.setattr(infer, "write_ply", interrupted_second)
    out = tmp_path / "out"
    assert main(["infer", "--weights", str(weights), "--input", str(seq / "image_02" / "data"), "--out", str(out),
                 "--height", "28", "--width", "42", "--calibration", str(seq / "calibration.yaml")]) == 130
    assert sorted(p.name for p in out.iterdir()) == ["0000000001.ply", "0000000001_color.png",
                                                     "0000000001_depth.npy", "0000000001_depth.png"]


def test_video_input(tiny_model, tmp_path):
    weights, seq = tiny_model
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    for f in (1, 2, 3):
        writer.write(cv2.imread(str(seq / "image_02" / "data" / f"{f:010d}.png")))
    writer.release()
    out = tmp_path / "out"
    assert main(["infer", "--weights", str(weights), "--input", str(video), "--out", str(out), "--height", "28",
                 "--width", "42"]) == 0
    assert sorted(p.name for p in out.glob("*_depth.npy")) == [f"frame_{i:06d}_depth.npy" for i in (1, 2, 3)]


def test_infer_errors_are_one_line(tiny_model, tmp_path, capsys):
    weights, seq = tiny_model
    image = seq / "image_02" / "data" / "0000000001.png"
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cases = [
        (["--weights", str(weights), "--input", str(image), "--out", str(out)], "already has files"),
        (["--weights", str(tmp_path / "none.pth"), "--input", str(image), "--out", str(tmp_path / "o2")], "not found"),
        (["--weights", str(weights), "--input", str(tmp_path / "none"), "--out", str(tmp_path / "o3")], "input"),
        (
            ["--weights", str(weights), "--input", str(image), "--out", str(tmp_path / "o4"), "--fx", "100"],
            "--fx --fy --cx --cy",
        ),
    ]
    for extra, message in cases:
        assert main(["infer", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert (out / "keep.txt").read_text() == "mine"


def test_eval_of_model_on_data_equals_eval_of_saved_disparities(tiny_model, tmp_path):
    weights, seq = tiny_model
    root = seq.parent.parent
    split = root / "splits" / "synthetic"
    disps = tmp_path / "disps.npy"
    assert main(["infer", "--weights", str(weights), "--input", str(seq / "image_02" / "data"), "--out",
                 str(tmp_path / "depth"), "--save-disp", str(disps)]) == 0
    assert main(["eval", "--pred-disps", str(disps), "--gt-depths", str(split / "gt_depths.npz"), "--out",
                 str(tmp_path / "a")]) == 0
    assert main(["eval", "--weights", str(weights), "--data", str(root), "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text())["metrics"] for n in "ab")
    assert a == pytest.approx(b, rel=1e-6)


def test_network_input_size_is_the_checkpoints_unless_given(tiny_model, tmp_path):
    """The demo model records the 128x160 it was trained at: infer, eval and bag infer run it there by default and
    at --height/--width when given; files that record no size run at 256x320."""
    from dares_core.model.weights import DEMO_MODEL
    from dares_ros.tools.bag import infer_bag, write_sequence_bag

    tiny, seq = tiny_model
    frames, root = seq / "image_02" / "data", seq.parent.parent
    for weights, override, size in ((DEMO_MODEL, [], (128, 160)), (DEMO_MODEL, ["--height", "32", "--width", "48"],
                                                                   (32, 48)), (tiny, [], (256, 320))):
        out = tmp_path / f"{weights.stem}{size[0]}"
        assert main(["infer", "--weights", str(weights), "--input", str(frames), "--out", str(out / "depth"),
                     "--save-disp", str(out / "disps.npy"), *override]) == 0
        assert np.load(out / "disps.npy").shape == (3, *size)
        evaluate = ["eval", "--weights", str(weights), "--data", str(root), "--out", str(out / "eval"), *override]
        assert main(evaluate) == 0
        assert json.loads((out / "eval" / "metrics.json").read_text())["settings"]["input_size"] == list(size)
    bag = tmp_path / "seq.bag"
    write_sequence_bag(seq, bag)
    assert infer_bag(bag, DEMO_MODEL, tmp_path / "a.bag")["input_size"] == [128, 160]
    assert infer_bag(bag, DEMO_MODEL, tmp_path / "b.bag", input_size=(32, 48))["input_size"] == [32, 48]


def test_unreadable_images_are_skipped_and_counted(tiny_model, tmp_path, capsys):
    weights, seq = tiny_model
    frames = tmp_path / "frames"
    shutil.copytree(seq / "image_02" / "data", frames)
    (frames / "0000000002.png").write_bytes(b"not a png")
    shutil.copy(frames / "0000000001.png", frames / "clip.gif")  # an animation among images: named, left out
    cv2.imwrite(str(frames / "0000000004.webp"), cv2.imread(str(frames / "0000000003.png")))  # read as an image
    disps = tmp_path / "disps.npy"
    assert main(["infer", "--weights", str(weights), "--input", str(frames), "--out", str(tmp_path / "out"),
                 "--height", "28", "--width", "42", "--save-disp", str(disps)]) == 2
    err = capsys.readouterr().err
    assert "0000000002.png: not a readable image" in err and "1 unreadable image(s) skipped" in err
    assert f"{disps} holds the other 3 frames' rows, in name order" in err
    assert "clip.gif left out (an animation is read as a video" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*_depth.npy")) == [
        "0000000001_depth.npy", "0000000003_depth.npy", "0000000004_depth.npy"]
    assert np.load(disps).shape[0] == 3


def test_calibration_files_are_checked_and_the_ros_layout_is_read(tiny_model, tmp_path, capsys):
    weights, seq = tiny_model
    image = seq / "image_02" / "data" / "0000000001.png"
    K = yaml.safe_load((seq / "calibration.yaml").read_text())["K"]
    ros = {"image_width": 64, "image_height": 48, "camera_name": "left",
           "camera_matrix": {"rows": 3, "cols": 3, "data": [v for row in K for v in row]},
           "distortion_model": "plumb_bob", "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0] * 5}}
    (tmp_path / "ros.yaml").write_text(yaml.safe_dump(ros))
    args = ["infer", "--weights", str(weights), "--input", str(image), "--height", "28", "--width", "42"]
    assert main([*args, "--out", str(tmp_path / "ros"), "--calibration", str(tmp_path / "ros.yaml")]) == 0
    assert (tmp_path / "ros" / "0000000001.ply").is_file()
    capsys.readouterr()
    bad = {"nan.yaml": "K: [[.nan, 0, 32], [0, 50, 24], [0, 0, 1]]\n", "2x3.yaml": "K: [[50, 0, 32], [0, 50, 24]]\n",
           "zero.yaml": "K: [[0, 0, 0], [0, 0, 0], [0, 0, 0]]\n",
           "mirror.yaml": "K: [[-50, 0, 32], [0, 50, 24], [0, 0, 1]]\n",
           "string.yaml": "K: not a matrix\n", "size.yaml": "K: [50, 0, 32, 0, 50, 24, 0, 0, 1]\nimage_width: 0\n",
           "broken.yaml": "K: [[50, 0\n  - : :\n"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        assert main([*args, "--out", str(tmp_path / name.split(".")[0]), "--calibration", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{tmp_path / name}:" in err[0], (name, err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the policy where CUDA is absent")
def test_one_device_policy_for_every_command_and_the_node():
    from dares_core.inference import resolve_device

    assert resolve_device("auto").type == "cpu" and resolve_device("cpu").type == "cpu"
    with pytest.raises(DaresError, match="CUDA is not available"):
        resolve_device("cuda")  # a command fails with one line
    said = []
    assert resolve_device("cuda:1", fallback=said.append).type == "cpu"  # the node keeps running, and says so
    assert len(said) == 1 and "running on cpu" in said[0]
    with pytest.raises(DaresError, match="unknown device"):
        resolve_device("tpu", fallback=said.append)
