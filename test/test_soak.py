"""The node survives abuse (short soak; `dares bench soak` runs the long one and publishes its figures)."""

from helpers import TINY

from dares_ros.tools.bench.soak import PHASES, soak


def test_node_keeps_publishing_under_abuse_with_bounded_latency_and_memory():
    record = soak(encoder="tiny", hf_config=TINY, width=160, height=128, phase_s=4.0, input_size=(56, 70))
    stats, phases = record["paths"]["node under abuse"], record["phases"]
    assert stats["node_alive"]
    for phase in PHASES:
        assert phases[phase]["answered"] > 0, (phase, phases)
    assert stats["half_size_outputs"] > 0  # followed the resolution change
    assert stats["p99_ms"] < 4000  # under a phase (4 s): stale frames are dropped, never queued behind
    assert stats["rss_growth_mb"] < 100
