"""`dares bench node`: achieved output rate and latency of dares_depth_node on full-size stereo input.

The node runs as its console entry point (as `ros2 run` starts it) on a loopback-only graph; this process
publishes synthetic 1280x1024 stereo frames at a fixed rate on a drift-free schedule and records, for each
depth image and point cloud, the time from the input stamp to its arrival here, and the node's own per-stage
times from its diagnostics (medians over its last window). With stand_in the network is replaced by a constant
of its output's shape: what is left is the node's own cost, on any machine.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import cv2
import torch
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from dares_core.bench.results import machine, summarize
from dares_core.data.scared import image_path, read_sequence_calibration, sequence_frames
from dares_core.data.synthetic import SynthConfig, generate, sequence_folder
from dares_core.inference import network_input_size, resolve_device
from dares_core.model.depth_net import DaresDepthNet, DepthNetConfig
from dares_core.model.weights import load_depth_net, save_depth_net

from ...conversions import stamp_key
from ...graph import prepare_dds
from ..bag import camera_infos
from ..processes import memory_mb, node_session, publish_until_answered


def stereo_messages(width: int, height: int, workdir: Path,
                    sequence: Path | None = None) -> tuple[list[tuple[Image, Image]], CameraInfo, CameraInfo]:
    """Left/right Image pairs of a keyframe folder's frames (`sequence`, else a generated 3-frame scene of width x
    height under workdir) and the two eyes' CameraInfo from its calibration.yaml."""
    if sequence is None:
        root = generate(SynthConfig(width=width, height=height, frames=3, sequences=1, seed=1), workdir / "scenes")
        sequence = root / sequence_folder(0)
    sequence = Path(sequence)
    pairs = []
    for frame in sequence_frames(sequence.parent, sequence.name):
        msgs = []
        for side in "lr":
            bgr = cv2.imread(str(image_path(sequence.parent, sequence.name, frame, side)))
            msg = Image(height=bgr.shape[0], width=bgr.shape[1], encoding="bgr8", step=3 * bgr.shape[1])
            msg.data = bgr.tobytes()
            msgs.append(msg)
        pairs.append(tuple(msgs))
    left_info, right_info, _ = camera_infos(read_sequence_calibration(sequence), pairs[0][0].width,
                                            pairs[0][0].height)
    return pairs, left_info, right_info


def _run_stream(proc, node, pubs, pairs, left_info, right_info, arrivals, sent, rate, warmup, duration,
                workdir) -> float:
    """Publish the stereo stream on a drift-free schedule once the node answers; returns the node's peak RSS."""
    pose = PoseStamped()  # a still camera, for the stabiliser (published only with temporal_weight)
    pose.header.frame_id, pose.pose.orientation.w = "bench_map", 1.0

    def publish(i: int):
        stamp = node.get_clock().now().to_msg()
        if "camera_pose" in pubs:  # before the images: no frame waits for its pose
            pose.header.stamp = stamp
            pubs["camera_pose"].publish(pose)
        left, right = pairs[i % len(pairs)]
        for msg, topic in ((left_info, "left/camera_info"), (right_info, "right/camera_info"),
                           (right, "right/image_rect"), (left, "left/image_rect")):
            msg.header.stamp, msg.header.frame_id = stamp, "bench_left_optical"
            pubs[topic].publish(msg)
        return stamp_key(stamp)

    publish_until_answered(proc, workdir / "node.log", lambda: arrivals["depth"], publish)
    start = time.monotonic()
    for k in range(int((warmup + duration) * rate)):
        time.sleep(max(0.0, start + k / rate - time.monotonic()))  # drift-free schedule
        stamp = publish(k)
        if k >= warmup * rate:
            sent[stamp] = stamp[0] + stamp[1] * 1e-9
    time.sleep(1.0)  # let the last outputs arrive
    return memory_mb(proc.pid, "VmHWM")


