"""The HTTP side of WHIP (RFC 9725) and WHEP: header values and request checks, pure.

- ``Link: <url>; rel="ice-server"`` per STUN/TURN URL, with the TURN credentials as
  ``username``/``credential``/``credential-type`` parameters (RFC 9725 section 4.6);
- the entity tag of a session and the ``If-Match`` rules of a PATCH: none is 428 Precondition
  Required, one that names another version 412 Precondition Failed, ``*`` matches any;
- the content types: ``application/sdp`` to POST, ``application/trickle-ice-sdpfrag`` to
  PATCH (415 otherwise);
- the CORS headers that let a player on another origin read ``Location``, ``ETag`` and
  ``Link``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import BadRequest, Conflict

SDP_TYPE = "application/sdp"
SDP_FRAGMENT_TYPE = "application/trickle-ice-sdpfrag"
ENDPOINT_METHODS = "POST, OPTIONS"
RESOURCE_METHODS = "PATCH, DELETE, OPTIONS"
CORS_MAX_AGE_S = 86400


def _quoted(value: str) -> str:
    """An HTTP quoted-string (RFC 9110 section 5.6.4)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ice_server_links(servers: Iterable[Mapping[str, Any]]) -> list[str]:
    """One ``Link`` header value per URL of these RTCIceServer dicts ({urls, username,
    credential}), in order; credentials go with the URLs of the server that has them."""
    links: list[str] = []
    for server in servers:
        urls = server.get("urls")
        for url in [urls] if isinstance(urls, str) else list(urls or ()):
            if not isinstance(url, str) or not url or any(c in url for c in "<>\r\n"):
                continue
            value = f'<{url}>; rel="ice-server"'
            username, credential = server.get("username"), server.get("credential")
            if isinstance(username, str) and isinstance(credential, str) and not url.startswith("stun"):
                value += f'; username={_quoted(username)}; credential={_quoted(credential)}; credential-type="password"'
            links.append(value)
    return links


def check_content_type(content_type: str, expected: str) -> None:
    """415 (``unsupported-media-type``) unless the request body is of ``expected``."""
    if content_type.split(";", 1)[0].strip().lower() != expected:
        shown = content_type[:60] or "none"
        raise BadRequest("unsupported-media-type", f"the body must be {expected}, not {shown}")


def entity_tags(header: str) -> list[str]:
    """The entity tags of an If-Match header (``*`` alone is ["*"]); weak tags keep ``W/``."""
    tags: list[str] = []
    rest = header.strip()
    if rest == "*":
        return ["*"]
    while rest:
        weak = rest.startswith("W/")
        body = rest[2:] if weak else rest
        if not body.startswith('"'):
            raise BadRequest("bad-message", f"If-Match is not a list of entity tags: {header[:60]!r}")
        end = body.find('"', 1)
        if end < 0:
            raise BadRequest("bad-message", f"If-Match has an unterminated entity tag: {header[:60]!r}")
        tags.append(("W/" if weak else "") + body[: end + 1])
        rest = body[end + 1 :].lstrip()
        if rest.startswith(","):
            rest = rest[1:].lstrip()
        elif rest:
            raise BadRequest("bad-message", f"If-Match is not a list of entity tags: {header[:60]!r}")
    return tags


def check_if_match(header: str | None, etag: str) -> bool:
    """Check a PATCH's If-Match against the session's entity tag; True for ``*`` (what a
    client sends for an ICE restart). 428 without the header, 412 if no tag matches (strong
    comparison, RFC 9110 section 13.1.1)."""
    if header is None or not header.strip():
        raise BadRequest("precondition-required", "a PATCH needs If-Match with the session's ETag")
    tags = entity_tags(header)
    if tags == ["*"]:
        return True
    if etag not in tags:
        raise Conflict("precondition-failed", "If-Match does not name this session's current ETag")
    return False


def cors_headers(methods: str) -> dict[str, str]:
    """What a browser on another origin needs to call the endpoint or resource and read the
    answer's headers (bearer tokens, not cookies: any origin may)."""
    return {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
        "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Accept-Post",
    }


def options_headers(resource: bool) -> dict[str, str]:
    """The answer to OPTIONS (CORS preflight): on an endpoint ``Accept-Post``, on a session
    resource ``Accept-Patch``."""
    methods = RESOURCE_METHODS if resource else ENDPOINT_METHODS
    headers = cors_headers(methods)
    if resource:
        headers["Accept-Patch"] = SDP_FRAGMENT_TYPE
    else:
        headers["Accept-Post"] = SDP_TYPE
    headers["Allow"] = methods
    headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
    return headers
