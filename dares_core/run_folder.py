"""A training run's folder: what `dares train --out` may start in (a new run, or an earlier one only with --force,
never a folder of other files), and its logs trimmed back to the checkpoint a resume starts from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import DaresError
from .files import RUN_ENTRIES, atomic_file, check_output_folder, ensure_writable_output, foreign_entries


def trim_logs(run: Path, step: int) -> None:
    """Drop log lines written after the checkpoint a resume starts from (they will be written again)."""
    for name, key in (("losses.jsonl", "step"), ("metrics.jsonl", "step")):
        path = run / name
        if path.is_file():
            kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)[key] <= step]
            with atomic_file(path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))


def prepare_run_folder(out: Path, resume: Path | None, force: bool) -> None:
    """Before any model is built: `out` a writable folder; a new run (no `resume`) into a folder holding a run
    only with `force`, which deletes that earlier run and never a file of other origin."""
    check_output_folder(out, force=True)  # a folder, writable (room: Trainer.fit)
    if resume is not None or not out.exists() or not any(out.iterdir()):
        return
    foreign = foreign_entries(out, RUN_ENTRIES)
    if foreign:  # never a run's folder: no --force deletes it
        raise DaresError(f"{out} holds {', '.join(foreign[:3])}, which this command did not write: choose another "
                         "--out (--force replaces only an earlier run)")
    if not force:
        if not any((out / "checkpoints").glob("*.pt")):
            raise DaresError(f"{out} holds a run that saved no checkpoint (it stopped before its first save): pass "
                             "--force to start it again, or another --out")
        raise DaresError(f"{out} already holds a run: pass --resume {out} to continue it, another --out, or "
                         f"--force to start over")
    ensure_writable_output(out, True, RUN_ENTRIES)  # only an earlier run is deleted, never other files
    shutil.rmtree(out)