def bench_node(weights: Path | None = None, encoder: str = "vits", width: int = 1280, height: int = 1024,
               rate: float = 30.0, duration: float = 20.0, warmup: float = 3.0, device: str = "cpu",
               precision: str = "fp32", input_size=(None, None), scale_mode: str = "relative", eyes: str = "left",
               compile: bool = False, sequence: Path | None = None, stand_in: bool = False,
               temporal_weight: float = 0.0) -> dict:
    """Run the node against a fixed-rate stereo stream; returns the benchmark record. eyes: both also measures
    the right eye's depth (computed in the same batch); compile: the node's `compile` parameter; sequence: a
    keyframe folder (image_02, image_03, calibration.yaml) streamed instead of a generated scene of width x height
    (its own image size is used); temporal_weight: the node's stabiliser on, with a still camera's pose published
    on camera_pose at every frame's stamp."""
    dev = resolve_device(device)
    prepare_dds(local_only=True)  # DDS never leaves this machine
    namespace = f"/dares_bench_{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="dares-bench-node-") as tmp:
        workdir = Path(tmp)
        if weights is None:
            torch.manual_seed(0)
            weights = workdir / f"random-{encoder}.safetensors"
            save_depth_net(DaresDepthNet(DepthNetConfig.dares(encoder)), weights)
        input_size = network_input_size(load_depth_net(weights), input_size)  # what the node will run at
        pairs, left_info, right_info = stereo_messages(width, height, workdir, sequence)
        width, height = left_info.width, left_info.height
        params = {"weights": weights, "device": device, "precision": precision, "input_height": input_size[0],
                  "input_width": input_size[1], "scale_mode": scale_mode, "eyes": eyes,
                  "compile": str(compile).lower(), "stand_in_network": str(stand_in).lower(),
                  "temporal_weight": temporal_weight}
        with node_session(namespace, params, workdir, "dares_bench_publisher") as (proc, node):
            outputs = {"depth": (Image, "depth/image"), "points": (PointCloud2, "points")}
            if eyes == "both":
                outputs["right depth"] = (Image, "right/depth/image")
            arrivals: dict[str, dict[tuple[int, int], float]] = {kind: {} for kind in outputs}

            def record(kind):
                def store(msg):
                    now = node.get_clock().now().nanoseconds * 1e-9
                    arrivals[kind][stamp_key(msg.header.stamp)] = now
                return store

            for kind, (msg_type, topic) in outputs.items():
                node.create_subscription(msg_type, f"{namespace}/{topic}", record(kind), qos_profile_sensor_data)
            stages: dict[str, float] = {}

            def node_stages(msg: DiagnosticArray):
                for status in msg.status:
                    if status.hardware_id == f"{namespace}/dares_depth_node":
                        stages.update({kv.key[len("stage_"):-len("_ms")]: float(kv.value) for kv in status.values
                                       if kv.key.startswith("stage_")})

            node.create_subscription(DiagnosticArray, "/diagnostics", node_stages, 10)
            pubs = {k: node.create_publisher(t, f"{namespace}/{k}", 10) for k, t in (
                ("left/image_rect", Image), ("right/image_rect", Image), ("left/camera_info", CameraInfo),
                ("right/camera_info", CameraInfo), *([("camera_pose", PoseStamped)] if temporal_weight else []))}
            sent: dict[tuple[int, int], float] = {}
            peak = _run_stream(proc, node, pubs, pairs, left_info, right_info, arrivals, sent, rate, warmup,
                               duration, workdir)
    paths = {}
    for kind in arrivals:
        latencies = [arrivals[kind][s] - t for s, t in sent.items() if s in arrivals[kind]]
        stats = summarize(latencies, 1) if latencies else {}
        achieved = round(len(latencies) / duration, 2)
        stats.update(throughput_fps=achieved, achieved_rate_hz=achieved, received=len(latencies), published=len(sent),
                     dropped=len(sent) - len(latencies))
        paths[f"node {kind}"] = stats
    paths["node depth"]["peak_memory_mb"] = peak
    paths["node depth"]["stages_ms"] = stages
    return {
        "benchmark": "node", "machine": machine(dev),
        "settings": {"input": f"{width}x{height} stereo", "rate_hz": rate, "duration_s": duration,
                     "network": f"{input_size[0]}x{input_size[1]}", "precision": precision, "scale_mode": scale_mode,
                     "encoder": encoder, "eyes": eyes, "compile": compile, "network_stand_in": stand_in,
                     **({"temporal_weight": temporal_weight} if temporal_weight else {})},
        "paths": paths,
        "note": "the node runs with config/dares.yaml plus these settings (coloured preview on); latency: input "
                "stamp to arrival at a subscriber in another process (transport included); stages_ms: the node's "
                "medians over its last 5 s per frame (own: every stage but the network; stereo_worker: SGBM per "
                "pair, in its own thread, with stereo_matcher sgbm)",
    }
