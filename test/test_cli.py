"""The `dares` command line: help, version, one-line errors with exit status 2."""

import subprocess
import sys

import torch

from dares_core.cli import build_parser, main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dares_core.cli", *args], capture_output=True, text=True)


def test_version_and_help_of_every_subcommand():
    assert "dares 0.1.0" in run_cli("--version").stdout
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"synth", "infer"} <= set(sub.choices)
    for name in sub.choices:
        out = run_cli(name, "--help")
        assert out.returncode == 0 and "usage: dares " + name in out.stdout


def test_existing_output_is_refused_without_force(tmp_path, capsys):
    out = tmp_path / "scenes"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    assert main(["synth", "--out", str(out), "--frames", "3", "--sequences", "1", "--width", "32", "--height",
                 "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--force" in err[0]
    assert (out / "mine.txt").read_text() == "user data"


def test_bad_arguments_exit_2():
    out = run_cli("synth", "--frames", "notanumber", "--out", "x")
    assert out.returncode == 2 and "--frames: 'notanumber' is not an integer" in out.stderr


def test_synth_rejects_too_few_frames(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--frames", "2", "--width", "32", "--height", "32"]) == 2
    assert "--frames >= 3" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_outputs_get_the_users_usual_permissions(tmp_path):
    from dares_core.files import atomic_file

    with atomic_file(tmp_path / "out.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o666 & ~_current_umask()


def _current_umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def someone_elses_folder(path):
    """A folder of a user's own files, as --out by mistake."""
    (path / "photos").mkdir(parents=True)
    (path / "photos" / "holiday.jpg").write_bytes(b"\xff\xd8 not really")
    (path / "thesis").mkdir()
    (path / "thesis" / "main.tex").write_text("months of it")
    return path


def untouched(path):
    return (path / "thesis" / "main.tex").read_text() == "months of it" and (path / "photos" / "holiday.jpg").exists()


def test_force_replaces_only_what_the_same_command_wrote(tmp_path, capsys, monkeypatch):
    """--force on a folder holding someone's files is refused with one line and deletes nothing; on the
    command's own earlier output it replaces it."""
    from dares_ros.tools.bag import write_sequence_bag

    synth = ["synth", "--frames", "3", "--sequences", "1", "--width", "32", "--height", "32", "--force", "--out"]
    scenes = tmp_path / "scenes"
    assert main([*synth, str(scenes)]) == 0
    assert main([*synth, str(scenes)]) == 0  # its own earlier output: replaced
    keyframe = scenes / "dataset1" / "keyframe1"
    write_sequence_bag(keyframe, tmp_path / "seq.bag")
    mine = someone_elses_folder(tmp_path / "mine")
    capsys.readouterr()
    for args in ([*synth, str(mine)],
                 ["bag", "from-synth", str(keyframe), "--out", str(mine), "--force"],
                 ["train", "--data", str(scenes), "--out", str(mine), "--force", "--device", "cpu"]):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "which this command did not write" in err[0] and "photos" in err[0], err
        assert untouched(mine)
    assert main(["bag", "from-synth", str(keyframe), "--out", str(tmp_path / "seq.bag"), "--force"]) == 0  # a bag
    monkeypatch.chdir(scenes)
    assert main([*synth, "."]) == 2 and "current folder" in capsys.readouterr().err
    assert main([*synth, ".."]) == 2 and "current folder" in capsys.readouterr().err
    assert untouched(mine) and (scenes / "splits").is_dir()


def test_bad_options_and_output_places_get_one_line_before_any_work(tiny_model, tmp_path):
    """Each case once gave a traceback or wrong output with exit 0 (issue: nothing silent). Now: exit 2, one
    error line naming the option or the path, and the fix."""
    weights, seq = tiny_model
    image, root = str(seq / "image_02" / "data" / "0000000001.png"), str(seq.parent.parent)
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    infer = ["infer", "--weights", str(weights), "--input", image]
    cases = [
        ([*infer, "--out", str(a_file / "sub")], "is a file, not a folder"),
        ([*infer, "--out", str(a_file)], "is a file: give a folder"),
        ([*infer, "--out", str(tmp_path / "o1"), "--save-disp", str(a_file / "d.npy")], "--save-disp"),
        ([*infer, "--out", str(tmp_path / "o2"), "--device", "gpu"], "unknown device 'gpu'"),
        ([*infer, "--out", str(tmp_path / "o3"), "--height", "0"], "argument --height: 0 is out of range"),
        ([*infer, "--out", str(tmp_path / "o4"), "--height", "-5"], "argument --height: -5 is out of range"),
        ([*infer, "--out", str(tmp_path / "o5"), "--min-depth", "0"], "argument --min-depth: 0 is out of range"),
        ([*infer, "--out", str(tmp_path / "o6"), "--min-depth", "200", "--max-depth", "100"], "--min-depth < --max"),
        (["eval", "--weights", str(weights), "--data", root, "--out", str(a_file)], "is a file: give a folder"),
        (["train", "--data", root, "--out", str(a_file), "--device", "cpu"], "is a file: give a folder"),
        (["prepare-scared", "--src", str(tmp_path / "nothere"), "--dst", str(tmp_path / "p")], "--src"),
        (["synth", "--out", str(tmp_path / "s1"), "--fps", "0"], "argument --fps: 0 is out of range"),
        (["synth", "--out", str(tmp_path / "s2"), "--baseline-mm", "nan"], "argument --baseline-mm: nan is out of"),
    ]
    if not torch.cuda.is_available():
        cases.append((["train", "--data", root, "--out", str(tmp_path / "r"), "--device", "cuda"], "CUDA is not"))
    for args, message in cases:
        run = run_cli(*args)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and "Traceback" not in run.stderr and message in lines[-1], (args, run.stderr)
        assert lines[-1].startswith(f"dares {args[0]}: error:"), lines
    assert a_file.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_bad_arrays_weights_and_bags_are_named(tiny_model, tmp_path):
    """eval on wrong arrays, weights with NaN, bag eval without a depth topic: one line each, no traceback;
    eval and bag eval print units and write metrics.json, a second run replacing the first's files."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from dares_ros.tools.bag import infer_bag, write_sequence_bag

    weights, seq = tiny_model
    gt = seq.parent.parent / "splits" / "synthetic" / "gt_depths.npz"
    corrupt, npy, poses = tmp_path / "corrupt.npy", tmp_path / "gt.npy", tmp_path / "poses.npz"
    corrupt.write_bytes(b"\x93NUMPY garbage")
    np.save(npy, np.ones((3, 48, 64), np.float32))
    np.savez(poses, data=np.tile(np.eye(3), (4, 1, 1)))
    nan_weights = tmp_path / "nan.safetensors"
    state = load_file(weights)
    next(v for v in state.values() if v.is_floating_point()).fill_(float("nan"))
    with safe_open(weights, "pt") as f:
        save_file(state, nan_weights, metadata=f.metadata())
    bag = tmp_path / "seq.bag"
    write_sequence_bag(seq, bag)
    cases = [
        (["eval", "--pred-disps", str(corrupt), "--gt-depths", str(gt), "--out", str(tmp_path / "e1")],
         "not a readable .npy"),
        (["eval", "--pred-disps", str(npy), "--gt-depths", str(npy), "--out", str(tmp_path / "e2")],
         "not an .npz with a 'data' array"),
        (["eval", "--pred-poses", str(poses), "--gt-poses", str(poses)], "not (N,4,4)"),
        (["infer", "--weights", str(nan_weights), "--input", str(seq / "image_02" / "data"), "--out",
          str(tmp_path / "o")], "holds NaN or inf weights"),
        (["bag", "eval", str(bag), "--out", str(tmp_path / "e3")], "run `dares bag infer` on it first"),
        (["bag", "eval", str(bag), "--depth-topic", "/typo", "--out", str(tmp_path / "e4")], "has no /typo"),
    ]
    for args, message in cases:
        run = run_cli(*args)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and "Traceback" not in run.stderr and message in lines[-1], (args, run.stderr)
    disps = np.ones((3, 48, 64), np.float32)
    np.save(tmp_path / "disps.npy", disps[:, None])  # (N,1,H,W) is accepted as (N,H,W)
    for _ in range(2):  # the second run replaces the first's files in the default folder
        evaluate = ["eval", "--pred-disps", str(tmp_path / "disps.npy"), "--gt-depths", str(gt)]
        run = subprocess.run([sys.executable, "-m", "dares_core.cli", *evaluate], capture_output=True, text=True,
                             cwd=tmp_path)
        assert run.returncode == 0 and "rmse and sq_rel in mm" in run.stdout, run.stderr
    assert sorted(p.name for p in (tmp_path / "dares_eval").iterdir()) == ["metrics.json", "per_frame.csv"]
    infer_bag(bag, weights, tmp_path / "inferred.bag", input_size=(28, 42))
    run = run_cli("bag", "eval", str(tmp_path / "inferred.bag"), "--out", str(tmp_path / "bag_eval"))
    assert run.returncode == 0 and "rmse and sq_rel in mm" in run.stdout
    assert (tmp_path / "bag_eval" / "metrics.json").is_file()


def test_synthetic_validation_and_test_splits_never_share_a_sequence(tmp_path):
    from dares_core.data.synthetic import SynthConfig, split_entries

    for n in (1, 2, 3, 4):
        splits = split_entries(SynthConfig(sequences=n, frames=4))
        folders = {k: {e.folder for e in v} for k, v in splits.items()}
        assert not folders["val"] & folders["test"] and not folders["val"] & folders["train"], (n, folders)
        assert bool(folders["val"]) == (n >= 3)


def test_help_and_argument_errors_import_nothing_heavy():
    """`dares --help`, every subcommand's parser and argument errors answer without importing torch, transformers
    or rclpy (seconds of start-up): the heavy modules load inside the commands that use them."""
    probe = ("import sys; from dares_core.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('torch', 'transformers', 'rclpy', 'cv2') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout


def test_broken_pipes_nan_poses_and_hints(tiny_model, tmp_path):
    """`dares bag info --json | head` ends quietly; NaN poses are refused, not scored as "ATE nan"; the options
    that error hints name exist."""
    import numpy as np

    from dares_ros.tools.bag import write_sequence_bag

    _, seq = tiny_model
    write_sequence_bag(seq, tmp_path / "seq.bag")
    reader_gone = subprocess.Popen([sys.executable, "-m", "dares_core.cli", "bag", "info", str(tmp_path / "seq.bag"),
                                    "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader_gone.stdout.close()  # as `head` does once it has its lines
    assert reader_gone.wait(timeout=120) == 141 and b"Traceback" not in reader_gone.stderr.read()
    poses = np.tile(np.eye(4), (5, 1, 1))
    poses[2, 0, 3] = np.nan
    np.savez(tmp_path / "poses.npz", data=poses)
    run = run_cli("eval", "--pred-poses", str(tmp_path / "poses.npz"), "--gt-poses", str(tmp_path / "poses.npz"))
    assert run.returncode == 2 and "hold NaN or inf" in run.stderr and "ATE" not in run.stdout
    assert "--opset" in run_cli("export", "--help").stdout  # named by the ONNX check's error
