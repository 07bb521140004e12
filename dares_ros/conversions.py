"""sensor_msgs <-> numpy: Image/CompressedImage in, REP 118 depth, PointCloud2 and CameraInfo out.

Written here because cv_bridge and sensor_msgs_py are not available as wheels. Every malformed message
raises ConversionError with one line naming the problem and the fix; nothing else escapes.
"""

from __future__ import annotations

import array
import sys
from types import SimpleNamespace

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker

from dares_core.camera import Camera
from dares_core.errors import FrameProblem
from dares_core.timing import untimed

OUTPUT_QUEUE_DEPTH = 5  # KEEP_LAST depth of the node's (reliable, volatile) outputs

# encoding -> (bytes per channel, channels, OpenCV conversion to RGB or None)
IMAGE_ENCODINGS = {
    "rgb8": (1, 3, None), "bgr8": (1, 3, cv2.COLOR_BGR2RGB), "rgba8": (1, 4, cv2.COLOR_RGBA2RGB),
    "bgra8": (1, 4, cv2.COLOR_BGRA2RGB), "mono8": (1, 1, cv2.COLOR_GRAY2RGB),
    "rgb16": (2, 3, None), "bgr16": (2, 3, cv2.COLOR_BGR2RGB), "rgba16": (2, 4, cv2.COLOR_RGBA2RGB),
    "bgra16": (2, 4, cv2.COLOR_BGRA2RGB), "mono16": (2, 1, cv2.COLOR_GRAY2RGB),
}
HOST_BIGENDIAN = sys.byteorder == "big"


class FrameIds:
    """frame_ids as tf2 accepts them: a leading '/' (ROS 1 style, as dVRK's gscam stamps /<rig>/left_frame) is
    dropped, with one warning per frame_id through `warn`."""

    def __init__(self, warn):
        self.warn, self.warned = warn, set()

    def __call__(self, frame_id: str) -> str:
        if not frame_id.startswith("/"):
            return frame_id
        name = frame_id.lstrip("/")
        if frame_id not in self.warned:
            self.warned.add(frame_id)
            self.warn(f"frame_id '{frame_id}' starts with '/', which tf2 rejects: using '{name}' (fix the publisher's "
                      "frame_id)")
        return name


def stamp_key(stamp) -> tuple[int, int]:
    """(sec, nanosec) of a builtin_interfaces/Time: the key that pairs messages of one frame."""
    return stamp.sec, stamp.nanosec


