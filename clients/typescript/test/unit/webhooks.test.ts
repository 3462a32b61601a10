/** verifyWebhook: the signature scheme of shared/webhooks/signing.py, and every way a
 * delivery is refused. */

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, it } from "node:test";

import { verifyWebhook, WebhookSignatureError, type WebhookEvent } from "../../src/index.js";

const SECRET = "whsec_current";
const PREVIOUS = "whsec_previous";
const T = 1_900_000_000;
const NOW = new Date(T * 1000 + 10_000);
const BODY = JSON.stringify({
  createdAt: "2030-03-17T17:46:40Z",
  data: { containerId: "cnt_1", platform: "tiktok", scheduledPostId: "sp_1", status: "published" },
  id: "evt_1",
  type: "post.published",
});

function v1(secret: string, body: string, t = T): string {
  return createHmac("sha256", secret).update(`${t}.${body}`).digest("hex");
}

function refused(params: Parameters<typeof verifyWebhook>[0]): WebhookSignatureError {
  try {
    verifyWebhook(params);
  } catch (err) {
    assert.ok(err instanceof WebhookSignatureError, String(err));
    return err;
  }
  return assert.fail("verified");
}

describe("verifyWebhook", () => {
  it("returns the typed event of a genuine delivery", () => {
    const event: WebhookEvent = verifyWebhook({
      body: BODY,
      signatureHeader: `t=${T},v1=${v1(SECRET, BODY)}`,
      secrets: [SECRET],
      now: NOW,
    });
    assert.equal(event.type, "post.published");
    if (event.type === "post.published") {
      assert.equal(event.data.scheduledPostId, "sp_1");
    }
  });

  it("takes the body as bytes, a single secret, and now in milliseconds", () => {
    const event = verifyWebhook({
      body: new TextEncoder().encode(BODY),
      signatureHeader: `t=${T},v1=${v1(SECRET, BODY)}`,
      secrets: SECRET,
      now: NOW.getTime(),
    });
    assert.equal(event.id, "evt_1");
  });

  it("accepts during a rotation: either signature with either secret", () => {
    const header = `t=${T},v1=${v1(SECRET, BODY)},v1=${v1(PREVIOUS, BODY)}`;
    for (const secrets of [[SECRET], [PREVIOUS], [PREVIOUS, SECRET], ["whsec_other", SECRET]]) {
      assert.equal(
        verifyWebhook({ body: BODY, signatureHeader: header, secrets, now: NOW }).id,
        "evt_1",
      );
    }
  });

  it("refuses a signature by another secret, or of another body", () => {
    const header = `t=${T},v1=${v1("whsec_someone_else", BODY)}`;
    assert.equal(
      refused({ body: BODY, signatureHeader: header, secrets: [SECRET], now: NOW }).reason,
      "mismatch",
    );
    const tampered = BODY.replace("published", "failed");
    const signed = `t=${T},v1=${v1(SECRET, BODY)}`;
    assert.equal(
      refused({ body: tampered, signatureHeader: signed, secrets: SECRET, now: NOW }).reason,
      "mismatch",
    );
    // The signature covers t too: the same v1 under another t does not verify.
    const moved = `t=${T + 1},v1=${v1(SECRET, BODY)}`;
    assert.equal(
      refused({ body: BODY, signatureHeader: moved, secrets: SECRET, now: NOW }).reason,
      "mismatch",
    );
  });

  it("refuses a timestamp more than the tolerance away, in the past or the future", () => {
    for (const t of [T - 301, T + 321]) {
      const header = `t=${t},v1=${v1(SECRET, BODY, t)}`;
      const now = new Date(T * 1000);
      assert.equal(
        refused({ body: BODY, signatureHeader: header, secrets: SECRET, now }).reason,
        "stale",
      );
    }
    const header = `t=${T - 300},v1=${v1(SECRET, BODY, T - 300)}`;
    assert.equal(
      verifyWebhook({
        body: BODY,
        signatureHeader: header,
        secrets: SECRET,
        now: new Date(T * 1000),
      }).id,
      "evt_1",
    );
    assert.equal(
      refused({
        body: BODY,
        signatureHeader: header,
        secrets: SECRET,
        now: new Date(T * 1000),
        toleranceSeconds: 60,
      }).reason,
      "stale",
    );
  });

  it("refuses a malformed header", () => {
    const good = v1(SECRET, BODY);
    for (const header of [
      undefined,
      null,
      "",
      `v1=${good}`,
      `t=${T}`,
      `t=${T},t=${T},v1=${good}`,
      `t=soon,v1=${good}`,
      `t=${T},v1=${good.slice(2)}`,
      `t=${T},v1=${good.replace(/./, "z")}`,
      `t=${T};v1=${good}`,
    ]) {
      assert.equal(
        refused({ body: BODY, signatureHeader: header, secrets: SECRET, now: NOW }).reason,
        "malformed",
        String(header),
      );
    }
  });

  it("skips signature schemes it does not know", () => {
    const header = `t=${T},v0=abc,v1=${v1(SECRET, BODY)}`;
    assert.equal(
      verifyWebhook({ body: BODY, signatureHeader: header, secrets: SECRET, now: NOW }).id,
      "evt_1",
    );
  });

  it("refuses a signed body that is not an event", () => {
    const body = "[1,2]";
    const header = `t=${T},v1=${v1(SECRET, body)}`;
    assert.equal(
      refused({ body, signatureHeader: header, secrets: SECRET, now: NOW }).reason,
      "body",
    );
  });

  it("wants a secret", () => {
    assert.throws(
      () =>
        verifyWebhook({
          body: BODY,
          signatureHeader: `t=${T},v1=${v1(SECRET, BODY)}`,
          secrets: [],
        }),
      TypeError,
    );
  });
});
