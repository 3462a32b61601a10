"""Assertions on the API's answers that many test modules make."""

from __future__ import annotations

from typing import Any

import httpx


def envelope_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error object, after checking the exact envelope and its request id."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert set(err) == {"code", "message", "requestId", "details"}, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["details"], dict)
    assert err["requestId"] and err["requestId"] == r.headers["x-request-id"]
    return err


def issue_paths(r: httpx.Response) -> list[str]:
    """The `details.issues[].path` of a 422, after checking each issue's shape."""
    issues = envelope_error(r, 422, "VALIDATION")["details"]["issues"]
    assert issues
    for issue in issues:
        assert set(issue) == {"path", "message"}, issue
        assert isinstance(issue["path"], str) and issue["path"]
        assert isinstance(issue["message"], str) and issue["message"]
    return [i["path"] for i in issues]
