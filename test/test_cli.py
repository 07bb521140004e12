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
    from dares_ros.bag import write_sequence_bag

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