def stamp_seconds(stamp) -> float:
    """A builtin_interfaces/Time in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def time_msg(ns: int) -> Time:
    """A builtin_interfaces/Time of `ns` nanoseconds."""
    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


ConversionError = FrameProblem  # a message that cannot be converted (problem, topic): the frame's one line


def image_to_rgb8(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (H,W,3) uint8 RGB, honouring step padding and endianness; 16-bit keeps the high byte."""
    encoding = msg.encoding.lower()
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported encoding '{msg.encoding}': publish one of {', '.join(IMAGE_ENCODINGS)}")
    depth, channels, to_rgb = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ConversionError(f"empty image ({width}x{height}): the publisher sent no pixels")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ConversionError(f"step {step} is smaller than width*channels*bytes = {row_bytes}: fix the publisher's "
                              f"step")
    data = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if data.size < height * step:
        raise ConversionError(f"data has {data.size} bytes, height*step needs {height * step}: "
                              "the message is truncated")
    rows = data[: height * step].reshape(height, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        pixels = (np.ascontiguousarray(rows).view(dtype) >> 8).astype(np.uint8)
    else:
        pixels = rows
    pixels = np.ascontiguousarray(pixels.reshape(height, width, channels))
    if to_rgb is None:
        return pixels
    return cv2.cvtColor(pixels, to_rgb)


def read_mask(msg: Image, topic: str = "mask") -> np.ndarray:
    """A mask image (mono8 or 8UC1, nonzero on) -> (H,W) bool."""
    if msg.encoding.lower() not in ("mono8", "8uc1"):
        raise ConversionError(f"encoding {msg.encoding}: publish the mask as mono8 or 8UC1, nonzero where it is on",
                              topic)
    as_mono8 = SimpleNamespace(encoding="mono8", height=msg.height, width=msg.width, step=msg.step, data=msg.data,
                               is_bigendian=False)  # 8UC1 is mono8's layout; the pixels are not copied
    try:
        return image_to_rgb8(as_mono8)[..., 0] > 0
    except ConversionError as e:
        raise ConversionError(e.problem, topic) from None


def compressed_to_rgb8(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG/PNG) -> (H,W,3) uint8 RGB."""
    buffer = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if bgr is None:
        raise ConversionError(f"could not decode compressed image (format '{msg.format}'): publish JPEG or PNG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_rgb8(msg, topic: str) -> np.ndarray:
    """An Image or a CompressedImage -> (H,W,3) uint8 RGB; its ConversionError names `topic`."""
    try:
        return compressed_to_rgb8(msg) if isinstance(msg, CompressedImage) else image_to_rgb8(msg)
    except ConversionError as e:
        raise ConversionError(e.problem, topic) from None


def pose_matrix(pose) -> np.ndarray:
    """geometry_msgs/Pose -> (4,4) float64 transform (translation in the message's metres); NaN when the
    quaternion is not a rotation (norm not 1 within 1 %) or any value is not finite."""
    import torch
    from kornia.geometry.conversions import quaternion_to_rotation_matrix

    q = np.array([pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z], dtype=np.float64)
    t = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    if not (np.isfinite(q).all() and np.isfinite(t).all()) or abs(np.linalg.norm(q) - 1) > 0.01:
        return np.full((4, 4), np.nan)
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation_matrix(torch.from_numpy(q / np.linalg.norm(q))).numpy()
    T[:3, 3] = t
    return T


def set_pose(pose, T: np.ndarray, unit: float = 1.0) -> None:
    """Fill geometry_msgs/Pose from a (4,4) transform; unit: metres per unit of T's translation."""
    import torch
    from kornia.geometry.conversions import rotation_matrix_to_quaternion

    pose.position.x, pose.position.y, pose.position.z = (float(v) * unit for v in T[:3, 3])
    w, x, y, z = rotation_matrix_to_quaternion(torch.as_tensor(T[:3, :3], dtype=torch.float64)).tolist()
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = x, y, z, w


def diagnostic_array(status: DiagnosticStatus, values: dict[str, str], stamp) -> DiagnosticArray:
    """A node's status with its values (key -> text) as KeyValues, in a DiagnosticArray stamped `stamp`."""
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array


def byte_field(array_: np.ndarray) -> array.array:
    """A message's uint8[] field from a contiguous array in one copy (bytes would be copied twice: tobytes, then
    rclpy's array.array('B', ...))."""
    field = array.array("B")
    field.frombytes(np.ascontiguousarray(array_).reshape(-1).view(np.uint8))
    return field


def depth_image(depth_m: np.ndarray, header) -> Image:
    """(H,W) depth in metres -> REP 118 32FC1 Image (NaN = invalid), with the given header."""
    depth = np.ascontiguousarray(depth_m, dtype=np.float32)
    msg = Image(header=header, height=depth.shape[0], width=depth.shape[1], encoding="32FC1",
                is_bigendian=HOST_BIGENDIAN, step=4 * depth.shape[1])
    msg.data = byte_field(depth)
    return msg


def read_depth_image(msg: Image) -> np.ndarray:
    """A 32FC1 depth Image (as depth_image writes it) -> (H,W) float32 metres, NaN invalid."""
    return np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.float32).reshape(msg.height, msg.width)


def uint8_image(pixels: np.ndarray, encoding: str, header=None) -> Image:
    """uint8 pixels, (H,W,3) for bgr8/rgb8 or (H,W) for mono8 (masks: 255 on, 0 off) -> Image."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=False,
                step=pixels.strides[0])
    if header is not None:
        msg.header = header
    msg.data = byte_field(pixels)
    return msg


def camera(info: CameraInfo) -> Camera:
    """The calibration a CameraInfo carries (dares_core.camera applies the intrinsics rule)."""
    return Camera.of(info.k, info.p, info.width, info.height)


def intrinsics(info: CameraInfo, topic: str = "camera_info", rectified: bool = True) -> np.ndarray:
    """The (3,3) intrinsics of the image `info` comes with: P for rectified images, K for raw ones (Camera.intrinsics).
    """
    return camera(info).intrinsics(topic, rectified)


def scale_camera_info(info: CameraInfo, width: int, height: int) -> CameraInfo:
    """CameraInfo for the same camera resized to (width, height): K and P rows scaled, as image_proc resize."""
    if info.width == 0 or info.height == 0:
        raise ConversionError("camera_info has width or height 0: publish the calibrated image size")
    sx, sy = width / info.width, height / info.height
    out = CameraInfo(header=info.header, width=width, height=height, distortion_model=info.distortion_model,
                     d=list(info.d), r=list(info.r), binning_x=info.binning_x, binning_y=info.binning_y)
    K = np.asarray(info.k, dtype=np.float64).reshape(3, 3).copy()
    P = np.asarray(info.p, dtype=np.float64).reshape(3, 4).copy()
    K[0] *= sx
    K[1] *= sy
    P[0] *= sx
    P[1] *= sy
    out.k, out.p = K.ravel().tolist(), P.ravel().tolist()
    return out


def stereo_baseline(right_info: CameraInfo, topic: str = "right/camera_info") -> float:
    """Baseline in metres from the right camera's projection (Camera.baseline)."""
    return camera(right_info).baseline(topic)


_CLOUD_DTYPE = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4", "<f4", "<f4", "<u4"],
                         "offsets": [0, 4, 8, 12], "itemsize": 16})


