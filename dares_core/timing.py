"""Frames in real time: a one-slot mailbox that keeps only the newest item (so latency never grows), and the wall
time of the named stages of a frame (receive, preprocess, network, ...) over a sliding window, which the node
reports in its diagnostics and `dares bench node` writes into its table."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections import deque

OWN = "own"  # a frame's time in every stage but the network: the node's own cost


class LatestItem:
    """A one-slot mailbox: put() replaces an unconsumed item (counted as dropped), take() waits for one."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout: float):
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item


class Events:
    """How many of each kind of event happened in the last `window_s` seconds (time.monotonic() of each), as a
    node's diagnostics judge them."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._times: dict[str, deque] = {}

    def note(self, kind: str, when: float | None = None, count: int = 1) -> None:
        self._times.setdefault(kind, deque()).extend([time.monotonic() if when is None else when] * count)

    def recent(self, kind: str) -> int:
        times, start = self._times.setdefault(kind, deque()), time.monotonic() - self.window_s
        while times and times[0] < start:
            times.popleft()
        return len(times)


class Stages:
    """Times the stages of frames: inside `with stages.frame():`, each `with stages("network"):` adds its block's
    duration to the frame's stage (a stage run twice, e.g. once per eye, counts once, summed); the frame's totals
    and its OWN time (all but "network") are kept for `window_s` seconds, and medians_ms() gives each one's
    median. add() records a stage of its own (e.g. a worker's). sync (e.g. torch.cuda.synchronize) runs before a
    stage's clock stops, so work a GPU runs asynchronously is charged to the stage that queued it. Thread-safe."""

    def __init__(self, window_s: float = 5.0, sync=None):
        self.window_s, self.sync = window_s, sync
        self._lock = threading.Lock()
        self._samples: dict[str, deque] = {}  # stage -> (when, seconds)
        self._frame = threading.local()

    @contextlib.contextmanager
    def frame(self):
        self._frame.totals = {}
        try:
            yield
        finally:
            totals, self._frame.totals = self._frame.totals, None
            for name, seconds in totals.items():
                self.add(name, seconds)
            self.add(OWN, sum(s for name, s in totals.items() if name != "network"))

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            seconds = time.perf_counter() - start
            totals = getattr(self._frame, "totals", None)
            if totals is None:
                self.add(name, seconds)
            else:
                totals[name] = totals.get(name, 0.0) + seconds

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._samples.setdefault(name, deque(maxlen=2000)).append((time.monotonic(), seconds))

    def medians_ms(self) -> dict[str, float]:
        """{stage: median ms} over the window, for the stages timed in it, in the order they were first timed."""
        start = time.monotonic() - self.window_s
        with self._lock:
            recent = {name: [s for when, s in samples if when >= start] for name, samples in self._samples.items()}
        return {name: 1000 * statistics.median(values) for name, values in recent.items() if values}


def untimed(name: str):
    """A stand-in for a Stages where nothing is timed."""
    return contextlib.nullcontext()
