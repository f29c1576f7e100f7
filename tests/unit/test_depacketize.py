"""Frames from RTP for recording: VP8 and H.264 put back together byte for byte, in order,
waiting for late packets, and dropped (until a keyframe) when a packet never comes."""

import fractions

import av
import pytest

from sfu.client import load_clip, vp8_packetize
from sfu.media.depacketize import (
    ANNEX_B_START,
    FrameAssembler,
    MalformedPayload,
    h264_frame_part,
    h264_parameter_sets,
)

VP8_CLOCK_STEP = 3000


def vp8_packets(frames, first_seq=65500):
    """(seq, ts, marker, payload) for each packet of each frame (sequence numbers wrap)."""
    out = []
    seq = first_seq
    for i, (data, _key) in enumerate(frames):
        payloads = vp8_packetize(data, i & 0x7FFF)
        for j, payload in enumerate(payloads):
            out.append((seq & 0xFFFF, (i * VP8_CLOCK_STEP) & 0xFFFFFFFF, int(j == len(payloads) - 1), payload))
            seq += 1
    return out


def push_all(assembler, packets, now_ms=0):
    frames = []
    for seq, ts, marker, payload in packets:
        frames += assembler.push(seq, ts, marker, payload, now_ms)
    return frames


@pytest.fixture(scope="module")
def clip():
    return load_clip("video").frames[:40]  # a keyframe, then delta frames (a keyframe a second)


def test_vp8_frames_come_back_byte_for_byte_across_a_sequence_number_wrap(clip):
    frames = push_all(FrameAssembler("VP8"), vp8_packets(clip))
    assert [f.data for f in frames] == [data for data, _ in clip]
    assert [f.keyframe for f in frames] == [key for _, key in clip]


def test_video_starts_on_a_keyframe(clip):
    assembler = FrameAssembler("VP8")
    packets = vp8_packets(clip)
    first_delta = next(i for i, p in enumerate(packets) if p[0] != packets[0][0] and p[3][0] & 0x10)
    frames = push_all(assembler, packets[first_delta:])
    keyframe_index = next(i for i, (_, key) in enumerate(clip[1:], 1) if key)
    assert frames and frames[0].keyframe and frames[0].data == clip[keyframe_index][0]
    assert assembler.frames_dropped == keyframe_index - 1


def test_a_late_packet_within_the_hold_completes_its_frame(clip):
    packets = vp8_packets(clip[:6])
    # A later packet of a frame of several (the same timestamp as the one before it): how many
    # frames are that large depends on the encoder's version.
    big = next(i for i, p in enumerate(packets) if i > 0 and packets[i - 1][1] == p[1])
    late = packets.pop(big)
    assembler = FrameAssembler("VP8", hold_ms=500)
    assembler.keyframe_asked()
    frames = push_all(assembler, packets, now_ms=100)
    assert len(frames) < 6  # everything after the hole waits
    assert assembler.poll(300) == []
    frames += assembler.push(*late, now_ms=350)
    assert [f.data for f in frames] == [data for data, _ in clip[:6]]
    assert not assembler.keyframe_wanted and assembler.frames_dropped == 0


def test_a_packet_that_never_comes_drops_its_frame_and_the_rest_until_a_keyframe(clip):
    packets = vp8_packets(clip)
    assembler = FrameAssembler("VP8", hold_ms=500)
    assembler.keyframe_asked()
    # Lose the second packet of the keyframe: nothing can be shown until the next keyframe.
    del packets[1]
    # The next keyframe ends the wait as soon as it is complete; the poll finds nothing more.
    frames = push_all(assembler, packets, now_ms=0) + assembler.poll(600)
    next_key = next(i for i, (_, key) in enumerate(clip[1:], 1) if key)
    assert frames and frames[0].keyframe and frames[0].data == clip[next_key][0]
    assert [f.data for f in frames] == [data for data, _ in clip[next_key:]]
    assert assembler.frames_dropped == next_key


def test_a_keyframe_is_asked_for_when_a_frame_is_given_up(clip):
    next_key = next(i for i, (_, key) in enumerate(clip[1:], 1) if key)
    packets = vp8_packets(clip[:next_key])
    assembler = FrameAssembler("VP8", hold_ms=500)
    assembler.keyframe_asked()
    del packets[1]
    assert push_all(assembler, packets, now_ms=0) == []
    assert assembler.poll(499) == [] and not assembler.keyframe_wanted, "it waits for the repair first"
    assert assembler.poll(500) == []  # given up: terminates, and nothing after the hole can be shown
    assert assembler.keyframe_wanted
    assert assembler.frames_dropped >= next_key - 1


