"""`dares demo`: the whole product on built-in data, through a real ROS 2 graph (loopback only).

A synthetic da Vinci stereo sequence is written as a rosbag, replayed in step (each frame once the nodes answered
the one before, within a bound: the figures do not depend on the machine's speed or load) into dares_depth_node
(started as `ros2 run` starts it, stereo scale on) and dares_odometry_node, and the nodes' outputs are recorded into
a new bag together with the input left image and ground truth; a second replay at recorded timing measures the
achieved rate and latency.
Everything shown is read back from that recorded bag: the picture strip and video (input | predicted |
ground-truth depth on one mm scale), a point cloud (.ply and an oblique render), the camera trajectory
against the bag's ground-truth poses, the surface dares_fusion_node fused from the depth and those poses
(when the bag has them), and report.md with the SCARED metrics, the recovered stereo scale error, the
odometry's ATE and RE, the fused surface's distance to the true one, and the achieved rate and latency.
`--weights W --bag B [--pose-weights P]` runs the same flow on real data.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from dares_core.errors import DaresError
from dares_core.files import OWNER, atomic_dir, atomic_file, mark_owner, sweep_stale
from dares_core.inference import network_input_size
from dares_core.model.weights import DEMO_MODEL, DEMO_POSE, load_depth_net
from dares_core.names import TEMPORAL_WEIGHT

from ...graph import prepare_dds
from .. import bag as bags
from ..bag import Topics
from .harness import OUTPUTS, replay_through_node
from .pictures import write_fused_surface, write_pictures, write_point_cloud, write_trajectory
from .report import REPORT_TITLE, print_summary, write_report
from .scoring import confidence_scores, fused_surface, odometry_scores, recorded_frames, temporal_stability


def check_demo_folder(out: Path) -> None:
    """Only a folder an earlier demo wrote (or an empty one) is ever replaced."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    report = out / "report.md"
    if not (out.is_dir() and report.is_file() and report.read_text().startswith(REPORT_TITLE)):
        raise DaresError(f"{out} exists and is not a dares demo output: pass another --out (the demo replaces its "
                         f"folder)")


class Progress:
    """Numbered step lines with their durations."""

    def __init__(self, steps: int, say=print):
        self.steps, self.say, self.n, self.t0 = steps, say, 0, None

    def step(self, text: str) -> None:
        self.done()
        self.n += 1
        self.t0 = time.monotonic()
        self.say(f"[{self.n}/{self.steps}] {text}")

    def done(self) -> None:
        if self.t0 is not None:
            self.say(f"      done in {time.monotonic() - self.t0:.1f} s")
            self.t0 = None


def sweep_leftovers(out: Path) -> None:
    """What a demo killed mid-way (SIGKILL, power) left: its staged output beside `out` (.OUT.*.partial) and its work
    and log folders in the temporary folder, each holding OWNER; removed once the process named there is gone. A
    failed demo's logs, named in its message, hold no OWNER and stay."""
    sweep_stale([*out.parent.glob(f".{out.name}.*.partial"), *Path(tempfile.gettempdir()).glob("dares-demo-*")])


@contextlib.contextmanager
def logs_kept_on_failure():
    """A folder for the nodes' logs, removed when the block ends (the demo moves it into its output first) but
    kept, and named in the message, when a DaresError ends the block after a node has logged."""
    logs = Path(tempfile.mkdtemp(prefix="dares-demo-logs-"))
    mark_owner(logs)
    keep = False
    try:
        yield logs
    except DaresError as e:
        (logs / OWNER).unlink(missing_ok=True)  # named to the user: never swept
        keep = logs.is_dir() and any(logs.iterdir())
        if keep:
            raise DaresError(f"{e} (the nodes' logs are kept in {logs})") from None
        raise
    finally:
        if not keep:
            shutil.rmtree(logs, ignore_errors=True)


def demo_parameters(model: Path, input_size: tuple[int, int], scale_mode: str, pose_weights: Path | None,
                    device: str = "cpu", precision: str = "fp32",
                    temporal_weight: float = TEMPORAL_WEIGHT) -> tuple[dict, dict | None]:
    """The demo's parameters of dares_depth_node and, with `pose_weights`, of dares_odometry_node (else None);
    temporal_weight: the depth node's stabiliser with the odometry's poses (0: off; without odometry it is off)."""
    params = {"weights": model, "device": device, "precision": precision, "input_height": input_size[0],
              "input_width": input_size[1], "scale_mode": scale_mode, "point_stride": 2, "publish_colored": "false",
              "confidence_photometric": "true",  # in stereo: the other eye judges the depth too (docs/confidence.md)
              "qos": "reliable",
              "stereo_rate": 0.0}  # stereo scale from every frame, in order: the same figures on any machine
    # metres at the pose weights' recorded unit (scale_source fixed): the depth node's scale reaches a live
    # odometry node through diagnostics once a second, at moments no replay repeats
    odometry = pose_weights and {"pose_weights": pose_weights, "device": device, "qos": "reliable",
                                 "scale_source": "fixed"}
    if odometry and temporal_weight:  # each frame waits for its own pose, which the odometry node gives every
        # frame, however loaded the machine (a bounded wait would make figures of load)
        params.update(temporal_weight=temporal_weight, temporal_pose_wait=60.0)
    return params, odometry


