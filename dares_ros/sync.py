"""Approximate-time pairing of left/right messages (message_filters has no wheel; this is its small core)."""

from __future__ import annotations

from collections import deque
from typing import Any


class StereoMatcher:
    """Pairs left and right items whose stamps (seconds) differ by at most `tolerance`.

    Each side keeps its last `queue_size` items; a match consumes both items and drops everything older,
    so duplicated or out-of-order stamps never produce a pair older than the last one.
    """

    def __init__(self, tolerance: float, queue_size: int = 5):
        self.tolerance = tolerance
        self.queues: dict[str, deque] = {"left": deque(maxlen=queue_size), "right": deque(maxlen=queue_size)}
        self.last_matched = float("-inf")

    def add(self, side: str, stamp: float, item: Any) -> tuple[Any, Any] | None:
        """Offer an item; returns (left, right) when it completes a pair, else None."""
        if stamp <= self.last_matched:
            return None
        other = "right" if side == "left" else "left"
        candidates = [(abs(s - stamp), i) for i, (s, _) in enumerate(self.queues[other])
                      if abs(s - stamp) <= self.tolerance]
        if not candidates:
            self.queues[side].append((stamp, item))
            return None
        _, index = min(candidates)
        other_stamp, other_item = self.queues[other][index]
        self.last_matched = max(stamp, other_stamp)
        for q in self.queues.values():
            while q and q[0][0] <= self.last_matched:
                q.popleft()
        return (item, other_item) if side == "left" else (other_item, item)