def test_a_keyframe_is_asked_for_again_while_only_delta_frames_come(clip):
    # The keyframe asked for never arrives (lost, or asked for while the publisher was muted):
    # each delta frame dropped meanwhile asks again, until a keyframe ends the wait.
    assembler = FrameAssembler("VP8")
    assembler.keyframe_asked()
    delta = [(data, key) for data, key in clip if not key][:10]
    keyframe = next((data, key) for data, key in clip if key)
    packets = vp8_packets(delta + [keyframe])
    frames, asks = [], 0
    for seq, ts, marker, payload in packets:
        frames += assembler.push(seq, ts, marker, payload, 0)
        if assembler.keyframe_wanted:
            asks += 1
            assembler.keyframe_asked()
    assert asks == 10 and assembler.frames_dropped == 10
    assert [f.data for f in frames] == [keyframe[0]] and frames[0].keyframe


def test_after_a_loss_every_delta_frame_dropped_asks_again(clip):
    next_key = next(i for i, (_, key) in enumerate(clip[1:], 1) if key)
    assert next_key > 8
    assembler = FrameAssembler("VP8", hold_ms=100)
    packets = vp8_packets(clip[:next_key])
    first_delta = next(i for i, p in enumerate(packets) if i > 0 and p[1] != packets[0][1])
    del packets[first_delta]  # the first delta frame's first packet never comes
    asks, now_ms = 0, 0
    for seq, ts, marker, payload in packets:
        now_ms += 150  # past the hold: the hole is given up on
        assembler.push(seq, ts, marker, payload, now_ms)
        assembler.poll(now_ms)
        if assembler.keyframe_wanted:
            asks += 1
            assembler.keyframe_asked()
    assert assembler.frames == 1  # the keyframe, then nothing can be shown
    assert asks >= next_key - 3, (asks, next_key)  # the start, the loss, and each frame dropped since


def test_a_loss_in_a_delta_frame_waits_for_the_next_keyframe(clip):
    packets = vp8_packets(clip)
    # A delta frame's packet is lost; the frames that follow reference it.
    lost_frame = 3
    index = sum(len(vp8_packetize(d, 0)) for d, _ in clip[:lost_frame])
    del packets[index]
    assembler = FrameAssembler("VP8", hold_ms=200)
    frames = push_all(assembler, packets, now_ms=0) + assembler.poll(1000)
    next_key = next(i for i, (_, key) in enumerate(clip[1:], 1) if key)
    assert [f.data for f in frames] == [d for d, _ in clip[:lost_frame]] + [d for d, _ in clip[next_key:]]


def test_a_frame_cut_short_by_a_layer_switch_is_dropped_at_once(clip):
    packets = vp8_packets(clip[:2])
    key_packets = [p for p in packets if p[1] == 0]
    assert len(key_packets) > 1
    assembler = FrameAssembler("VP8")
    push_all(assembler, key_packets[:-1])  # the end of this keyframe is never forwarded
    # The consumer switches: the next packet, right after, begins another keyframe.
    seq = (key_packets[-1][0]) & 0xFFFF
    other = vp8_packetize(clip[0][0], 7)
    frames = []
    for j, payload in enumerate(other):
        frames += assembler.push((seq + j) & 0xFFFF, 90000, int(j == len(other) - 1), payload, 0)
    assert [f.data for f in frames] == [clip[0][0]]


def test_audio_packets_are_frames_in_order():
    assembler = FrameAssembler("opus")
    out = []
    for seq, payload in ((10, b"a"), (11, b"b"), (13, b"d"), (12, b"c"), (14, b"e")):
        out += assembler.push(seq, seq * 960, 1, payload, 0)
    assert [f.data for f in out] == [b"a", b"b", b"d", b"e"]
    assert assembler.packets_late == 1


