"""Message order: approximate-time stereo pairing (message_filters has no wheel; this is its small core), the one
rule for time that goes backwards (a bag replayed again or looped, a /clock reset), which every node follows, and
camera poses looked up by stamp."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from enum import Enum
from typing import Any

JUMP_BACK_S = 0.5  # a stamp this much older than a stream's newest: time went back (reordering is never this far)
BACKWARD_RUN = 3  # or this many stamps in a row older than the newest (a bag shorter than JUMP_BACK_S, looped)


class Order(Enum):
    """Where a stamp stands against the stamps a stream carried before."""

    NEW = "new"  # later than every stamp before
    DUPLICATE = "duplicate"  # the newest stamp again
    OUT_OF_ORDER = "out of order"  # a little older than the newest: dropped
    TIME_WENT_BACK = "time went back"  # a replay, a loop or a clock reset: everything before is history


class Timeline:
    """The stamps (seconds) of one or more streams of one clock, e.g. the two eyes of a camera.

    Time went back when a stamp is more than JUMP_BACK_S older than its stream's newest, or when BACKWARD_RUN
    stamps in a row are older; then every stream starts again from that stamp, so the other eye's first stamp of
    the new pass is new, not out of order. jumps counts how often it happened; jump_from is the newest stamp when
    it last did.
    """

    def __init__(self):
        self.newest: dict[str, float] = {}
        self.backward: dict[str, int] = {}  # stamps in a row older than the newest, per stream
        self.jumps, self.jump_from = 0, math.nan

    def went_back(self, topic: str, stamp: float, consequence: str) -> str:
        """The one info line every node logs when time went back, ending with what the node does about it."""
        return (f"time went back on {topic} ({self.jump_from:.3f} s, then {stamp:.3f} s: a bag replayed or looped, or "
                f"/clock reset): {consequence}")

    def order(self, stream: str, stamp: float) -> Order:
        newest = self.newest.get(stream, -math.inf)
        if stamp > newest:
            self.newest[stream], self.backward[stream] = stamp, 0
            return Order.NEW
        if stamp == newest:
            return Order.DUPLICATE
        self.backward[stream] = self.backward.get(stream, 0) + 1
        if newest - stamp < JUMP_BACK_S and self.backward[stream] < BACKWARD_RUN:
            return Order.OUT_OF_ORDER
        self.newest, self.backward = {stream: stamp}, {}
        self.jumps, self.jump_from = self.jumps + 1, newest
        return Order.TIME_WENT_BACK


class StereoMatcher:
    """Pairs left and right items whose stamps (seconds) differ by at most `tolerance`.

    Each side keeps its last `queue_size` items; a match consumes both items and drops everything older, so
    duplicated or out-of-order stamps never produce a pair older than the last one; restart() forgets it all
    (time went back). nearest_gap: seconds between the closest left and right stamps that did not pair.
    """

    def __init__(self, tolerance: float, queue_size: int = 5):
        self.tolerance = tolerance
        self.queues: dict[str, deque] = {"left": deque(maxlen=queue_size), "right": deque(maxlen=queue_size)}
        self.last_matched = -math.inf
        self.nearest_gap = math.inf

    def why_unpaired(self, topic: str, right_arrived: bool, window: str) -> str:
        """Why left images found no right partner `window` (e.g. "in the last 5 s"): no right image at all on
        `topic`, or stamps apart by more than the tolerance; the line names the fix."""
        if not right_arrived:
            return (f"{topic}: no right image {window}; remap right/image_rect and right/camera_info to the right "
                    "camera, or set scale_mode: relative (and eyes: left)")
        return (f"{topic}: right images arrive but none matched a left stamp within sync_tolerance {self.tolerance} s "
                f"{window} (nearest {self.nearest_gap:.3f} s apart); stamp both eyes from one clock or raise "
                "sync_tolerance")

    def restart(self) -> None:
        for q in self.queues.values():
            q.clear()
        self.last_matched = -math.inf

    def add(self, side: str, stamp: float, item: Any) -> tuple[Any, Any] | None:
        """Offer an item; returns (left, right) when it completes a pair, else None."""
        if stamp <= self.last_matched:
            return None
        other = "right" if side == "left" else "left"
        gaps = [(abs(s - stamp), i) for i, (s, _) in enumerate(self.queues[other])]
        candidates = [g for g in gaps if g[0] <= self.tolerance]
        if not candidates:
            self.nearest_gap = min([g for g, _ in gaps], default=self.nearest_gap)
            self.queues[side].append((stamp, item))
            return None
        _, index = min(candidates)
        other_stamp, other_item = self.queues[other][index]
        self.last_matched = max(stamp, other_stamp)
        for q in self.queues.values():
            while q and q[0][0] <= self.last_matched:
                q.popleft()
        return (item, other_item) if side == "left" else (other_item, item)


def nearest_by_stamp(entries, stamp: float, tolerance: float):
    """The entry of `entries` (tuples, stamp in seconds first) nearest `stamp` within `tolerance`, or None."""
    entry = min(entries, key=lambda e: abs(e[0] - stamp), default=None)
    return entry if entry is not None and abs(entry[0] - stamp) <= tolerance else None


class StampHistory:
    """Values by stamp (seconds): camera poses, masks; newest `size` kept, for a worker that may have to wait for
    the value of a frame it holds: add() from subscription callbacks, at() from the worker."""

    def __init__(self, size: int = 100):
        self.values: deque = deque(maxlen=size)  # (stamp, value)
        self._changed = threading.Condition()

    def add(self, stamp: float, value) -> None:
        with self._changed:
            self.values.append((stamp, value))
            self._changed.notify_all()

    def clear(self) -> None:
        with self._changed:
            self.values.clear()

    def at(self, stamp: float, tolerance: float, wait: float = 0.0):
        """The value whose stamp is nearest `stamp` within `tolerance`, waiting up to `wait` seconds for one to come
        (no longer once a value newer than the window arrived); None if none did."""
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                entry = nearest_by_stamp(self.values, stamp, tolerance)
                newest = self.values[-1][0] if self.values else -math.inf
                left = deadline - time.monotonic()
                if entry is not None or newest > stamp + tolerance or left <= 0:
                    return None if entry is None else entry[1]
                self._changed.wait(left)
