"""Every touch of aiortc's and aioice's private internals, in one package.

aiortc is an endpoint library: its receivers decode and its senders encode. The SFU uses it
only for what an SFU needs from a WebRTC stack (SDP offer/answer, ICE, DTLS, SRTP) and takes
the media path over. The modules of this package are the only code in ``sfu`` that reaches
into aiortc/aioice internals; the rest of the SFU uses what is re-exported here:

- ``peer_connection``: peer connections created, negotiated, tapped and sent on. Incoming
  SRTP is decrypted by aiortc, then handed to our tap *before* aiortc's RTP router, jitter
  buffer and decoder (``install_tap``); aiortc receivers are never started, so no decoder
  thread exists (``detach_receivers``); outgoing RTP and RTCP are written by us, protected with
  the transport's SRTP session and put on the selected ICE pair without awaiting a chain of
  coroutines (``send_packet``; through the compiled path of ``sfu.rtc.fastpath`` when it is
  built: its own libsrtp2 session per transport, one C call per packet; ``send_rtp_through``
  attaches a subscriber's compiled sink (sfu.rtc.sink) to that session, the nominated pair's
  socket and address, so it sends by itself); aiortc senders are kept for negotiation (SSRC,
  msid) but their
  encode loop and their sender-report loop never run (``prepare_forwarding_sender``); the
  answer can accept what aiortc does not implement (header extensions, RTCP feedback types
  such as transport-cc); a peer connection can be closed at any moment of connecting.
- ``datagrams``: every datagram on an ICE socket is demultiplexed (RFC 7983, ``sfu.rtc.demux``)
  and checked before aioice and aiortc see it; what is dropped is counted.
- ``arrival``: incoming datagrams carry the kernel's receive time for transport-cc feedback
  (``track_arrival_times``, ``arrival_us``).
- ``ice``: the host candidate addresses can be pinned (``set_host_addresses``), bound in a UDP
  port range and advertised as an announced address (``configure_network``); closing an ICE
  connection while it gathers or connects leaves no socket and no task behind.

aiortc is pinned to one minor version in pyproject.toml. ``check_compatibility`` verifies every
internal used by any of these modules; it runs at server start and in
tests/unit/test_aiortc_glue.py, so an aiortc upgrade that moves any of them fails loudly here
and nowhere else.
"""

from __future__ import annotations

import aiortc

from ..demux import DROP_REASONS, MAX_BACKLOG, drop_totals, transport_drops_metric
from ..fastpath import describe as describe_send_path
from ..fastpath import log_choice as log_send_path
from ..ice_addresses import NetworkSettings
from . import arrival, datagrams, ice, peer_connection
from .arrival import arrival_us, track_arrival_times
from .compat import SUPPORTED_AIORTC, GlueError
from .datagrams import DatagramGuard, guard_datagrams
from .ice import check_network_compatibility, configure_network, guard_ice_close, network_settings, set_host_addresses
from .peer_connection import (
    RtcpHandler,
    RtpHandler,
    RtpNowHandler,
    accept_header_extensions,
    accept_rtcp_feedback,
    answer_as_dtls_server,
    create_peer_connection,
    detach_receivers,
    direct_deliveries,
    dtls_transports,
    install_tap,
    is_connected,
    limit_rtcp,
    prepare_forwarding_sender,
    send_packet,
    send_rtp_through,
    transport_drops,
    uses_compiled_path,
)

__all__ = [
    "DROP_REASONS",
    "MAX_BACKLOG",
    "SUPPORTED_AIORTC",
    "DatagramGuard",
    "GlueError",
    "NetworkSettings",
    "RtcpHandler",
    "RtpHandler",
    "RtpNowHandler",
    "accept_header_extensions",
    "accept_rtcp_feedback",
    "answer_as_dtls_server",
    "arrival_us",
    "check_compatibility",
    "check_network_compatibility",
    "configure_network",
    "create_peer_connection",
    "describe_send_path",
    "detach_receivers",
    "direct_deliveries",
    "drop_totals",
    "dtls_transports",
    "guard_datagrams",
    "guard_ice_close",
    "install_tap",
    "is_connected",
    "limit_rtcp",
    "log_send_path",
    "network_settings",
    "prepare_forwarding_sender",
    "send_packet",
    "send_rtp_through",
    "set_host_addresses",
    "track_arrival_times",
    "transport_drops",
    "transport_drops_metric",
    "uses_compiled_path",
]


def check_compatibility() -> None:
    """Raise GlueError unless every aiortc/aioice internal used by this package is present."""
    problems: list[str] = []
    if not aiortc.__version__.startswith(SUPPORTED_AIORTC):
        problems.append(f"aiortc {aiortc.__version__} is not {SUPPORTED_AIORTC}x")
    for module in (peer_connection, datagrams, arrival, ice):
        problems += module.problems()
    if problems:
        raise GlueError("aiortc internals changed: " + "; ".join(dict.fromkeys(problems)))
