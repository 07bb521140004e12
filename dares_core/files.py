"""Atomic, never-overwriting output: nothing a user wrote is lost, nothing partial looks complete."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import DaresError

# What each folder-writing command writes (glob patterns of the entries of its output folder): --force replaces
# an existing folder only when every entry matches, i.e. it is that command's earlier output.
BAG_ENTRIES = ("metadata.yaml", "*.mcap", "*.db3", "*.zstd")
SYNTH_ENTRIES = ("dataset*", "splits", "scene.json")
RUN_ENTRIES = ("config.yaml", "checkpoints", "tb", "depth_model*.safetensors", "losses.jsonl", "metrics.jsonl")
EVAL_ENTRIES = ("metrics.json", "per_frame.csv")
POSE_ENTRIES = ("pred_poses.npz", "metrics.json", "trajectory.png")
FUSED_ENTRIES = ("mesh.ply", "points.ply", "render.png", "metrics.json")


def cache_dir() -> Path:
    """dares's own cache (ONNX graphs, TensorRT engines, output claims): DARES_CACHE, else $XDG_CACHE_HOME/dares,
    else ~/.cache/dares."""
    base = os.environ.get("DARES_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dares"
    return Path(base)


_claims: dict[str, int] | None = None  # while a command runs (claimed_outputs): resolved output path -> its lock fd


@contextlib.contextmanager
def claimed_outputs() -> Iterator[None]:
    """While a command runs: each output it checks (ensure_writable_output, check_output_folder) is claimed, so a
    second dares command writing the same path at the same time is refused in one line instead of mixing its files
    with the first's. The claims are flock locks under cache_dir()/claims, never in the user's folders; the kernel
    drops them when the process ends, however it ends (SIGKILL too)."""
    global _claims
    _claims = {}
    try:
        yield
    finally:
        for fd in _claims.values():
            os.close(fd)
        _claims = None


def claim_output(path: Path, option: str = "--out") -> None:
    """Refuse an output another running dares command has claimed; else claim it (see claimed_outputs). Nothing
    is claimed outside claimed_outputs (library use), nor where the cache cannot be written."""
    if _claims is None:
        return
    key = str(Path(path).resolve())
    if key in _claims:
        return
    try:
        folder = cache_dir() / "claims"
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only home: work goes on unguarded rather than not at all
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise DaresError(f"{option} {path} is being written by another dares command right now"
                         f"{f' (pid {holder})' if holder.isdigit() else ''}: wait for it to end, or choose another "
                         f"{option}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _claims[key] = fd


def ensure_writable_output(path: Path, force: bool, ours: tuple[str, ...] | None = None,
                           option: str = "output", one_file: bool = False) -> None:
    """Refuse to replace an existing `path` unless `force`; with `ours` (what the command writes, see above),
    --force replaces only a folder holding nothing else, so nobody's other files are deleted; a one_file output
    never replaces a folder, even with --force. Fail early if the folder to write in is not there or unwritable,
    or if another dares command is writing it (claim_output)."""
    path = Path(path)
    claim_output(path, option)
    if one_file and path.is_dir():
        raise DaresError(f"{path} is a folder: give the path of the file to write")
    if path.exists() and not force:
        raise DaresError(f"{path} already exists: choose another output path or pass --force to replace it")
    if path.exists() and ours is not None:
        if Path.cwd().resolve().is_relative_to(path.resolve()):
            raise DaresError(f"{path} is the current folder or holds it: choose a new --out folder")
        foreign = foreign_entries(path, ours) if path.is_dir() else [path.name]
        if foreign:
            raise DaresError(f"{path} holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which this "
                             "command did not write: --force replaces only its own earlier output; choose another "
                             "--out")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise DaresError(f"{option} {path}: {existing} is a file, not a folder: give a path in a folder")
    parent.mkdir(parents=True, exist_ok=True)
    _probe_writable(parent, path, option)


def foreign_entries(folder: Path, ours: tuple[str, ...]) -> list[str]:
    """Names of the entries of `folder` that match none of the glob patterns `ours`."""
    return sorted(p.name for p in folder.iterdir() if not any(fnmatch.fnmatch(p.name, o) for o in ours))


def _probe_writable(folder: Path, path: Path, option: str) -> None:
    """A real write into `folder`: permission bits say nothing for root or read-only mounts."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise DaresError(f"{option} {path}: {folder} is not writable ({e.strerror}): choose a folder you can "
                         "write to") from None


