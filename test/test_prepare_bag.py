"""Your own endoscope: `dares prepare-bag` and `prepare-video` turn a bag recorded on the robot (compressed stereo,
camera_info, poses) or a stereo video with its calibration into frames with motion, calibration, poses and splits
that training reads (validated without ground truth, with the scope's own intrinsics); a full-HD 16:9 scope goes
through prepare, train and the node; bad recordings get one line and touch nothing."""

import json
import os

import cv2
import numpy as np
import pytest
import yaml
from geometry_msgs.msg import PoseStamped
from rclpy.serialization import deserialize_message, serialize_message
from ros_harness import Harness, camera_info, rgb_image, start_node, stop_node
from sensor_msgs.msg import CameraInfo, CompressedImage
from test_hostile import run
from test_train import config, losses

from dares_core.data.recording import RecordingOptions, split_frames
from dares_core.data.scared import ScaredSequenceDataset, SplitEntry, read_camera_poses, read_split
from dares_core.data.synthetic import (
    SynthConfig,
    generate,
    sequence_folder,
    write_opencv_stereo_calibration,
    write_stereo_video,
)
from dares_core.errors import DaresError
from dares_core.preprocess import read_rgb
from dares_core.train import run_training
from dares_ros.conversions import compressed_to_rgb8, read_depth_image
from dares_ros.tools.bag import BagWriter, open_reader, write_sequence_bag

