"""Which producer and layer an incoming RTP packet of a publish connection belongs to.

A packet is routed by its SSRC when that is known. An unknown SSRC is learnt from the packet's
header extensions (RFC 8852): the MID names the m-section (the producer), the RID the
simulcast layer; a packet that carries a repaired RID instead belongs to that layer's RTX
stream. RTX SSRCs announced in the offer (``a=ssrc-group:FID``) are bound with their layer.

Bounded whatever a publisher sends: at most ``max_ssrcs`` SSRCs are learnt per transport
(media and RTX together; beyond that a new stream is dropped and counted in
``ssrcs_over_limit``), and an SSRC that could not be routed is remembered in a small negative
cache (``UNROUTABLE_CACHE_SIZE`` entries, oldest forgotten first), so each further packet of it
costs one dict look-up, not a walk of its header extensions (a packet without extensions costs
nothing to reject and is not cached). The cache is emptied whenever what
can be routed changes (producers, extension ids, bindings).

Pure: no aiortc, no I/O. The publish peer feeds it the negotiated extension ids, the
producers by MID and the FID groups, and asks ``route()`` for every packet.
"""

from __future__ import annotations

from ..forwarding import Producer
from ..media.rtp import header_extensions
from ..stream import Layer

# (producer, layer, is_rtx): one tuple per learnt stream, built once, returned for every packet.
Route = tuple[Producer, Layer, bool]
DEFAULT_MAX_SSRCS = 256
UNROUTABLE_CACHE_SIZE = 512


class SsrcRouter:
    """SSRC → (producer, layer) for one publish transport."""

    __slots__ = (
        "_by_ssrc",
        "_rtx_by_ssrc",
        "_unroutable",
        "fid",
        "max_ssrcs",
        "mid_id",
        "producers",
        "repaired_rid_id",
        "rid_id",
        "ssrcs_over_limit",
    )

    def __init__(self, max_ssrcs: int = DEFAULT_MAX_SSRCS) -> None:
        self.max_ssrcs = max_ssrcs
        self.producers: dict[str, Producer] = {}  # by MID
        self.mid_id: int | None = None  # header extension ids, from the answer
        self.rid_id: int | None = None
        self.repaired_rid_id: int | None = None
        self.fid: dict[int, int] = {}  # RTX SSRC -> media SSRC, from a=ssrc-group:FID
        self._by_ssrc: dict[int, Route] = {}
        self._rtx_by_ssrc: dict[int, Route] = {}  # the layers' RTX streams
        # SSRCs that could not be routed (insertion-ordered: the oldest is evicted first).
        self._unroutable: dict[int, None] = {}
        self.ssrcs_over_limit = 0  # new streams refused because max_ssrcs were learnt

    def set_extension_ids(self, mid_id: int | None, rid_id: int | None, repaired_rid_id: int | None) -> None:
        self.mid_id, self.rid_id, self.repaired_rid_id = mid_id, rid_id, repaired_rid_id
        self._unroutable.clear()

    def add_producer(self, mid: str, producer: Producer) -> None:
        self.producers[mid] = producer
        self._unroutable.clear()

    def remove_producer(self, mid: str) -> Producer | None:
        """Forget a producer and every SSRC routed to it."""
        producer = self.producers.pop(mid, None)
        if producer is None:
            return None
        for layer in producer.layers:
            if layer.ssrc is not None:
                self._by_ssrc.pop(layer.ssrc, None)
        for ssrc in [s for s, route in self._rtx_by_ssrc.items() if route[0] is producer]:
            del self._rtx_by_ssrc[ssrc]
        self._unroutable.clear()
        return producer

    def forget_ssrcs(self) -> None:
        """The publisher's streams come over a new connection: keep the producers, learn their
        SSRCs anew."""
        self._by_ssrc.clear()
        self._rtx_by_ssrc.clear()
        self._unroutable.clear()
        self.fid.clear()

    def clear(self) -> None:
        self.producers.clear()
        self._by_ssrc.clear()
        self._rtx_by_ssrc.clear()
        self._unroutable.clear()

    @property
    def learnt_ssrcs(self) -> int:
        return len(self._by_ssrc) + len(self._rtx_by_ssrc)

    @property
    def unroutable_ssrcs(self) -> int:
        """How many unroutable SSRCs the negative cache holds now."""
        return len(self._unroutable)

    def media_route(self, ssrc: int) -> Route | None:
        """The layer whose media stream has this SSRC (no learning)."""
        return self._by_ssrc.get(ssrc)

    def rtx_route(self, ssrc: int) -> Route | None:
        """The layer whose RTX stream has this SSRC (no learning)."""
        return self._rtx_by_ssrc.get(ssrc)

    def bind(self, producer: Producer, layer: Layer, ssrc: int) -> None:
        """The layer's media stream has this SSRC (its RTX stream follows from the FID groups)."""
        if layer.ssrc is not None:
            self._by_ssrc.pop(layer.ssrc, None)
        layer.ssrc = ssrc
        self._by_ssrc[ssrc] = (producer, layer, False)
        if layer.nack is not None:
            layer.nack.reset()
        for rtx_ssrc, media_ssrc in self.fid.items():
            if media_ssrc == ssrc:
                self._rtx_by_ssrc[rtx_ssrc] = (producer, layer, True)
        self._unroutable.clear()

    def route(self, data: bytes, ext_start: int, ssrc: int) -> Route | None:
        """The route of one packet: known SSRCs first, then what its extensions say (None:
        unroutable)."""
        route = self._by_ssrc.get(ssrc)
        if route is not None:
            return route
        route = self._rtx_by_ssrc.get(ssrc)
        if route is not None:
            return route
        if ext_start < 0:
            return None  # nothing to learn from (and nothing costly to cache)
        if ssrc in self._unroutable:
            return None
        route = self._learn(data, ext_start, ssrc)
        if route is None:
            unroutable = self._unroutable
            if len(unroutable) >= UNROUTABLE_CACHE_SIZE:
                del unroutable[next(iter(unroutable))]
            unroutable[ssrc] = None
        return route

    def _learn(self, data: bytes, ext_start: int, ssrc: int) -> Route | None:
        """Learn the SSRC of a stream from its MID and RID header extensions."""
        if len(self._by_ssrc) + len(self._rtx_by_ssrc) >= self.max_ssrcs:
            self.ssrcs_over_limit += 1
            return None
        extensions = header_extensions(data, ext_start)
        mid_id = self.mid_id
        mid_bytes = extensions.get(mid_id) if mid_id is not None else None
        if mid_bytes is None:
            return None
        producer = self.producers.get(mid_bytes.decode("ascii", "replace"))
        if producer is None:
            return None
        repaired_id = self.repaired_rid_id
        repaired = repaired_id is not None and repaired_id in extensions
        layer: Layer | None
        if producer.simulcast:
            rid_id = repaired_id if repaired else self.rid_id
            rid = extensions.get(rid_id) if rid_id is not None else None
            layer = producer.layer_by_rid(rid.decode("ascii", "replace")) if rid is not None else None
        else:
            layer = producer.layers[0]
        if repaired:
            if layer is not None and producer.rtx_payload_type is not None:
                route: Route = (producer, layer, True)
                self._rtx_by_ssrc[ssrc] = route  # the layer's RTX stream
                return route
            return None  # a repair stream we cannot unwrap: not forwarded
        if layer is None or layer.ssrc is not None:
            return None  # a second SSRC on a known stream (e.g. RTX): not forwarded
        self.bind(producer, layer, ssrc)
        return self._by_ssrc[ssrc]