def run_demo(out: Path = Path("demo_out"), weights: Path | None = None, bag: Path | None = None,
             input_size: tuple[int, int] | None = None, rate: float = 1.0, frames: int = 40,
             size: tuple[int, int] = (320, 256), device: str = "cpu", precision: str = "fp32",
             scale_mode: str | None = None, pose_weights: Path | None = None, backend: str = "torch",
             say=print) -> dict:
    """The demo flow (see the module docstring); writes `out` in one rename at the end and returns the summary."""
    from tqdm import tqdm

    from dares_core.data.synthetic import SynthConfig, generate, sequence_folder

    prepare_dds(local_only=True)  # the demo graph never leaves this machine
    out = Path(out).resolve()
    check_demo_folder(out)
    if bag is not None and weights is None:
        raise DaresError("--bag needs --weights too: the built-in model is trained on synthetic scenes only")
    progress = Progress(5 if bag is None else 4, say)
    say(f"dares demo: writing {out}")
    sweep_leftovers(out)
    with logs_kept_on_failure() as logs, tempfile.TemporaryDirectory(prefix="dares-demo-") as tmp, \
            atomic_dir(out, force=True) as stage:
        work = Path(tmp)
        mark_owner(work)  # the stage is atomic_dir's, marked there
        if bag is None:
            progress.step(f"synthesising a {frames}-frame da Vinci stereo sequence ({size[0]}x{size[1]}) with ground "
                          f"truth")
            cfg = SynthConfig(width=size[0], height=size[1], frames=frames, sequences=1, seed=7)
            root = generate(cfg, work / "scenes")
            bags.write_sequence_bag(root / sequence_folder(0), work / "input_bag")
            bag = work / "input_bag"
            source = f"A synthetic {size[0]}x{size[1]} stereo sequence ({frames} frames, {cfg.fps:g} Hz)"
        else:
            source = f"`{bag}`"
        topics = Topics.of_bag(bag)
        scale_mode = scale_mode or ("stereo" if topics.stereo else "relative")
        if scale_mode == "stereo" and not topics.stereo:
            raise DaresError(f"{bag}: stereo scale needs right image and camera_info topics; "
                             "pass --scale-mode relative")
        model = Path(weights) if weights else DEMO_MODEL
        input_size = network_input_size(load_depth_net(model), input_size or (None, None))  # the model's own
        pose_weights = pose_weights or (DEMO_POSE if weights is None else None)
        params, odometry = demo_parameters(model, input_size, scale_mode, pose_weights, device, precision)
        params["backend"] = backend
        progress.step(f"replaying the bag into dares_depth_node ({model.name}, {device}, {scale_mode} scale) "
                      "and recording its outputs")
        total = bags.bag_info(bag)["messages"]
        with tqdm(total=total, desc="play", unit="msg", dynamic_ncols=True, leave=False) as bar:
            replay = replay_through_node(bag, topics, params, stage / "recorded_bag", logs, rate, bar.update,
                                         odometry)
        progress.step("reading the recorded bag back and evaluating against ground truth")
        recorded = stage / "recorded_bag"
        frame_list, timing = recorded_frames(recorded, topics), replay["timing"]
        summary = {"source": source, "rate": rate, "domain_id": int(os.environ.get("ROS_DOMAIN_ID", "0")),
                   "model": "the built-in demo model (tiny, synthetic-trained)" if weights is None else str(model),
                   "model_is_demo": weights is None, "device": device, "precision": precision,
                   "pose_weights": ("the built-in demo pose network" if pose_weights == DEMO_POSE
                                    else str(pose_weights or "none")),
                   "input_size": list(input_size), "scale_mode": scale_mode, "backend": backend, "timing": timing,
                   "frames_with_depth": len(frame_list),
                   "recorded_messages": replay["recorded"]}
        metric_rows = {}
        if topics.gt_depth:
            scaled, _ = bags.eval_bag(recorded, OUTPUTS["depth"], topics.gt_depth, median_scaling=True)
            metric_rows["median-scaled"] = scaled
            summary["metrics_median_scaled"] = scaled.mean
            if topics.gt_instruments:  # where surgeons need depth most, scaled as the whole frame
                on_instruments, _ = bags.eval_bag(recorded, OUTPUTS["depth"], topics.gt_depth, median_scaling=True,
                                                  region_topic=topics.gt_instruments)
                metric_rows["median-scaled, instruments only"] = on_instruments
                summary["metrics_instruments"] = on_instruments.mean
            if scale_mode != "relative":
                metric, _ = bags.eval_bag(recorded, OUTPUTS["depth"], topics.gt_depth, median_scaling=False)
                metric_rows[f"metric ({scale_mode} scale)"] = metric
                summary["metrics_metric"] = metric.mean
            if scale_mode == "stereo":
                ratio = scaled.ratio_summary()
                summary.update(stereo_scale_ratio=ratio["median"], stereo_scale_error=ratio["median"] - 1.0,
                               stereo_scale_spread=ratio["std_over_median"])
            summary["confidence"] = confidence_scores(frame_list)
        progress.step("drawing the picture strip, video and point cloud")
        fps = timing["input_rate_hz"] / rate if timing["input_rate_hz"] else 25.0
        summary["depth_scale"] = write_pictures(frame_list, stage, fps)
        summary["points"] = write_point_cloud(recorded, frame_list[len(frame_list) // 2].stamp, stage)
        if topics.gt_pose:
            summary["temporal"] = temporal_stability(recorded, topics, frame_list)
            surface = fused_surface(recorded, topics, frame_list)
            write_fused_surface(stage, surface)
            summary["fused"] = surface.summary
            if odometry:
                motion = odometry_scores(recorded, topics)
                write_trajectory(stage, motion)
                summary["odometry"] = motion.summary
        progress.step("writing report.md")
        write_report(stage, summary, metric_rows)
        with atomic_file(stage / "summary.json") as f:
            f.write_text(json.dumps(summary, indent=2) + "\n")
        shutil.move(logs, stage / "logs")
        (stage / "logs" / OWNER).unlink(missing_ok=True)
        progress.done()
    print_summary(out, summary, say)
    return summary