def check_output_folder(path: Path, force: bool = False, option: str = "--out", need_mb: float = 0.0,
                        ours: tuple[str, ...] = ()) -> None:
    """Before any work: `path` must be a folder (or not exist yet) that can be written, hold `need_mb` MB, and
    hold nothing but the command's own earlier outputs (entries matching `ours`) unless `force` (files are then
    added to or replaced by name, never deleted), and not be written by another dares command (claim_output)."""
    path = Path(path)
    claim_output(path, option)
    if path.exists() and not path.is_dir():
        raise DaresError(f"{option} {path} is a file: give a folder")
    if path.is_dir() and foreign_entries(path, ours) and not force:
        raise DaresError(f"{path} already has files: choose another {option} or pass --force")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise DaresError(f"{option} {path}: {existing} is a file, not a folder: give a folder")
    _probe_writable(existing, path, option)
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < need_mb:
        raise DaresError(f"only {free_mb:.0f} MB free under {existing}, {need_mb:.0f} MB needed: free space or "
                         f"choose another {option}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (then arrive as usual): for the few steps that commit one
    output (a rename, then its index), which must not be cut between them. In the main thread only."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a full disk, a file size limit, a quota


@contextlib.contextmanager
def room_to_write(path: Path) -> Iterator[None]:
    """OSError of a full disk, a file size limit (ulimit -f) or a quota while writing `path` -> one line naming it."""
    try:
        yield
    except OSError as e:
        short = e.errno is None and "written" in str(e)  # numpy's tofile: "N requested and M written"
        if e.errno not in NO_ROOM and not short:
            raise
        why = "a short write" if short else os.strerror(e.errno).lower()
        raise DaresError(f"could not write {path}: {why}; free space (or raise the file size limit) and run again: "
                         "what was written so far is kept, nothing partial") from None


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path` (room_to_write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the extension last so writers that pick the format by name (OpenCV, numpy) work on the temp file
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:64]}.", suffix=f".partial{path.suffix}", dir=path.parent)  # a
    # long name's temporary one stays within the file system's 255 bytes
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with room_to_write(path):
            yield tmp_path
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the user's usual mode
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


OWNER = ".dares-owner"  # in a folder a dares command makes while it runs: that command's pid


def mark_owner(folder: Path) -> None:
    """Mark `folder` as this process's while it works in it (sweep_stale removes it once the process is gone)."""
    (Path(folder) / OWNER).write_text(str(os.getpid()))


def sweep_stale(folders) -> None:
    """Remove those of `folders` whose OWNER names a process that is gone: what a command killed mid-way (SIGKILL,
    power) left. An unmarked folder is not ours, and a live owner's (another user's too) is kept."""
    for folder in folders:
        try:
            owner = int((Path(folder) / OWNER).read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            continue


@contextlib.contextmanager
def atomic_dir(path: Path, force: bool = False, ours: tuple[str, ...] | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` in one rename. An existing `path`
    is replaced only with `force` and only when it holds nothing but entries matching `ours` (see
    ensure_writable_output). The temporary folder is marked as this process's while it is written, so the next
    run sweeps what a killed one left (sweep_stale)."""
    path = Path(path)
    ensure_writable_output(path, force, ours)
    sweep_stale(path.parent.glob(f".{path.name}.*.partial"))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    mark_owner(tmp)
    try:
        with room_to_write(path):
            yield tmp
        (tmp / OWNER).unlink(missing_ok=True)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_image(path: Path, image, params: list[int] | None = None) -> None:
    """Write an image atomically with OpenCV (format from the extension)."""
    import cv2

    with atomic_file(path) as tmp:
        if not cv2.imwrite(str(tmp), image, params or []):
            raise DaresError(f"could not write {path}: check the disk and folder permissions")


def write_ply(path: Path, geometry, rgb=None) -> None:
    """The one PLY writer, atomic: an open3d PointCloud or TriangleMesh, or points (N,3) (any unit; rows with a
    non-finite value are left out) with their colours rgb (N,3) uint8."""
    import numpy as np
    import open3d as o3d

    if isinstance(geometry, np.ndarray):
        valid = np.isfinite(geometry).all(1)
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(geometry[valid].astype(np.float64)))
        if rgb is not None:
            cloud.colors = o3d.utility.Vector3dVector(rgb[valid].astype(np.float64) / 255.0)
        geometry = cloud
    mesh = isinstance(geometry, o3d.geometry.TriangleMesh)
    with atomic_file(path) as tmp:
        if not (o3d.io.write_triangle_mesh if mesh else o3d.io.write_point_cloud)(str(tmp), geometry):
            raise DaresError(f"could not write {path}: check the disk and folder permissions")


def write_npy(path: Path, array) -> None:
    """np.save, atomically."""
    import numpy as np

    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_npz(path: Path, compressed: bool = False, **arrays) -> None:
    """np.savez (or savez_compressed), atomically."""
    import numpy as np

    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
