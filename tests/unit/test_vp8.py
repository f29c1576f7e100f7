"""The VP8 munger with 7-bit picture IDs (RFC 7741 allows both widths)."""

from sfu.media.vp8 import Vp8Munger, parse_descriptor


def payload(picture_id: int, tl0: int) -> bytes:
    return bytes((0x90, 0xC0, picture_id & 0x7F, tl0, 0x00))


def test_a_seven_bit_picture_id_that_wraps_still_moves_forward_and_a_restart_continues_from_it():
    munger = Vp8Munger()
    for i, pid in enumerate((125, 126, 127, 0, 1)):
        munger.rewrite(payload(pid, 5 + i))
    assert munger.last_pid == 1
    munger.restart()
    out = parse_descriptor(munger.rewrite(payload(90, 200)))  # another layer's numbering
    assert out is not None and (out.picture_id, out.tl0picidx) == (2, 10)
    out = parse_descriptor(munger.rewrite(payload(91, 201)))
    assert out is not None and out.picture_id == 3
