/** The approval gate through the client: a blocked schedule as the union's other case. */

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import { ApprovalRequiredError, ConflictError, ContentRejectedError } from "../../src/index.js";
import { env, layers, secondsFromNow, SKIP } from "./env.js";

const MEDIA = [{ url: "https://cdn.example.com/review.jpg" }];

describe("the approval gate", { skip: SKIP }, () => {
  after(async () => {
    if (!SKIP) {
      await layers().content.setApprovalPolicy({ projectId: env.projectId });
    }
  });

  it("holds content, blocks its schedule as an intent, and approval makes the posts", async () => {
    const client = layers();
    const policy = await client.content.setApprovalPolicy({
      projectId: env.projectId,
      requiresApproval: true,
      autoApproveAfter: "PT90M",
    });
    assert.deepEqual(policy, {
      requiresApproval: true,
      firstNPostsBlocked: 0,
      autoApproveAfter: "PT1H30M",
    });
    assert.deepEqual(await client.content.getApprovalPolicy({ projectId: env.projectId }), policy);

    const held = await client.content.upload({
      projectId: env.projectId,
      caption: "for review",
      media: MEDIA,
    });
    assert.equal(held.status, "pending_approval");
    assert.equal(held.approval?.status, "pending");

    const result = await client.publishing.schedule({
      containerId: held.id,
      scheduledFor: secondsFromNow(3600),
      targets: [{ socialAccountId: env.tiktok }],
    });
    assert.equal(result.gateStatus, "blocked_on_approval");
    assert.ok(result.gateStatus === "blocked_on_approval");
    assert.equal(result.intent.status, "blocked");
    await assert.rejects(
      client.publishing.publishNow({
        containerId: held.id,
        targets: [{ socialAccountId: env.tiktok }],
      }),
      ApprovalRequiredError,
    );
    const second = await client.publishing.schedule({
      containerId: held.id,
      scheduledFor: secondsFromNow(7200),
      targets: [{ socialAccountId: env.instagram }],
    });
    assert.ok(second.gateStatus === "blocked_on_approval");
    const dropped = await client.publishing.cancelScheduleIntent({
      id: second.intent.id,
      reason: "one is enough",
    });
    assert.equal(dropped.status, "canceled");

    const intents = [];
    for await (const intent of client.publishing.iterScheduleIntents({
      containerId: held.id,
      limit: 1,
    })) {
      intents.push([intent.id, intent.status]);
    }
    assert.deepEqual(intents, [
      [result.intent.id, "blocked"],
      [second.intent.id, "canceled"],
    ]);

    const approved = await client.content.approve({ id: held.id, reason: "legal ok" });
    assert.equal(approved.status, "completed");
    assert.deepEqual(
      [approved.approval?.status, approved.approval?.reason],
      ["approved", "legal ok"],
    );
    const promoted = await client.publishing.getScheduleIntent({ id: result.intent.id });
    assert.equal(promoted.status, "promoted");
    assert.equal(promoted.scheduledPostIds.length, 1);
    const late = await client.publishing.cancelScheduleIntent({ id: result.intent.id }).then(
      () => assert.fail("canceled a promoted intent"),
      (e: unknown) => e,
    );
    assert.ok(late instanceof ConflictError);
    assert.equal(late.objectStatus, "promoted");
    for (const id of promoted.scheduledPostIds) {
      assert.equal((await client.publishing.cancel({ id })).status, "canceled");
    }
  });

  it("rejects content for good", async () => {
    const client = layers();
    await client.content.setApprovalPolicy({ projectId: env.projectId, firstNPostsBlocked: 50 });
    const held = await client.content.upload({
      projectId: env.projectId,
      caption: "not this",
      media: MEDIA,
    });
    const rejected = await client.content.reject({ id: held.id, reason: "off brand" });
    assert.equal(rejected.status, "rejected");
    await assert.rejects(
      client.publishing.schedule({
        containerId: held.id,
        scheduledFor: secondsFromNow(3600),
        targets: [{ socialAccountId: env.tiktok }],
      }),
      ContentRejectedError,
    );
  });
});
