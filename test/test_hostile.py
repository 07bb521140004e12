"""Every `dares` subcommand against hostile input, one generated member of each class of issue #29: outputs that
would collide, --force onto something of another kind, truncated media, our own outputs as inputs, options of the
wrong type or range, filters that select nothing, and messages true to their cause. For each: exit status 2, one
line on stderr naming the thing and the fix, no traceback, and nothing written or touched (apart from a command's
declared partial output)."""

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import write_raw_keyframe

from dares_core.cli import main
from dares_ros.tools.bag import infer_bag, write_sequence_bag


@pytest.fixture(scope="module")
def material(tiny_model, tmp_path_factory):
    """Read-only inputs: the tiny model, its 3-frame synthetic keyframe (with ground truth and poses), a bag of it,
    that bag with the node's outputs added (`bag infer`), an infer output folder, and a video cut in half."""
    weights, sequence = tiny_model
    root = tmp_path_factory.mktemp("hostile")
    bag = root / "synth.bag"
    write_sequence_bag(sequence, bag)
    inferred = root / "inferred.bag"
    infer_bag(bag, weights, inferred, input_size=(28, 42))
    images = root / "images"
    images.mkdir()
    for i, frame in enumerate(sorted((sequence / "image_02" / "data").glob("*.png"))[:2]):
        shutil.copy(frame, images / f"frame{i}.png")
    assert main(["infer", "--weights", str(weights), "--input", str(images), "--out", str(root / "inferred"),
                 "--height", "28", "--width", "42"]) == 0
    writer = cv2.VideoWriter(str(root / "whole.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for i in range(40):
        writer.write(np.random.default_rng(i).integers(0, 256, (48, 64, 3), np.uint8))
    writer.release()
    data = (root / "whole.avi").read_bytes()
    (root / "cut.avi").write_bytes(data[: len(data) // 2])
    return {"weights": weights, "data": sequence.parents[1], "keyframe": f"{sequence.parent.name}/{sequence.name}",
            "sequence": sequence, "bag": bag, "inferred_bag": inferred, "infer_out": root / "inferred",
            "images": images, "cut_video": root / "cut.avi"}


@pytest.fixture
def user(tmp_path):
    """A user's working folder: a folder of their own files and a file of theirs."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    (tmp_path / "file.txt").write_text("the user's too")
    return tmp_path


def tree(folder: Path) -> dict:
    """Every path under `folder` with its size and mtime: what a command must leave as it was."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def run(argv: list[str]) -> tuple[int, str]:
    """main(argv) in this process: exit status and what it wrote to stderr (progress bars left out)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as e:  # argparse
            status = e.code
    lines = [line for line in err.getvalue().split("\n") if line.strip() and "\r" not in line and "%|" not in line]
    return status, "\n".join(lines)


# id: (the command line, {placeholders} filled from the material and the user's folder, what the one line must say)
CASES = {
    # 1. outputs that collide
    "infer: stems that still collide": ("infer --weights {weights} --input {user}/clash --out {user}/out",
                                        "would write outputs named x_png"),
    # 2. --force onto something of another kind
    "infer --save-disp onto a folder": ("infer --weights {weights} --input {images} --out {user}/out --save-disp "
                                        "{user}/mine --force", "is a folder: give the path"),
    "export onto a folder": ("export --weights {weights} --out {user}/mine --force", "is a folder: give the path"),
    "export pose onto a folder": ("export --network pose --weights {user}/nope --out {user}/mine --force",
                                  "is a folder: give the path"),
    "synth onto a file": ("synth --out {user}/file.txt --force --frames 3 --sequences 1 --width 32 --height 32",
                          "which this command did not write"),
    "synth onto a folder of others": ("synth --out {user}/mine --force --frames 3 --sequences 1 --width 32 --height 32",
                                      "holds notes.txt, which this command did not write"),
    "bag from-synth onto a folder of others": ("bag from-synth {sequence} --out {user}/mine --force",
                                               "holds notes.txt"),
    "bag infer onto a folder of others": ("bag infer {bag} --weights {weights} --out {user}/mine --force",
                                          "holds notes.txt"),
    "train onto a folder of others": ("train --data {data} --out {user}/mine --force",
                                      "which this command did not write"),
    "eval onto a file": ("eval --weights {weights} --data {data} --out {user}/file.txt", "is a file: give a folder"),
    "pose onto a file": ("pose --weights {user}/nope --data {data} --keyframe {keyframe} --out {user}/file.txt",
                         "is a file: give a folder"),
    "reconstruct onto a file": ("reconstruct --depth gt --data {data} --keyframe {keyframe} --out {user}/file.txt",
                                "is a file: give a folder"),
    # 3. truncated media
    "infer on a video cut in half": ("infer --weights {weights} --input {cut_video} --out {user}/out --height 28 "
                                     "--width 42", "read 19 of the 40 frames it declares"),
    "prepare-scared with a video cut short": ("prepare-scared --src {user}/raw --dst {user}/out",
                                              "1 keyframe(s) failed"),
    # 4. our own outputs as inputs
    "infer on an infer output folder": ("infer --weights {weights} --input {infer_out} --out {user}/out",
                                        "holds dares infer outputs"),
    # 5. options checked for type and range before any work
    "train --set a number that is text": ("train --data {data} --out {user}/run --set learning_rate=abc",
                                          "training option learning_rate: 'abc' is not allowed: give a number"),
    "train --set a negative batch": ("train --data {data} --out {user}/run --set batch_size=-2",
                                     "give an integer from 1 to 4096"),
    "train --set a size beyond memory": ("train --data {data} --out {user}/run --set height=100000", "from 32 to 4096"),
    "train --set a list that is no YAML": ("train --data {data} --out {user}/run --set frame_ids=[0,-1",
                                           "is not valid YAML"),
    "train --config that is no YAML": ("train --config {user}/bad.yaml --data {data} --out {user}/run",
                                       "not valid YAML"),
    "train --config that is a list": ("train --config {user}/list.yaml --data {data} --out {user}/run",
                                      "expected a mapping"),
    "export an opset the exporter cannot write": ("export --weights {weights} --out {user}/m.onnx --opset 99",
                                                  "give 14 to 20"),
    "infer a network size beyond memory": ("infer --weights {weights} --input {user}/mine --out {user}/out --height "
                                           "100000", "<= 4096"),
    "synth a width of zero": ("synth --out {user}/s --width 0", "give a number > 0"),
    # 6. filters that select nothing
    "bag play a topic the bag lacks": ("bag play {bag} --topics /nope", "topic /nope is not in the bag"),
    "bag play from after its end": ("bag play {bag} --start 999", "is outside the bag"),
    "bag infer a topic the bag lacks": ("bag infer {bag} --weights {weights} --out {user}/o.bag --image-topic /nope",
                                        "topic /nope is not"),
    # 7. messages true to the cause
    "reconstruct too few frames for the threshold": ("reconstruct --depth gt --data {data} --keyframe {keyframe} "
                                                     "--every 2 --out {user}/rec", "at least 3 frames saw a point"),
    "train --resume of nothing": ("train --resume {user}/nope", "no run there"),
    # 8. round three (#43): hangs, tracebacks and silent wrong results
    "infer a pipe as input": ("infer --weights {weights} --input {user}/pipe.mp4 --out {user}/out",
                              "is not a regular file (a pipe or a device)"),
    "infer a folder holding a pipe": ("infer --weights {weights} --input {user}/piped --out {user}/out",
                                      "holds x.png, which is not a regular file"),
    "infer a video of no frames": ("infer --weights {weights} --input {user}/empty.avi --out {user}/out --height 28 "
                                   "--width 42", "holds no frame"),
    "infer a focal length of 1e-300": ("infer --weights {weights} --input {images} --out {user}/out --fx 1e-300 "
                                       "--fy 1 --cx 1 --cy 1", "must be 1 to 1e+06 pixels"),
    "infer a focal length of 1e300": ("infer --weights {weights} --input {images} --out {user}/out --fx 1e300 "
                                      "--fy 1e300 --cx 1 --cy 1", "must be 1 to 1e+06 pixels"),
    "infer a calibration of another aspect": ("infer --weights {weights} --input {images} --out {user}/out --height "
                                              "28 --width 42 --calibration {user}/wide.yaml", "of another aspect"),
    "infer a calibration with width and height swapped": ("infer --weights {weights} --input {images} --out "
                                                          "{user}/out --height 28 --width 42 --calibration "
                                                          "{user}/swapped.yaml", "of another aspect"),
    "infer a principal point outside the image": ("infer --weights {weights} --input {images} --out {user}/out "
                                                  "--height 28 --width 42 --calibration {user}/far.yaml",
                                                  "lies outside the 64x48 frames"),
    "train with no source frame": ("train --data {data} --out {user}/run --set frame_ids=[0]", "has no source frame"),
    "train a new network's shape with --weights": ("train --data {data} --out {user}/run --weights {weights} --set "
                                                   "lora_ranks=[2]", "drop them, or drop --weights"),
    "train a config of nested aliases": ("train --config {user}/bomb.yaml --data {data} --out {user}/run",
                                         "aliases (*name) are not read"),
    "train with neighbours past the sequence's end": ("train --data {data} --out {user}/run --set frame_ids=[0,5]",
                                                     "which it does not have"),
    "train with fewer frames than a batch": ("train --data {data} --out {user}/run --set batch_size=64 --device cpu",
                                             "fewer than one batch of 64"),
}
PARTIAL = {"infer on a video cut in half": "out", "prepare-scared with a video cut short": "out",
           # the frames' calibration is checked with the first frame, whose files are then removed
           "infer a calibration of another aspect": "out", "infer a calibration with width and height swapped": "out",
           "infer a principal point outside the image": "out"}  # may stay written


@pytest.mark.parametrize("case", CASES)
def test_hostile_input_gets_one_line_and_touches_nothing(case, material, user):
    command, expected = CASES[case]
    (user / "clash").mkdir()
    for name in ("x.png", "x.jpg", "x_png.png"):
        shutil.copy(material["sequence"] / "image_02" / "data" / "0000000001.png", user / "clash" / name)
    (user / "bad.yaml").write_text("learning_rate: [1e-4\n")
    os.mkfifo(user / "pipe.mp4")  # opened, it would wait for a writer forever
    (user / "piped").mkdir()
    shutil.copy(material["sequence"] / "image_02" / "data" / "0000000001.png", user / "piped" / "a.png")
    os.mkfifo(user / "piped" / "x.png")
    cv2.VideoWriter(str(user / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48)).release()
    for name, width, height, cx in (("wide", 640, 256, 320), ("swapped", 48, 64, 24), ("far", 64, 48, 5000)):
        (user / f"{name}.yaml").write_text(f"K: [50, 0, {cx}, 0, 50, 24, 0, 0, 1]\nimage_width: {width}\n"
                                           f"image_height: {height}\n")
    (user / "bomb.yaml").write_text("a: &a [1, 1]\n" + "".join(f"{c}: &{c} [*{p}, *{p}]\n"
                                                             for p, c in zip("abcdefgh", "bcdefghi")))
    (user / "list.yaml").write_text("- learning_rate\n")
    write_raw_keyframe(user / "raw" / "dataset_1" / "keyframe_1", 0)  # its video cut short (FFmpeg reads the
    (user / "raw" / "dataset_1" / "keyframe_1" / "data" / "rgb.mp4").write_bytes(material["cut_video"].read_bytes())
    # container by its content, not its name)
    before = tree(user)
    status, err = run(command.format(user=user, **material).split())
    assert status == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and expected in err, err
    after = {p: v for p, v in tree(user).items() if not (case in PARTIAL and p.is_relative_to(user / PARTIAL[case]))}
    assert after == before, set(after) ^ set(before)


def test_collisions_are_both_kept_by_name(material, tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("x.png", "x.jpg", "y.png"):
        shutil.copy(material["sequence"] / "image_02" / "data" / "0000000001.png", tmp_path / "in" / name)
    status, err = run(["infer", "--weights", str(material["weights"]), "--input", str(tmp_path / "in"), "--out",
                       str(tmp_path / "out"), "--height", "28", "--width", "42", "--save-disp",
                       str(tmp_path / "disps.npy")])
    assert status == 0, err
    assert {p.name for p in (tmp_path / "out").glob("*_depth.npy")} == {"x_png_depth.npy", "x_jpg_depth.npy",
                                                                         "y_depth.npy"}
    assert np.load(tmp_path / "disps.npy").shape[0] == 3  # one row per input file


def test_bag_infer_replaces_the_outputs_a_bag_already_holds(material, tmp_path):
    from dares_ros.tools.bag import bag_info

    status, err = run(["bag", "infer", str(material["inferred_bag"]), "--weights", str(material["weights"]), "--out",
                       str(tmp_path / "again.bag"), "--input-height", "28", "--input-width", "42"])
    assert status == 0, err
    topics = bag_info(tmp_path / "again.bag")["topics"]
    assert topics["/dares/depth/image"]["count"] == bag_info(material["bag"])["topics"][
        "/jhu_daVinci/left/image_raw"]["count"]  # replaced, not doubled


PARENT = """
import sys, time
from pathlib import Path
from dares_ros.tools.processes import node_command
import subprocess
proc = subprocess.Popen(node_command(sys.argv[1], {}, executable="dares_fusion_node"), stdout=open(sys.argv[2], "w"),
                        stderr=subprocess.STDOUT)
print(proc.pid, flush=True)
time.sleep(600)
"""


def _until(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.mark.parametrize("moment", ["spinning", "starting"])
def test_a_node_dies_with_its_parent_however_it_died(tmp_path, moment):
    """A tool that starts nodes (`dares demo`) killed with SIGKILL, which it cannot catch: its nodes end too, whether
    they were spinning or still starting (importing torch, seconds before rclpy is up and asks for its parent's
    death signal)."""
    log = tmp_path / "fusion.log"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, f"/orphan{os.getpid()}", str(log)],
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())

    def log_text() -> str:
        return log.read_text() if log.exists() else ""

    def importing_torch() -> bool:
        with contextlib.suppress(OSError):
            return "libtorch" in Path(f"/proc/{child}/maps").read_text()
        return False

    if moment == "spinning":
        assert _until(lambda: "fusing depth" in log_text()), log_text()
    else:
        assert _until(importing_torch) and "[INFO]" not in log_text(), log_text()
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, os.WNOHANG)  # reaped by init normally; harmless here
        try:
            return "zombie" in Path(f"/proc/{child}/status").read_text()
        except OSError:
            return True

    alive = not _until(gone, 30.0)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the node outlived its killed parent"


def test_long_file_names_are_written_or_refused_in_one_line(material, tmp_path):
    """A 240-character input name: its outputs are written (their temporary names were over 255 bytes); a name whose
    outputs would be over 255 bytes is refused before any work, in one line."""
    frame = material["sequence"] / "image_02" / "data" / "0000000001.png"
    for length, status in ((240, 0), (250, 2)):
        folder = tmp_path / f"in{length}"
        folder.mkdir()
        shutil.copy(frame, folder / ("n" * length + ".png"))
        code, err = run(["infer", "--weights", str(material["weights"]), "--input", str(folder), "--out",
                         str(tmp_path / f"out{length}"), "--height", "28", "--width", "42"])
        assert code == status, err
        if status == 0:
            assert len(list((tmp_path / f"out{length}").glob("n*_depth.npy"))) == 1
        else:
            assert len(err.splitlines()) == 1 and "over 255 bytes" in err and not (tmp_path / f"out{length}").exists()


def test_small_ones_a_new_user_met(material, tmp_path, capsys):
    """dares synth --sequences 1 says train is the test split; every option of every command has a description;
    dares --help names every bag action; bag info on a recording a crash left points to dares bag repair; export
    prints no tracer warnings; bag infer's device defaults to cpu, as every other command's."""
    import warnings

    from dares_core.cli import build_parser

    assert main(["synth", "--out", str(tmp_path / "s"), "--frames", "3", "--sequences", "1", "--width", "32",
                 "--height", "32"]) == 0
    assert "one sequence is both the train and the test split" in capsys.readouterr().out

    parser = build_parser()
    undescribed, actions = [], {}

    def walk(p, name):
        for action in p._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                actions[name] = set(action.choices)
                for sub, q in action.choices.items():
                    walk(q, f"{name} {sub}")
            elif action.dest != "help" and not action.help:
                undescribed.append(f"{name} {action.option_strings or action.dest}")
    walk(parser, "dares")
    assert not undescribed, undescribed
    bag_help = next(a for a in parser._actions if a.dest == "command").choices["bag"]
    assert all(action in (bag_help.description or "") + next(
        c.help for c in next(a for a in parser._actions if a.dest == "command")._choices_actions if c.dest == "bag")
        for action in actions["dares bag"] - {"from-synth", "from-scared"})
    assert bag_help.parse_args(["infer", "b", "--weights", "w", "--out", "o"]).device == "cpu"

    partial = tmp_path / ".rec.abc123.partial"
    partial.mkdir()
    status, err = run(["bag", "info", str(partial)])
    assert status == 2 and f"dares bag repair {partial}" in err and "reindex" not in err

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["export", "--weights", str(material["weights"]), "--out", str(tmp_path / "m.onnx"), "--height",
                     "28", "--width", "42"]) == 0
    assert not [w for w in caught if issubclass(w.category, Warning) and "Tracer" in w.category.__name__]


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL])
def test_a_second_run_on_an_output_being_written_is_refused_until_the_first_ends(tmp_path, monkeypatch, kill):
    """Two runs on one --out mixed their files (both `bag from-synth` said "wrote"): the second is refused in one
    line naming the first's pid while the first runs; once it ends, however it ends, the output is free again."""
    from dares_core.errors import DaresError
    from dares_core.files import claim_output, claimed_outputs

    env = {**os.environ, "DARES_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "scenes"
    first = subprocess.Popen([sys.executable, "-m", "dares_core.cli", "synth", "--out", str(out), "--frames", "400",
                              "--sequences", "3", "--width", "320", "--height", "256"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    monkeypatch.setenv("DARES_CACHE", env["DARES_CACHE"])
    try:
        def claimed() -> bool:
            try:
                with claimed_outputs():
                    claim_output(out)
            except DaresError:
                return True
            return False

        deadline = time.monotonic() + 60
        while not claimed() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert claimed(), first.stderr.read() if first.poll() is not None else "never claimed"
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["synth", "--out", str(out), "--frames", "3", "--force"]) == 2
        line = err.getvalue().strip()
        assert "is being written by another dares command right now" in line and f"pid {first.pid}" in line
        assert len(line.splitlines()) == 1
        first.send_signal(kill)
        first.wait(timeout=60)
        assert not claimed()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def _limited(limit_bytes: int):
    """A child's file size limit (ulimit -f) with SIGXFSZ ignored, so a write past it fails with EFBIG as on a
    full disk."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return limit


@pytest.mark.parametrize("command", ["infer", "bag from-synth", "train"])
def test_a_full_disk_is_one_line_and_leaves_nothing_partial(material, tmp_path, command):
    """infer and bag from-synth raised OSError, train RuntimeError while saving; then --resume said "last.pt not
    found" and a plain run "already holds a run"."""
    out = tmp_path / "out"
    limit = 30_000  # bytes: a checkpoint, a bag and a frame's depth all exceed it
    args = {"infer": ["infer", "--weights", str(material["weights"]), "--input", str(material["images"]),
                      "--out", str(out), "--height", "28", "--width", "42", "--save-disp", str(tmp_path / "d.npy")],
            "bag from-synth": ["bag", "from-synth", str(material["sequence"]), "--out", str(out)],
            "train": ["train", "--config", str(tmp_path / "tiny.yaml"), "--data", str(material["data"]), "--out",
                      str(out), "--device", "cpu"]}[command]
    if command == "train":
        import yaml
        from helpers import TINY

        (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(
            {"hf_config": TINY, "encoder": "tiny", "train_backbone": True, "height": 64, "width": 96,
             "batch_size": 1, "num_workers": 0, "num_epochs": 1, "max_steps_per_epoch": 1, "af_width": 8}))
    if command == "infer":  # a frame whose depth alone is over the limit
        big = tmp_path / "big"
        big.mkdir()
        cv2.imwrite(str(big / "frame.png"), np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8))
        args[args.index(str(material["images"]))] = str(big)
    run = subprocess.run([sys.executable, "-m", "dares_core.cli", *args], capture_output=True, text=True,
                         preexec_fn=_limited(limit), timeout=600)
    assert run.returncode == 2, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "file too large" in lines[0] or "file size limit" in lines[0], lines[0]
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name], list(tmp_path.rglob("*"))
    if command == "train":  # what to do next is said, whichever the user tries
        for again in (["--resume", str(out)], []):
            retry = subprocess.run([sys.executable, "-m", "dares_core.cli", *args, *again], capture_output=True,
                                   text=True, timeout=600)
            assert retry.returncode == 2 and "saved no checkpoint" in retry.stderr and "--force" in retry.stderr, \
                retry.stderr[-2000:]


def test_what_a_killed_command_left_beside_its_output_is_swept_by_the_next(tmp_path):
    """A SIGKILLed `dares synth` (every folder writer: synth, bags, recordings, the demo) leaves its marked
    .OUT.*.partial folder; the next run on that output removes it, and a live run's or an unmarked one stays."""
    out = tmp_path / "scenes"
    first = subprocess.Popen([sys.executable, "-m", "dares_core.cli", "synth", "--out", str(out), "--frames", "400",
                              "--sequences", "3", "--width", "320", "--height", "256"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".scenes.*.partial")) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        first.kill()
        first.wait()
    left = list(tmp_path.glob(".scenes.*.partial"))
    assert len(left) == 1 and (left[0] / ".dares-owner").is_file()
    stranger = tmp_path / ".scenes.mine.partial"  # not a dares command's: no mark
    stranger.mkdir()
    assert main(["synth", "--out", str(out), "--frames", "3", "--sequences", "1", "--width", "32", "--height",
                 "32"]) == 0
    assert [p.name for p in tmp_path.glob(".scenes.*.partial")] == [stranger.name]
    assert not list(out.rglob(".dares-owner"))  # the mark never reaches the output
