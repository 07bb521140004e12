"""`dares bench soak`: dares_depth_node under abuse, with bounded time.

Phases, each `phase_s` long, at twice the node's sustainable rate (measured first): steady; bursts of
back-to-back frames; duplicated and out-of-order stamps; the publisher disappears and returns; the image
size changes mid-stream. Reported: frames sent and answered per phase, latency p50/p99, dropped frames, and
the node's resident memory after warm-up and at the end.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from sensor_msgs.msg import CameraInfo, Image

from dares_core.bench.results import machine, summarize
from dares_core.inference import network_input_size, resolve_device
from dares_core.model.depth_net import DaresDepthNet, DepthNetConfig
from dares_core.model.weights import load_depth_net, save_depth_net

from ...conversions import stamp_key, stamp_seconds
from ...graph import prepare_dds
from ..processes import memory_mb, node_session, publish_until_answered
from .node import stereo_messages

PHASES = ("steady", "bursts", "duplicate_and_out_of_order_stamps", "publisher_gone_and_back", "resolution_change")


def _half(msg: Image, info: CameraInfo) -> tuple[Image, CameraInfo]:
    """The same frame at half resolution with matching intrinsics (a camera switching modes)."""
    import cv2

    from ...conversions import image_to_rgb8, scale_camera_info

    rgb = image_to_rgb8(msg)
    small = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    out = Image(height=small.shape[0], width=small.shape[1], encoding="rgb8", step=3 * small.shape[1])
    out.data = small.tobytes()
    return out, scale_camera_info(info, small.shape[1], small.shape[0])


def soak(weights: Path | None = None, encoder: str = "vits", width: int = 640, height: int = 512,
         phase_s: float = 10.0, device: str = "cpu", input_size=(None, None), hf_config: dict | None = None) -> dict:
    """Run the phases against a node started as its console entry point; returns the record."""
    dev = resolve_device(device)
    prepare_dds(local_only=True)
    namespace = f"/dares_soak_{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="dares-soak-") as tmp:
        workdir = Path(tmp)
        if weights is None:
            torch.manual_seed(0)
            weights = workdir / "random.safetensors"
            save_depth_net(DaresDepthNet(DepthNetConfig.dares(encoder, hf_config=hf_config)), weights)
        input_size = network_input_size(load_depth_net(weights), input_size)  # what the node will run at
        pairs, left_info, _ = stereo_messages(width, height, workdir)
        params = {"weights": weights, "device": device, "input_height": input_size[0], "input_width": input_size[1],
                  "publish_colored": "false"}
        with node_session(namespace, params, workdir, "dares_soak") as (proc, node):
            arrivals: dict[tuple[int, int], float] = {}
            sizes: list[int] = []

            def on_depth(msg):
                arrivals[stamp_key(msg.header.stamp)] = node.get_clock().now().nanoseconds * 1e-9
                sizes.append(msg.width)

            node.create_subscription(Image, f"{namespace}/depth/image", on_depth, 10)
            info_pub = node.create_publisher(CameraInfo, f"{namespace}/left/camera_info", 10)
            image_pub = [node.create_publisher(Image, f"{namespace}/left/image_rect", 10)]
            sent: dict[tuple[int, int], tuple[str, float]] = {}

            def publish(i: int, phase: str, stamp=None, small: bool = False):
                msg, info = pairs[i % len(pairs)][0], left_info
                if small:
                    msg, info = _half(msg, info)
                stamp = stamp or node.get_clock().now().to_msg()
                msg.header.stamp = info.header.stamp = stamp
                msg.header.frame_id = info.header.frame_id = "soak_left_optical"
                info_pub.publish(info)
                image_pub[0].publish(msg)
                key = stamp_key(stamp)
                sent.setdefault(key, (phase, stamp_seconds(stamp)))
                return stamp

            i = publish_until_answered(proc, workdir / "node.log", lambda: arrivals, lambda i: publish(i, "warmup"),
                                       period=0.3)
            start, before = time.monotonic(), len(arrivals)
            while time.monotonic() - start < 3.0:  # sustainable rate: answers while flooded
                publish(i, "warmup")
                i += 1
                time.sleep(0.01)
            sustainable = max((len(arrivals) - before) / 3.0, 0.5)
            period = 1.0 / (2 * sustainable)
            rss_warm = memory_mb(proc.pid)
            for phase in PHASES:
                end = time.monotonic() + phase_s
                old = None
                while time.monotonic() < end:
                    i += 1
                    if phase == "bursts" and i % 10 == 0:
                        for _ in range(10):
                            publish(i, phase)
                    elif phase == "duplicate_and_out_of_order_stamps":
                        stamp = publish(i, phase)
                        publish(i, phase, stamp=stamp)  # the same stamp twice
                        if old is not None:
                            publish(i, phase, stamp=old)  # an older stamp after a newer one
                        old = stamp
                    elif phase == "publisher_gone_and_back" and i % 20 == 0:
                        node.destroy_publisher(image_pub[0])
                        time.sleep(1.0)
                        image_pub[0] = node.create_publisher(Image, f"{namespace}/left/image_rect", 10)
                    else:
                        publish(i, phase, small=phase == "resolution_change")
                    time.sleep(period)
            time.sleep(2.0)
            rss_end = memory_mb(proc.pid)
            alive = proc.poll() is None

    per_phase = {}
    latencies = []
    for phase in PHASES:
        keys = [k for k, (p, _) in sent.items() if p == phase]
        answered = [arrivals[k] - sent[k][1] for k in keys if k in arrivals]
        latencies += answered
        per_phase[phase] = {"sent": len(keys), "answered": len(answered)}
    stats = summarize(latencies, 1) if latencies else {}
    stats.pop("throughput_fps", None)
    stats.update({"sustainable_hz": round(sustainable, 2), "published_at_hz": round(2 * sustainable, 2),
                  "rss_after_warmup_mb": round(rss_warm, 1), "rss_end_mb": round(rss_end, 1),
                  "rss_growth_mb": round(rss_end - rss_warm, 1), "node_alive": alive,
                  "half_size_outputs": int(sum(1 for w in sizes if w == width // 2))})
    return {"benchmark": "soak", "machine": machine(dev),
            "settings": {"input": f"{width}x{height}", "phase_s": phase_s,
                         "network": f"{input_size[0]}x{input_size[1]}",
                         "encoder": encoder},
            "paths": {"node under abuse": stats}, "phases": per_phase}
