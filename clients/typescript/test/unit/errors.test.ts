/** Each error code of the envelope as its own class, with what the envelope carried. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  ApprovalRequiredError,
  ConflictError,
  ContentRejectedError,
  ForbiddenScopeError,
  IdempotencyConflictError,
  InternalError,
  LayersError,
  MethodNotAllowedError,
  NotFoundError,
  PayloadTooLargeError,
  PlatformError,
  RateLimitedError,
  RequestTimeoutError,
  retryAfterSeconds,
  UnauthenticatedError,
  UnavailableError,
  ValidationError,
} from "../../src/index.js";
import { envelope, fake } from "./fake.js";

const CODES = [
  [401, "UNAUTHENTICATED", UnauthenticatedError],
  [403, "FORBIDDEN_SCOPE", ForbiddenScopeError],
  [403, "APPROVAL_REQUIRED", ApprovalRequiredError],
  [404, "NOT_FOUND", NotFoundError],
  [405, "METHOD_NOT_ALLOWED", MethodNotAllowedError],
  [408, "REQUEST_TIMEOUT", RequestTimeoutError],
  [409, "CONFLICT", ConflictError],
  [409, "CONTENT_REJECTED", ContentRejectedError],
  [409, "PLATFORM_ERROR", PlatformError],
  [409, "IDEMPOTENCY_CONFLICT", IdempotencyConflictError],
  [413, "PAYLOAD_TOO_LARGE", PayloadTooLargeError],
  [422, "VALIDATION", ValidationError],
  [429, "RATE_LIMITED", RateLimitedError],
  [500, "INTERNAL", InternalError],
  [503, "UNAVAILABLE", UnavailableError],
] as const;

async function errorOf(status: number, body: unknown, headers: Record<string, string> = {}) {
  const { layers } = fake([{ status, body, headers }], { maxRetries: 0 });
  return layers.content.get({ id: "cnt_1" }).then(
    () => assert.fail("no error"),
    (e: unknown) => e,
  );
}

describe("error mapping", () => {
  for (const [status, code, Class] of CODES) {
    it(`maps ${status} ${code} to ${Class.name}`, async () => {
      const details = { status: "published", extra: [1] };
      const err = await errorOf(status, envelope(code, `message of ${code}`, details));
      assert.ok(err instanceof Class, `${String(err)}`);
      assert.ok(err instanceof LayersError);
      assert.ok(err instanceof Error);
      assert.equal(err.name, Class.name);
      assert.equal(err.status, status);
      assert.equal(err.code, code);
      assert.equal(err.message, `message of ${code}`);
      assert.equal(err.requestId, "req_test");
      assert.deepEqual(err.details, details);
    });
  }

  it("gives every code of the contract a class of its own", () => {
    assert.equal(new Set(CODES.map(([, , Class]) => Class)).size, CODES.length);
  });

  it("reads the details each error is known for", async () => {
    const scope = await errorOf(
      403,
      envelope("FORBIDDEN_SCOPE", "no", { requiredScope: "publish:write" }),
    );
    assert.ok(scope instanceof ForbiddenScopeError);
    assert.equal(scope.requiredScope, "publish:write");
    const issues = [{ path: "targets[0].socialAccountId", message: "No such social account" }];
    const invalid = await errorOf(422, envelope("VALIDATION", "Invalid request", { issues }));
    assert.ok(invalid instanceof ValidationError);
    assert.deepEqual(invalid.issues, issues);
    const conflict = await errorOf(409, envelope("CONFLICT", "late", { status: "publishing" }));
    assert.ok(conflict instanceof ConflictError);
    assert.equal(conflict.objectStatus, "publishing");
    const limited = await errorOf(
      429,
      envelope("RATE_LIMITED", "slow", { limit: 60, class: "write-light", window: "minute" }),
      { "retry-after": "3" },
    );
    assert.ok(limited instanceof RateLimitedError);
    assert.deepEqual(
      [limited.retryAfter, limited.limit, limited.limitClass, limited.window],
      [3, 60, "write-light", "minute"],
    );
    assert.equal(limited.headers.get("retry-after"), "3");
  });

  it("keeps a code it does not know as a LayersError with that code", async () => {
    const err = await errorOf(418, envelope("TEAPOT", "short and stout"));
    assert.ok(err instanceof LayersError);
    assert.equal(err.constructor, LayersError);
    assert.equal(err.code, "TEAPOT");
    assert.equal(err.status, 418);
  });

  it("makes an HTTP_ERROR of an answer that is not the envelope", async () => {
    const { layers } = fake([{ status: 502, body: "Bad Gateway" }], { maxRetries: 0 });
    const err = await layers.content.get({ id: "cnt_1" }).then(
      () => assert.fail("no error"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof LayersError);
    assert.equal(err.code, "HTTP_ERROR");
    assert.equal(err.status, 502);
    assert.equal(err.requestId, "req_test");
    assert.deepEqual(err.details, {});
  });
});

describe("Retry-After", () => {
  it("reads delta-seconds and HTTP dates", () => {
    const now = Date.parse("2031-06-01T09:00:00Z");
    const of = (value: string) => retryAfterSeconds(new Headers({ "retry-after": value }), now);
    assert.equal(of("7"), 7);
    assert.equal(of("Sun, 01 Jun 2031 09:00:30 GMT"), 30);
    assert.equal(of("Sun, 01 Jun 2031 08:00:00 GMT"), 0);
    assert.equal(of("soon"), undefined);
    assert.equal(retryAfterSeconds(new Headers()), undefined);
  });
});
