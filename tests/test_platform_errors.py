"""Platform error classification (HTTP statuses and Graph codes) and the publish retry loop,
with a scripted platform."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.kit.settings import Settings
from shared.publishing.platforms import (
    PlatformError,
    Preparation,
    Uploaded,
    UploadPayload,
    classify_exception,
    classify_graph,
    classify_response,
)
from shared.publishing.protocol import (
    Prepared,
    Publication,
    _Failure,
    _Lease,
    publish_with_retries,
)

FAST = Settings(
    platform_backoff_base_s=0,
    platform_backoff_cap_s=0,
    platform_max_tries=4,
    platform_timeout_s=0.05,
)
PAYLOAD = UploadPayload(
    "sa_1", "tiktok", "publish", "hi", [{"url": "https://x", "type": "video"}], None
)
OK = Uploaded("tt_1", "https://sandbox/tt_1")


def _resp(
    status: int, headers: dict[str, str] | None = None, code: str | None = None
) -> httpx.Response:
    body = {"error": {"code": code, "message": "m"}} if code else {}
    return httpx.Response(status, headers=headers, json=body)


@pytest.mark.parametrize(
    ("status", "transient", "ambiguous"),
    [
        (429, True, False),
        (503, True, False),
        (502, True, True),
        (500, True, True),
        (504, True, True),
        (408, True, False),
        (400, False, False),
        (401, False, False),
        (422, False, False),
    ],
)
def test_status_classification(status: int, transient: bool, ambiguous: bool) -> None:
    err = classify_response(_resp(status, code="some_code"))
    assert (err.transient, err.ambiguous, err.platform_code) == (transient, ambiguous, "some_code")


def test_retry_after_is_read() -> None:
    assert classify_response(_resp(429, {"Retry-After": "2.5"})).retry_after == 2.5
    assert classify_response(_resp(429, {"Retry-After": "soon"})).retry_after is None


def test_exceptions_before_sending_are_not_ambiguous() -> None:
    req = httpx.Request("POST", "http://x")
    assert not classify_exception(httpx.ConnectError("no", request=req)).ambiguous
    assert classify_exception(httpx.ReadTimeout("slow", request=req)).ambiguous
    assert classify_exception(httpx.RemoteProtocolError("cut", request=req)).ambiguous


def _transient(ambiguous: bool = False) -> PlatformError:
    return PlatformError("t", transient=True, ambiguous=ambiguous, platform_code="p")


@dataclass
class Scripted:
    """A platform that answers uploads and lookups from scripts, and counts calls."""

    uploads: list[Uploaded | PlatformError]
    lookups: list[Uploaded | PlatformError | None] = field(default_factory=list)
    upload_calls: int = 0
    lookup_calls: int = 0
    idempotent: bool = True

    @staticmethod
    def _next(script: Iterator[Uploaded | PlatformError | None]) -> Uploaded | None:
        item = next(script)
        if isinstance(item, PlatformError):
            raise item
        return item

    def prepare(
        self, key: str, payload: UploadPayload, wait: Callable[[float], bool]
    ) -> Preparation | None:
        return Preparation()

    def publish(self, key: str, payload: UploadPayload, handle: str | None) -> Uploaded:
        self.upload_calls += 1
        result = self._next(iter(self.uploads[self.upload_calls - 1 :]))
        assert result is not None
        return result

    def lookup(
        self, key: str, payload: UploadPayload, handle: str | None, since: datetime
    ) -> Uploaded | None:
        self.lookup_calls += 1
        return self._next(iter(self.lookups[self.lookup_calls - 1 :]))


class _HeldLease(_Lease):
    """A lease that never runs out: the loop under test, without the database."""

    def renew(self) -> bool:
        return True


def upload_with_retries(p: Scripted, key: str, payload: UploadPayload, settings: Settings) -> Any:
    prepared = Prepared(payload, p, "sa_1")
    pub = Publication(key, None, datetime.now(UTC))
    return publish_with_retries(prepared, pub, settings, _HeldLease(key, 1, "w", settings))


def test_transient_errors_retry_then_succeed() -> None:
    p = Scripted([_transient(), _transient(), OK])
    assert upload_with_retries(p, "sp_1", PAYLOAD, FAST) == OK
    assert (p.upload_calls, p.lookup_calls) == (3, 0)


def test_permanent_error_fails_at_once() -> None:
    p = Scripted([PlatformError("no", transient=False, platform_code="caption_too_long")])
    result = upload_with_retries(p, "sp_1", PAYLOAD, FAST)
    assert result == _Failure("PLATFORM_ERROR", "no", "caption_too_long")
    assert p.upload_calls == 1


def test_lost_response_is_resolved_by_lookup_not_by_a_second_upload() -> None:
    p = Scripted([_transient(ambiguous=True)], lookups=[OK])
    assert upload_with_retries(p, "sp_1", PAYLOAD, FAST) == OK
    assert (p.upload_calls, p.lookup_calls) == (1, 1)


def test_confirmed_absent_uploads_again_under_the_same_key() -> None:
    p = Scripted([_transient(ambiguous=True), OK], lookups=[None])
    assert upload_with_retries(p, "sp_1", PAYLOAD, FAST) == OK
    assert (p.upload_calls, p.lookup_calls) == (2, 1)


def test_platform_that_cannot_say_gives_outcome_unknown() -> None:
    p = Scripted([_transient(ambiguous=True)], lookups=[_transient()] * FAST.platform_max_tries)
    result = upload_with_retries(p, "sp_1", PAYLOAD, FAST)
    assert isinstance(result, _Failure)
    assert result.code == "UPLOAD_OUTCOME_UNKNOWN"
    assert p.upload_calls == 1


def test_exhausted_transients_check_once_more_then_fail() -> None:
    p = Scripted([_transient()] * FAST.platform_max_tries, lookups=[None])
    result = upload_with_retries(p, "sp_1", PAYLOAD, FAST)
    assert isinstance(result, _Failure)
    assert result.code == "PLATFORM_UNAVAILABLE"
    assert (p.upload_calls, p.lookup_calls) == (FAST.platform_max_tries, 1)


def test_exhausted_transients_but_the_post_landed() -> None:
    p = Scripted([_transient()] * FAST.platform_max_tries, lookups=[OK])
    assert upload_with_retries(p, "sp_1", PAYLOAD, FAST) == OK


def test_a_refusal_after_an_ambiguous_try_is_checked_first() -> None:
    """ "Already published" after a lost answer: the lookup finds the post, not a failure."""
    refused = PlatformError("already published", transient=False, platform_code="100")
    p = Scripted([_transient(ambiguous=True), refused], lookups=[None, OK])
    assert upload_with_retries(p, "sp_1", PAYLOAD, FAST) == OK
    assert (p.upload_calls, p.lookup_calls) == (2, 2)


def test_without_an_idempotency_key_the_call_settles_before_the_lookup() -> None:
    """A real platform's ambiguous publish is asked about only after its timeout passed."""
    settings = Settings(platform_backoff_base_s=0, platform_backoff_cap_s=0, platform_timeout_s=0.3)
    p = Scripted([_transient(ambiguous=True)], lookups=[OK], idempotent=False)
    started = time.monotonic()
    assert upload_with_retries(p, "sp_1", PAYLOAD, settings) == OK
    assert time.monotonic() - started >= 0.3


