/**
 * A real 429 from the real API. The stack lifts every tier's limits (RATE_LIMIT_MULTIPLIER),
 * but a limit set on a key is taken as written: this key may read 60 times a minute, so
 * after its burst of 60 the API refuses with Retry-After: 1, and the client waits that out.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { RateLimitedError } from "../../src/index.js";
import { env, layers, recordingFetch, SKIP } from "./env.js";

// Well past the burst: each read spends one of 60, and one comes back a second.
const MAX_CALLS = 1000;

describe("rate limits", { skip: SKIP }, () => {
  it("surfaces the 429 as a RateLimitedError when retries are off", async () => {
    const client = layers({ apiKey: env.limitedKey, maxRetries: 0 });
    let refused: RateLimitedError | undefined;
    for (let i = 0; i < MAX_CALLS && refused === undefined; i++) {
      await client.social
        .listAccounts({ projectId: env.projectId, limit: 1 })
        .catch((e: unknown) => {
          if (!(e instanceof RateLimitedError)) {
            throw e;
          }
          refused = e;
        });
    }
    assert.ok(refused, `no 429 in ${MAX_CALLS} reads`);
    assert.equal(refused.status, 429);
    assert.deepEqual(refused.details, { limit: 60, class: "read-light", window: "minute" });
    assert.ok((refused.retryAfter ?? 0) >= 1);
    assert.ok(refused.requestId.startsWith("req_"));
  });

  it("retries a real 429 after its Retry-After, and the call succeeds", async () => {
    const statuses: number[] = [];
    const client = layers({ apiKey: env.limitedKey, fetch: recordingFetch(statuses) });
    let calls = 0;
    while (!statuses.includes(429) && calls < MAX_CALLS) {
      // Every call resolves: the refused attempt is retried once Retry-After has passed.
      const page = await client.social.listAccounts({ projectId: env.projectId, limit: 1 });
      assert.equal(page.items.length, 1);
      calls++;
    }
    const refusedAt = statuses.indexOf(429);
    assert.ok(refusedAt >= 0, `no 429 in ${calls} calls`);
    // The call that met the 429 ended with a 200 after it (retries come back until one is
    // admitted, and a retry after Retry-After seconds is).
    assert.equal(statuses.at(-1), 200);
    assert.equal(statuses.length, calls + statuses.filter((s) => s === 429).length);
  });
});
