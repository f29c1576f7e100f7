"""The room's data relay, with fake receivers and a fake clock: who gets what, what is
refused, how refusals are reported (summed up under a flood) and counted."""

from sfu.data_frame import DataFrame, decode, encode
from sfu.data_relay import DataRelay


class Receiver:
    def __init__(self, refuse: str | None = None) -> None:
        self.frames: list[tuple[bool, DataFrame]] = []
        self.refuse = refuse

    def send(self, reliable, frame):
        if self.refuse is not None:
            return self.refuse
        self.frames.append((reliable, decode(frame)))
        return None


class Scheduler:
    def __init__(self):
        self.calls = []

    def __call__(self, delay_s, callback):
        self.calls.append((delay_s, callback))

    def run(self):
        calls, self.calls = self.calls, []
        for _, callback in calls:
            callback()


def relay(**kw):
    options = {"max_message_bytes": 1000, "messages_per_s": 10.0, "burst": 5}
    options.update(kw)
    scheduler = Scheduler()
    return DataRelay(schedule=scheduler, **options), scheduler


def test_a_message_goes_to_everyone_else_with_the_sender_and_topic_on_its_channel():
    r, _ = relay()
    b, c = Receiver(), Receiver()
    errors = []
    sent = r.relay("a", False, encode(DataFrame.of_text("hi", topic="t")), {"b": b, "c": c}, errors.append, 0.0)
    assert sent == 2 and errors == []
    assert b.frames == c.frames == [(False, DataFrame.of_text("hi", topic="t", sender="a"))]
    assert (r.stats.received, r.stats.relayed, r.stats.deliveries) == (1, 1, 2)


def test_destinations_get_it_and_the_others_do_not():
    r, _ = relay()
    b, c = Receiver(), Receiver()
    r.relay("a", True, encode(DataFrame(b"x", to=("c",))), {"b": b, "c": c}, [].append, 0.0)
    assert b.frames == [] and len(c.frames) == 1


def test_unknown_destinations_are_reported_and_the_known_still_get_it():
    r, _ = relay()
    c = Receiver()
    errors = []
    r.relay("a", True, encode(DataFrame(b"x", to=("ghost", "c", "a"), ref="7")), {"c": c}, errors.append, 0.0)
    assert len(c.frames) == 1
    (error,) = errors
    wire = error.to_wire()
    assert wire["code"] == "unknown-participant" and "ghost" in wire["message"] and wire["ref"] == "7"
    assert wire["message"] == "no participant ghost in the room can receive it", "the sender is no unknown one"


def test_too_large_text_and_garbage_are_refused_with_their_code():
    r, _ = relay()
    b = Receiver()
    errors = []
    big = encode(DataFrame(b"x" * 1000, ref="big"))
    for i, message in enumerate([big, "text", b"\x09\x00\x00\x00"]):
        r.relay("a", True, message, {"b": b}, errors.append, i * 10.0)
    assert [e.error.code for e in errors] == ["too-large", "bad-message", "bad-message"]
    assert errors[0].ref == "big" and f"{len(big)} bytes" in errors[0].error.message
    assert b.frames == []
    assert dict(r.stats.dropped) == {"too-large": 1, "bad-message": 2}


def test_over_the_rate_the_refusals_are_reported_once_per_interval_with_their_count():
    r, scheduler = relay(messages_per_s=10.0, burst=5)
    b = Receiver()
    errors = []
    frame = encode(DataFrame(b"x"))
    sent = sum(r.relay("a", False, frame, {"b": b}, errors.append, 0.0) for _ in range(100))
    assert sent == 5 and len(b.frames) == 5
    assert [(e.error.code, e.dropped, e.reliable) for e in errors] == [("rate-limited", 1, False)]
    assert len(scheduler.calls) == 1 and 0 < scheduler.calls[0][0] <= 1.0
    scheduler.run()
    assert [e.dropped for e in errors] == [1, 94]
    assert sum(e.dropped for e in errors) == r.stats.dropped["rate-limited"] == 95
    # The rate refills: 0.3 s later three more go; a second later a full burst again.
    assert sum(r.relay("a", False, frame, {"b": b}, errors.append, 0.3) for _ in range(10)) == 3
    assert sum(r.relay("a", False, frame, {"b": b}, errors.append, 2.0) for _ in range(10)) == 5


def test_one_senders_flood_does_not_spend_anothers_rate():
    r, _ = relay(messages_per_s=1.0, burst=1)
    b = Receiver()
    frame = encode(DataFrame(b"x"))
    for _ in range(50):
        r.relay("a", True, frame, {"b": b}, [].append, 0.0)
    assert r.relay("c", True, frame, {"b": b}, [].append, 0.0) == 1


def test_receivers_that_cannot_take_it_are_counted_not_reported():
    r, _ = relay()
    errors = []
    sent = r.relay(
        "a", True, encode(DataFrame(b"x")), {"b": Receiver("backlog"), "c": None, "d": Receiver()}, errors.append, 0
    )
    assert sent == 1 and errors == []
    assert dict(r.stats.dropped) == {"backlog": 1, "not-open": 1}


def test_a_sender_that_left_gets_no_more_reports():
    r, scheduler = relay(burst=1)
    errors = []
    frame = encode(DataFrame(b"x"))
    for _ in range(5):
        r.relay("a", True, frame, {}, errors.append, 0.0)
    r.forget("a")
    scheduler.run()
    assert [e.dropped for e in errors] == [1]
