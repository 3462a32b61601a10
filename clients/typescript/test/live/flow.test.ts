/** The whole path through the real API: upload, schedule, publish now, cancel inside the
 * window, cancel after publish, the contract's example, and errors as their classes. */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, it } from "node:test";

import {
  ConflictError,
  ForbiddenScopeError,
  IdempotencyConflictError,
  Layers,
  NotFoundError,
  UnauthenticatedError,
  ValidationError,
  type ScheduledPost,
} from "../../src/index.js";
import { env, layers, secondsFromNow, SKIP, until } from "./env.js";

const MEDIA = [{ url: "https://cdn.example.com/clip.mp4" }];

describe("the publishing flow", { skip: SKIP }, () => {
  it("uploads, schedules, reads, lists, reschedules and cancels", async () => {
    const client = layers();
    const key = `upload-${Date.now()}`;
    const container = await client.content.upload(
      { projectId: env.projectId, caption: "from the TypeScript client", media: MEDIA },
      { idempotencyKey: key },
    );
    assert.equal(container.status, "completed");
    assert.deepEqual(container.media, [{ url: MEDIA[0]?.url, type: "video" }]);
    // The same key and body: the first answer again, no second container.
    const again = await client.content.upload(
      { projectId: env.projectId, caption: "from the TypeScript client", media: MEDIA },
      { idempotencyKey: key },
    );
    assert.equal(again.id, container.id);
    await assert.rejects(
      client.content.upload(
        { projectId: env.projectId, caption: "another body", media: MEDIA },
        { idempotencyKey: key },
      ),
      IdempotencyConflictError,
    );
    assert.equal((await client.content.get({ id: container.id })).caption, container.caption);

    const accounts = [];
    for await (const account of client.social.iterAccounts({
      projectId: env.projectId,
      limit: 1,
    })) {
      accounts.push(account.id);
    }
    assert.deepEqual(accounts.sort(), [env.instagram, env.tiktok].sort());
    const tiktok = await client.social.listAccounts({
      projectId: env.projectId,
      platform: "tiktok",
    });
    assert.deepEqual(
      tiktok.items.map((a) => a.id),
      [env.tiktok],
    );

    const scheduled = await client.publishing.schedule({
      containerId: container.id,
      scheduledFor: secondsFromNow(3600),
      targets: [{ socialAccountId: env.tiktok }, { socialAccountId: env.instagram }],
    });
    assert.equal(scheduled.gateStatus, "scheduled");
    assert.ok(scheduled.gateStatus === "scheduled");
    assert.deepEqual(
      scheduled.items.map((p) => [p.status, p.socialAccountId]),
      [
        ["queued", env.tiktok],
        ["queued", env.instagram],
      ],
    );
    const [first, second] = scheduled.items as [ScheduledPost, ScheduledPost];
    assert.equal((await client.publishing.getScheduledPost({ id: first.id })).status, "queued");

    const listed: string[] = [];
    for await (const post of client.publishing.iterScheduledPosts({
      projectId: env.projectId,
      status: "queued",
      since: first.scheduledFor,
      until: first.scheduledFor,
      limit: 1,
    })) {
      listed.push(post.id);
    }
    assert.deepEqual(listed.sort(), [first.id, second.id].sort());

    const moved = await client.publishing.reschedule({
      id: first.id,
      scheduledFor: secondsFromNow(7200),
    });
    assert.equal(moved.status, "queued");
    assert.ok(moved.scheduledFor > first.scheduledFor);

    const canceled = await client.publishing.cancel({ id: first.id, reason: "changed our mind" });
    assert.equal(canceled.status, "canceled");
    assert.equal(canceled.recovered, undefined);
    assert.equal(typeof canceled.canceledAt, "string");
    // A second, separate cancel: its first attempt is told 409 "canceled", so it is the
    // ConflictError (only a retry after a lost answer turns that 409 into a recovered cancel).
    const again409 = await client.publishing.cancel({ id: first.id }).then(
      () => assert.fail("canceled twice"),
      (e: unknown) => e,
    );
    assert.ok(again409 instanceof ConflictError);
    assert.equal(again409.objectStatus, "canceled");
    await client.publishing.cancel({ id: second.id });
  });

  it("publishes now and cancels inside the 30 s window: 200, and the post never goes out", async () => {
    const client = layers();
    const container = await client.content.upload({
      projectId: env.projectId,
      caption: "oops",
      media: MEDIA,
    });
    const published = await client.publishing.publishNow({
      containerId: container.id,
      targets: [{ socialAccountId: env.tiktok }],
    });
    const [post] = published.items;
    assert.ok(post);
    assert.equal(post.status, "queued");
    const due = Date.parse(post.scheduledFor) - Date.parse(post.createdAt);
    assert.ok(due >= 29_000 && due <= 31_000, `due ${due} ms after its creation`);
    const canceled = await client.publishing.cancel({
      id: post.id,
      reason: "published by mistake",
    });
    assert.deepEqual([canceled.id, canceled.status], [post.id, "canceled"]);
    const read = await client.publishing.getScheduledPost({ id: post.id });
    assert.equal(read.status, "canceled");
    assert.equal(read.canceledAt, canceled.canceledAt);
  });

  it("cancels after publish: a 409 ConflictError saying published", async () => {
    const client = layers();
    const container = await client.content.upload({
      projectId: env.projectId,
      caption: "soon",
      media: MEDIA,
    });
    const scheduled = await client.publishing.schedule({
      containerId: container.id,
      scheduledFor: secondsFromNow(1),
      targets: [{ socialAccountId: env.tiktok }],
    });
    assert.ok(scheduled.gateStatus === "scheduled");
    const id = scheduled.items[0]?.id ?? assert.fail("no post");
    const done = await until("the post published", async () => {
      const post = await client.publishing.getScheduledPost({ id });
      return post.status === "published" ? post : undefined;
    });
    assert.ok(done.externalId);
    const err = await client.publishing.cancel({ id }, { requestId: "ts-client-late-cancel" }).then(
      () => assert.fail("canceled a published post"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConflictError, String(err));
    assert.equal(err.status, 409);
    assert.equal(err.code, "CONFLICT");
    assert.equal(err.objectStatus, "published");
    assert.equal(err.requestId, "ts-client-late-cancel");
  });

  it("runs the contract's cancel example unchanged", async () => {
    const client = layers();
    const container = await client.content.upload({
      projectId: env.projectId,
      caption: "legal",
      media: MEDIA,
    });
    await client.publishing.schedule({
      containerId: container.id,
      scheduledFor: secondsFromNow(3600),
      targets: [
        { socialAccountId: env.tiktok, scheduledPostId: "sp_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60" },
      ],
    });
    const example = fileURLToPath(new URL("../../examples/cancel.js", import.meta.url));
    const { stdout } = await promisify(execFile)(process.execPath, [example], {
      env: { ...process.env, LAYERS_API_KEY: env.apiKey, LAYERS_BASE_URL: env.baseUrl },
    });
    const result = JSON.parse(stdout);
    assert.equal(result.id, "sp_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60");
    assert.equal(result.status, "canceled");
  });

  it("throws each error as its class, with the request id", async () => {
    const client = layers();
    const missing = await client.publishing
      .getScheduledPost(
        { id: "sp_00000000-0000-4000-8000-000000000000" },
        { requestId: "ts-client-404" },
      )
      .then(
        () => assert.fail("found"),
        (e: unknown) => e,
      );
    assert.ok(missing instanceof NotFoundError);
    assert.equal(missing.requestId, "ts-client-404");

    const container = await client.content.upload({
      projectId: env.projectId,
      caption: "late",
      media: MEDIA,
    });
    const past = await client.publishing
      .schedule({
        containerId: container.id,
        scheduledFor: secondsFromNow(-3600),
        targets: [{ socialAccountId: env.tiktok }],
      })
      .then(
        () => assert.fail("scheduled in the past"),
        (e: unknown) => e,
      );
    assert.ok(past instanceof ValidationError);
    assert.deepEqual(
      past.issues.map((i) => i.path),
      ["scheduledFor"],
    );

    const stranger = new Layers({ apiKey: "lp_live_nokey_nosecret", baseUrl: env.baseUrl });
    await assert.rejects(stranger.content.get({ id: container.id }), UnauthenticatedError);

    const reader = layers({ apiKey: env.readOnlyKey });
    const denied = await reader.publishing
      .cancel({ id: "sp_00000000-0000-4000-8000-000000000000" })
      .then(
        () => assert.fail("canceled"),
        (e: unknown) => e,
      );
    assert.ok(denied instanceof ForbiddenScopeError);
    assert.equal(denied.requiredScope, "publish:write");
  });

  it("answers the health probes", async () => {
    const client = layers();
    assert.deepEqual(await client.health.live(), { status: "ok" });
    assert.deepEqual(await client.health.ready(), {
      status: "ok",
      checks: { database: "ok", redis: "ok" },
    });
  });
});
