"""The OpenAPI document as a product surface: what FastAPI makes of the routes and models,
finished once, on the first ask, in this one place.

- every operation keeps the `operationId` its route declares (none may be left to FastAPI)
  and gets a summary (its docstring's first sentence), its scope (read from its
  `require(...)` dependency) and its endpoint class, as description lines and as
  `x-required-scope` and `x-rate-limit-class`; a success is described by its body's model;
- every operation takes an optional `X-Request-Id`; every answer carries one, and the
  rate-limit headers wherever the limiter has spoken (`Retry-After` on 429 and 503);
- an optional parameter or request body is its plain schema, never `anyOf [X, null]`
  (absent is how a caller says none), and an optional body is `required: false`; a body
  field's default is in its description;
- every error code's envelope is a component, those no operation names (405) too;
- no schema keeps pydantic's automatic `title`.

The routes declare what is theirs (operationId, scope, error codes, models); nothing here
changes a byte the API sends."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Final

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute

from api.deps import required_scope
from api.endpoint_classes import ROUTE_CLASSES
from api.middleware import REQUEST_ID_HEADER
from api.ratelimit import CLASS_HEADER
from api.schemas import ENVELOPES, ErrorEnvelope

REF: Final = "#/components/schemas/{model}"

TAGS: Final = [
    {
        "name": "content",
        "description": "Content containers (a caption and media references, uploaded once and "
        "scheduled to any number of accounts), each project's approval policy, and the "
        "decision on content awaiting approval.",
    },
    {
        "name": "social",
        "description": "A project's social accounts (TikTok, Instagram), connected by the "
        "operator; never with a token.",
    },
    {
        "name": "publishing",
        "description": "Schedule content to accounts, publish it now (due in 30 s: the window "
        "to cancel), read, list, reschedule and cancel the posts, and the schedule intents "
        "saved for content awaiting approval. A 200 cancel means the post never reaches the "
        "platform.",
    },
    {
        "name": "webhooks",
        "description": "Webhook endpoints, their signed deliveries with every attempt, pings "
        "and replays. Each delivery carries `X-Layers-Signature: t=<unix seconds>,v1=<hex "
        'HMAC-SHA256(secret, "<t>.<raw body>")>` (a second `v1=` while a rotated secret '
        "still signs); receivers reject a `t` more than 300 s off.",
    },
    {"name": "health", "description": "Liveness and readiness probes; no key needed."},
]

_INTEGER: Final = {"type": "integer", "minimum": 0}

REQUEST_ID_PARAMETER: Final = {
    "name": REQUEST_ID_HEADER,
    "in": "header",
    "required": False,
    "description": "Your id for this request, echoed in the answer's `X-Request-Id` and in "
    "an error's `requestId` when it is 1 to 200 of `A-Z a-z 0-9 . _ : -`; anything else "
    "(never refused) is replaced by a new `req_<32 hex digits>`.",
    # Any string is accepted: a schema that refused some would promise a 4xx never sent.
    "schema": {"type": "string"},
}


def _header(description: str, schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


_REQUEST_ID: Final = _header(
    "This request's id: the caller's `X-Request-Id` if sane, else a new one; an error's "
    "`requestId`, and on every log line of the request",
    {"type": "string"},
    True,
)
_RETRY_AFTER: Final = _header(
    "Whole seconds to wait before trying again, at least 1", _INTEGER, True
)


def _rate_limit_headers(refused: bool) -> dict[str, dict[str, Any]]:
    """The limiter's headers; on a 429 all of them are sent, elsewhere only once the limiter
    was asked (not before authentication, nor when Redis could not be asked)."""
    return {
        CLASS_HEADER: _header(
            "The endpoint class whose bucket counted this request",
            {"$ref": REF.format(model="EndpointClass")},
            refused,
        ),
        "X-RateLimit-Limit": _header(
            "The class's requests per minute for this key (on a 429 with `details.window` "
            "`day`: the organization's daily write cap)",
            _INTEGER,
            refused,
        ),
        "X-RateLimit-Remaining": _header(
            "Requests of this class that would be admitted right now", _INTEGER, refused
        ),
        "X-RateLimit-Reset": _header(
            "Seconds until the bucket is whole again (the day's: until the next UTC midnight)",
            _INTEGER,
            refused,
        ),
    }


# The answers of a request the limiter was asked about: it answers after authentication and
# the scope check (a 403 names the class only), before the route's own work.
_LIMITED: Final = ("403", "404", "409", "422", "429", "500", "503")

METHOD_NOT_ALLOWED: Final = {
    "description": "`METHOD_NOT_ALLOWED`: the path exists, not with this method (any path of "
    "this document, with a method it does not list; `HEAD` is answered wherever `GET` is).",
    "headers": {
        "Allow": _header("Every method the path accepts", {"type": "string"}, True),
        REQUEST_ID_HEADER: _REQUEST_ID,
    },
    "content": {
        "application/json": {"schema": {"$ref": REF.format(model="MethodNotAllowedErrorEnvelope")}}
    },
}


def _api_routes(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], APIRoute]:
    return {
        (method, route.path): route
        for route in routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods or ()
    }


def _scope(dependant: Dependant) -> str | None:
    """The scope of the first `require(...)` among the route's dependencies."""
    for dependency in dependant.dependencies:
        found = (required_scope(dependency.call) if dependency.call else None) or _scope(dependency)
        if found:
            return found
    return None


