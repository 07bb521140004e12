"""Shared test material: a tiny Depth Anything architecture, a fake SCARED raw keyframe, a publisher of a
test's own."""

import contextlib
import io
import json
import tarfile
import time

import cv2
import numpy as np

# a Depth Anything V2 small enough for CPU tests: 4 ViT blocks of width 48
TINY = dict(
    backbone_config=dict(model_type="dinov2", hidden_size=48, num_hidden_layers=4, num_attention_heads=4, mlp_ratio=2,
                         image_size=518, patch_size=14, out_indices=[1, 2, 3, 4], apply_layernorm=True,
                         reshape_hidden_states=False),
    reassemble_hidden_size=48, patch_size=14, fusion_hidden_size=16, neck_hidden_sizes=[8, 16, 32, 48],
    head_hidden_size=8, depth_estimation_type="relative",
)

RAW_W, RAW_H, RAW_FRAMES = 64, 48, 3  # the fake SCARED keyframe's eye size and length


def write_raw_keyframe(folder, seed):
    rng = np.random.default_rng(seed)
    data = folder / "data"
    data.mkdir(parents=True)
    video = cv2.VideoWriter(str(data / "rgb.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (RAW_W, 2 * RAW_H))
    stacks = []
    for i in range(RAW_FRAMES):
        stacked = np.zeros((2 * RAW_H, RAW_W, 3), np.uint8)
        stacked[:RAW_H] = (40 + 60 * i, 80, 160)  # left eye: flat colours a lossy codec keeps
        stacked[RAW_H:] = (200, 30 + 60 * i, 90)
        stacks.append(stacked)
        video.write(stacked)
    video.release()
    gts = []
    with (
        tarfile.open(data / "scene_points.tar.gz", "w:gz") as tar,
        tarfile.open(data / "frame_data.tar.gz", "w:gz") as poses,
    ):
        for i in range(RAW_FRAMES):
            xyz = rng.uniform(10, 100, (2 * RAW_H, RAW_W, 3)).astype(np.float32)  # left over right, X Y Z
            gts.append(xyz[:RAW_H, :, 2])
            ok, buf = cv2.imencode(".tiff", xyz[..., ::-1].copy())  # stored X,Y,Z: OpenCV reads Z first
            assert ok
            for t, name, payload in (
                (tar, f"scene_points/scene_points{i:06d}.tiff", buf.tobytes()),
                (
                    poses,
                    f"frame_data/frame_data{i:06d}.json",
                    json.dumps({"camera-pose": (np.eye(4) + i).tolist()}).encode(),
                ),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload))
    fs = cv2.FileStorage(str(folder / "endoscope_calibration.yaml"), cv2.FILE_STORAGE_WRITE)
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    for name, value in (
        ("M1", K),
        ("D1", np.zeros((1, 5))),
        ("M2", K),
        ("D2", np.zeros((1, 5))),
        ("R", np.eye(3)),
        ("T", np.array([[-4.2], [0.1], [0.0]])),
    ):
        fs.write(name, value)
    fs.release()
    return stacks, gts


@contextlib.contextmanager
def matched_publisher(msg_type, topic: str, depth: int = 10, timeout: float = 60.0):
    """A publisher on `topic` in an rclpy context of its own, yielded once a subscriber matched it (or after
    `timeout`: the test's assertions then say what is missing)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("test_publisher", context=context)
    publisher = node.create_publisher(msg_type, topic, depth)
    try:
        deadline = time.monotonic() + timeout
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield publisher
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
