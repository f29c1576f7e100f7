"""bench/scenarios.py's verdict on a step: the limits, and the tracks the scenario asks for."""

from bench.scenarios import SCENARIOS, expected_consumers, verdict


def test_expected_tracks_follow_each_scenario():
    # Everyone publishes audio and video to every other member of the room.
    assert expected_consumers(SCENARIOS["big-room"], 24) == 24 * 23 * 2
    # Rooms of four, the last one partly filled.
    assert expected_consumers(SCENARIOS["small-rooms"], 96) == 24 * 4 * 3 * 2
    assert expected_consumers(SCENARIOS["small-rooms"], 10) == 2 * 4 * 3 * 2 + 2 * 1 * 2
    # One publisher, everyone else watches it.
    assert expected_consumers(SCENARIOS["broadcast"], 251) == 250 * 2


def good_step(n: int) -> dict:
    return {
        "joined": n,
        "loss_pct": 0.0,
        "latency_ms": {"p99": 20.0},
        "consumers": float(expected_consumers(SCENARIOS["big-room"], n)),
        "consumers_expected": expected_consumers(SCENARIOS["big-room"], n),
    }


def test_a_step_is_over_the_limits_when_tracks_are_missing_or_media_is_late():
    assert verdict(good_step(32), 32) is None
    assert verdict({**good_step(32), "joined": 31}, 32) == "only 31 of 32 joined"
    # Everyone joined, but the server forwards fewer tracks than the scenario asks for.
    assert verdict({**good_step(32), "consumers": 992.0}, 32) == "only 992 of 1984 tracks forwarded"
    assert verdict({**good_step(32), "loss_pct": 1.5}, 32) == "loss 1.50 % > 1.0 %"
    assert verdict({**good_step(32), "latency_ms": {"p99": 101.0}}, 32) == "p99 latency 101 ms > 100 ms"
