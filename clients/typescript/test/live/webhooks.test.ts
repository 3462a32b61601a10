/** Webhooks through the client: register at a receiver the test's host runs, ping, and
 * verify what arrived with verifyWebhook; rotation's two signatures; replay. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  ConflictError,
  verifyWebhook,
  WebhookSignatureError,
  type WebhookDelivery,
} from "../../src/index.js";
import { env, layers, SKIP, until } from "./env.js";

interface Arrived {
  eventId: string;
  signature: string;
  /** The raw body, base64. */
  body: string;
}

async function arrived(eventId: string): Promise<Arrived> {
  return until(`delivery of ${eventId}`, async () => {
    const response = await fetch(`${env.receiverUrl}/received`);
    const all = (await response.json()) as Arrived[];
    return all.find((a) => a.eventId === eventId);
  });
}

function raw(delivery: Arrived): Buffer {
  return Buffer.from(delivery.body, "base64");
}

describe("webhooks", { skip: SKIP }, () => {
  it("registers, pings, and verifies the signed delivery that arrived", async () => {
    const client = layers();
    const endpoint = await client.webhooks.createEndpoint({
      url: `${env.receiverUrl}/hook`,
      eventTypes: ["post.published", "post.canceled"],
      description: "the TypeScript client's test",
    });
    assert.match(endpoint.secret, /^whsec_/);
    assert.equal(endpoint.status, "enabled");

    const ping = await client.webhooks.ping({ id: endpoint.id });
    assert.equal(ping.eventType, "test.ping");
    const delivery = await arrived(ping.eventId);
    const event = verifyWebhook({
      body: raw(delivery),
      signatureHeader: delivery.signature,
      secrets: [endpoint.secret],
    });
    assert.equal(event.type, "test.ping");
    assert.equal(event.id, ping.eventId);
    assert.deepEqual(event.data, { endpointId: endpoint.id });
    assert.throws(
      () =>
        verifyWebhook({
          body: raw(delivery),
          signatureHeader: delivery.signature,
          secrets: ["whsec_wrong"],
        }),
      WebhookSignatureError,
    );
    // Valid now; five minutes and more later, the same delivery is stale.
    assert.throws(
      () =>
        verifyWebhook({
          body: raw(delivery),
          signatureHeader: delivery.signature,
          secrets: [endpoint.secret],
          now: Date.now() + 301_000,
        }),
      (e: unknown) => e instanceof WebhookSignatureError && e.reason === "stale",
    );

    const succeeded = await until("the ping's delivery succeeded", async () => {
      const page = await client.webhooks.listDeliveries({ endpointId: endpoint.id });
      return page.items.find((d: WebhookDelivery) => d.id === ping.id && d.status === "succeeded");
    });
    assert.equal(succeeded.attempts[0]?.statusCode, 200);

    // After a rotation both secrets sign, each alone verifies.
    const rotated = await client.webhooks.rotateSecret({ id: endpoint.id });
    assert.notEqual(rotated.secret, endpoint.secret);
    assert.ok(rotated.previousSecretExpiresAt);
    const second = await client.webhooks.ping({ id: endpoint.id });
    const signedTwice = await arrived(second.eventId);
    assert.equal(signedTwice.signature.split(",").filter((p) => p.startsWith("v1=")).length, 2);
    for (const secrets of [[endpoint.secret], [rotated.secret]]) {
      const verified = verifyWebhook({
        body: raw(signedTwice),
        signatureHeader: signedTwice.signature,
        secrets,
      });
      assert.equal(verified.id, second.eventId);
    }

    // A replay is a new event naming the original.
    const replay = await client.webhooks.replayDelivery({ id: ping.id });
    assert.notEqual(replay.eventId, ping.eventId);
    const replayed = await arrived(replay.eventId);
    const again = verifyWebhook({
      body: raw(replayed),
      signatureHeader: replayed.signature,
      secrets: rotated.secret,
    });
    assert.equal(again.replayOf, ping.eventId);
  });

  it("reads, lists, disables and enables endpoints", async () => {
    const client = layers();
    const made = await client.webhooks.createEndpoint({
      url: `${env.receiverUrl}/hook`,
      eventTypes: ["post.failed"],
    });
    const listed: string[] = [];
    for await (const endpoint of client.webhooks.iterEndpoints({ limit: 1 })) {
      listed.push(endpoint.id);
    }
    assert.ok(listed.includes(made.id));
    const read = await client.webhooks.getEndpoint({ id: made.id });
    assert.equal("secret" in read, false);
    const disabled = await client.webhooks.updateEndpoint({
      id: made.id,
      status: "disabled",
      eventTypes: ["post.failed", "post.published"],
    });
    assert.deepEqual(
      [disabled.status, disabled.eventTypes],
      ["disabled", ["post.failed", "post.published"]],
    );
    const refused = await client.webhooks.ping({ id: made.id }).then(
      () => assert.fail("pinged a disabled endpoint"),
      (e: unknown) => e,
    );
    assert.ok(refused instanceof ConflictError);
    assert.equal(
      (await client.webhooks.updateEndpoint({ id: made.id, status: "enabled" })).status,
      "enabled",
    );
  });
});