def triangle_marker(vertices_m: np.ndarray, triangles: np.ndarray, rgb: np.ndarray, header) -> Marker:
    """A coloured triangle mesh as an RViz Marker (TRIANGLE_LIST: three points and colours per triangle);
    vertices (V,3) metres, triangles (T,3) indices, rgb (V,3) uint8. No triangles: a DELETE, so displays clear."""
    marker = Marker(header=header, ns="map", id=0, type=Marker.TRIANGLE_LIST)
    if not len(triangles):
        marker.action = Marker.DELETE
        return marker
    marker.pose.orientation.w = 1.0
    marker.scale.x = marker.scale.y = marker.scale.z = 1.0
    corners = triangles.reshape(-1)
    marker.points = [Point(x=x, y=y, z=z) for x, y, z in vertices_m[corners].astype(np.float64).tolist()]
    marker.colors = [ColorRGBA(r=r, g=g, b=b, a=1.0) for r, g, b in (rgb[corners] / 255.0).tolist()]
    return marker


def point_cloud(points_m: np.ndarray, rgb: np.ndarray, header) -> PointCloud2:
    """Organised (H,W,3) points in metres (NaN = invalid) + (H,W,3) uint8 RGB -> PointCloud2 `x y z rgb`."""
    h, w = points_m.shape[:2]
    cloud = np.empty((h, w), dtype=_CLOUD_DTYPE)
    cloud["x"], cloud["y"], cloud["z"] = points_m[..., 0], points_m[..., 1], points_m[..., 2]
    rgb = rgb.astype(np.uint32)
    cloud["rgb"] = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    fields = [PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1)
              for n, o in (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))]
    msg = PointCloud2(header=header, height=h, width=w, fields=fields, is_bigendian=False,
                      point_step=16, row_step=16 * w, is_dense=False)
    msg.data = byte_field(cloud)
    return msg


def read_point_cloud(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """PointCloud2 written by point_cloud() -> ((H,W,3) float32 metres, (H,W,3) uint8 RGB)."""
    cloud = np.frombuffer(memoryview(msg.data).cast("B"), dtype=_CLOUD_DTYPE).reshape(msg.height, msg.width)
    points = np.stack([cloud["x"], cloud["y"], cloud["z"]], -1)
    rgb = np.stack([(cloud["rgb"] >> s) & 0xFF for s in (16, 8, 0)], -1).astype(np.uint8)
    return points, rgb


def checked_intrinsics(info: CameraInfo | None, image_shape, topic: str = "camera_info",
                       rectified: bool = True) -> np.ndarray:
    """intrinsics() of `info` for an image of `image_shape` (H,W,...), refused when it describes another size (an
    uncalibrated one, all zeros, describes no size): the one rule of the nodes and `bag infer`."""
    if info is None:
        raise ConversionError("no camera_info received yet; publish it beside the images", topic)
    return camera(info).checked(image_shape, topic, rectified)


def depth_camera_info(info: CameraInfo, K: np.ndarray | None, header, width: int, height: int) -> CameraInfo:
    """depth/camera_info of a (height, width) depth image: the input's, stamped `header`, with the left 3x3 of P set
    to K, the intrinsics the depth and cloud were computed with (so image_geometry, which reads P, agrees);
    uncalibrated (K None) as it came, with the image's size."""
    out = CameraInfo(header=header, width=width, height=height, distortion_model=info.distortion_model,
                     d=list(info.d), k=list(info.k), r=list(info.r), p=list(info.p), binning_x=info.binning_x,
                     binning_y=info.binning_y)
    if K is not None:
        P = np.asarray(info.p, dtype=np.float64).reshape(3, 4).copy()
        P[:, :3] = K
        out.p = P.ravel().tolist()
    return out


def output_messages(eye, info: CameraInfo, header, stages=untimed) -> dict:
    """Everything published for one eye's dares_core.pipeline.EyeOut: {"depth", "info", "points"?, "colored"?,
    "confidence"? (32FC1 in [0,1])} messages with `header`; info: the input camera's CameraInfo; stages gets
    "publish" (the depth messages). The one place that turns depth into messages, shared by the node and
    `dares bag infer`."""
    with stages("publish"):
        depth_m = eye.depth.cpu().numpy()
        out = {"depth": depth_image(depth_m, header),
               "info": depth_camera_info(info, eye.K, header, *depth_m.shape[::-1])}
        if eye.confidence is not None:
            out["confidence"] = depth_image(eye.confidence.cpu().numpy(), header)
    if eye.points is not None:
        with stages("cloud"):
            out["points"] = point_cloud(eye.points, eye.rgb, header)
    if eye.preview is not None:
        with stages("preview"):
            out["colored"] = uint8_image(eye.preview, "bgr8", header)
    return out
