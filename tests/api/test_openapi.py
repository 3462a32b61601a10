"""/openapi.json documents every endpoint, its errors and the envelope, as a product surface
that generators can trust: the stable operationIds and tags (SDK namespaces), optional bodies
and headers as plain schemas, each answer's error codes with `details` typed per code, the
request id and rate-limit headers, date-time timestamps, one component per enum, each
operation's scope, and the servers entry. Real answers validate against it."""

from __future__ import annotations

import ast
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

import shared.accounts.credentials
from api.openapi import all_schemas
from api.schemas import ERRORS
from harness.stack import ROOT
from shared.kit.errors import PublisherError
from shared.kit.settings import get_settings
from tests.api.helpers import ENDPOINTS
from tests.checks import envelope_error
from tests.factories import TenantFixture, at, pending_upload, schedule, upload

# The operations of the contract, their operationIds and tags (the SDKs' namespaces): fixed.
OPERATIONS = {
    ("POST", "/v1/projects/{projectId}/content/upload"): ("uploadContent", "content"),
    ("GET", "/v1/content/{containerId}"): ("getContent", "content"),
    ("GET", "/v1/projects/{projectId}/approval-policy"): ("getApprovalPolicy", "content"),
    ("PUT", "/v1/projects/{projectId}/approval-policy"): ("setApprovalPolicy", "content"),
    ("POST", "/v1/content/{containerId}/approve"): ("approveContent", "content"),
    ("POST", "/v1/content/{containerId}/reject"): ("rejectContent", "content"),
    ("GET", "/v1/projects/{projectId}/social-accounts"): ("listSocialAccounts", "social"),
    ("POST", "/v1/content/{containerId}/schedule"): ("scheduleContent", "publishing"),
    ("POST", "/v1/content/{containerId}/publish"): ("publishContentNow", "publishing"),
    ("GET", "/v1/scheduled-posts/{id}"): ("getScheduledPost", "publishing"),
    ("GET", "/v1/projects/{projectId}/scheduled-posts"): ("listScheduledPosts", "publishing"),
    ("POST", "/v1/scheduled-posts/{id}/reschedule"): ("rescheduleScheduledPost", "publishing"),
    ("DELETE", "/v1/scheduled-posts/{id}"): ("cancelScheduledPost", "publishing"),
    ("GET", "/v1/content/{containerId}/schedule-intents"): ("listScheduleIntents", "publishing"),
    ("GET", "/v1/schedule-intents/{intentId}"): ("getScheduleIntent", "publishing"),
    ("DELETE", "/v1/schedule-intents/{intentId}"): ("cancelScheduleIntent", "publishing"),
    ("POST", "/v1/webhook-endpoints"): ("createWebhookEndpoint", "webhooks"),
    ("GET", "/v1/webhook-endpoints"): ("listWebhookEndpoints", "webhooks"),
    ("GET", "/v1/webhook-endpoints/{endpointId}"): ("getWebhookEndpoint", "webhooks"),
    ("PATCH", "/v1/webhook-endpoints/{endpointId}"): ("updateWebhookEndpoint", "webhooks"),
    ("POST", "/v1/webhook-endpoints/{endpointId}/rotate-secret"): (
        "rotateWebhookEndpointSecret",
        "webhooks",
    ),
    ("POST", "/v1/webhook-endpoints/{endpointId}/ping"): ("pingWebhookEndpoint", "webhooks"),
    ("GET", "/v1/webhook-endpoints/{endpointId}/deliveries"): (
        "listWebhookDeliveries",
        "webhooks",
    ),
    ("POST", "/v1/webhook-deliveries/{deliveryId}/replay"): ("replayWebhookDelivery", "webhooks"),
    ("GET", "/healthz"): ("getLiveness", "health"),
    ("GET", "/readyz"): ("getReadiness", "health"),
}
OPTIONAL_BODIES = {
    "cancelScheduledPost": "CancelIn",
    "cancelScheduleIntent": "CancelIn",
    "approveContent": "DecisionIn",
    "rejectContent": "DecisionIn",
}
# The enums of the wire, one component each, and a property that uses each.
ENUMS = {
    "PostStatus": ("ScheduledPostOut", "status"),
    "Platform": ("ScheduledPostOut", "platform"),
    "Mode": ("TargetIn", "mode"),
    "MediaType": ("MediaOut", "type"),
    "AccountStatus": ("SocialAccountOut", "status"),
    "ContainerStatus": ("ContainerOut", "status"),
    "IntentStatus": ("ScheduleIntentOut", "status"),
    "PostErrorCode": ("LastError", "code"),
    "ErrorCode": ("Error", "code"),
    "WebhookEventType": ("WebhookEndpointIn", "eventTypes"),
}
# Each code's `details`: the properties it names.
DETAILS = {
    "VALIDATION": {"issues"},
    "CONFLICT": {"status", "scheduledPostIds"},
    "CONTENT_REJECTED": {"status"},
    "APPROVAL_REQUIRED": {"status"},
    "FORBIDDEN_SCOPE": {"requiredScope"},
    "RATE_LIMITED": {"limit", "class", "window"},
    "PAYLOAD_TOO_LARGE": {"maxBytes"},
    "REQUEST_TIMEOUT": {"timeoutSeconds"},
    "IDEMPOTENCY_CONFLICT": {"idempotencyKey"},
    "PLATFORM_ERROR": {"platformCode", "socialAccountId", "path"},
}
TIME_NAMES = re.compile(r"(At|^scheduledFor|^since|^until)$")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    from api.app import create_app

    with TestClient(create_app()) as c:
        r = c.get("/openapi.json")
    assert r.status_code == 200
    document: dict[str, Any] = r.json()
    return document


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield method.upper(), path, operation


