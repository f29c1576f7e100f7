"""Audio levels and dominant speaker detection with a fake clock."""

import struct

from sfu.client import one_byte_extensions
from sfu.media.rtp import parse_rtp
from sfu.speaker import (
    INTERVAL_MS,
    NO_LEVEL,
    AudioLevelMeter,
    SpeakerDetector,
    read_audio_level,
)

SILENT = 127
LOUD = 20  # -20 dBov: normal speech
QUIET = 40  # -40 dBov: speech further from the microphone


def packet(extensions: bytes = b"") -> bytes:
    b0 = 0x90 if extensions else 0x80
    return struct.pack("!BBHII", b0, 111, 1, 960, 1234) + extensions + b"\xf8\xff\xfe"


def level_of(data: bytes, ext_id: int) -> int:
    return read_audio_level(data, parse_rtp(data).ext_start, ext_id)


def test_reads_the_level_byte_among_other_one_byte_extensions():
    data = packet(one_byte_extensions([(1, b"0"), (2, bytes([0x80 | 33])), (5, b"\x01\x02")]))
    assert level_of(data, 2) == 0x80 | 33
    assert level_of(data, 1) == ord("0")
    assert level_of(data, 3) == NO_LEVEL


def test_reads_the_level_from_two_byte_extensions_and_tolerates_garbage():
    body = bytes([1, 1, ord("a"), 7, 1, 45]) + b"\0\0"
    data = packet(struct.pack("!HH", 0x1000, len(body) // 4) + body)
    assert level_of(data, 7) == 45
    assert level_of(packet(), 2) == NO_LEVEL  # no extension at all
    cut = packet(struct.pack("!HH", 0xBEDE, 1) + bytes([0, 0, 0, 0x20]))  # the element's byte is past the end
    assert level_of(cut, 2) == NO_LEVEL


def interval(meter: AudioLevelMeter, level: int, packets: int = 15, vad: bool = False, muted: bool = False) -> float:
    for _ in range(packets):
        meter.observe(level | (0x80 if vad else 0))
    return meter.take(INTERVAL_MS, muted=muted)


def test_meter_scores_loud_speech_above_quiet_speech_above_silence():
    m = AudioLevelMeter()
    loud, quiet, silent = interval(m, LOUD), interval(m, QUIET), interval(m, SILENT)
    assert loud > quiet > 0.5 and silent == 0
    assert interval(m, LOUD, packets=2) < 0.5, "DTX: missing packets count as silence"
    assert interval(m, LOUD, muted=True) == 0


def test_meter_honours_the_v_bit_once_the_sender_uses_it():
    m = AudioLevelMeter()
    assert interval(m, LOUD, vad=False) > 0.5, "no VAD in use: the level alone counts"
    interval(m, LOUD, vad=True)
    assert interval(m, LOUD, vad=False) == 0, "the sender's VAD says: not voice"


def run(detector: SpeakerDetector, clock: list[float], seconds: float, levels: dict[str, int]) -> list[object]:
    """Feed ``seconds`` of intervals where each participant speaks at a level; the choices."""
    meters = {k: AudioLevelMeter() for k in levels}
    out = []
    for _ in range(int(seconds * 1000 / INTERVAL_MS)):
        clock[0] += INTERVAL_MS
        out.append(detector.update(clock[0], {k: interval(meters[k], lvl) for k, lvl in levels.items()}))
    return out


def test_the_one_who_speaks_becomes_dominant_after_a_minimum_time():
    d, clock = SpeakerDetector(), [0.0]
    assert run(d, clock, 3, {"a": SILENT, "b": SILENT}) == [None] * 10
    choices = run(d, clock, 2, {"a": SILENT, "b": LOUD})
    assert choices[0] is None and choices[-1] == "b"
    first = choices.index("b") * INTERVAL_MS + INTERVAL_MS
    assert 600 <= first <= 1200


def test_a_short_interjection_does_not_take_the_floor():
    d, clock = SpeakerDetector(), [0.0]
    run(d, clock, 3, {"a": LOUD, "b": SILENT})
    assert d.current == "a"
    assert set(run(d, clock, 0.6, {"a": SILENT, "b": LOUD})) == {"a"}  # "yes" for 600 ms
    assert set(run(d, clock, 5, {"a": SILENT, "b": SILENT})) == {"a"}


def test_silence_keeps_the_last_speaker():
    d, clock = SpeakerDetector(), [0.0]
    run(d, clock, 3, {"a": LOUD, "b": SILENT})
    assert set(run(d, clock, 30, {"a": SILENT, "b": SILENT})) == {"a"}


def test_speaker_switches_when_the_other_one_talks_and_the_first_stops():
    d, clock = SpeakerDetector(), [0.0]
    run(d, clock, 3, {"a": LOUD, "b": SILENT})
    choices = run(d, clock, 4, {"a": SILENT, "b": LOUD})
    assert choices[-1] == "b"
    switch_ms = (choices.index("b") + 1) * INTERVAL_MS
    assert 600 <= switch_ms <= 2500, switch_ms
    assert choices[choices.index("b") :] == ["b"] * (len(choices) - choices.index("b")), "no way back"


def test_no_flapping_when_two_talk_over_each_other():
    d, clock = SpeakerDetector(), [0.0]
    run(d, clock, 3, {"a": LOUD, "b": SILENT})
    # Both talk at similar levels, with the lead changing every interval.
    meters = {"a": AudioLevelMeter(), "b": AudioLevelMeter()}
    choices = []
    for i in range(40):
        clock[0] += INTERVAL_MS
        la, lb = (LOUD, LOUD + 4) if i % 2 else (LOUD + 4, LOUD)
        choices.append(d.update(clock[0], {"a": interval(meters["a"], la), "b": interval(meters["b"], lb)}))
    assert set(choices) == {"a"}


def test_a_clearly_louder_challenger_wins_over_quiet_background_talk():
    d, clock = SpeakerDetector(), [0.0]
    run(d, clock, 3, {"a": QUIET + 5, "b": SILENT})
    assert d.current == "a"
    choices = run(d, clock, 4, {"a": QUIET + 5, "b": LOUD - 10})
    assert choices[-1] == "b"


def test_alternating_bursts_shorter_than_the_minimum_never_switch():
    d, clock = SpeakerDetector(), [0.0]
    run(d, clock, 3, {"a": LOUD, "b": SILENT})
    choices = []
    for i in range(20):
        who = "b" if (i // 2) % 2 else "a"  # 600 ms each, b's bursts separated by silence
        choices += run(d, clock, 0.3, {"a": LOUD if who == "a" else SILENT, "b": LOUD if who == "b" else SILENT})
    assert set(choices) == {"a"}


def test_a_speaker_who_leaves_is_replaced_or_cleared():
    d, clock = SpeakerDetector(), [0.0]
    run(d, clock, 3, {"a": LOUD, "b": SILENT})
    assert run(d, clock, 0.3, {"b": SILENT}) == [None]
    assert run(d, clock, 2, {"b": LOUD})[-1] == "b"


async def test_publish_answer_accepts_the_offered_audio_level_extension_with_its_id():
    from aiortc import RTCPeerConnection

    from sfu.rtc.publish import PublishPeer
    from sfu.speaker import AUDIO_LEVEL_URI

    client = RTCPeerConnection()
    client.addTransceiver("audio", direction="sendonly")
    await client.setLocalDescription(await client.createOffer())
    sdp = client.localDescription.sdp
    assert f"a=extmap:2 {AUDIO_LEVEL_URI}" in sdp
    sdp = sdp.replace(f"a=extmap:2 {AUDIO_LEVEL_URI}", f"a=extmap:7 {AUDIO_LEVEL_URI}")  # as a browser might
    peer = PublishPeer("p1", [], lambda: None, 0)
    try:
        answer, added, _ = await peer.handle_offer(sdp, {})
        assert f"a=extmap:7 {AUDIO_LEVEL_URI}" in answer
        assert peer._ext_ids[AUDIO_LEVEL_URI] == 7
        assert [p.id for p in added] == list(peer.audio_levels)
    finally:
        await peer.close()
        await client.close()
