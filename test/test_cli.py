"""The `dares` command line: help, version, one-line errors with exit status 2."""

import subprocess
import sys

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
    assert out.returncode == 2 and "invalid int value" in out.stderr


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
