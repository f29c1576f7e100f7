"""Pinning and the active speaker: the `subscription` message and allocation priority."""

import json

import pytest

from sfu.bwe.allocator import (
    PAUSED,
    PRIORITY_NORMAL,
    PRIORITY_PINNED,
    PRIORITY_SCREEN,
    PRIORITY_SPEAKER,
    REASON_BANDWIDTH,
    StreamAllocator,
    VideoDemand,
    allocate,
)
from sfu.errors import SignalingError
from sfu.signaling.messages import parse

LAYERS = (150_000, 500_000, 1_500_000)


def subscription(**fields):
    return parse(json.dumps({"type": "subscription", "track": "p1-1", "max_height": 360, **fields}))


def test_pinned_defaults_to_false_and_is_kept_when_true():
    assert subscription().pinned is False
    assert subscription(pinned=True).pinned is True
    assert subscription(pinned=False, paused=True).pinned is False


@pytest.mark.parametrize("bad", ["yes", 1, 0, None, [], {}, "true"])
def test_pinned_must_be_a_boolean(bad):
    with pytest.raises(SignalingError) as info:
        subscription(pinned=bad)
    assert info.value.code == "bad-message" and "pinned" in info.value.message


def demand(key, priority=PRIORITY_NORMAL, height=360, wanted=2):
    return VideoDemand(key, priority, wanted, LAYERS, height)


def test_pinned_and_speaker_videos_are_raised_before_bigger_tiles():
    demands = [
        demand("big", height=1080),
        demand("speaker", priority=PRIORITY_SPEAKER),
        demand("pinned", priority=PRIORITY_PINNED, height=180),
        demand("other"),
    ]
    # Audio, every lowest layer, then one step up for one video.
    budget = 2 * 50_000 + 4 * 150_000 + 350_000 + 10_000
    alloc = allocate(budget, 2, demands)
    assert alloc["pinned"].layer == 1
    assert [alloc[k].layer for k in ("speaker", "big", "other")] == [0, 0, 0]
    alloc = allocate(budget + 350_000, 2, demands)
    assert alloc["pinned"].layer == 1 and alloc["speaker"].layer == 1 and alloc["big"].layer == 0


def test_under_a_tight_estimate_the_others_pause_first_and_screen_comes_before_pinned():
    demands = [
        demand("a", height=1080),
        demand("pinned", priority=PRIORITY_PINNED),
        demand("screen", priority=PRIORITY_SCREEN),
    ]
    alloc = allocate(50_000 + 2 * 150_000 + 20_000, 1, demands)
    assert alloc["screen"].layer == 0 and alloc["pinned"].layer == 0
    assert alloc["a"].layer == PAUSED and alloc["a"].reason == REASON_BANDWIDTH


def test_when_the_estimate_drops_the_pinned_video_keeps_its_layer_and_the_others_step_down():
    a = StreamAllocator()
    demands = [demand("x", height=720), demand("pinned", priority=PRIORITY_PINNED), demand("y", height=720)]
    first = a.update(0, 10_000_000, 0, demands)
    assert {k: v.layer for k, v in first.items()} == {"x": 2, "pinned": 2, "y": 2}
    t = 0
    for _ in range(20):  # 4 s of a tight link: room for one top layer and two lowest
        t += 200
        now = a.update(t, 1_500_000 + 2 * 150_000 + 50_000, 0, demands)
    assert now["pinned"].layer == 2
    assert now["x"].layer == 0 and now["y"].layer == 0
    assert now["x"].reason == REASON_BANDWIDTH
    # Unpinned, the former pin steps down at once, and the active speaker's video is the one
    # raised (as far as the held estimate with headroom allows).
    demands = [demand("x", height=720), demand("pinned"), demand("y", priority=PRIORITY_SPEAKER)]
    for _ in range(20):
        t += 200
        now = a.update(t, 1_500_000 + 2 * 150_000 + 50_000, 0, demands)
    assert now["y"].layer == 1 and now["pinned"].layer == 0 and now["x"].layer == 0
