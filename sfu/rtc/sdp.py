"""SDP helpers: parsing with validation, codec and extension look-ups, and the text edits
aiortc cannot make itself (simulcast receive RIDs in an answer, transport-cc in an offer).

Pure functions of SDP text or aiortc's parsed SessionDescription: no connection, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import sdp as aiortc_sdp

from ..bwe.twcc import TWCC_URI
from ..errors import SignalingError
from ..stream import Codec

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
SIMULCAST_EXTENSION_URIS = (RID_URI, REPAIRED_RID_URI)
MAX_SIMULCAST_LAYERS = 4
NON_MEDIA_CODECS = {"rtx", "red", "ulpfec", "flexfec-03", "cn", "telephone-event"}


def parse_sdp(text: str) -> aiortc_sdp.SessionDescription:
    """Parse SDP or raise SignalingError("bad-sdp")."""
    if not isinstance(text, str) or not text.startswith("v=0"):
        raise SignalingError("bad-sdp", "SDP must start with v=0")
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    bad = next((line for line in lines if len(line) < 2 or line[1] != "=" or not line[0].islower()), None)
    if bad is not None:
        raise SignalingError("bad-sdp", f"not an SDP line: {bad[:40]!r}")
    present = {line[0] for line in lines}
    missing = [f"{k}=" for k in "vost" if k not in present]
    if missing:
        raise SignalingError("bad-sdp", f"SDP lacks {', '.join(missing)}")
    try:
        description = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc raises many kinds on garbage
        raise SignalingError("bad-sdp", f"SDP could not be parsed: {exc}") from exc
    for media in description.media:
        if media.kind in ("audio", "video", "application"):
            if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
                raise SignalingError("bad-sdp", f"m-section {media.rtp.muxId} has no ICE credentials")
            if media.dtls is None or not media.dtls.fingerprints:
                raise SignalingError("bad-sdp", f"m-section {media.rtp.muxId} has no DTLS fingerprint")
            if not media.rtp.muxId:
                raise SignalingError("bad-sdp", "every m-section needs an a=mid")
    return description


def media_codec(media: aiortc_sdp.MediaDescription) -> tuple[Codec, int] | None:
    for c in media.rtp.codecs:
        if c.name.lower() not in NON_MEDIA_CODECS and c.payloadType is not None:
            params = tuple(sorted((str(k), str(v)) for k, v in c.parameters.items()))
            return Codec(c.name, c.clockRate, params), c.payloadType
    return None


def offered_codecs(media: aiortc_sdp.MediaDescription) -> list[Codec]:
    """Every media codec an m-section lists (not RTX, RED, FEC, CN, DTMF), in its order."""
    return [
        Codec(c.name, c.clockRate, tuple(sorted((str(k), str(v)) for k, v in c.parameters.items())))
        for c in media.rtp.codecs
        if c.name.lower() not in NON_MEDIA_CODECS
    ]


def rtx_payload_type(media: aiortc_sdp.MediaDescription, payload_type: int) -> int | None:
    """The payload type of the RTX codec for ``payload_type`` in an m-section (None: none)."""
    for c in media.rtp.codecs:
        if c.name.lower() == "rtx" and str(c.parameters.get("apt")) == str(payload_type):
            return c.payloadType
    return None


def extension_id(media: aiortc_sdp.MediaDescription, uri: str) -> int | None:
    for ext in media.rtp.headerExtensions:
        if ext.uri == uri:
            return ext.id
    return None


def _sections(sdp: str) -> list[list[str]]:
    """SDP lines grouped by section: the session part first, then one list per m-line."""
    sections: list[list[str]] = [[]]
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            sections.append([])
        if line:
            sections[-1].append(line)
    return sections


def simulcast_offers(sdp: str) -> dict[str, list[str]]:
    """mid -> send RIDs, lowest quality first, for m-sections that offer RID simulcast.

    Only what ``a=simulcast:send`` lists and ``a=rid:... send`` declares counts; paused
    RIDs (``~rid``) are received too, alternatives (``a,b``) take their first choice.
    """
    out: dict[str, list[str]] = {}
    for lines in _sections(sdp)[1:]:
        mid = next((ln[6:].strip() for ln in lines if ln.startswith("a=mid:")), None)
        declared = {
            ln[6:].split()[0]
            for ln in lines
            if ln.startswith("a=rid:") and len(ln[6:].split()) > 1 and ln[6:].split()[1] == "send"
        }
        spec = next((ln[len("a=simulcast:") :].strip() for ln in lines if ln.startswith("a=simulcast:")), None)
        if mid is None or spec is None:
            continue
        parts = spec.split()
        if len(parts) < 2 or parts[0] != "send":
            continue
        rids = []
        for alternatives in parts[1].split(";"):
            rid = alternatives.split(",")[0].lstrip("~")
            if rid in declared and rid not in rids:
                rids.append(rid)
        if len(rids) > 1:
            out[mid] = rids[:MAX_SIMULCAST_LAYERS]
    return out


def add_simulcast_answer(sdp: str, simulcast: dict[str, list[str]]) -> str:
    """Add the receive RIDs and ``a=simulcast:recv`` to the answer's m-sections."""
    if not simulcast:
        return sdp
    out: list[str] = []
    for lines in _sections(sdp):
        mid = next((ln[6:].strip() for ln in lines if ln.startswith("a=mid:")), None)
        out.extend(lines)
        rids = simulcast.get(mid or "")
        if rids and lines and lines[0].startswith("m=video") and not lines[0].startswith("m=video 0 "):
            out.extend(f"a=rid:{rid} recv" for rid in rids)
            out.append("a=simulcast:recv " + ";".join(rids))
    return "\r\n".join(out) + "\r\n"


