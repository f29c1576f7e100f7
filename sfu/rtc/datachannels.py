"""Data channels on the two peer connections, through aiortc's public SCTP API.

On the publish connection the client opens channels (``ClientChannels``): every message is
handed on with whether its channel is reliable (ordered, no retransmission or lifetime limit)
or lossy (anything else). On the subscribe connection the server opens two channels for its
first offer (``ServerChannels``): ``RELIABLE_LABEL`` (ordered, reliable) and ``LOSSY_LABEL``
(unordered, no retransmissions), and relays on them.

The channels are created after the offer's transceivers, never before: aiortc (1.16), with
max-bundle, gives an SCTP transport created before any transceiver a transport of its own
that the transceivers then share, and on the answer "unbundles" it, stopping the one
transport everything runs on. Created after them, it shares theirs from the start; with no
transceiver at all, its m-section comes first and the later ones bundle on it.

SCTP rides on the connection's one DTLS transport (bundled with the media); DTLS application
data goes from aiortc's DTLS transport to its SCTP transport, past the RTP tap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection

logger = logging.getLogger(__name__)

RELIABLE_LABEL = "sfu-reliable"
LOSSY_LABEL = "sfu-lossy"
MAX_CLIENT_CHANNELS = 16  # channels one publish connection may open; more are closed
MAX_BUFFERED_BYTES = 1 << 20  # queued for one subscriber's channel; past it, messages are dropped

# (reliable, message): a message arrived on a client channel (bytes: binary, str: text).
DataHandler = Callable[[bool, bytes | str], None]


def is_reliable(channel: RTCDataChannel) -> bool:
    """Ordered with no retransmission or lifetime limit: relayed on the reliable channel."""
    return channel.ordered and channel.maxRetransmits is None and channel.maxPacketLifeTime is None


class ClientChannels:
    """The channels a client opens on its publish connection."""

    def __init__(self, pc: RTCPeerConnection, on_message: DataHandler, on_first_open: Callable[[], None]) -> None:
        self.channels: list[RTCDataChannel] = []
        self.refused = 0  # channels over MAX_CLIENT_CHANNELS, closed at once
        self._on_message = on_message
        self._on_first_open = on_first_open

        @pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            self._add(channel)

    def _add(self, channel: RTCDataChannel) -> None:
        if len(self.channels) >= MAX_CLIENT_CHANNELS:
            self.refused += 1
            channel.close()
            return
        self.channels.append(channel)
        reliable = is_reliable(channel)
        handler = self._on_message

        @channel.on("message")
        def on_message(message: bytes | str) -> None:
            try:
                handler(reliable, message)
            except Exception:  # one message must not end aiortc's SCTP receive path
                logger.exception("a data channel message was not handled")

        @channel.on("close")
        def on_close() -> None:
            if channel in self.channels:
                self.channels.remove(channel)

        if len(self.channels) == 1:
            self._on_first_open()

    @property
    def opened(self) -> bool:
        return bool(self.channels)


class ServerChannels:
    """The two channels the server opens on a subscribe connection, and sending on them."""

    def __init__(self) -> None:
        self.reliable: RTCDataChannel | None = None
        self.lossy: RTCDataChannel | None = None

    def open(self, pc: RTCPeerConnection) -> None:
        """Create both channels (idempotent): right before the first offer, once its
        transceivers exist (see the module's docstring)."""
        if self.reliable is None:
            self.reliable = pc.createDataChannel(RELIABLE_LABEL, ordered=True)
            self.lossy = pc.createDataChannel(LOSSY_LABEL, ordered=False, maxRetransmits=0)

    def send(self, reliable: bool, frame: bytes) -> str | None:
        """Queue one frame; None if it went, else why not (``not-open``, ``backlog``,
        ``send-failed``: e.g. larger than the subscriber accepts)."""
        channel = self.reliable if reliable else self.lossy
        if channel is None or channel.readyState != "open":
            return "not-open"
        if channel.bufferedAmount > MAX_BUFFERED_BYTES:
            return "backlog"
        try:
            channel.send(frame)
        except Exception:
            return "send-failed"
        return None

    def describe(self) -> dict[str, Any]:
        return {
            channel.label: {"state": channel.readyState, "buffered_bytes": channel.bufferedAmount}
            for channel in (self.reliable, self.lossy)
            if channel is not None
        }
