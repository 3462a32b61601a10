"""The checker catches real bugs: histories that break each invariant are reported, by name,
with the post that breaks it; a clean history passes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from chaos.checker import OUTCOME_EVENT, Bounds, Verdict, check, explain
from chaos.history import Call, FinalPost, History, LedgerEntry, WebhookReceipt

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def _post(
    pid: str, status: str, ext: str | None = None, code: str | None = None, late: float = 1.0
) -> FinalPost:
    return FinalPost(pid, status, T0, ext, code, T0 + timedelta(seconds=late))


def _clean() -> History:
    """Three posts: one published, one canceled with 200, one that lost its cancel."""
    h = History()
    h.posts = {
        "sp_pub": _post("sp_pub", "published", "ext_pub"),
        "sp_can": _post("sp_can", "canceled"),
        "sp_lost": _post("sp_lost", "published", "ext_lost"),
    }
    h.ledger = [
        LedgerEntry("sp_pub", "ext_pub", T0 + timedelta(milliseconds=40)),
        LedgerEntry("sp_lost", "ext_lost", T0 + timedelta(milliseconds=30)),
    ]
    ts = T0.timestamp()
    h.calls = [
        Call("cancel", "sp_can", ts - 1, ts - 0.99, 200, {"status": "canceled"}, "hold"),
        Call("cancel", "sp_lost", ts + 0.05, ts + 0.06, 409, None, "too late"),
        Call("cancel", "sp_can", ts + 1, ts + 1.01, 409, None, "again"),
    ]
    h.audit = {"sp_can": ["hold"]}
    return h


def _by_number(verdicts: list[Verdict]) -> dict[int, Verdict]:
    return {v.number: v for v in verdicts}


def test_a_clean_history_passes() -> None:
    verdicts = check(_clean())
    assert [v.number for v in verdicts] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(v.ok for v in verdicts), [v.line() for v in verdicts]
    assert _by_number(verdicts)[1].checked == 1
    assert _by_number(verdicts)[4].checked == 2


def _broken(number: int, history: History) -> Verdict:
    verdicts = _by_number(check(history))
    assert not verdicts[number].ok, verdicts[number].line()
    assert "FAIL" in verdicts[number].line()
    return verdicts[number]


def test_1_a_canceled_post_in_the_ledger() -> None:
    h = _clean()
    h.ledger.append(LedgerEntry("sp_can", "ext_can", T0))
    assert "sp_can" in _broken(1, h).violations


@pytest.mark.parametrize("kind", ["same key twice", "same external id twice"])
def test_2_a_double_upload(kind: str) -> None:
    h = _clean()
    if kind == "same key twice":
        h.ledger.append(LedgerEntry("sp_pub", "ext_pub_2", T0 + timedelta(seconds=1)))
        assert "sp_pub" in _broken(2, h).violations
    else:
        h.ledger.append(LedgerEntry("sp_other", "ext_pub", T0))
        assert "ext_pub" in _broken(2, h).violations


def test_3_published_without_a_platform_post() -> None:
    h = _clean()
    h.ledger = [e for e in h.ledger if e.idempotency_key != "sp_pub"]
    assert "sp_pub" in _broken(3, h).violations


def test_3_external_id_mismatch_and_failed_with_a_platform_post() -> None:
    h = _clean()
    h.posts["sp_pub"] = _post("sp_pub", "published", "ext_other")
    h.posts["sp_fail"] = _post("sp_fail", "failed", code="PLATFORM_ERROR")
    h.ledger.append(LedgerEntry("sp_fail", "ext_fail", T0))
    assert {"sp_pub", "sp_fail"} <= set(_broken(3, h).violations)


def test_3_outcome_unknown_is_left_to_an_operator_not_a_violation() -> None:
    h = _clean()
    h.posts["sp_unk"] = _post("sp_unk", "failed", code="UPLOAD_OUTCOME_UNKNOWN")
    h.ledger.append(LedgerEntry("sp_unk", "ext_unk", T0))
    v3 = _by_number(check(h))[3]
    assert v3.ok
    assert "1 UPLOAD_OUTCOME_UNKNOWN" in v3.note


def test_4_a_lost_cancel_whose_post_never_went_out() -> None:
    h = _clean()
    h.posts["sp_lost"] = _post("sp_lost", "canceled")
    h.ledger = [e for e in h.ledger if e.idempotency_key != "sp_lost"]
    assert "sp_lost" in _broken(4, h).violations


@pytest.mark.parametrize("status", ["publishing", "queued"])
def test_5_a_post_stuck(status: str) -> None:
    h = _clean()
    h.posts["sp_stuck"] = FinalPost("sp_stuck", status, T0, None, None, None)
    assert "sp_stuck" in _broken(5, h).violations


def test_5_a_post_that_finished_past_the_bound() -> None:
    h = _clean()
    h.posts["sp_pub"] = _post("sp_pub", "published", "ext_pub", late=600)
    assert "sp_pub" in _broken(5, h).violations


def test_5_a_post_waits_out_each_outage_it_meets_and_no_more() -> None:
    """Two outages back to back: a post due at the first one's start may finish after both,
    each allowing what the post waited of it, half its length for the backlog to drain and
    the recovery. An outage whose backlog had drained by the post's time, or that began
    after the post could have finished, allows nothing."""
    minute = timedelta(minutes=1)
    second = T0 + 3 * minute + timedelta(seconds=8)
    bounds = Bounds(
        settle=timedelta(seconds=120),
        outages=(
            (T0 - 10 * minute, T0 - 5 * minute),  # drained before the post's time
            (T0, T0 + 3 * minute),
            (second, second + 3 * minute),
            (T0 + 30 * minute, T0 + 33 * minute),  # long after it could have finished
        ),
        recovery=timedelta(seconds=40),
    )
    # 120 s, then 180 + 90 + 40 s for each of the two outages it met: 740 s.
    assert bounds.allowed(T0, False) == timedelta(seconds=740)
    h = _clean()
    h.posts["sp_pub"] = _post("sp_pub", "published", "ext_pub", late=739)
    v5 = _by_number(check(h, bounds))[5]
    assert v5.ok, v5.line()
    assert "each of the 4 platform outages a post met" in v5.note
    h.posts["sp_pub"] = _post("sp_pub", "published", "ext_pub", late=741)
    assert "sp_pub" in _by_number(check(h, bounds))[5].violations
    # Due in the middle of the first: what was left of it, then the second.
    assert bounds.allowed(T0 + 2 * minute, False) == timedelta(seconds=120 + 60 + 130 + 310)
    # Due just after the second, its backlog still draining: its drain and recovery only.
    assert bounds.allowed(second + 3 * minute + minute, False) == timedelta(seconds=120 + 130)
    # Due once that drain is over: the bound alone.
    assert bounds.allowed(second + 3 * minute + 2 * minute, False) == timedelta(seconds=120)


def test_5_a_post_the_platform_completes_later_has_its_processing_time_too() -> None:
    """With `completion` set, a TikTok-like post may end that much after `settle`, and no
    later; any other post still has `settle` alone."""
    bounds = Bounds(settle=timedelta(seconds=120), completion=timedelta(seconds=20))
    h = _clean()
    h.posts["sp_pub"] = replace(
        _post("sp_pub", "published", "ext_pub", late=135), completes_later=True
    )
    v5 = _by_number(check(h, bounds))[5]
    assert v5.ok, v5.line()
    assert "140s where the platform completes on its own" in v5.note
    h.posts["sp_pub"] = replace(h.posts["sp_pub"], finished_at=T0 + timedelta(seconds=141))
    assert "sp_pub" in _by_number(check(h, bounds))[5].violations
    h.posts["sp_pub"] = replace(
        h.posts["sp_pub"], completes_later=False, finished_at=T0 + timedelta(seconds=135)
    )
    assert "sp_pub" in _by_number(check(h, bounds))[5].violations


def test_6_an_upload_before_its_time() -> None:
    h = _clean()
    h.ledger[0] = LedgerEntry("sp_pub", "ext_pub", T0 - timedelta(seconds=2))
    assert "sp_pub" in _broken(6, h).violations


def test_6_a_rescheduled_post_that_went_out_at_its_old_time() -> None:
    h = _clean()
    ts = T0.timestamp()
    new_time = T0 + timedelta(seconds=40)
    h.calls.append(
        Call(
            "reschedule",
            "sp_pub",
            ts - 5,
            ts - 4.99,
            200,
            {"scheduledFor": new_time.strftime("%Y-%m-%dT%H:%M:%SZ")},
        )
    )
    # The row says the old time too (the reschedule was lost), and the post went out then.
    assert "sp_pub" in _broken(6, h).violations


def test_7_a_won_cancel_without_its_audit_entry() -> None:
    h = _clean()
    h.audit = {"sp_can": ["a different reason"]}
    assert "sp_can" in _broken(7, h).violations


def test_7_is_marked_not_checkable_without_the_audit_log() -> None:
    h = _clean()
    h.audit = None
    v7 = _by_number(check(h))[7]
    assert v7.ok and "not checkable" in v7.note


def test_explain_tells_a_posts_whole_story() -> None:
    story = explain(_clean(), "sp_lost")
    assert "cancel -> 409" in story and "ledger ext_lost" in story and "published" in story


def _hooked(h: History) -> History:
    """The clean history as both endpoints of a run kept it: each post's outcome, once."""
    receipts = [
        WebhookReceipt(f"evt_{pid}", OUTCOME_EVENT[p.status], pid, p.status, True)
        for pid, p in h.posts.items()
    ]
    h.webhooks = {"steady": list(receipts), "flaky": list(receipts)}
    return h