def h264_access_units(count=40):
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.framerate = fractions.Fraction(30)
    ctx.gop_size = 20
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
    units = []
    for i in range(count):
        frame = av.VideoFrame(320, 240, "yuv420p")
        for k, plane in enumerate(frame.planes):
            plane.update(bytes([(i * 9 + k * 50 + x) % 256 for x in range(256)]) * (plane.buffer_size // 256))
        frame.pts = i
        units += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(frame)]
    return units


def nal_units(annex_b):
    """The NAL units of an Annex B access unit (3- or 4-byte start codes)."""
    out, i, n = [], 0, len(annex_b)
    starts = []
    while i < n - 2:
        if annex_b[i : i + 3] == b"\x00\x00\x01":
            starts.append(i + 3)
            i += 3
        else:
            i += 1
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else n
        if k + 1 < len(starts) and annex_b[end - 1] == 0:
            end -= 1  # the zero byte of a 4-byte start code
        out.append(annex_b[s:end])
    return out


def h264_packetize(nals, mtu=900):
    """RFC 6184 mode 1, in order: runs of parameter sets aggregated in a STAP-A, big NAL units
    in FU-A fragments, the others as single NAL unit packets."""
    out, run = [], []
    for u in [*nals, None]:
        if u is not None and u[0] & 0x1F in (7, 8):
            run.append(u)
            continue
        if run:
            out.append(bytes([24]) + b"".join(len(x).to_bytes(2, "big") + x for x in run))
            run = []
        if u is None:
            break
        if len(u) <= mtu:
            out.append(u)
            continue
        chunks = [u[1 + i : 1 + i + mtu] for i in range(0, len(u) - 1, mtu)]
        for i, c in enumerate(chunks):
            fu = (u[0] & 0x1F) | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
            out.append(bytes([(u[0] & 0xE0) | 28, fu]) + c)
    return out


def test_h264_access_units_come_back_as_annex_b_and_mux_into_a_playable_matroska(tmp_path):
    from sfu.recording.writer import MuxWriter, StreamSpec

    units = h264_access_units()
    assembler = FrameAssembler("H264")
    frames, seq = [], 1000
    for i, (au, _key) in enumerate(units):
        nals = nal_units(au)
        payloads = h264_packetize(nals)
        assert any(p[0] & 0x1F == 28 for p in payloads) or i > 0
        for j, payload in enumerate(payloads):
            frames += assembler.push(seq & 0xFFFF, i * 3000, int(j == len(payloads) - 1), payload, 0)
            seq += 1
        expected = b"".join(ANNEX_B_START + n for n in nals)
        assert frames[-1].data == expected
    assert len(frames) == len(units) and frames[0].keyframe
    header = h264_parameter_sets(frames[0].data)
    assert [n[0] & 0x1F for n in nal_units(header)] == [7, 8]
    path = tmp_path / "h.mkv"
    writer = MuxWriter(path, "matroska", [StreamSpec("video", "H264", 320, 240, extradata=header)])
    for i, f in enumerate(frames):
        assert writer.put(0, i * 33, f.data, f.keyframe)
    writer.close()
    assert writer.join(10) and writer.error is None
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
        decoded = sum(len(p.decode()) for p in packets)
    assert len(packets) == len(frames) and decoded == len(frames)


def test_malformed_h264_payloads_are_refused():
    for bad in (b"", bytes([24, 0]), bytes([24, 0, 9, 0x65]), bytes([28]), bytes([30, 1, 2])):
        with pytest.raises(MalformedPayload):
            h264_frame_part(bad)
    assembler = FrameAssembler("H264")
    assert assembler.push(1, 0, 1, bytes([24, 0, 9, 0x67]), 0) == []


def test_a_slow_disk_never_blocks_the_writer_s_caller(tmp_path):
    """A FIFO nobody reads stands for a disk that does not keep up: the writer's thread is
    stuck, ``put`` returns at once, refuses (and counts) what the queue cannot hold, and the
    file is finished once the disk moves again."""
    import os
    import threading
    import time

    from sfu.recording.writer import MuxWriter, StreamSpec

    path = tmp_path / "slow.webm"
    os.mkfifo(path)
    clip = load_clip("video").frames
    writer = MuxWriter(path, "webm", [StreamSpec("video", "VP8", 640, 360)], max_queue_frames=20)
    t0 = time.monotonic()
    accepted = [writer.put(0, i * 33, clip[i % len(clip)][0], i % 30 == 0) for i in range(100)]
    assert time.monotonic() - t0 < 0.5, "put never waits for the disk"
    assert accepted[:20] == [True] * 20 and not any(accepted[21:])
    assert writer.frames_dropped >= 79
    writer.close()
    assert not writer.join(0.2), "still stuck on the disk"
    received = bytearray()

    def read() -> None:
        with open(path, "rb") as f:
            while chunk := f.read(65536):
                received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    assert writer.join(10) and writer.error is None
    reader.join(10)
    assert writer.frames_written == 20 and len(received) > sum(len(clip[i][0]) for i in range(20))
