/** Retries, backoff, Retry-After, timeouts and the Idempotency-Key across a call's attempts. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  ConflictError,
  ConnectionError,
  NotFoundError,
  RateLimitedError,
  UnavailableError,
  ValidationError,
  InternalError,
  USER_AGENT,
} from "../../src/index.js";
import { envelope, fake, networkError, POST } from "./fake.js";

const CANCELED = { id: POST.id, status: "canceled", canceledAt: "2031-05-01T09:00:05Z" };
const INTENT = {
  id: "si_1",
  containerId: "cnt_1",
  status: "blocked",
  scheduledFor: "2031-06-01T09:00:00Z",
  targets: [],
  scheduledPostIds: [],
  lastError: null,
  createdAt: "2031-05-01T09:00:00Z",
  updatedAt: "2031-05-01T09:00:00Z",
};
const UNAVAILABLE = { status: 503, body: envelope("UNAVAILABLE"), headers: { "retry-after": "1" } };
const UPLOAD = {
  projectId: "prj_1",
  caption: "hi",
  media: [{ url: "https://cdn.example.com/a.mp4" }],
};

describe("retries", () => {
  it("retries a 503 with exponential backoff and full jitter, then answers", async () => {
    const { layers, sent, sleeps } = fake([UNAVAILABLE, UNAVAILABLE, { status: 200, body: POST }], {
      retryBaseDelayMs: 4000,
    });
    const post = await layers.publishing.getScheduledPost({ id: POST.id });
    assert.equal(post.status, "queued");
    assert.equal(sent.length, 3);
    // random() is 0.5: half of min(cap, base * 2^n), but never under Retry-After's 1 s.
    assert.deepEqual(sleeps, [2000, 4000]);
  });

  it("caps the backoff at maxRetryDelayMs", async () => {
    const { layers, sleeps } = fake([{ throws: networkError() }], {
      retryBaseDelayMs: 1000,
      maxRetryDelayMs: 3000,
      maxRetries: 4,
    });
    await assert.rejects(layers.publishing.getScheduledPost({ id: POST.id }), ConnectionError);
    assert.deepEqual(sleeps, [500, 1000, 1500, 1500]);
  });

  it("waits out Retry-After on a 429, then answers", async () => {
    const limited = {
      status: 429,
      body: envelope("RATE_LIMITED", "slow down", {
        limit: 60,
        class: "read-light",
        window: "minute",
      }),
      headers: { "retry-after": "7" },
    };
    const { layers, sent, sleeps } = fake([limited, { status: 200, body: POST }]);
    await layers.publishing.getScheduledPost({ id: POST.id });
    assert.equal(sent.length, 2);
    assert.deepEqual(sleeps, [7000]);
  });

  it("retries a 429 even on a call the server does not deduplicate (nothing was done)", async () => {
    const limited = {
      status: 429,
      body: envelope("RATE_LIMITED"),
      headers: { "retry-after": "1" },
    };
    const { layers, sent } = fake([limited, { status: 202, body: { id: "wd_1" } }]);
    await layers.webhooks.ping({ id: "we_1" });
    assert.equal(sent.length, 2);
  });

  it("does not wait for a Retry-After longer than the cap: the 429 is thrown at once", async () => {
    const daily = {
      status: 429,
      body: envelope("RATE_LIMITED", "day", { limit: 10000, class: "write-light", window: "day" }),
      headers: { "retry-after": "36000" },
    };
    const { layers, sent, sleeps } = fake([daily]);
    const err = await layers.publishing.cancel({ id: POST.id }).then(
      () => assert.fail("no error"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof RateLimitedError);
    assert.equal(err.retryAfter, 36000);
    assert.equal(err.window, "day");
    assert.equal(err.limit, 10000);
    assert.equal(err.limitClass, "write-light");
    assert.equal(sent.length, 1);
    assert.deepEqual(sleeps, []);
  });

  it("gives up after maxRetries and throws the last error", async () => {
    const { layers, sent } = fake([UNAVAILABLE], { maxRetries: 2 });
    await assert.rejects(layers.publishing.getScheduledPost({ id: POST.id }), UnavailableError);
    assert.equal(sent.length, 3);
  });

  it("takes maxRetries per call too", async () => {
    const { layers, sent } = fake([UNAVAILABLE]);
    await assert.rejects(
      layers.publishing.getScheduledPost({ id: POST.id }, { maxRetries: 0 }),
      UnavailableError,
    );
    assert.equal(sent.length, 1);
  });

  for (const [status, code, Class] of [
    [400, "HTTP_ERROR", undefined],
    [404, "NOT_FOUND", NotFoundError],
    [409, "CONFLICT", ConflictError],
    [422, "VALIDATION", ValidationError],
    [500, "INTERNAL", InternalError],
  ] as const) {
    it(`never retries a ${status}`, async () => {
      const { layers, sent, sleeps } = fake([{ status, body: envelope(code) }]);
      const err = await layers.content.upload(UPLOAD).then(
        () => assert.fail("no error"),
        (e: unknown) => e,
      );
      if (Class !== undefined) {
        assert.ok(err instanceof Class);
      }
      assert.equal(sent.length, 1);
      assert.deepEqual(sleeps, []);
    });
  }

  it("retries network errors on reads and throws a ConnectionError when they persist", async () => {
    const { layers, sent } = fake([{ throws: networkError() }]);
    const err = await layers.social.listAccounts({ projectId: "prj_1" }).then(
      () => assert.fail("no error"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConnectionError);
    assert.equal(err.attempts, 4);
    assert.equal(err.timedOut, false);
    assert.equal(sent.length, 4);
  });

  it("times each attempt out, and retries the timeout", async () => {
    const { layers, sent } = fake(["hang", "hang", { status: 200, body: POST }], { timeoutMs: 20 });
    const post = await layers.publishing.getScheduledPost({ id: POST.id });
    assert.equal(post.id, POST.id);
    assert.equal(sent.length, 3);
  });

  it("reports a timeout that persists as a timed-out ConnectionError", async () => {
    const { layers } = fake(["hang"], { maxRetries: 1 });
    const err = await layers.publishing.getScheduledPost({ id: POST.id }, { timeoutMs: 10 }).then(
      () => assert.fail("no error"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConnectionError);
    assert.equal(err.timedOut, true);
    assert.equal(err.attempts, 2);
  });

  it("does not repeat a POST the server does not deduplicate after an ambiguous failure", async () => {
    // rotate-secret twice would retire the secret the receivers still use.
    const { layers, sent } = fake([{ throws: networkError("ECONNRESET") }]);
    await assert.rejects(layers.webhooks.rotateSecret({ id: "we_1" }), ConnectionError);
    await assert.rejects(layers.webhooks.ping({ id: "we_1" }), ConnectionError);
    assert.equal(sent.length, 2);
  });

  it("repeats one when the connection was refused (the request never left)", async () => {
    const { layers, sent } = fake([
      { throws: networkError("ECONNREFUSED") },
      { status: 200, body: { id: "we_1", secret: "whsec_new" } },
    ]);
    const endpoint = await layers.webhooks.rotateSecret({ id: "we_1" });
    assert.equal(endpoint.secret, "whsec_new");
    assert.equal(sent.length, 2);
  });

  it("does not repeat one after a 503 either", async () => {
    const { layers, sent } = fake([UNAVAILABLE]);
    await assert.rejects(layers.webhooks.replayDelivery({ id: "wd_1" }), UnavailableError);
    assert.equal(sent.length, 1);
  });

  it("stops at once when the caller aborts, retries and waits included", async () => {
    const controller = new AbortController();
    const { layers, sent } = fake(["hang"]);
    const call = layers.publishing.getScheduledPost({ id: POST.id }, { signal: controller.signal });
    controller.abort(new Error("caller gave up"));
    await assert.rejects(call, /caller gave up/);
    assert.equal(sent.length, 1);
    await assert.rejects(
      layers.publishing.getScheduledPost({ id: POST.id }, { signal: controller.signal }),
      /caller gave up/,
    );
    assert.equal(sent.length, 1);
  });
});

describe("idempotency keys and headers", () => {
  it("generates one Idempotency-Key per POST and keeps it across the call's retries", async () => {
    const { layers, sent } = fake([
      { throws: networkError() },
      UNAVAILABLE,
      { status: 201, body: { id: "cnt_1" } },
      { status: 201, body: { id: "cnt_2" } },
    ]);
    await layers.content.upload(UPLOAD);
    await layers.content.upload(UPLOAD);
    const keys = sent.map((s) => s.headers.get("idempotency-key"));
    assert.match(
      keys[0] ?? "",
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    assert.deepEqual(keys.slice(0, 3), [keys[0], keys[0], keys[0]]);
    assert.notEqual(keys[3], keys[0]);
  });

  it("sends the caller's key as given, on every attempt", async () => {
    const { layers, sent } = fake([UNAVAILABLE, { status: 201, body: { items: [POST] } }]);
    await layers.publishing.publishNow(
      { containerId: "cnt_1", targets: [{ socialAccountId: "sa_1" }] },
      { idempotencyKey: "launch-video" },
    );
    assert.deepEqual(
      sent.map((s) => s.headers.get("idempotency-key")),
      ["launch-video", "launch-video"],
    );
  });

  it("sends no Idempotency-Key on reads, PUT, PATCH or DELETE unless given", async () => {
    const { layers, sent } = fake([{ status: 200, body: {} }]);
    await layers.publishing.getScheduledPost({ id: POST.id });
    await layers.content.setApprovalPolicy({ projectId: "prj_1", requiresApproval: true });
    await layers.webhooks.updateEndpoint({ id: "we_1", status: "disabled" });
    await layers.publishing.cancel({ id: POST.id });
    assert.deepEqual(
      sent.map((s) => s.headers.get("idempotency-key")),
      [null, null, null, null],
    );
  });

  it("sends the key, its User-Agent, JSON and the caller's X-Request-Id", async () => {
    const { layers, sent } = fake([{ status: 200, body: CANCELED }]);
    await layers.publishing.cancel({ id: POST.id, reason: "hold" }, { requestId: "support-42" });
    const [request] = sent;
    assert.ok(request);
    assert.equal(request.method, "DELETE");
    assert.equal(request.url.href, `http://api.test/v1/scheduled-posts/${POST.id}`);
    assert.equal(request.headers.get("authorization"), "Bearer lp_test_key_secret");
    assert.equal(request.headers.get("user-agent"), USER_AGENT);
    assert.match(USER_AGENT, /^layers-client-typescript\/\d+\.\d+\.\d+$/);
    assert.equal(request.headers.get("content-type"), "application/json");
    assert.equal(request.headers.get("x-request-id"), "support-42");
    assert.deepEqual(request.body, { reason: "hold" });
  });

  it("sends no key to the health probes", async () => {
    const { layers, sent } = fake([{ status: 200, body: { status: "ok" } }]);
    assert.deepEqual(await layers.health.live(), { status: "ok" });
    assert.equal(sent[0]?.headers.get("authorization"), null);
    assert.equal(sent[0]?.url.pathname, "/healthz");
  });

  it("answers readiness's 503 as a result, never retried", async () => {
    const down = {
      status: "unavailable",
      checks: { database: "unavailable: OperationalError", redis: "ok" },
    };
    const { layers, sent } = fake([{ status: 503, body: down }]);
    assert.deepEqual(await layers.health.ready(), down);
    assert.equal(sent.length, 1);
  });
});

describe("cancel and retries", () => {
  const conflict = (status: string) => ({
    status: 409,
    body: envelope("CONFLICT", `Scheduled post is already ${status}`, { status }),
  });
  const LIMITED = { status: 429, body: envelope("RATE_LIMITED"), headers: { "retry-after": "1" } };
  const RECOVERED = { id: POST.id, status: "canceled", canceledAt: null, recovered: true };

  async function conflictOf(call: Promise<unknown>): Promise<ConflictError> {
    const err = await call.then(
      () => assert.fail("no error"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConflictError);
    return err;
  }

  it("returns a recovered cancel when the retry of a timed-out attempt is told 'canceled'", async () => {
    // The first attempt may have canceled the post before its answer was lost: the 409 is
    // most likely this call's own work, and the post is canceled, which is what was asked.
    const { layers, sent, sleeps } = fake(["hang", conflict("canceled")], { timeoutMs: 10 });
    const result = await layers.publishing.cancel({ id: POST.id });
    assert.deepEqual(result, RECOVERED);
    assert.equal(sent.length, 2);
    assert.equal(sleeps.length, 1);
  });

  it("does the same after a connection dropped once the request may have left", async () => {
    const { layers, sent } = fake([{ throws: networkError("ECONNRESET") }, conflict("canceled")]);
    assert.deepEqual(await layers.publishing.cancel({ id: POST.id }), RECOVERED);
    assert.equal(sent.length, 2);
  });

  it("does the same after a 503 (it may have failed after its commit)", async () => {
    const { layers, sent } = fake([UNAVAILABLE, conflict("canceled")]);
    assert.deepEqual(await layers.publishing.cancel({ id: POST.id }), RECOVERED);
    assert.equal(sent.length, 2);
  });

  it("throws a 'canceled' 409 that follows only 429s: someone else canceled the post", async () => {
    const { layers, sent } = fake([LIMITED, LIMITED, conflict("canceled")]);
    const err = await conflictOf(layers.publishing.cancel({ id: POST.id }));
    assert.equal(err.objectStatus, "canceled");
    assert.equal(err.status, 409);
    assert.equal(sent.length, 3);
  });

  it("throws a 'canceled' 409 that follows a refused connection (nothing was sent)", async () => {
    const { layers, sent } = fake([{ throws: networkError("ECONNREFUSED") }, conflict("canceled")]);
    const err = await conflictOf(layers.publishing.cancel({ id: POST.id }));
    assert.equal(err.objectStatus, "canceled");
    assert.equal(sent.length, 2);
  });

  it("throws a 'canceled' 409 on the first attempt", async () => {
    const { layers, sent, sleeps } = fake([conflict("canceled")]);
    const err = await conflictOf(layers.publishing.cancel({ id: POST.id }));
    assert.equal(err.objectStatus, "canceled");
    assert.equal(err.code, "CONFLICT");
    assert.equal(err.requestId, "req_test");
    assert.equal(sent.length, 1);
    assert.deepEqual(sleeps, []);
  });

  it("throws a retry's 409 of any other status: the post was not canceled", async () => {
    const { layers } = fake([UNAVAILABLE, conflict("publishing")]);
    const err = await conflictOf(layers.publishing.cancel({ id: POST.id }));
    assert.equal(err.objectStatus, "publishing");
  });

  it("reads the intent back when a retried intent cancel is told 'canceled'", async () => {
    const intent = { ...INTENT, status: "canceled" };
    const { layers, sent } = fake([UNAVAILABLE, conflict("canceled"), { status: 200, body: intent }]);
    const result = await layers.publishing.cancelScheduleIntent(
      { id: INTENT.id },
      { idempotencyKey: "drop-si_1", requestId: "support-7" },
    );
    assert.deepEqual(result, intent);
    assert.deepEqual(
      sent.map((s) => [s.method, s.url.pathname]),
      [
        ["DELETE", "/v1/schedule-intents/si_1"],
        ["DELETE", "/v1/schedule-intents/si_1"],
        ["GET", "/v1/schedule-intents/si_1"],
      ],
    );
    assert.equal(sent[2]?.headers.get("x-request-id"), "support-7");
    assert.equal(sent[2]?.headers.get("idempotency-key"), null);
  });

  it("reads the intent back after a timed-out attempt too", async () => {
    const intent = { ...INTENT, status: "canceled" };
    const { layers, sent } = fake(["hang", conflict("canceled"), { status: 200, body: intent }], {
      timeoutMs: 10,
    });
    assert.deepEqual(await layers.publishing.cancelScheduleIntent({ id: INTENT.id }), intent);
    assert.equal(sent.length, 3);
  });

  it("throws the intent's ConflictError when that read fails", async () => {
    const { layers, sent } = fake([
      UNAVAILABLE,
      conflict("canceled"),
      { status: 500, body: envelope("INTERNAL") },
    ]);
    const err = await conflictOf(layers.publishing.cancelScheduleIntent({ id: INTENT.id }));
    assert.equal(err.objectStatus, "canceled");
    assert.equal(sent.length, 3);
  });

  it("throws an intent's 'canceled' 409 on the first attempt, or after only 429s", async () => {
    const first = fake([conflict("canceled")]);
    const err = await conflictOf(first.layers.publishing.cancelScheduleIntent({ id: INTENT.id }));
    assert.equal(err.objectStatus, "canceled");
    assert.equal(first.sent.length, 1);

    const limited = fake([LIMITED, conflict("canceled")]);
    const again = await conflictOf(
      limited.layers.publishing.cancelScheduleIntent({ id: INTENT.id }),
    );
    assert.equal(again.objectStatus, "canceled");
    assert.equal(limited.sent.length, 2);
  });

  it("sends an empty object when there is no reason, null when asked", async () => {
    const { layers, sent } = fake([{ status: 200, body: CANCELED }]);
    await layers.publishing.cancel({ id: POST.id });
    await layers.publishing.cancel({ id: POST.id, reason: null });
    assert.deepEqual(
      sent.map((s) => s.body),
      [{}, { reason: null }],
    );
  });
});

describe("waiting between attempts", () => {
  it("ends the wait with the caller's reason when the caller aborts", async () => {
    const controller = new AbortController();
    // The default sleep, for real: the abort comes long before the 60 s Retry-After.
    const { layers, sent } = fake(
      [{ status: 429, body: envelope("RATE_LIMITED"), headers: { "retry-after": "60" } }],
      { sleep: undefined as never, maxRetryDelayMs: 120_000 },
    );
    const call = layers.publishing.getScheduledPost({ id: POST.id }, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error("caller gave up")), 20);
    await assert.rejects(call, /caller gave up/);
    assert.equal(sent.length, 1);
  });
});
