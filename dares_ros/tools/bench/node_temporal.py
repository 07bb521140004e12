"""`dares bench node-temporal`: dares_depth_node's stabiliser as `dares demo` runs it (the built-in models, stereo
scale, the camera's motion from dares_odometry_node beside it), against the same graph with the stabiliser off,
on synthetic scenes of seeds its defaults were not chosen on (61-65). Each scene is replayed in step through the
demo's graph twice and scored from the recorded bag: TAE (whole frame, tissue alone, the ground truth's own) and
median-scaled AbsRel (whole frame, instruments alone).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from dares_core.bench.results import machine, seed_means
from dares_core.data.synthetic import SynthConfig, generate, sequence_folder
from dares_core.inference import network_input_size
from dares_core.model.weights import DEMO_MODEL, DEMO_POSE, load_depth_net
from dares_core.names import TEMPORAL_SCALE_WEIGHT, TEMPORAL_TOLERANCE, TEMPORAL_WEIGHT

from ...graph import prepare_dds
from ...names import NODE_TEMPORAL_SEEDS
from .. import bag as bags
from ..bag import Topics
from ..demo import demo_parameters, logs_kept_on_failure
from ..demo.harness import OUTPUTS, replay_through_node
from ..demo.scoring import recorded_frames, temporal_stability


def score_recording(recorded: Path, topics: Topics) -> dict:
    """TAE (tae, tae_tissue, tae_floor, ...) and median-scaled AbsRel of the whole frame (abs_rel) and of the
    instruments alone (abs_rel_instruments) of a recorded demo bag."""
    scores = temporal_stability(recorded, topics, recorded_frames(recorded, topics))
    for key, region in (("abs_rel", None), ("abs_rel_instruments", topics.gt_instruments)):
        evaluation, _ = bags.eval_bag(recorded, OUTPUTS["depth"], topics.gt_depth, median_scaling=True,
                                      region_topic=region)
        scores[key] = round(float(evaluation.mean["abs_rel"]), 4)
    return scores


def bench_node_temporal(seeds: tuple[int, ...] = NODE_TEMPORAL_SEEDS, frames: int = 40,
                        size: tuple[int, int] = (320, 256)) -> dict:
    """The demo's graph on the synthetic scenes of `seeds` (frames at size (width, height)), its depth node's
    stabiliser off (plain) and at its defaults (stabilised); per seed and their mean."""
    prepare_dds(local_only=True)  # the graph never leaves this machine
    input_size = network_input_size(load_depth_net(DEMO_MODEL), (None, None))
    scores = {}
    with tempfile.TemporaryDirectory(prefix="dares-bench-node-temporal-") as tmp:
        for seed in seeds:
            work = Path(tmp) / str(seed)
            cfg = SynthConfig(width=size[0], height=size[1], frames=frames, sequences=1, seed=seed)
            bags.write_sequence_bag(generate(cfg, work / "scenes") / sequence_folder(0), work / "input_bag")
            topics = Topics.of_bag(work / "input_bag")
            scores[seed] = {}
            for label, weight in (("plain", 0.0), ("stabilised", TEMPORAL_WEIGHT)):
                params, odometry = demo_parameters(DEMO_MODEL, input_size, "stereo", DEMO_POSE, temporal_weight=weight)
                with logs_kept_on_failure() as logs:
                    replay_through_node(work / "input_bag", topics, params, work / label, logs, odometry=odometry,
                                        timed=False)
                scores[seed][label] = score_recording(work / label, topics)
    return {"benchmark": "node-temporal", "machine": machine(torch.device("cpu")),
            "settings": {"model": DEMO_MODEL.name, "pose_model": DEMO_POSE.name, "frames": f"{size[0]}x{size[1]}",
                         "count": frames, "seeds": list(seeds), "scale_mode": "stereo", "weight": TEMPORAL_WEIGHT,
                         "tolerance": TEMPORAL_TOLERANCE, "scale_weight": TEMPORAL_SCALE_WEIGHT},
            "paths": seed_means(scores), "seeds": scores,
            "note": "dares_depth_node in dares demo's graph, the camera's motion from dares_odometry_node (never the "
                    "ground truth); TAE: Video Depth Anything's temporal alignment error, depth scaled once per "
                    "sequence; tae_floor: the ground truth's own; AbsRel: per frame, median-scaled (SCARED), "
                    "whole frame and instruments alone; paths: means over the seeds"}
