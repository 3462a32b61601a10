"""The Python client against the contract: a method for every operation of the served
OpenAPI document (each operationId a row of its operations table,
clients/python/src/layers_client/operations.py, with the same method, path and tag, and no
row naming an operation the document lacks), and the contract's Python example running as
written."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from api.app import create_app
from harness.stack import ROOT
from layers_client import OPERATIONS, Layers
from tests.checks import contract_example

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]


def gaps(doc: dict[str, Any]) -> list[str]:
    """What the client lacks for `doc`, or has that `doc` lacks; empty when they agree."""
    out = []
    served = set()
    for method, path, op in _operations(doc):
        op_id = op.get("operationId")
        served.add(op_id)
        row = OPERATIONS.get(op_id) if isinstance(op_id, str) else None
        if row is None:
            out.append(f"{method} {path}: operationId {op_id!r} has no client method")
            continue
        if (row.method, row.path) != (method, path):
            out.append(
                f"{op_id}: served as {method} {path}, the client sends {row.method} {row.path}"
            )
        if row.tag not in op.get("tags", []):
            out.append(f"{op_id}: tags {op.get('tags')}, the client has it at layers.{row.tag}")
    out += [f"{op_id}: in the client, not in the document" for op_id in OPERATIONS.keys() - served]
    return out


def _as_the_table_names_them(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with each operation's id and tag as the table has them (by method and path)."""
    out = copy.deepcopy(doc)
    by_route = {(r.method, r.path): (op_id, r.tag) for op_id, r in OPERATIONS.items()}
    for method, path, op in _operations(out):
        op["operationId"], tag = by_route[(method, path)]
        op["tags"] = [tag]
    return out


def test_every_served_operation_has_a_client_method() -> None:
    assert gaps(create_app().openapi()) == []


def test_every_served_route_is_a_row_of_the_table() -> None:
    routes = {(m, p) for m, p, _ in _operations(create_app().openapi())}
    assert routes == {(r.method, r.path) for r in OPERATIONS.values()}


def test_the_check_fails_on_what_it_should() -> None:
    named = _as_the_table_names_them(create_app().openapi())
    assert gaps(named) == []
    # An operation the client has no method for.
    extra = copy.deepcopy(named)
    extra["paths"]["/v1/things"] = {"get": {"operationId": "listThings", "tags": ["content"]}}
    assert gaps(extra) == ["GET /v1/things: operationId 'listThings' has no client method"]
    # Renamed, moved or retagged operations.
    renamed = copy.deepcopy(named)
    renamed["paths"]["/v1/scheduled-posts/{id}"]["delete"]["operationId"] = "deletePost"
    assert sorted(gaps(renamed)) == [
        "DELETE /v1/scheduled-posts/{id}: operationId 'deletePost' has no client method",
        "cancelScheduledPost: in the client, not in the document",
    ]
    retagged = copy.deepcopy(named)
    retagged["paths"]["/healthz"]["get"]["tags"] = ["ops"]
    assert gaps(retagged) == ["getLiveness: tags ['ops'], the client has it at layers.health"]


def test_the_contracts_python_example_runs_unchanged() -> None:
    code = contract_example("python")
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        post_id = request.url.path.rsplit("/", 1)[-1]
        body = {"id": post_id, "status": "canceled", "canceledAt": "2026-04-18T19:22:41Z"}
        return httpx.Response(200, json=body)

    scope: dict[str, Any] = {}
    with Layers(
        api_key="lp_live_k_s", base_url="https://api.test", transport=httpx.MockTransport(answer)
    ) as scope["layers"]:
        exec(code, scope)  # noqa: S102 - the contract's own example, verbatim
    assert scope["result"].status == "canceled"
    (request,) = sent
    assert request.method == "DELETE"
    assert request.url.path == "/v1/scheduled-posts/sp_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60"
    assert json.loads(request.content) == {
        "reason": "Brand asked us to hold - legal review pending."
    }
    # The client's README shows the same call.
    readme = (ROOT / "clients" / "python" / "README.md").read_text()
    assert "".join(code.split()) in "".join(readme.split())


def _code_lines(code: str) -> list[str]:
    return [line.strip() for line in code.splitlines() if line.strip()]


def _holds(text: str, code: str) -> bool:
    """Whether `text` has `code`'s lines in a row, as written (indentation aside)."""
    have, want = _code_lines(text), _code_lines(code)
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


@pytest.mark.parametrize(
    ("language", "where"),
    [
        ("ts", "clients/typescript/examples/cancel.ts"),
        ("ts", "clients/typescript/test/unit/shape.test.ts"),
        ("ts", "clients/typescript/README.md"),
        ("python", "clients/python/README.md"),
    ],
)
def test_each_copy_of_a_contract_example_is_the_contracts_own(language: str, where: str) -> None:
    """The TypeScript example runs from examples/cancel.ts (against the live stack) and
    shape.test.ts (against a fake): each must be the contract's example as docs/api.md quotes
    it, so a drift of either side fails here."""
    text = (ROOT / where).read_text()
    assert _holds(text, contract_example(language)), f"{where} lacks the {language} example"