def _graph(status: int, **error: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": "m", "type": "T", **error}})


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # code / subcode -> (transient, ambiguous, new_handle, token_invalid, failure_code)
        (_graph(400, code=4), (True, False, False, False, None)),
        (_graph(400, code=17), (True, False, False, False, None)),
        (_graph(400, code=32), (True, False, False, False, None)),
        (_graph(400, code=613), (True, False, False, False, None)),
        (_graph(400, code=190), (False, False, False, True, "ACCOUNT_REAUTH_REQUIRED")),
        (
            _graph(400, code=190, error_subcode=463),
            (False, False, False, True, "ACCOUNT_REAUTH_REQUIRED"),
        ),
        (_graph(400, code=9007, error_subcode=2207027), (True, False, False, False, None)),
        (_graph(400, code=-2, error_subcode=2207020), (True, False, True, False, None)),
        (_graph(400, code=-1, error_subcode=2207032), (True, False, True, False, None)),
        (_graph(400, code=-1, error_subcode=2207053), (True, False, True, False, None)),
        (
            _graph(400, code=9, error_subcode=2207042),
            (False, False, False, False, "PLATFORM_QUOTA_EXHAUSTED"),
        ),
        (
            _graph(500, code=2, error_subcode=2207001, is_transient=True),
            (True, True, False, False, None),
        ),
        (_graph(400, code=100), (False, False, False, False, None)),
        (httpx.Response(502, text="<html>502</html>"), (True, True, False, False, None)),
        (httpx.Response(503, text="down"), (True, False, False, False, None)),
    ],
)
def test_graph_classification(response: httpx.Response, expected: tuple[Any, ...]) -> None:
    err = classify_graph(response)
    got = (err.transient, err.ambiguous, err.new_handle, err.token_invalid, err.failure_code)
    assert got == expected
