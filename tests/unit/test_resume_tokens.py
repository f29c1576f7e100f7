"""Resume tokens (sfu/resume.py): single use, bound to a room and a participant, honoured only
for the grace after the participant's socket was lost."""

import pytest

from sfu.errors import NotAuthorised
from sfu.resume import ResumeTokens


def refused(tokens: ResumeTokens, *args, **kwargs) -> str:
    with pytest.raises(NotAuthorised) as info:
        tokens.take(*args, **kwargs)
    assert info.value.code == "resume-failed"
    return info.value.message


def test_a_token_resumes_its_participant_once():
    tokens = ResumeTokens(grace_s=15.0)
    token = tokens.issue("demo", "p1")
    tokens.lost("p1", now_s=100.0)
    assert tokens.take(token, "demo", now_s=101.0) == "p1"
    assert "already used" in refused(tokens, token, "demo", now_s=101.5)
    assert len(tokens) == 0


def test_a_token_expires_with_the_grace_after_the_loss():
    tokens = ResumeTokens(grace_s=15.0)
    token = tokens.issue("demo", "p1")
    tokens.lost("p1", now_s=100.0)
    assert "expired" in refused(tokens, token, "demo", now_s=115.0)
    # ... and just inside it, a fresh one is still good
    token = tokens.issue("demo", "p1")
    tokens.lost("p1", now_s=200.0)
    assert tokens.take(token, "demo", now_s=214.9) == "p1"


def test_the_grace_runs_from_the_loss_not_from_the_issue():
    tokens = ResumeTokens(grace_s=15.0)
    token = tokens.issue("demo", "p1")  # connected for an hour: no deadline yet
    tokens.lost("p1", now_s=3600.0)
    assert tokens.take(token, "demo", now_s=3610.0) == "p1"


def test_expire_forgets_only_tokens_past_their_grace():
    tokens = ResumeTokens(grace_s=10.0)
    tokens.issue("demo", "p1")
    kept = tokens.issue("demo", "p2")
    tokens.issue("demo", "p3")
    tokens.lost("p1", now_s=0.0)
    tokens.lost("p3", now_s=5.0)
    assert tokens.expire(now_s=12.0) == 1  # p1's; p2 is connected, p3 has 3 s left
    assert len(tokens) == 2
    assert tokens.take(kept, "demo", now_s=12.0) == "p2"


def test_a_token_is_bound_to_its_participant_and_room():
    tokens = ResumeTokens(grace_s=15.0)
    a = tokens.issue("demo", "p1")
    b = tokens.issue("demo", "p2")
    c = tokens.issue("demo", "p3")
    assert "another participant" in refused(tokens, a, "demo", now_s=1.0, participant_id="p2")
    assert "not for room" in refused(tokens, b, "other", now_s=1.0)
    assert tokens.take(c, "demo", now_s=1.0, participant_id="p3") == "p3"
    # A refused try spends the token (a guess cannot be retried against it).
    refused(tokens, a, "demo", now_s=1.0, participant_id="p1")
    refused(tokens, b, "demo", now_s=1.0)


def test_replaying_a_token_after_the_resume_fails_and_the_new_one_works():
    tokens = ResumeTokens(grace_s=15.0)
    stolen = tokens.issue("demo", "p1")
    tokens.lost("p1", now_s=10.0)
    assert tokens.take(stolen, "demo", now_s=11.0) == "p1"
    fresh = tokens.issue("demo", "p1")  # what `resumed` carries
    refused(tokens, stolen, "demo", now_s=11.5)
    tokens.lost("p1", now_s=20.0)
    refused(tokens, stolen, "demo", now_s=21.0)
    assert tokens.take(fresh, "demo", now_s=21.0) == "p1"


def test_a_new_token_revokes_the_previous_one_and_revoke_ends_it():
    tokens = ResumeTokens(grace_s=15.0)
    first = tokens.issue("demo", "p1")
    second = tokens.issue("demo", "p1")
    assert first != second
    refused(tokens, first, "demo", now_s=0.0)
    tokens.revoke("p1")  # the participant left
    refused(tokens, second, "demo", now_s=0.0)
    assert len(tokens) == 0


def test_unknown_tokens_are_refused():
    tokens = ResumeTokens(grace_s=15.0)
    tokens.issue("demo", "p1")
    assert "unknown" in refused(tokens, "x" * 32, "demo", now_s=0.0)
    assert "unknown" in refused(tokens, "", "demo", now_s=0.0)
