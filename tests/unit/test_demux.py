"""RFC 7983 demultiplexing of what arrives on an ICE socket, and the drop counts."""

import pytest

from sfu.rtc import demux
from sfu.rtc.demux import DTLS, SRTP, STUN, DropCounter, classify


@pytest.mark.parametrize(
    ("first", "kind"),
    [(b, STUN) for b in range(4)]
    + [(b, "unknown-type") for b in range(4, 20)]  # 16-19 are ZRTP
    + [(b, DTLS) for b in range(20, 64)]
    + [(b, "unknown-type") for b in range(64, 128)]  # 64-79 are TURN channels
    + [(b, SRTP) for b in range(128, 192)]
    + [(b, "unknown-type") for b in range(192, 256)],
)
def test_the_first_byte_tells_stun_dtls_and_srtp_apart(first, kind):
    assert classify(bytes([first]) + bytes(40)) == kind


def test_an_empty_datagram_is_dropped_as_empty():
    assert classify(b"") == "empty"


def test_dtls_and_srtp_shorter_than_their_header_are_too_short():
    assert classify(b"\x16" + bytes(demux.DTLS_MIN_BYTES - 2)) == "too-short"
    assert classify(b"\x16" + bytes(demux.DTLS_MIN_BYTES - 1)) == DTLS
    assert classify(b"\x80" + bytes(demux.RTP_MIN_BYTES - 2)) == "too-short"
    assert classify(b"\x80" + bytes(demux.RTP_MIN_BYTES - 1)) == SRTP
    assert classify(b"\x00") == STUN, "STUN's shape is aioice's parser's to check"


def test_classify_answers_with_the_module_constants():
    # The guard compares by identity on its hot path.
    assert classify(b"\x80" + bytes(20)) is SRTP
    assert classify(b"\x16" + bytes(20)) is DTLS
    assert classify(b"\x00" + bytes(20)) is STUN


def test_rtcp_is_told_from_rtp_by_its_packet_type():
    assert [pt for pt in range(256) if demux.is_rtcp(bytes([0x80, pt]) + bytes(10))] == list(range(192, 209))


def test_drops_count_per_connection_and_for_the_process():
    before = demux.drop_totals()
    a, b = DropCounter(), DropCounter()
    a.drop("empty")
    a.drop("too-short")
    b.drop("too-short")
    demux.count_drop("malformed-stun")
    assert a.drops == dict.fromkeys(demux.DROP_REASONS, 0) | {"empty": 1, "too-short": 1}
    assert demux.sum_drops([a, b]) == dict.fromkeys(demux.DROP_REASONS, 0) | {"empty": 1, "too-short": 2}
    after = demux.drop_totals()
    assert {r: after[r] - before[r] for r in demux.DROP_REASONS if after[r] != before[r]} == {
        "empty": 1,
        "too-short": 2,
        "malformed-stun": 1,
    }
    samples = {s.labels["reason"]: s.value for s in demux.transport_drops_metric().samples}
    assert samples["too-short"] == after["too-short"] and set(samples) == set(demux.DROP_REASONS)
