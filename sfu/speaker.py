"""Audio levels (RFC 6464) and dominant speaker detection, without decoding.

Each audio packet of a publisher carries its level in the ``ssrc-audio-level`` header
extension: one byte, ``V`` (voice activity) in the top bit and the level in -dBov (0 loud,
127 silence) below it. The tap reads that byte (:func:`read_audio_level`, a walk over the extension block) and
feeds an :class:`AudioLevelMeter` (a few integer counters). Every ``INTERVAL_MS`` the room
takes one score per participant from its meters and the :class:`SpeakerDetector` decides.

Scores, as in LiveKit's and mediasoup's observers: a packet is *active* when it is louder than
``ACTIVE_LEVEL_DBOV``; an interval's score is the share of the interval's packets that were
active, weighted by how far above the threshold they were (``1 + dB above / 20``). Packets
that did not arrive (Opus DTX sends almost nothing in silence) count as silent.

The decision has hysteresis, in the spirit of Jitsi's DominantSpeakerIdentification (which
compares speech activity over three time scales); ours is a simpler two-scale version:
- a participant is *speaking* while its short score (EMA of the last intervals) is at least
  ``SPEAKING_SCORE`` (released below half of that), and is *eligible* once it has been speaking
  for ``MIN_SPEECH_MS``: short interjections and coughs never take the floor;
- a challenger replaces the current speaker only when its long score (mean of the last
  ``LONG_INTERVALS``) is ``SWITCH_RATIO`` times and ``SWITCH_MARGIN`` above the current one's,
  continuously for ``SWITCH_HOLD_MS``: two people talking over each other do not flap;
- in silence nothing changes: the last speaker stays until someone else talks (or leaves).

Pure: no I/O, time is an argument.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping

from .media.rtp import find_extension

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
INTERVAL_MS = 300
PACKET_MS = 20  # Opus frames: an interval should hold INTERVAL_MS / PACKET_MS packets
ACTIVE_LEVEL_DBOV = -50
SPEAKING_SCORE = 0.5
MIN_SPEECH_MS = 600
LONG_INTERVALS = 6  # 1.8 s
SWITCH_RATIO = 1.5
SWITCH_MARGIN = 0.3
SWITCH_HOLD_MS = 600
SHORT_ALPHA = 0.5
NO_LEVEL = -1


def read_audio_level(data: bytes, ext_start: int, ext_id: int) -> int:
    """The audio-level byte (V bit and level) of an RTP packet, or NO_LEVEL.

    ``ext_start`` is the offset of the extension header (-1: none).
    """
    pos, size = find_extension(data, ext_start, ext_id)
    return data[pos] if size > 0 else NO_LEVEL


class AudioLevelMeter:
    """Per audio producer: what its packets said since the last :meth:`take`."""

    __slots__ = ("active", "level_dbov", "packets", "score", "uses_vad", "weight_db")

    def __init__(self) -> None:
        self.packets = 0
        self.active = 0
        self.weight_db = 0  # sum of dB above the threshold over active packets
        self.uses_vad = False  # the sender sets V on some packets: it runs voice detection
        self.level_dbov = -127  # the last interval's loudest level, for describe()
        self.score = 0.0  # the last interval's score

    def observe(self, level_byte: int) -> None:
        """One packet's audio-level byte (the hot path: integer arithmetic only)."""
        self.packets += 1
        if level_byte & 0x80:
            self.uses_vad = True
        elif self.uses_vad:
            return  # the sender's VAD says this is not voice
        above = -(level_byte & 0x7F) - ACTIVE_LEVEL_DBOV
        if above >= 0:
            self.active += 1
            self.weight_db += above

    def take(self, interval_ms: int = INTERVAL_MS, muted: bool = False) -> float:
        """This interval's score (0: silent or muted), and start the next interval."""
        expected = max(self.packets, interval_ms // PACKET_MS, 1)
        score = 0.0 if muted else (self.active + self.weight_db / 20) / expected
        if self.active and not muted:
            self.level_dbov = ACTIVE_LEVEL_DBOV + self.weight_db // self.active
        else:
            self.level_dbov = -127
        self.packets = self.active = self.weight_db = 0
        self.score = score
        return score


class _Candidate:
    __slots__ = ("long", "short", "speaking_since_ms", "winning_since_ms")

    def __init__(self) -> None:
        self.short = 0.0
        self.long: deque[float] = deque(maxlen=LONG_INTERVALS)
        self.speaking_since_ms: float | None = None
        self.winning_since_ms: float | None = None

    @property
    def long_score(self) -> float:
        return sum(self.long) / LONG_INTERVALS


class SpeakerDetector:
    """The dominant speaker of one room, from one score per participant and interval."""

    def __init__(self) -> None:
        self.current: Hashable | None = None
        self._candidates: dict[Hashable, _Candidate] = {}

    def update(self, now_ms: float, scores: Mapping[Hashable, float]) -> Hashable | None:
        """Feed one interval's scores (participants absent from ``scores`` are gone);
        returns the dominant speaker (None: nobody yet)."""
        for key in list(self._candidates):
            if key not in scores:
                del self._candidates[key]
        if self.current is not None and self.current not in scores:
            self.current = None  # left the room
        eligible: list[tuple[float, Hashable]] = []
        for key, score in scores.items():
            c = self._candidates.get(key)
            if c is None:
                c = self._candidates[key] = _Candidate()
            c.short = SHORT_ALPHA * score + (1 - SHORT_ALPHA) * c.short
            c.long.append(score)
            if c.short >= SPEAKING_SCORE:
                if c.speaking_since_ms is None:
                    c.speaking_since_ms = now_ms
            elif c.short < SPEAKING_SCORE / 2:
                c.speaking_since_ms = None
            if c.speaking_since_ms is not None and now_ms - c.speaking_since_ms >= MIN_SPEECH_MS:
                eligible.append((c.long_score, key))
        if self.current is None:
            if eligible:
                self.current = max(eligible, key=lambda e: e[0])[1]
                self._reset_challenges()
            return self.current
        current_long = self._candidates[self.current].long_score
        challengers = [e for e in eligible if e[1] != self.current]
        best = max(challengers, key=lambda e: e[0]) if challengers else None
        for key, c in self._candidates.items():
            if best is None or key != best[1]:
                c.winning_since_ms = None
        if best is None:
            return self.current
        score, key = best
        c = self._candidates[key]
        if score >= SWITCH_RATIO * current_long and score - current_long >= SWITCH_MARGIN:
            if c.winning_since_ms is None:
                c.winning_since_ms = now_ms
            if now_ms - c.winning_since_ms >= SWITCH_HOLD_MS:
                self.current = key
                self._reset_challenges()
        else:
            c.winning_since_ms = None
        return self.current

    def _reset_challenges(self) -> None:
        for c in self._candidates.values():
            c.winning_since_ms = None

    def describe(self) -> dict[str, float]:
        """Each participant's long score, for the admin view."""
        return {str(k): round(c.long_score, 2) for k, c in self._candidates.items()}
