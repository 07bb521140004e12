"""dares demo's report.md and the summary it prints."""

from __future__ import annotations

from pathlib import Path

from dares_core.files import atomic_file
from dares_core.pipeline import STEREO_SETTINGS

REPORT_TITLE = "# dares demo"


def _metrics_table(rows: dict) -> str:
    from dares_core.evaluate import METRICS

    names = ("AbsRel", "SqRel", "RMSE (mm)", "RMSElog", "δ<1.25", "δ<1.25²", "δ<1.25³")
    lines = ["| scaling | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, evaluation in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{evaluation.mean[m]:.3f}" for m in METRICS) + " |")
    return "\n".join(lines)


def write_report(out: Path, summary: dict, metric_rows: dict) -> None:
    s, t = summary, summary["timing"]
    lines = [REPORT_TITLE, "",
             f"{s['source']} was replayed into `dares_depth_node` on a ROS 2 graph (ROS_DOMAIN_ID {s['domain_id']}, "
             "loopback only) in step with the nodes (each frame once they answered the one before), so these figures "
             "do not depend on the machine's speed or load; the node's outputs were recorded into `recorded_bag/`, "
             "and everything below but the rate and latency is read back from that bag.", "",
             f"- model: {s['model']}; pose network: {s['pose_weights']}",
             f"- device {s['device']}, {s['precision']}, network input {s['input_size'][0]}x{s['input_size'][1]}, "
             f"scale mode `{s['scale_mode']}`, backend `{s.get('backend', 'torch')}`", ""]
    if s["model_is_demo"]:
        lines += ["The built-in model is a tiny Depth-Anything-V2-architecture network, and its pose network a small "
                  "ResNet, trained by `dares train` on synthetic scenes (docs/demo_model.md): they show the pipeline "
                  "working, not DARES accuracy. For real data run `dares demo --weights depth_model.pth "
                  "--pose-weights weights/ --bag your_scared_bag` with the official DARES checkpoint and pose "
                  "weights.", ""]
    if metric_rows:
        lines += ["## Depth against ground truth (SCARED protocol)", "",
                  f"{s['frames_with_depth']} frames, ground truth capped at 150 mm. Median-scaled is the protocol of "
                  "the paper; metric uses the node's own scale. \"Instruments only\" covers the pixels of the "
                  "synthetic instrument mask (each frame scaled as a whole): tools are where surgeons need depth "
                  "most.", "", _metrics_table(metric_rows), ""]
    if s.get("confidence"):
        c = s["confidence"]
        lines += ["## Confidence", "",
                  "`depth/confidence` (dares_core.confidence; docs/confidence.md), scored as the uncertainty "
                  "literature scores one: remove the least trusted pixels 2 % at a time and take the AbsRel of the "
                  "rest; AUSE is the mean gap of that curve over the oracle's (largest true error first). Over "
                  f"{c['frames']} frames: AUSE {c['ause']}, a random confidence's {c['ause_random']}: "
                  f"**{c['ause_ratio']} of random** (1 is chance, 0 the oracle). The strip's last column shows it "
                  "(white: trusted).", ""]
    if s.get("temporal"):
        m = s["temporal"]
        tissue = (f" (tissue alone {m['tae_tissue']}; its floor {m['tae_floor_tissue']})" if "tae_tissue" in m
                  else "")
        lines += ["## Temporal stability", "",
                  "TAE (temporal alignment error, Video Depth Anything): each frame's depth carried into the next "
                  "with the bag's camera motion and compared there by AbsRel, both directions, the depth scaled once "
                  f"for the whole sequence. **TAE {m['tae']}**{tissue}; the ground truth's own TAE, the floor that "
                  f"occlusions and moving instruments leave: {m['tae_floor']}.", ""]
    if "stereo_scale_error" in s:
        lines += ["## Stereo scale", "",
                  "The node recovers metric scale from the rectified pair (stereo_matcher "
                  f"{STEREO_SETTINGS['stereo_matcher']}, its default: matches of each frame's own pair; "
                  "docs/stereo-scale.md). Ground truth / predicted depth, "
                  f"median over frames: {s['stereo_scale_ratio']:.3f}, a scale error of "
                  f"**{100 * s['stereo_scale_error']:+.1f} %** (frame-to-frame spread "
                  f"{100 * s['stereo_scale_spread']:.1f} %).", ""]
    if "fused" in s:
        f = s["fused"]
        lines += ["## Fused surface", "",
                  "`dares_fusion_node` fused the node's depth with the bag's camera poses (`ground_truth/pose`) into a "
                  f"TSDF (1 mm voxels): {f['points']} points. Against the ground-truth surface of the same frames: "
                  f"accuracy {f.get('accuracy_mm')} mm, completeness {f.get('completeness_mm')} mm, **Chamfer "
                  f"{f.get('chamfer_mm')} mm** (the depth keeps the node's own scale, so a scale error shows here).",
                  ""]
    if "odometry" in s:
        o = s["odometry"]
        lines += ["## Camera motion", "",
                  "`dares_odometry_node` chained the pose network's frame-to-frame motion, in metres at the unit its "
                  "weights record (`scale_source: fixed`; live, `depth_node` takes the depth node's scale, which "
                  "reaches it once a second, at moments a replay does not repeat). Against the bag's ground-truth "
                  f"poses over {o['frames']} frames, "
                  "as official evaluate_pose.py scores it (5-frame snippets, scale-aligned): "
                  f"**ATE {o['ate_mm']} mm** (std {o['ate_std_mm']}; a camera predicted to stand still scores "
                  f"{o['still_ate_mm']} mm), RE {o['re_rad']} rad. Path length against the true one, unaligned: "
                  f"{o['path_length_ratio']}.", ""]
    lines += ["## Rate and latency", "",
              f"A second replay at {s['rate']}x recorded timing, as a live camera sends frames, into the nodes "
              "started afresh as a user launches them: the demo's parameters without the in-step ones (qos, "
              "stereo_rate, temporal_pose_wait and the odometry's scale_source at the nodes' defaults). Input "
              f"{t['input_frames']} frames at {t['input_rate_hz']} Hz; depth for {t['depth_frames']} "
              f"({t['dropped']} dropped by the node's latest-frame policy) at {t['output_rate_hz']} Hz"
              + (f"; odometry at {t['odometry_rate_hz']} Hz" if "odometry_rate_hz" in t else "") + ". "
              "Latency from the input image to its depth image, both as received here: "
              f"median {t['latency_ms']['median']} ms, p99 {t['latency_ms']['p99']} ms, max {t['latency_ms']['max']} "
              "ms. The depth node's parameters: "
              + ", ".join(f"`{k}: {v}`" for k, v in t.get("parameters", {}).items()) + ".",
              "", "## Files", "",
              "- `strip.png`: input | predicted depth | ground-truth depth at three moments, one colour scale "
              f"({s['depth_scale']['near_mm']}-{s['depth_scale']['far_mm']} mm)",
              "- `demo.mp4`, `demo.gif`: the same for every frame",
              f"- `points.ply` (metres, optical frame, {s['points']} points) and `points.png`: the node's point cloud "
              "of the middle frame",
              *(["- `fused.ply` (metres, world frame) and `fused.png`: the fused surface"] if "fused" in s else []),
              *(["- `trajectory.png`: the odometry against ground truth, top and side views"] if "odometry" in s
                else []),
              "- `recorded_bag/`: the recorded rosbag2 (MCAP); `dares bag info recorded_bag`, `ros2 bag play "
              "recorded_bag`",
              "- `summary.json`: these figures for scripts", ""]
    with atomic_file(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))