def scope_of(route: APIRoute) -> str | None:
    """The scope a route demands, read from its `require(...)` dependency; None for a route
    without a key (the health probes)."""
    return _scope(route.dependant)


def _summary(docstring: str | None) -> str | None:
    """The first sentence of the route's docstring."""
    if not docstring:
        return None
    paragraph = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    return paragraph.split(". ", 1)[0].rstrip(".")


def _describe(operation: dict[str, Any], route: APIRoute, method: str, path: str) -> None:
    if not route.operation_id:
        raise RuntimeError(f"{method} {path} has no operation_id: give its route one")
    if route.summary is None and (summary := _summary(route.description)):
        operation["summary"] = summary
    lines = [operation["description"]] if operation.get("description") else []
    scope = scope_of(route)
    if scope is not None:
        operation["x-required-scope"] = scope
        lines.append(f"Scope: `{scope}`.")
    klass = ROUTE_CLASSES.get((method, path))
    if klass is not None:
        operation["x-rate-limit-class"] = klass.value
        lines.append(
            f"Rate limit: endpoint class `{klass}`"
            + (", and the organization's daily write cap." if klass.writes else ".")
        )
    operation["description"] = "\n\n".join(lines)


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf [X, null]` as X (its siblings kept, a null default dropped)."""
    members = schema.get("anyOf")
    if not members:
        return schema
    kept = [m for m in members if m != {"type": "null"}]
    if len(kept) != 1 or len(kept) == len(members):
        return schema
    siblings = {
        k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)
    }
    return {**kept[0], **siblings}


def _inputs(operation: dict[str, Any]) -> None:
    parameters = operation.setdefault("parameters", [])
    for parameter in parameters:
        if not parameter.get("required"):
            parameter["schema"] = _without_null(parameter["schema"])
        # FastAPI writes a parameter's description twice: on it, and on its schema.
        if parameter["schema"].get("description") == parameter.get("description"):
            parameter["schema"].pop("description", None)
    parameters.append(dict(REQUEST_ID_PARAMETER))
    body = operation.get("requestBody")
    if body is not None:
        body["required"] = bool(body.get("required"))
        for media in body.get("content", {}).values():
            media["schema"] = _without_null(media["schema"])


def _responses(operation: dict[str, Any], limited: bool, schemas: dict[str, Any]) -> None:
    for status, response in operation.get("responses", {}).items():
        if response.get("description") == "Successful Response":
            # FastAPI's words for every success: the body's own description says more.
            ref = response.get("content", {}).get("application/json", {}).get("schema", {})
            body = schemas.get(str(ref.get("$ref", "")).rsplit("/", 1)[-1], {})
            response["description"] = body.get("description") or operation["summary"]
        headers = {REQUEST_ID_HEADER: _REQUEST_ID}
        if limited and (status.startswith("2") or status in _LIMITED):
            headers |= _rate_limit_headers(refused=status == "429")
        if limited and status in ("429", "503"):
            headers["Retry-After"] = _RETRY_AFTER
        response["headers"] = headers


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema object under `node`, by JSON Schema's structure: a property named
    `title` is a property, not a keyword."""
    if not isinstance(node, dict):
        return
    yield node
    for key in ("items", "additionalProperties", "not"):
        yield from _schemas(node.get(key))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for member in node.get(key, []):
            yield from _schemas(member)
    for member in node.get("properties", {}).values():
        yield from _schemas(member)


def _operation_schemas(operation: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for parameter in operation.get("parameters", []):
        yield from _schemas(parameter.get("schema"))
    bodies = [operation.get("requestBody", {}), *operation.get("responses", {}).values()]
    for part in bodies:
        for media in part.get("content", {}).values():
            yield from _schemas(media.get("schema"))
        for header in part.get("headers", {}).values():
            yield from _schemas(header.get("schema"))


def all_schemas(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every schema object of the document: the components' and the operations'."""
    for component in document.get("components", {}).get("schemas", {}).values():
        yield from _schemas(component)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            yield from _operation_schemas(operation)


def _defaults_described(component: dict[str, Any]) -> None:
    """A property's default in words, not as `default`: the server applies it to a field
    left out, and generators that take a default to mean "always present" (openapi-typescript
    does, for a component) would make the caller send it."""
    for prop in component.get("properties", {}).values():
        if "default" in prop:
            line = f"Default: `{json.dumps(prop.pop('default'))}`."
            prop["description"] = f"{prop['description']} {line}" if "description" in prop else line


def _components(document: dict[str, Any]) -> None:
    # Every code's envelope, those no operation answers with too (405, HTTP_ERROR).
    models: list[type[BaseModel]] = [ErrorEnvelope, *ENVELOPES.values()]
    _, extra = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in extra.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    components.setdefault("responses", {})["MethodNotAllowed"] = METHOD_NOT_ALLOWED
    for schema in schemas.values():
        _defaults_described(schema)
    components["schemas"] = dict(sorted(schemas.items()))


def document(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """Finish the document FastAPI made of `routes` (in place; returned too)."""
    served = _api_routes(routes)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            route = served[(method.upper(), path)]
            _describe(operation, route, method.upper(), path)
            _inputs(operation)
            _responses(operation, path.startswith("/v1/"), schema["components"]["schemas"])
    _components(schema)
    for node in all_schemas(schema):
        if isinstance(node.get("title"), str):
            del node["title"]
    return schema
