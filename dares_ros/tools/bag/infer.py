"""`dares bag infer`: the node's depth, camera_info and points computed offline into a copy of a bag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from dares_core.errors import DaresError
from dares_core.files import BAG_ENTRIES, ensure_writable_output

from ...conversions import (
    image_to_rgb8,
    stamp_key,
)
from ...names import OUTPUT_NAMESPACE
from .io import NODE_OUTPUT_QOS, BagWriter, Topics, msgtype_of, named_topic, open_reader, read_messages


def infer_bag(bag: Path, weights: Path, out: Path, force: bool = False, image_topic: str | None = None,
              info_topic: str | None = None, device: str = "cpu", precision: str = "fp32", input_size=(None, None),
              point_stride: int = 4, fixed_scale: float | None = None, base_weights: Path | None = None,
              batch: int = 8, progress=None) -> dict:
    """Depth for every left image of `bag`, written with all input messages into a new bag; no ROS graph.

    Outputs under /dares: depth/image, depth/camera_info, points, as the node publishes them (same code);
    scale as the node's relative mode (model units read as mm) or `fixed_scale` metres per unit. Intrinsics by the
    node's rule: camera_info's P for rectified images (an image_rect topic), K for raw ones. A bag that already
    holds outputs under /dares (a recorded demo, an earlier `bag infer`) has them replaced, not copied.
    """
    import torch

    from dares_core.inference import DepthPredictor
    from dares_core.model.weights import load_depth_net

    from ...conversions import ConversionError, Uncalibrated, checked_intrinsics, compressed_to_rgb8, depth_outputs

    ensure_writable_output(out, force, BAG_ENTRIES)  # before the model loads
    found = Topics.of_bag(bag) if not (image_topic and info_topic) else None
    reader = open_reader(bag)
    image_topic = named_topic(reader, image_topic) if image_topic else found.left_image
    info_topic = named_topic(reader, info_topic) if info_topic else found.left_info
    image_cls = CompressedImage if image_topic.endswith("compressed") else Image
    rectified = "/image_rect" in image_topic
    predictor = DepthPredictor(load_depth_net(weights, base_weights=base_weights), input_size, device, precision)
    scale = fixed_scale if fixed_scale is not None else 1e-3
    infos = {stamp_key(m.header.stamp): m for m in read_messages(bag, info_topic, CameraInfo)}
    if not infos:
        raise DaresError(f"{info_topic} has no messages: the bag needs camera_info for the images")
    latest_info = next(iter(infos.values()))
    inputs = [c for c in reader.connections if not c.topic.startswith(f"{OUTPUT_NAMESPACE}/")]
    replaced = sorted({c.topic for c in reader.connections} - {c.topic for c in inputs})
    written = uncalibrated = 0
    try:
        with BagWriter(out, force) as writer:
            pending = []

            def flush():
                nonlocal written, uncalibrated
                if not pending:
                    return
                images = torch.from_numpy(np.stack([rgb for _, rgb, _, _ in pending]))
                depths = predictor.predict(images).depth.cpu().numpy()
                for (stamp_ns, rgb, msg, cam), depth in zip(pending, depths):
                    try:
                        K = checked_intrinsics(cam, rgb.shape, info_topic, rectified)
                    except Uncalibrated:
                        K, uncalibrated = None, uncalibrated + 1  # as the node: depth without points
                    except ConversionError as e:  # the node's rule: the frame's camera_info must describe it
                        raise DaresError(f"{info_topic} at {stamp_ns} ns: {e}") from None
                    out_msgs = depth_outputs((depth * scale).astype(np.float32), rgb, cam, msg.header, K,
                                             point_stride, points=True, colored=False)
                    for key, topic in (("depth", "depth/image"), ("info", "depth/camera_info"), ("points", "points")):
                        if key in out_msgs:  # an uncalibrated camera has no points
                            writer.write(f"{OUTPUT_NAMESPACE}/{topic}", out_msgs[key], stamp_ns)
                    written += 1
                    if progress is not None:
                        progress(1)
                pending.clear()

            for conn in inputs:  # each input topic keeps the QoS its publishers offered
                if conn.topic not in writer.connections:
                    writer.add_topic(conn.topic, conn.msgtype, conn.ext.offered_qos_profiles)
            for topic, cls in (("depth/image", Image), ("depth/camera_info", CameraInfo), ("points", PointCloud2)):
                writer.add_topic(f"{OUTPUT_NAMESPACE}/{topic}", msgtype_of(cls()), [NODE_OUTPUT_QOS])
            for conn, stamp_ns, data in reader.messages(connections=inputs):
                writer.write_raw(conn.topic, conn.msgtype, bytes(data), stamp_ns)
                if conn.topic == image_topic:
                    msg = deserialize_message(bytes(data), image_cls)
                    try:
                        rgb = compressed_to_rgb8(msg) if image_cls is CompressedImage else image_to_rgb8(msg)
                    except ConversionError as e:
                        raise DaresError(f"{image_topic} at {stamp_ns} ns: {e}") from None
                    key = stamp_key(msg.header.stamp)
                    info = latest_info = infos.get(key, latest_info)  # same stamp, else the latest seen
                    if pending and rgb.shape != pending[0][1].shape:
                        flush()
                    pending.append((stamp_ns, rgb, msg, info))
                    if len(pending) == batch:
                        flush()
            flush()
    finally:
        reader.close()
    return {"frames": written, "image_topic": image_topic, "input_size": list(predictor.size),
            "uncalibrated": uncalibrated, "replaced": replaced}