def print_summary(out: Path, s: dict, say) -> None:
    t = s["timing"]
    say(f"\ndepth for {t['depth_frames']}/{t['input_frames']} frames at {t['output_rate_hz']} Hz, "
        f"latency median {t['latency_ms']['median']} ms, p99 {t['latency_ms']['p99']} ms")
    if "metrics_median_scaled" in s:
        m = s["metrics_median_scaled"]
        say(f"SCARED metrics (median-scaled): AbsRel {m['abs_rel']:.3f}, RMSE {m['rmse']:.2f} mm, δ<1.25 {m['a1']:.3f}")
    if "stereo_scale_error" in s:
        say(f"stereo scale error: {100 * s['stereo_scale_error']:+.1f} %")
    if s.get("confidence"):
        say(f"confidence: AUSE {s['confidence']['ause_ratio']} of random's (1 is chance, 0 the oracle)")
    if s.get("temporal"):
        say(f"TAE {s['temporal']['tae']} (the ground truth's own: {s['temporal']['tae_floor']})")
    if "fused" in s:
        say(f"fused surface: {s['fused']['points']} points, Chamfer {s['fused'].get('chamfer_mm')} mm to the true "
            "surface")
    if "odometry" in s:
        o = s["odometry"]
        say(f"odometry: ATE {o['ate_mm']} mm (a still camera: {o['still_ate_mm']} mm), RE {o['re_rad']} rad")
    if s["model_is_demo"]:
        say("the built-in models are tiny and trained on synthetic scenes; real weights: "
            "dares demo --weights depth_model.pth --pose-weights weights/ --bag BAG")
    fused = ", fused.ply, fused.png" if "fused" in s else ""
    trajectory = ", trajectory.png" if "odometry" in s else ""
    say(f"wrote {out}/: report.md, strip.png, demo.mp4, demo.gif, points.ply, points.png{fused}{trajectory}, "
        "recorded_bag/, logs/")