def add_transport_cc(sdp: str, ext_id: int) -> str:
    """Offer transport-cc: the header extension and the RTCP feedback on every media codec."""
    out: list[str] = []
    in_media = False
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line.startswith("m="):
            in_media = line.startswith("m=audio") or line.startswith("m=video")
        out.append(line)
        if in_media and line.startswith("a=mid:"):
            out.append(f"a=extmap:{ext_id} {TWCC_URI}")
        if in_media and line.startswith("a=rtpmap:") and " rtx/" not in line.lower():
            fields = line[len("a=rtpmap:") :].split()
            if fields:  # an rtpmap without a payload type gets nothing
                out.append(f"a=rtcp-fb:{fields[0]} transport-cc")
    return "\r\n".join(out) + "\r\n"


# -- what a publish offer may be: checked before aiortc sees it ---------------------------


def media_sections(description: aiortc_sdp.SessionDescription) -> list[tuple[str, str]]:
    """(mid, kind) of every m-section, in order: what a re-offer must keep."""
    return [(str(m.rtp.muxId), m.kind) for m in description.media]


def check_publish_offer(
    offer: aiortc_sdp.SessionDescription,
    previous: list[tuple[str, str]],
    max_tracks: int,
    max_m_sections: int,
) -> None:
    """Refuse (SignalingError) a publish offer over the limits, or one aiortc cannot apply
    without breaking the connection; ``previous`` is ``media_sections`` of the last offer
    accepted on this connection ([] for the first).

    - at most ``max_m_sections`` m-sections (``too-many-m-sections``) and ``max_tracks``
      sending audio/video m-sections (``too-many-tracks``);
    - mids unique; a re-offer keeps every earlier m-section in its place with its mid and kind
      (RFC 3264 section 8; an m-section is stopped with port 0, never removed);
    - one m=application (the data channels' SCTP) at most;
    - one BUNDLE group at most, of unique mids of this offer's live m-sections, holding every
      live audio/video/application m-section, and tagged by the m-section whose transport everything is
      bundled on (the first one) if that one is live: aiortc would otherwise stop the
      connection's one transport, or bundle the others on a transport that does not exist.
    """
    media = offer.media
    if len(media) > max_m_sections:
        raise SignalingError(
            "too-many-m-sections", f"the offer has {len(media)} m-sections; at most {max_m_sections} are accepted"
        )
    sections = media_sections(offer)
    mids = [mid for mid, _ in sections]
    if len(set(mids)) != len(mids):
        raise SignalingError("bad-sdp", "two m-sections have the same a=mid")
    for index, (mid, kind) in enumerate(previous):
        if index >= len(sections) or sections[index] != (mid, kind):
            raise SignalingError(
                "bad-sdp",
                f"m-section {index} (mid {mid!r}, {kind}) is missing or changed: a re-offer keeps every "
                "m-section in its place (stop one with port 0)",
            )
    if sum(1 for m in media if m.kind == "application") > 1:
        raise SignalingError("bad-sdp", "more than one m=application: the data channels share one")
    tracks = sum(
        1 for m in media if m.kind in ("audio", "video") and m.port != 0 and m.direction in ("sendonly", "sendrecv")
    )
    if tracks > max_tracks:
        raise SignalingError("too-many-tracks", f"the offer sends {tracks} tracks; at most {max_tracks} are accepted")
    bundles = [g for g in offer.group if g.semantic == "BUNDLE"]
    if len(bundles) > 1:
        raise SignalingError("bad-sdp", "more than one BUNDLE group")
    if not bundles or not media:
        return
    items = [str(item) for item in bundles[0].items]
    live = {str(m.rtp.muxId) for m in media if m.port != 0}
    if len(set(items)) != len(items):
        raise SignalingError("bad-sdp", "the BUNDLE group names an m-section twice")
    unknown = [item for item in items if item not in live]
    if unknown:
        raise SignalingError("bad-sdp", f"the BUNDLE group names {unknown[0][:40]!r}, not a live m-section")
    outside = [str(m.rtp.muxId) for m in media if m.kind in ("audio", "video", "application") and m.port != 0]
    outside = [mid for mid in outside if mid not in items]
    if outside:
        raise SignalingError("bad-sdp", f"m-section {outside[0]!r} is not in the BUNDLE group")
    first = mids[0]
    if first in live and items[0] != first:
        raise SignalingError("bad-sdp", f"the BUNDLE group must start with the first m-section ({first!r})")