CFG = SynthConfig(width=160, height=128, frames=60, sequences=1, seed=11)
RIG = "/jhu_daVinci"


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A synthetic stereo scene with its true poses, as a bag of compressed images (as `ros2 bag record` of the
    running graph keeps them)."""
    root = tmp_path_factory.mktemp("prepare_bag")
    scenes = generate(CFG, root / "scenes")
    bag = root / "robot_bag"
    write_sequence_bag(scenes / sequence_folder(0), bag, compressed=True)
    return scenes, bag


def tree(folder) -> dict:
    """Every path under `folder`, files with their size and mtime: what a failed run must leave as it was (a
    folder's own mtime may move: the run stages beside its output)."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None for p in folder.rglob("*")}


def copy_bag(source, out, change=lambda topic, index, data: data):
    """A copy of `source`; change(topic, index in topic, bytes) gives the bytes to write, or None to leave out."""
    reader = open_reader(source)
    seen = {}
    with BagWriter(out) as bag:
        for conn, stamp, data in reader.messages():
            index = seen[conn.topic] = seen.get(conn.topic, -1) + 1
            data = change(conn.topic, index, bytes(data))
            if data is not None:
                bag.write_raw(conn.topic, conn.msgtype, data, stamp)
    reader.close()
    return out


def test_a_robot_bag_becomes_training_data(recording, tmp_path):
    scenes, bag = recording
    data = tmp_path / "data"
    assert run(["prepare-bag", str(bag), "--out", str(data), "--block", "10", "--val-every", "3"]) == (0, "")
    folder = data / "robot_bag"
    manifest = json.loads((folder / "recording.json").read_text())
    assert 20 < manifest["kept"] < CFG.frames and manifest["kept"] + manifest["still"] == CFG.frames
    calibration = yaml.safe_load((folder / "calibration.yaml").read_text())
    np.testing.assert_allclose(calibration["K"], CFG.intrinsics())
    assert calibration["baseline_mm"] == pytest.approx(CFG.baseline_mm) and calibration["fps"] == pytest.approx(CFG.fps)
    # each kept frame is the recorded frame of its stamp (JPEG in the bag), with its true pose
    source_poses = read_camera_poses(scenes / sequence_folder(0))
    poses = read_camera_poses(folder)
    assert sorted(poses) == list(range(1, manifest["kept"] + 1))
    for n, stamp in enumerate(manifest["stamps"], 1):
        source_frame = round((stamp - manifest["stamps"][0]) * CFG.fps) + 1  # the first frame is always kept
        for side, folder_name in (("l", "image_02"), ("r", "image_03")):
            written = read_rgb(folder / folder_name / "data" / f"{n:010d}.png")
            recorded = read_rgb(scenes / sequence_folder(0) / folder_name / "data" / f"{source_frame:010d}.png")
            assert np.abs(written.astype(int) - recorded).mean() < 6, (n, side)
        np.testing.assert_allclose(poses[n], source_poses[source_frame], atol=1e-4)  # float32 quaternions
    # the splits: every frame once, validation blocks apart from training (no frame has a neighbour in the other)
    train, val = (read_split(data / "splits" / "own" / f"{name}_files.txt") for name in ("train", "val"))
    train_frames, val_frames = {e.frame for e in train}, {e.frame for e in val}
    assert val_frames and train_frames and not train_frames & val_frames
    assert all(abs(t - v) >= 2 for t in train_frames for v in val_frames)
    assert all(2 <= f < manifest["kept"] for f in train_frames | val_frames)
    item = ScaredSequenceDataset(data, train, 64, 80, train=True, poses=True)[0]
    assert item[("color", -1, 0)].shape == (3, 64, 80) and ("pose_gt", 1) in item
    # the scope's own intrinsics, scaled per axis to the training size (an option: DARES warps with SCARED's)
    own = ScaredSequenceDataset(data, train, 64, 80, intrinsics="calibration")[0][("K", 0)].numpy()
    np.testing.assert_allclose(own[:3, :3], CFG.intrinsics() * [[80 / CFG.width], [64 / CFG.height], [1]], rtol=1e-6)
    flipped = ScaredSequenceDataset(data, train, 64, 80, intrinsics="calibration").normalised_K("robot_bag", True)
    assert flipped[0, 2] == pytest.approx(1 - CFG.intrinsics()[0, 2] / CFG.width)
    # a second run keeps what the first wrote
    before = tree(data)
    assert run(["prepare-bag", str(bag), "--out", str(data), "--block", "10", "--val-every", "3"]) == (0, "")
    assert tree(data) == before
    # another recording beside it, without poses: the splits cover both
    assert run(["prepare-bag", str(bag), "--out", str(data), "--name", "no_poses", "--pose-topic", ""]) == (0, "")
    assert not (data / "no_poses" / "camera_poses.npz").exists()
    folders = {e.folder for e in read_split(data / "splits" / "own" / "train_files.txt")}
    assert folders == {"robot_bag", "no_poses"}
    # dares train reads it
    summary = run_training(config(data, tmp_path / "run", num_epochs=2, max_steps_per_epoch=1,
                                  intrinsics="calibration"), progress=False)
    assert all(np.isfinite(r["loss"]) for r in losses(tmp_path / "run")) and len(losses(tmp_path / "run")) == 2
    assert (tmp_path / "run" / "depth_model.safetensors").is_file()
    # no ground truth: the best epoch is the one of least photometric error on the validation frames
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["score"] == "photometric" and [e["epoch"] for e in epochs] == [1, 2]
    assert all(0 < e["photometric"] < 1 for e in epochs)
    assert summary["best"] == min(e["photometric"] for e in epochs)
    # stereo data: the depth against the pair's own stereo depth, in mm
    assert all(0 < e["stereo_abs_rel"] < 1 and 0 < e["stereo_rmse_mm"] < 100 for e in epochs)
    # a stereo-only run (the other eye its only source) is scored by the same error, and its best epoch is written
    run_training(config(data, tmp_path / "stereo_run", num_epochs=1, max_steps_per_epoch=1, frame_ids=[0],
                        stereo=True, intrinsics="calibration"), progress=False)
    epochs = [json.loads(line) for line in (tmp_path / "stereo_run" / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 1 and 0 < epochs[0]["photometric"] < 1
    assert (tmp_path / "stereo_run" / "depth_model.safetensors").is_file()


def test_split_blocks_keep_their_edges_out():
    train, val = split_frames(40, RecordingOptions(block=10, val_every=2))
    assert val == [*range(12, 20), *range(32, 40)] and train == [*range(2, 10), *range(22, 30)]
    assert split_frames(30, RecordingOptions(block=50))[1] == []  # one block: nothing to hold out


def _uncalibrated(topic, index, data):
    if not topic.endswith("camera_info"):
        return data
    info = deserialize_message(data, CameraInfo)
    info.k, info.p = [0.0] * 9, [0.0] * 12
    return serialize_message(info)


def _still():
    """Every image the first one of its topic: a camera that never moves."""
    first = {}
    return lambda topic, index, data: first.setdefault(topic, data) if "image_raw" in topic else data


def _right_eye_late(topic, index, data):
    """The right eye's stamps 50 ms after the left's: no pair."""
    if "right/image_raw" not in topic:
        return data
    msg = deserialize_message(data, CompressedImage)
    msg.header.stamp.nanosec = (msg.header.stamp.nanosec + 50_000_000) % 10**9
    return serialize_message(msg)


BAD = {  # id: (change to the recording, what the one line must say)
    "no camera_info": (lambda t, i, d: None if t.endswith("camera_info") else d, "camera_info"),
    "uncalibrated": (_uncalibrated, "uncalibrated"),
    "still camera": (_still(), "moving camera"),
    "eyes that never pair": (_right_eye_late, "--right-topic ''"),
    "pose gaps": (lambda t, i, d: None if t.endswith("ground_truth/pose") and i >= 20 else d,
                  "ground_truth/pose (--pose-topic '' prepares without poses) has no pose"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_recording_gets_one_line_and_touches_nothing(case, recording, tmp_path):
    change, says = BAD[case]
    bad = copy_bag(recording[1], tmp_path / "bad_bag", change)
    data = tmp_path / "data"
    (data / "mine").mkdir(parents=True)
    (data / "mine" / "notes.txt").write_text("the user's")
    before = tree(tmp_path)
    status, err = run(["prepare-bag", str(bad), "--out", str(data)])
    assert status == 2 and len(err.splitlines()) == 1 and says in err and "Traceback" not in err, err
    assert tree(tmp_path) == before


def test_a_name_taken_by_other_files_is_refused(recording, tmp_path):
    data = tmp_path / "data"
    (data / "robot_bag").mkdir(parents=True)
    (data / "robot_bag" / "notes.txt").write_text("the user's")
    before = tree(tmp_path)
    for force in ([], ["--force"]):
        status, err = run(["prepare-bag", str(recording[1]), "--out", str(data), *force])
        assert status == 2 and len(err.splitlines()) == 1 and "robot_bag" in err, err
    assert tree(tmp_path) == before


def stereo_video(scenes, path, layout="side-by-side"):
    return write_stereo_video(scenes / sequence_folder(0), path, CFG.fps, layout)


def test_a_stereo_video_with_an_opencv_calibration_becomes_training_data(recording, tmp_path):
    scenes, _ = recording
    video = stereo_video(scenes, tmp_path / "scope.avi")
    calibration = write_opencv_stereo_calibration(tmp_path / "stereo.yaml", CFG.intrinsics(), CFG.baseline_mm)
    data = tmp_path / "data"
    assert run(["prepare-video", str(video), "--calibration", str(calibration), "--out", str(data),
                "--block", "10", "--val-every", "3"]) == (0, "")
    folder = data / "scope"
    manifest = json.loads((folder / "recording.json").read_text())
    assert 20 < manifest["kept"] < CFG.frames
    written = yaml.safe_load((folder / "calibration.yaml").read_text())
    np.testing.assert_allclose(written["K"], CFG.intrinsics(), atol=1.0)  # stereoRectify of a rectified pair
    assert written["baseline_mm"] == pytest.approx(CFG.baseline_mm) and written["fps"] == pytest.approx(CFG.fps)
    for n, stamp in enumerate(manifest["stamps"], 1):
        source_frame = round(stamp * CFG.fps) + 1
        for folder_name in ("image_02", "image_03"):
            frame = read_rgb(folder / folder_name / "data" / f"{n:010d}.png").astype(int)
            recorded = read_rgb(scenes / sequence_folder(0) / folder_name / "data" / f"{source_frame:010d}.png")
            assert np.abs(frame - recorded).mean() < 6, (n, folder_name)
    assert read_split(data / "splits" / "own" / "val_files.txt")


BAD_VIDEOS = {  # id: (arguments after the video, what the one line must say)
    "no calibration": ([], "give --calibration"),
    "calibrated at another size": (["--stereo", "mono", "--calibration", "{mono_640}"], "calibrated at 640x480"),
    "mono calibration of a stereo video": (["--calibration", "{mono_640}"], "holds no stereo calibration"),
    "one ROS file for stereo": (["--calibration", "{ros_left}"], "needs both"),
    "a text file for calibration": (["--stereo", "mono", "--calibration", "{notes}"], "none of the calibrations"),
}


@pytest.mark.parametrize("case", BAD_VIDEOS)
def test_a_video_whose_calibration_does_not_fit_gets_one_line(case, recording, tmp_path):
    video = stereo_video(recording[0], tmp_path / "scope.avi")
    fs = cv2.FileStorage(str(tmp_path / "mono_640.yaml"), cv2.FILE_STORAGE_WRITE)
    for name, value in (("image_width", 640), ("image_height", 480), ("camera_matrix", CFG.intrinsics()),
                        ("distortion_coefficients", np.zeros((1, 5)))):
        fs.write(name, value)
    fs.release()
    (tmp_path / "left.yaml").write_text(yaml.safe_dump({  # camera_calibration's left eye alone
        "image_width": CFG.width, "image_height": CFG.height,
        "camera_matrix": {"data": CFG.intrinsics().ravel().tolist()}, "distortion_coefficients": {"data": [0.0] * 5}}))
    args, says = BAD_VIDEOS[case]
    (tmp_path / "notes.txt").write_text("fx 262, fy 261: from the scope's data sheet\n")
    args = [a.format(mono_640=tmp_path / "mono_640.yaml", ros_left=tmp_path / "left.yaml", notes=tmp_path / "notes.txt")
            for a in args]
    before = tree(tmp_path)
    status, err = run(["prepare-video", str(video), "--out", str(tmp_path / "data"), *args])
    assert status == 2 and len(err.splitlines()) == 1 and says in err and "Traceback" not in err, err
    assert tree(tmp_path) == before


def test_own_intrinsics_need_rectified_frames(recording, tmp_path):
    """intrinsics: calibration reads the K of rectified frames; SCARED's raw calibration is refused in one line."""
    scenes, _ = recording
    folder = tmp_path / "raw" / "keyframe1"
    (folder / "image_02" / "data").mkdir(parents=True)
    for frame in (1, 2, 3):
        name = f"{frame:010d}.png"
        (folder / "image_02" / "data" / name).write_bytes(
            (scenes / sequence_folder(0) / "image_02" / "data" / name).read_bytes())
    calibration = yaml.safe_load((scenes / sequence_folder(0) / "calibration.yaml").read_text())
    (folder / "calibration.yaml").write_text(yaml.safe_dump({**calibration, "rectified": False}))
    entries = [SplitEntry("raw/keyframe1", 2, "l")]
    with pytest.raises(DaresError, match="intrinsics: calibration needs rectified"):
        ScaredSequenceDataset(tmp_path, entries, 64, 80, intrinsics="calibration")[0]
    assert ScaredSequenceDataset(tmp_path, entries, 64, 80)[0][("K", 0)][0, 0] == pytest.approx(0.82 * 80)


HD = (1920, 1080)


def test_a_1920x1080_scope_runs_through_prepare_train_and_the_node(recording, tmp_path):
    """A 16:9 full-HD stereo scope (the scene's frames enlarged, its K scaled per axis): prepare-bag, a few training
    steps at another aspect with the scope's own intrinsics, and the node publishing full-size depth from the
    fine-tuned weights at the size they were trained at."""
    scenes, _ = recording
    source, hd = scenes / sequence_folder(0), tmp_path / "hd" / "keyframe1"
    scale = np.diag([HD[0] / CFG.width, HD[1] / CFG.height, 1.0])
    for frame in range(1, 13):
        for folder_name in ("image_02", "image_03"):
            image = cv2.imread(str(source / folder_name / "data" / f"{frame:010d}.png"))
            target = hd / folder_name / "data" / f"{frame:010d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), cv2.resize(image, HD, interpolation=cv2.INTER_LINEAR))
    calibration = yaml.safe_load((source / "calibration.yaml").read_text())
    K = scale @ np.array(calibration["K"])
    P_right = np.hstack([K, [[-K[0, 0] * CFG.baseline_mm], [0], [0]]])
    (hd / "calibration.yaml").write_text(yaml.safe_dump({
        **calibration, "image_width": HD[0], "image_height": HD[1], "K": K.tolist(),
        "P_left": np.hstack([K, np.zeros((3, 1))]).tolist(), "P_right": P_right.tolist()}))
    bag = tmp_path / "hd_bag"
    write_sequence_bag(hd, bag, compressed=True)
    data = tmp_path / "data"
    assert run(["prepare-bag", str(bag), "--out", str(data), "--block", "4", "--val-every", "2"]) == (0, "")
    written = yaml.safe_load((data / "hd_bag" / "calibration.yaml").read_text())
    assert (written["image_width"], written["image_height"]) == HD
    np.testing.assert_allclose(written["K"], K, rtol=1e-6)
    assert read_rgb(data / "hd_bag" / "image_02" / "data" / f"{1:010d}.png").shape == (HD[1], HD[0], 3)
    run_dir = tmp_path / "run"
    run_training(config(data, run_dir, height=64, width=96, num_epochs=1, max_steps_per_epoch=2,
                        intrinsics="calibration"), progress=False)
    weights = run_dir / "depth_model.safetensors"
    namespace = f"/t{os.getpid()}_hd"
    log = tmp_path / "node.log"
    proc = start_node(namespace, f"weights:={weights}", "device:=cpu", log=log)
    h = Harness(namespace)
    try:
        left = read_rgb(data / "hd_bag" / "image_02" / "data" / f"{1:010d}.png")
        info = camera_info(K, *HD)
        assert h.wait_for(lambda: h.received["depth"], publish=lambda: h.publish(rgb_image(left), info),
                          timeout=90), log.read_text()[-2000:]
        depth = read_depth_image(h.received["depth"][-1])
        assert depth.shape == (HD[1], HD[0]) and np.isfinite(depth).mean() > 0.99
        assert "network input 64x96" in log.read_text()
    finally:
        h.close()
        stop_node(proc)


def test_raw_distorted_images_are_rectified_with_their_camera_info(recording, tmp_path):
    """image_raw with distortion: the frames are written as image_proc would rectify them (K, D, R -> P)."""
    D = [0.08, -0.02, 0.0, 0.0, 0.0]
    P = np.hstack([np.diag([0.9, 0.9, 1.0]) @ CFG.intrinsics(), np.zeros((3, 1))])

    def distorted(topic, index, data):
        if not topic.endswith("camera_info"):
            return data
        info = deserialize_message(data, CameraInfo)
        baseline_m = -info.p[3] / info.p[0]
        info.d, info.p = D, [*P[0, :3], -P[0, 0] * baseline_m, *P[1], *P[2]]
        return serialize_message(info)
    bag = copy_bag(recording[1], tmp_path / "raw_bag", distorted)
    data = tmp_path / "data"
    assert run(["prepare-bag", str(bag), "--out", str(data)]) == (0, "")
    calibration = yaml.safe_load((data / "raw_bag" / "calibration.yaml").read_text())
    np.testing.assert_allclose(calibration["K"], P[:, :3])
    assert calibration["baseline_mm"] == pytest.approx(CFG.baseline_mm)
    assert "rectified here" in calibration["images"]
    maps = cv2.initUndistortRectifyMap(CFG.intrinsics(), np.array(D), np.eye(3), P[:, :3], (CFG.width, CFG.height),
                                       cv2.CV_16SC2)
    reader = open_reader(bag)
    first = next(deserialize_message(bytes(d), CompressedImage) for c, _, d in reader.messages()
                 if c.topic == f"{RIG}/left/image_raw/compressed")
    reader.close()
    expected = cv2.remap(compressed_to_rgb8(first), *maps, cv2.INTER_LINEAR)
    written = read_rgb(data / "raw_bag" / "image_02" / "data" / f"{1:010d}.png")
    assert np.abs(written.astype(int) - expected).max() <= 1


def test_kinematic_poses_with_a_hand_eye_transform_one_eye_and_sqlite3(recording, tmp_path):
    """dVRK-style: TransformStamped camera poses on /ECM/measured_cp composed with a hand-eye transform, the left
    eye alone, in a sqlite3 bag."""
    from geometry_msgs.msg import TransformStamped

    from dares_core.reconstruct import scale_translation
    from dares_ros.conversions import pose_matrix

    scenes, _ = recording
    sqlite = tmp_path / "sqlite_bag"
    write_sequence_bag(scenes / sequence_folder(0), sqlite, storage="sqlite3")
    X = np.eye(4)
    X[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # 90 degrees about z, then 1 cm along x
    X[0, 3] = 0.01
    (tmp_path / "hand_eye.txt").write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in X))
    reader = open_reader(sqlite)
    kinematics = {}
    for conn, stamp, data in reader.messages():
        if conn.topic.endswith("ground_truth/pose"):
            pose = deserialize_message(bytes(data), PoseStamped)
            msg = TransformStamped(header=pose.header, child_frame_id="ECM")
            t, q = msg.transform.translation, msg.transform.rotation
            t.x, t.y, t.z = pose.pose.position.x, pose.pose.position.y, pose.pose.position.z
            q.x, q.y, q.z, q.w = (pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z,
                                  pose.pose.orientation.w)
            kinematics[stamp] = (serialize_message(msg), pose_matrix(pose.pose))
    reader.close()
    robot = copy_bag(sqlite, tmp_path / "dvrk_bag", lambda topic, index, data: None if "right" in topic
                     or topic.endswith("ground_truth/pose") else data)
    with BagWriter(tmp_path / "dvrk_bag2") as bag:  # the copy plus the kinematics topic
        reader = open_reader(robot)
        for conn, stamp, data in reader.messages():
            bag.write_raw(conn.topic, conn.msgtype, bytes(data), stamp)
        reader.close()
        for stamp, (data, _) in kinematics.items():
            bag.write_raw("/ECM/measured_cp", "geometry_msgs/msg/TransformStamped", data, stamp)
    data = tmp_path / "data"
    assert run(["prepare-bag", str(tmp_path / "dvrk_bag2"), "--out", str(data), "--pose-topic", "/ECM/measured_cp",
                "--hand-eye", str(tmp_path / "hand_eye.txt")]) == (0, "")
    folder = data / "dvrk_bag2"
    assert not (folder / "image_03").exists()
    assert "baseline_mm" not in yaml.safe_load((folder / "calibration.yaml").read_text())
    manifest = json.loads((folder / "recording.json").read_text())
    poses = read_camera_poses(folder)
    for n, stamp in enumerate(manifest["stamps"], 1):  # each kept frame: the kinematic pose of its stamp, then X
        _, T = kinematics[min(kinematics, key=lambda ns: abs(ns - stamp * 1e9))]
        np.testing.assert_allclose(poses[n], scale_translation(T @ X, 1000.0), atol=1e-3)


def test_the_left_eye_alone_when_asked(recording, tmp_path):
    late = copy_bag(recording[1], tmp_path / "late_bag", _right_eye_late)
    assert run(["prepare-bag", str(late), "--out", str(tmp_path / "data"), "--right-topic", ""]) == (0, "")
    folder = tmp_path / "data" / "late_bag"
    assert (folder / "image_02").is_dir() and not (folder / "image_03").exists()


def test_ctrl_c_waits_while_a_recording_is_committed():
    """The rename of a finished recording and the splits that list it are one step: a Ctrl-C (or SIGTERM) that
    arrives between them waits until both are done, then is handled as usual."""
    import signal

    from dares_core.files import interrupts_held

    done = []
    previous = signal.signal(signal.SIGTERM, lambda *_: done.append("signal"))  # this test's own handler
    try:
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("rename")
            done.append("splits")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert done == ["rename", "splits", "signal"]