def _component(spec: dict[str, Any], ref: str) -> dict[str, Any]:
    schema: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return schema


def _envelopes(schema: dict[str, Any]) -> list[str]:
    """The envelope components an error answer's schema names."""
    members = schema.get("anyOf", [schema])
    return [member["$ref"].rsplit("/", 1)[-1] for member in members]


def _code_of(spec: dict[str, Any], envelope: str) -> str:
    error = _component(spec, spec["components"]["schemas"][envelope]["properties"]["error"]["$ref"])
    code: str = error["properties"]["code"]["const"]
    return code


def _codes(spec: dict[str, Any], response: dict[str, Any]) -> set[str]:
    schema = response["content"]["application/json"]["schema"]
    return {_code_of(spec, envelope) for envelope in _envelopes(schema)}


def test_openapi_documents_every_endpoint_and_its_errors(spec: dict[str, Any]) -> None:
    params = {
        "project": "projectId",
        "container": "containerId",
        "pending": "containerId",
        "post": "id",
        "intent": "intentId",
    }
    # Replacing a policy has no state that could forbid it.
    never_conflicts = {"put_policy"}
    for ep in ENDPOINTS:
        path = ep.template.replace("{id}", "{" + params[ep.id_kind] + "}")
        assert path in spec["paths"], path
        op = spec["paths"][path].get(ep.method.lower())
        assert op is not None, (ep.method, path)
        assert op.get("description") or op.get("summary")
        responses = op["responses"]
        assert str(ep.ok) in responses
        conflicts = ep.mutation and ep.name not in never_conflicts
        wanted = {"401", "403", "404", "422"} | ({"409"} if conflicts else set())
        for status in sorted(wanted):
            assert status in responses, (ep.name, status)
            schema = responses[status]["content"]["application/json"]["schema"]
            assert all(e.endswith("ErrorEnvelope") for e in _envelopes(schema)), (ep.name, status)
        if ep.method == "POST":
            names = {p["name"] for p in op.get("parameters", [])}
            assert "Idempotency-Key" in names, ep.name

    schemas = spec["components"]["schemas"]
    envelope = schemas["ErrorEnvelope"]
    assert envelope["required"] == ["error"]
    inner = schemas[envelope["properties"]["error"]["$ref"].rsplit("/", 1)[-1]]
    assert set(inner["required"]) == {"code", "message", "requestId", "details"}
    cancel_op = spec["paths"]["/v1/scheduled-posts/{id}"]["delete"]
    assert "requestBody" in cancel_op
    assert schemas["CancelIn"]["properties"]["reason"]["anyOf"][0]["maxLength"] == 1024


def test_operation_ids_and_tags_are_the_contracts(spec: dict[str, Any]) -> None:
    served = {
        (method, path): (op.get("operationId"), op.get("tags"))
        for method, path, op in _operations(spec)
    }
    assert served == {key: (oid, [tag]) for key, (oid, tag) in OPERATIONS.items()}
    tags = {tag["name"]: tag.get("description") for tag in spec["tags"]}
    assert set(tags) == {"content", "social", "publishing", "webhooks", "health"}
    assert all(tags.values()), tags
    for _, _, op in _operations(spec):
        assert op.get("summary"), op["operationId"]