# -- SDP fragments of trickle ICE over HTTP (RFC 8840, as WHIP and WHEP PATCH them) -------

MAX_FRAGMENT_CANDIDATES = 64


@dataclass(frozen=True, slots=True)
class FragmentCandidate:
    """One ``a=candidate`` of a fragment, with the m-section (mid) it was listed under."""

    mid: str | None
    candidate: str  # "candidate:..." as in SDP, without "a="


@dataclass(frozen=True, slots=True)
class SdpFragment:
    """An ``application/trickle-ice-sdpfrag`` body: ICE credentials, candidates, their end."""

    ice_ufrag: str | None
    ice_pwd: str | None
    candidates: tuple[FragmentCandidate, ...]
    end_of_candidates: bool


def parse_sdp_fragment(text: str) -> SdpFragment:
    """Parse a trickle-ICE SDP fragment or raise SignalingError("bad-sdp").

    Session-level ``a=ice-ufrag``/``a=ice-pwd`` (or the first m-section's) name the ICE
    session the candidates belong to; ``m=`` lines open a section whose ``a=mid`` the
    candidates below it belong to; ``a=end-of-candidates`` anywhere ends the gathering.
    """
    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[FragmentCandidate] = []
    end = False
    mid: str | None = None
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].islower():
            raise SignalingError("bad-sdp", f"not an SDP fragment line: {line[:40]!r}")
        if line.startswith("m="):
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :].strip() or None
        elif line.startswith("a=ice-ufrag:"):
            ufrag = ufrag or line[len("a=ice-ufrag:") :].strip()
        elif line.startswith("a=ice-pwd:"):
            pwd = pwd or line[len("a=ice-pwd:") :].strip()
        elif line.startswith("a=candidate:"):
            if len(candidates) >= MAX_FRAGMENT_CANDIDATES:
                raise SignalingError("bad-sdp", f"more than {MAX_FRAGMENT_CANDIDATES} candidates in one fragment")
            candidates.append(FragmentCandidate(mid, line[2:]))
        elif line == "a=end-of-candidates":
            end = True
    return SdpFragment(ufrag, pwd, tuple(candidates), end)


def ice_credentials(description: aiortc_sdp.SessionDescription) -> tuple[str | None, str | None]:
    """(ufrag, pwd) of an offer: its first audio/video m-section's (everything is bundled)."""
    for media in description.media:
        if media.ice is not None:
            return media.ice.usernameFragment, media.ice.password
    return None, None


def check_direction(description: aiortc_sdp.SessionDescription, sending: bool) -> None:
    """Refuse (``bad-sdp``) an offer with no live audio/video m-section that sends
    (``sending``: a WHIP offer) or receives (a WHEP offer)."""
    wanted = ("sendonly", "sendrecv") if sending else ("recvonly", "sendrecv")
    if not any(m.kind in ("audio", "video") and m.port != 0 and m.direction in wanted for m in description.media):
        what = "sends" if sending else "receives"
        raise SignalingError("bad-sdp", f"the offer has no audio or video m-section that {what} media")


def live_bundle_only(sdp: str) -> str:
    """Give every ``a=bundle-only`` m-section with port 0 the port 9 (RFC 8843 section 6):
    such a section is live, on the BUNDLE group's transport, not rejected. GStreamer's
    webrtcbin offers this way with ``max-bundle``; aiortc and the offer checks read port 0 as
    a stopped m-section."""
    sections = _sections(sdp)
    out: list[str] = list(sections[0])
    for lines in sections[1:]:
        if lines and "a=bundle-only" in lines:
            fields = lines[0].split(" ")
            if len(fields) > 1 and fields[1] == "0":
                fields[1] = "9"
                lines = [" ".join(fields), *lines[1:]]
        out.extend(lines)
    return "\r\n".join(out) + "\r\n"