def test_8_a_clean_history_s_outcomes_each_delivered_once() -> None:
    v8 = _by_number(check(_hooked(_clean())))[8]
    assert v8.ok and v8.checked == 6 and "2 endpoints" in v8.note


def test_8_is_not_checked_without_endpoints() -> None:
    v8 = _by_number(check(_clean()))[8]
    assert v8.ok and "not checked" in v8.note


@pytest.mark.parametrize(
    "break_it",
    ["missing", "twice", "wrong_status", "unsigned", "pending", "stuck_announced"],
)
def test_8_catches_each_way_a_delivery_goes_wrong(break_it: str) -> None:
    h = _hooked(_clean())
    assert h.webhooks is not None
    flaky = h.webhooks["flaky"]
    if break_it == "missing":
        flaky[:] = [r for r in flaky if r.post_id != "sp_pub"]
    elif break_it == "twice":
        flaky.append(WebhookReceipt("evt_again", "post.published", "sp_pub", "published", True))
    elif break_it == "wrong_status":
        flaky[0] = WebhookReceipt(
            flaky[0].event_id, "post.failed", flaky[0].post_id, "failed", True
        )
    elif break_it == "unsigned":
        flaky[0] = WebhookReceipt(
            flaky[0].event_id, flaky[0].type, flaky[0].post_id, flaky[0].status, False
        )
    elif break_it == "pending":
        h.webhooks_pending = 3
    else:
        h.posts["sp_stuck"] = FinalPost("sp_stuck", "publishing", T0, None, None, None)
        flaky.append(WebhookReceipt("evt_s", "post.published", "sp_stuck", "published", True))
    assert not _by_number(check(h))[8].ok