def test_optional_bodies_and_parameters_are_plain_schemas(spec: dict[str, Any]) -> None:
    def nullable(schema: dict[str, Any]) -> bool:
        members = schema.get("anyOf", []) + schema.get("oneOf", [])
        return schema.get("type") == "null" or any(m.get("type") == "null" for m in members)

    for method, path, op in _operations(spec):
        body = op.get("requestBody")
        if body is not None:
            assert isinstance(body["required"], bool), (method, path)
            schema = body["content"]["application/json"]["schema"]
            assert not nullable(schema), (method, path)
            assert set(schema) == {"$ref"}, (method, path)
        for parameter in op.get("parameters", []):
            assert not nullable(parameter["schema"]), (method, path, parameter["name"])
            assert "title" not in parameter["schema"]
    by_id = {op["operationId"]: op for _, _, op in _operations(spec)}
    for operation_id, model in OPTIONAL_BODIES.items():
        body = by_id[operation_id]["requestBody"]
        assert body["required"] is False
        assert body["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{model}"
        }
    assert by_id["scheduleContent"]["requestBody"]["required"] is True

    keyed = {
        op["operationId"]
        for _, _, op in _operations(spec)
        for p in op.get("parameters", [])
        if p["name"] == "Idempotency-Key"
    }
    assert keyed == {
        "uploadContent",
        "scheduleContent",
        "publishContentNow",
        "rescheduleScheduledPost",
        "approveContent",
        "rejectContent",
        "createWebhookEndpoint",
    }
    key = next(p for p in by_id["scheduleContent"]["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header" and key["required"] is False
    assert key["schema"] == {"type": "string", "minLength": 1, "maxLength": 255}


def test_each_answer_lists_the_codes_its_status_can_carry(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        if not path.startswith("/v1/"):
            continue
        name = op["operationId"]
        errors = {s: r for s, r in op["responses"].items() if int(s) >= 400}
        always = {"401", "403", "422", "429", "500", "503"}
        assert always <= set(errors), name
        # A request with a body can be too large, or too slow to arrive.
        assert ({"408", "413"} <= set(errors)) == ("requestBody" in op), name
        for status, response in errors.items():
            codes = _codes(spec, response)
            assert codes, (name, status)
            assert {ERRORS[c].status for c in codes} == {int(status)}, (name, status, codes)
            for code in codes:
                assert f"`{code}`" in response["description"], (name, status, code)
        codes_403 = _codes(spec, errors["403"])
        expected = (
            {"FORBIDDEN_SCOPE", "APPROVAL_REQUIRED"}
            if name == "publishContentNow"
            else {"FORBIDDEN_SCOPE"}
        )
        assert codes_403 == expected, (method, path)
    by_id = {op["operationId"]: op for _, _, op in _operations(spec)}

    def codes(operation_id: str, status: str) -> set[str]:
        return _codes(spec, by_id[operation_id]["responses"][status])

    assert codes("cancelScheduledPost", "409") == {"CONFLICT"}
    assert codes("cancelScheduleIntent", "409") == {"CONFLICT"}
    assert codes("scheduleContent", "409") == {"CONTENT_REJECTED", "IDEMPOTENCY_CONFLICT"}
    assert codes("publishContentNow", "409") == {
        "CONTENT_REJECTED",
        "PLATFORM_ERROR",
        "IDEMPOTENCY_CONFLICT",
    }
    assert codes("rescheduleScheduledPost", "409") == {"CONFLICT", "IDEMPOTENCY_CONFLICT"}
    assert codes("approveContent", "409") == {"CONFLICT", "IDEMPOTENCY_CONFLICT"}
    assert codes("uploadContent", "409") == {"IDEMPOTENCY_CONFLICT"}
    assert codes("pingWebhookEndpoint", "409") == {"CONFLICT"}
    assert "409" not in by_id["setApprovalPolicy"]["responses"]
    assert "404" not in by_id["listWebhookEndpoints"]["responses"]
    assert codes("getScheduledPost", "404") == {"NOT_FOUND"}
    assert codes("cancelScheduledPost", "422") == {"VALIDATION"}
    assert codes("cancelScheduledPost", "429") == {"RATE_LIMITED"}


def _sent_codes() -> set[str]:
    """Every code the server can answer with: each PublisherError's, and each literal code
    api/ passes to `error_response`."""

    def subclasses(cls: type[PublisherError]) -> Iterator[type[PublisherError]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    assert shared.accounts.credentials.CredentialsUnreadable  # imported: its class is counted
    codes = {PublisherError.code} | {cls.code for cls in subclasses(PublisherError)}
    for path in (ROOT / "api").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "error_response"
                and isinstance(node.args[1], ast.Constant)
            ):
                codes.add(node.args[1].value)
    return codes


def test_every_code_is_documented_with_its_details(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    documented = set(schemas["ErrorCode"]["enum"])
    assert _sent_codes() <= documented
    assert documented == set(ERRORS)
    for code, kind in ERRORS.items():
        envelope = schemas[f"{kind.name}ErrorEnvelope"]
        assert _code_of(spec, f"{kind.name}ErrorEnvelope") == code
        assert envelope["required"] == ["error"]
        error = _component(spec, envelope["properties"]["error"]["$ref"])
        assert set(error["required"]) == {"code", "message", "requestId", "details"}
        details = _component(spec, error["properties"]["details"]["$ref"])
        assert set(details.get("properties", {})) == DETAILS.get(code, set()), code
    issue = schemas["ValidationDetails"]["properties"]["issues"]["items"]
    assert set(_component(spec, issue["$ref"])["required"]) == {"path", "message"}
    rate = schemas["RateLimitedDetails"]["properties"]
    assert rate["class"] == {"$ref": "#/components/schemas/EndpointClass"}
    assert set(_component(spec, rate["window"]["$ref"])["enum"]) == {"minute", "day"}
    scope = schemas["ForbiddenScopeDetails"]["properties"]["requiredScope"]["$ref"]
    assert "publish:write" in _component(spec, scope)["enum"]
    # 405 is no operation's (the path exists, the method does not): a component of its own.
    allowed = spec["components"]["responses"]["MethodNotAllowed"]
    assert allowed["headers"]["Allow"]["required"] is True
    assert _codes(spec, allowed) == {"METHOD_NOT_ALLOWED"}


def test_last_error_codes_are_the_documented_ones(spec: dict[str, Any]) -> None:
    api_md = (ROOT / "docs" / "api.md").read_text()
    table = api_md.split("`lastError.code` of a failed post:", 1)[1].split("\n\n", 2)[1]
    documented = re.findall(r"^\| `([A-Z_]+)` \|", table, flags=re.M)
    assert len(documented) >= 9
    last_error = spec["components"]["schemas"]["LastError"]["properties"]["code"]
    assert last_error == {"$ref": "#/components/schemas/PostErrorCode"}
    assert spec["components"]["schemas"]["PostErrorCode"]["enum"] == documented


def test_request_ids_and_rate_limit_headers(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        request_ids = [p for p in op["parameters"] if p["name"] == "X-Request-Id"]
        assert len(request_ids) == 1, (method, path)
        assert request_ids[0]["in"] == "header" and request_ids[0]["required"] is False
        assert request_ids[0]["schema"]["type"] == "string"
        for status, response in op["responses"].items():
            headers = response["headers"]
            assert headers["X-Request-Id"]["required"] is True, (method, path, status)
            limited = path.startswith("/v1/")
            if limited and status in ("429", "503"):
                assert headers["Retry-After"]["required"] is True, (method, path, status)
            else:
                assert "Retry-After" not in headers, (method, path, status)
            counted = limited and status not in ("401", "408", "413")
            assert ("X-RateLimit-Remaining" in headers) == counted, (method, path, status)
            if counted:
                assert headers["X-RateLimit-Endpoint-Class"]["schema"] == {
                    "$ref": "#/components/schemas/EndpointClass"
                }


def test_times_are_date_times(spec: dict[str, Any]) -> None:
    seen = 0
    for name, component in spec["components"]["schemas"].items():
        for prop, schema in component.get("properties", {}).items():
            if not TIME_NAMES.search(prop):
                continue
            members = [m for m in schema.get("anyOf", [schema]) if m.get("type") != "null"]
            assert [m.get("format") for m in members] == ["date-time"], (name, prop)
            seen += 1
    assert seen >= 25
    listing = spec["paths"]["/v1/projects/{projectId}/scheduled-posts"]["get"]["parameters"]
    for parameter in listing:
        if parameter["name"] in ("since", "until"):
            assert parameter["schema"]["format"] == "date-time"


def test_enums_are_components_referenced_everywhere(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    enum_components = {name for name, s in schemas.items() if "enum" in s}
    assert set(ENUMS) <= enum_components
    # No enum of two values or more outside a component of its own (a constant is `const`).
    roots = {id(s) for s in schemas.values()}
    for node in all_schemas(spec):
        if "enum" in node:
            assert id(node) in roots, node
    for name, (model, prop) in ENUMS.items():
        schema = schemas[model]["properties"][prop]
        schema = schema.get("items", schema)
        refs = [m.get("$ref") for m in schema.get("anyOf", [schema])]
        assert f"#/components/schemas/{name}" in refs, (name, model, prop)
    assert schemas["PostStatus"]["enum"] == [
        "queued",
        "publishing",
        "published",
        "draft",
        "failed",
        "canceled",
    ]


def test_no_titles_nor_internal_names(spec: dict[str, Any]) -> None:
    for node in all_schemas(spec):
        assert not isinstance(node.get("title"), str), node
    for name in spec["components"]["schemas"]:
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", name), name
        assert not name.endswith("Doc") and not name.startswith("Body"), name


def test_servers_and_security(spec: dict[str, Any]) -> None:
    assert spec["servers"][0]["url"] == get_settings().public_api_url
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    for _, path, op in _operations(spec):
        assert ("security" in op) == path.startswith("/v1/"), path


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: f"x_{uuid.uuid4()}", path)


def test_each_operation_states_the_scope_its_route_demands(
    spec: dict[str, Any], client: TestClient, tenant: TenantFixture
) -> None:
    # What the route demands, asked of the route: a key with another scope is told it.
    for method, path, op in _operations(spec):
        if not path.startswith("/v1/"):
            assert "x-required-scope" not in op
            continue
        scope = op["x-required-scope"]
        assert f"Scope: `{scope}`." in op["description"]
        other = "social:read" if scope != "social:read" else "content:read"
        r = client.request(method, _concrete(path), headers=tenant.key_with(other))
        err = envelope_error(r, 403, "FORBIDDEN_SCOPE")
        assert err["details"] == {"requiredScope": scope}, (method, path)


def _validator(spec: dict[str, Any], response: dict[str, Any]) -> Draft202012Validator:
    schema = response["content"]["application/json"]["schema"]
    return Draft202012Validator(
        {**schema, "components": spec["components"]},
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def test_real_answers_validate_against_the_document(
    spec: dict[str, Any], client: TestClient, tenant: TenantFixture
) -> None:
    container = upload(client, tenant)
    post = schedule(client, tenant, container, at(600))[0]["id"]
    pending = pending_upload(client, tenant)
    posts = spec["paths"]["/v1/scheduled-posts/{id}"]
    schedule_op = spec["paths"]["/v1/content/{containerId}/schedule"]["post"]
    answers = [
        (client.get(f"/v1/scheduled-posts/{post}", headers=tenant.headers), posts["get"]),
        (client.delete(f"/v1/scheduled-posts/{post}", headers=tenant.headers), posts["delete"]),
        (client.delete(f"/v1/scheduled-posts/{post}", headers=tenant.headers), posts["delete"]),
        (
            client.get(f"/v1/scheduled-posts/sp_{uuid.uuid4()}", headers=tenant.headers),
            posts["get"],
        ),
        (
            client.post(
                f"/v1/content/{pending}/schedule",
                headers=tenant.headers,
                json={"scheduledFor": at(600), "targets": [{"socialAccountId": "sa_x"}]},
            ),
            schedule_op,
        ),
        (
            client.post(
                f"/v1/content/{pending}/schedule",
                headers=tenant.headers,
                json={
                    "scheduledFor": at(600),
                    "targets": [{"socialAccountId": tenant.accounts["tiktok"]}],
                },
            ),
            schedule_op,
        ),
        (client.get("/healthz"), spec["paths"]["/healthz"]["get"]),
        (client.get("/readyz"), spec["paths"]["/readyz"]["get"]),
    ]
    assert [r.status_code for r, _ in answers] == [200, 200, 409, 404, 422, 202, 200, 200]
    for r, op in answers:
        response = op["responses"][str(r.status_code)]
        _validator(spec, response).validate(r.json())
        for name, header in response["headers"].items():
            if header["required"]:
                assert name.lower() in r.headers, (name, r.status_code)


def test_readiness_503_validates_against_the_document(
    spec: dict[str, Any], client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis out of reach (a port nothing listens on): the 503 body is the documented one."""
    unreachable = get_settings().model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    monkeypatch.setattr("api.app.get_settings", lambda: unreachable)
    r = client.get("/readyz")
    assert r.status_code == 503, r.text
    assert r.json()["checks"] == {"database": "ok", "redis": "unavailable: ConnectionError"}
    response = spec["paths"]["/readyz"]["get"]["responses"]["503"]
    _validator(spec, response).validate(r.json())
    assert "x-request-id" in r.headers
