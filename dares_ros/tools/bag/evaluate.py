"""`dares bag eval`: a bag's depth against its ground truth, with the SCARED protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sensor_msgs.msg import Image

from dares_core.errors import DaresError

from ...conversions import (
    image_to_rgb8,
    read_depth_image,
    stamp_key,
)
from ...names import OUTPUT_NAMESPACE
from .io import named_topic, open_reader, pick_topic, read_messages


def eval_bag(bag: Path, depth_topic: str = f"{OUTPUT_NAMESPACE}/depth/image", gt_topic: str | None = None,
             median_scaling: bool = True, region_topic: str | None = None):
    """SCARED metrics of a bag's depth against its ground-truth topic, frames paired by stamp; frames whose
    depth has no valid pixel are left out (and counted). With `region_topic` (a mask image topic, e.g. the
    synthetic instrument mask) the metrics cover its nonzero pixels, scaled as the whole frame. Returns
    (evaluation, frames left out)."""
    from dares_core.evaluate import evaluate_depth

    reader = open_reader(bag)
    try:
        topics = sorted(c.topic for c in reader.connections)
        gt_topic = named_topic(reader, gt_topic) if gt_topic else pick_topic(topics, ("ground_truth/depth",), bag)
    finally:
        reader.close()
    if depth_topic not in topics:
        raise DaresError(f"{bag} has no {depth_topic}: run `dares bag infer` on it first, or name the depth topic with "
                         f"--depth-topic (it has {', '.join(topics)})")

    def by_stamp(topic):
        return {stamp_key(m.header.stamp): read_depth_image(m)
                for m in read_messages(bag, topic, Image)}

    preds, gts = by_stamp(depth_topic), by_stamp(gt_topic)
    stamps = sorted(set(preds) & set(gts))
    if not stamps:
        raise DaresError(f"no {depth_topic} message shares a stamp with {gt_topic}: run `dares bag infer` on this bag "
                         f"first")
    valid = {s: np.isfinite(preds[s]) & (preds[s] > 0) for s in stamps}
    empty = [s for s in stamps if not valid[s].any()]
    stamps = [s for s in stamps if valid[s].any()]
    if not stamps:
        raise DaresError(f"every {depth_topic} frame paired with ground truth is all NaN or zero: nothing to evaluate")
    disps = [1.0 / np.where(valid[s], preds[s] * 1000.0, np.inf) for s in stamps]
    disps = [np.where(d > 0, d, np.min(d[d > 0])) for d in disps]  # invalid pixels: farthest valid disparity
    regions = None
    if region_topic is not None:
        masks = {stamp_key(m.header.stamp): image_to_rgb8(m)[..., 0] > 0
                 for m in read_messages(bag, region_topic, Image)}
        regions = [masks.get(s, np.zeros(gts[s].shape, bool)) for s in stamps]
    evaluation = evaluate_depth(np.stack(disps).astype(np.float32), [gts[s] * 1000.0 for s in stamps], median_scaling,
                                regions=regions)
    return evaluation, len(empty)
