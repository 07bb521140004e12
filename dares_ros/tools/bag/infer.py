"""`dares bag infer`: the node's depth, camera_info and points computed offline into a copy of a bag."""

from __future__ import annotations

from pathlib import Path

from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from dares_core.errors import DaresError
from dares_core.files import BAG_ENTRIES, ensure_writable_output
from dares_core.timing import untimed

from ...conversions import stamp_key
from ...names import OUTPUT_NAMESPACE
from .io import NODE_OUTPUT_QOS, BagWriter, Topics, decode, msgtype_of, named_topic, open_reader, read_messages

OUTPUT_TOPICS = {"depth": "depth/image", "info": "depth/camera_info", "points": "points",
                 "confidence": "depth/confidence"}  # under /dares, as the node


def infer_bag(bag: Path, weights: Path, out: Path, force: bool = False, image_topic: str | None = None,
              info_topic: str | None = None, device: str = "cpu", precision: str = "fp32", input_size=(None, None),
              point_stride: int = 4, fixed_scale: float | None = None, base_weights: Path | None = None,
              progress=None, backend: str = "torch", providers: tuple = ()) -> dict:
    """Depth for every left image of `bag`, written with all input messages into a new bag; no ROS graph.

    Each image goes through the depth node's own frame pipeline (dares_core.pipeline), and its outputs under /dares
    (depth/image, depth/camera_info, points, depth/confidence) are the node's messages; scale as the node's relative
    mode (model units read as mm) or fixed mode at `fixed_scale` metres per unit. Intrinsics by the node's rule:
    camera_info's P for rectified images (an image_rect topic), K for raw ones. A bag that already holds outputs under
    /dares (a recorded demo, an earlier `bag infer`) has them replaced, not copied. backend, providers: where the
    network runs (DepthPredictor).
    """
    from dares_core.inference import DepthPredictor
    from dares_core.model.weights import load_depth_net
    from dares_core.pipeline import DepthPipeline, FrameIn

    from ...conversions import ConversionError, camera, output_messages, to_rgb8

    ensure_writable_output(out, force, BAG_ENTRIES)  # before the model loads
    found = Topics.of_bag(bag) if not (image_topic and info_topic) else None
    reader = open_reader(bag)
    image_topic = named_topic(reader, image_topic) if image_topic else found.left_image
    info_topic = named_topic(reader, info_topic) if info_topic else found.left_info
    image_cls = CompressedImage if image_topic.endswith("compressed") else Image
    predictor = DepthPredictor(load_depth_net(weights, base_weights=base_weights), input_size, device, precision,
                               backend=backend, providers=providers)
    settings = {"scale_mode": "relative" if fixed_scale is None else "fixed", "fixed_scale": fixed_scale,
                "rectified": "/image_rect" in image_topic, "temporal_weight": 0.0, "point_stride": point_stride,
                "publish_points": True, "publish_colored": False, "publish_confidence": True, "min_confidence": 0.0,
                "confidence_photometric": False}
    uncalibrated = []  # frames whose camera is uncalibrated: depth in relative scale, without points (as the node)
    pipeline = DepthPipeline(predictor, ("left",), settings.get, lambda *_, **__: uncalibrated.append(1), untimed,
                             info_topics=(info_topic, ""))
    infos = {stamp_key(m.header.stamp): m for m in read_messages(bag, info_topic, CameraInfo)}
    if not infos:
        raise DaresError(f"{info_topic} has no messages: the bag needs camera_info for the images")
    latest_info = next(iter(infos.values()))
    inputs = [c for c in reader.connections if not c.topic.startswith(f"{OUTPUT_NAMESPACE}/")]
    replaced = sorted({c.topic for c in reader.connections} - {c.topic for c in inputs})
    written = unreadable = 0
    try:
        with BagWriter(out, force) as writer:
            for conn in inputs:  # each input topic keeps the QoS its publishers offered
                if conn.topic not in writer.connections:
                    writer.add_topic(conn.topic, conn.msgtype, conn.ext.offered_qos_profiles)
            for key, cls in (("depth", Image), ("info", CameraInfo), ("points", PointCloud2), ("confidence", Image)):
                writer.add_topic(f"{OUTPUT_NAMESPACE}/{OUTPUT_TOPICS[key]}", msgtype_of(cls()), [NODE_OUTPUT_QOS])
            for conn, stamp_ns, data in reader.messages(connections=inputs):
                writer.write_raw(conn.topic, conn.msgtype, bytes(data), stamp_ns)
                if conn.topic != image_topic:
                    continue
                msg = decode(data, image_cls)
                if msg is None:
                    unreadable += 1
                    continue
                info = latest_info = infos.get(stamp_key(msg.header.stamp), latest_info)  # same stamp, else latest
                try:
                    rgb = to_rgb8(msg, image_topic)
                    eye, = pipeline(FrameIn(rgb, camera(info)))
                except ConversionError as e:  # the node's rules: a readable image, a camera_info describing it
                    raise DaresError(f"{e.topic or info_topic} at {stamp_ns} ns: {e.problem}") from None
                for key, message in output_messages(eye, info, msg.header).items():
                    writer.write(f"{OUTPUT_NAMESPACE}/{OUTPUT_TOPICS[key]}", message, stamp_ns)
                written += 1
                if progress is not None:
                    progress(1)
    finally:
        reader.close()
    return {"frames": written, "image_topic": image_topic, "input_size": list(predictor.size),
            "uncalibrated": len(uncalibrated), "replaced": replaced, "unreadable": unreadable}
