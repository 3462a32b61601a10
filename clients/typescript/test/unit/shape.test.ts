/** Every method sends its operation's method, path and body, and answers its shape. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { Layers, OPERATIONS, VERSION, type OperationId } from "../../src/index.js";
import { fake, POST, type Sent } from "./fake.js";

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

/** What one call sent. */
async function sentBy(call: (layers: Layers) => Promise<unknown>, status = 200): Promise<Sent> {
  const { layers, sent } = fake([{ status, body: { items: [], nextCursor: null } }]);
  await call(layers);
  assert.equal(sent.length, 1);
  return sent[0] as Sent;
}

describe("call shapes", () => {
  const cases: [OperationId, (layers: Layers) => Promise<unknown>, unknown][] = [
    [
      "uploadContent",
      (l) =>
        l.content.upload({ projectId: "prj_1", caption: "c", media: [{ url: "https://x/a.mp4" }] }),
      { caption: "c", media: [{ url: "https://x/a.mp4" }] },
    ],
    ["getContent", (l) => l.content.get({ id: "cnt_1" }), undefined],
    ["getApprovalPolicy", (l) => l.content.getApprovalPolicy({ projectId: "prj_1" }), undefined],
    [
      "setApprovalPolicy",
      (l) =>
        l.content.setApprovalPolicy({
          projectId: "prj_1",
          requiresApproval: true,
          autoApproveAfter: null,
        }),
      { requiresApproval: true, autoApproveAfter: null },
    ],
    ["approveContent", (l) => l.content.approve({ id: "cnt_1", reason: "ok" }), { reason: "ok" }],
    ["rejectContent", (l) => l.content.reject({ id: "cnt_1" }), {}],
    ["listSocialAccounts", (l) => l.social.listAccounts({ projectId: "prj_1" }), undefined],
    [
      "scheduleContent",
      (l) =>
        l.publishing.schedule({
          containerId: "cnt_1",
          scheduledFor: new Date("2031-06-01T09:00:00Z"),
          targets: [{ socialAccountId: "sa_1", mode: "draft" }],
        }),
      {
        scheduledFor: "2031-06-01T09:00:00.000Z",
        targets: [{ socialAccountId: "sa_1", mode: "draft" }],
      },
    ],
    [
      "publishContentNow",
      (l) =>
        l.publishing.publishNow({ containerId: "cnt_1", targets: [{ socialAccountId: "sa_1" }] }),
      { targets: [{ socialAccountId: "sa_1" }] },
    ],
    ["getScheduledPost", (l) => l.publishing.getScheduledPost({ id: "sp_1" }), undefined],
    [
      "listScheduledPosts",
      (l) => l.publishing.listScheduledPosts({ projectId: "prj_1" }),
      undefined,
    ],
    [
      "rescheduleScheduledPost",
      (l) => l.publishing.reschedule({ id: "sp_1", scheduledFor: "2031-06-01T10:00:00+02:00" }),
      { scheduledFor: "2031-06-01T10:00:00+02:00" },
    ],
    [
      "cancelScheduledPost",
      (l) => l.publishing.cancel({ id: "sp_1", reason: "r" }),
      { reason: "r" },
    ],
    [
      "listScheduleIntents",
      (l) => l.publishing.listScheduleIntents({ containerId: "cnt_1" }),
      undefined,
    ],
    ["getScheduleIntent", (l) => l.publishing.getScheduleIntent({ id: "si_1" }), undefined],
    ["cancelScheduleIntent", (l) => l.publishing.cancelScheduleIntent({ id: "si_1" }), {}],
    [
      "createWebhookEndpoint",
      (l) => l.webhooks.createEndpoint({ url: "https://h/x", eventTypes: ["post.failed"] }),
      { url: "https://h/x", eventTypes: ["post.failed"] },
    ],
    ["listWebhookEndpoints", (l) => l.webhooks.listEndpoints(), undefined],
    ["getWebhookEndpoint", (l) => l.webhooks.getEndpoint({ id: "we_1" }), undefined],
    [
      "updateWebhookEndpoint",
      (l) => l.webhooks.updateEndpoint({ id: "we_1", description: "d", status: "enabled" }),
      { description: "d", status: "enabled" },
    ],
    ["rotateWebhookEndpointSecret", (l) => l.webhooks.rotateSecret({ id: "we_1" }), undefined],
    ["pingWebhookEndpoint", (l) => l.webhooks.ping({ id: "we_1" }), undefined],
    ["listWebhookDeliveries", (l) => l.webhooks.listDeliveries({ endpointId: "we_1" }), undefined],
    ["replayWebhookDelivery", (l) => l.webhooks.replayDelivery({ id: "wd_1" }), undefined],
    ["getLiveness", (l) => l.health.live(), undefined],
    ["getReadiness", (l) => l.health.ready(), undefined],
  ];

  it("covers every operation", () => {
    assert.deepEqual(cases.map(([id]) => id).sort(), Object.keys(OPERATIONS).sort());
  });

  for (const [id, call, body] of cases) {
    it(`${id}: ${OPERATIONS[id].method} ${OPERATIONS[id].path}`, async () => {
      const sent = await sentBy(call);
      const op = OPERATIONS[id];
      assert.equal(sent.method, op.method);
      const pattern = new RegExp(`^${op.path.replace(/\{\w+\}/g, "[a-z]+_1")}$`);
      assert.match(sent.url.pathname, pattern);
      assert.deepEqual(sent.body, body);
    });
  }

  it("names a method of the client for each operation", () => {
    const layers = new Layers({ apiKey: "lp_test_k_s" });
    for (const [id, op] of Object.entries(OPERATIONS)) {
      const resource = layers[op.resource] as unknown as Record<string, unknown>;
      assert.equal(typeof resource[op.call], "function", `${id}: ${op.resource}.${op.call}`);
    }
  });

  it("escapes ids in paths and wants them given", async () => {
    const sent = await sentBy((l) => l.publishing.getScheduledPost({ id: "sp_1/../x?y" }));
    assert.equal(sent.url.pathname, "/v1/scheduled-posts/sp_1%2F..%2Fx%3Fy");
    const { layers } = fake([{ status: 200, body: {} }]);
    await assert.rejects(layers.publishing.getScheduledPost({ id: "" }), TypeError);
  });
});

describe("answers", () => {
  it("tells posts from a schedule blocked on approval by gateStatus", async () => {
    const { layers } = fake([
      { status: 201, body: { items: [POST] } },
      {
        status: 202,
        body: { gateStatus: "blocked_on_approval", containerId: "cnt_1", intent: INTENT },
      },
    ]);
    const params = {
      containerId: "cnt_1",
      scheduledFor: "2031-06-01T09:00:00Z",
      targets: [{ socialAccountId: "sa_1" }],
    };
    const posted = await layers.publishing.schedule(params);
    assert.equal(posted.gateStatus, "scheduled");
    assert.equal(posted.gateStatus === "scheduled" && posted.items[0]?.id, POST.id);
    const blocked = await layers.publishing.schedule(params);
    assert.equal(blocked.gateStatus, "blocked_on_approval");
    assert.equal(blocked.gateStatus === "blocked_on_approval" && blocked.intent.id, "si_1");
  });

  it("answers publish-now's posts", async () => {
    const { layers } = fake([{ status: 201, body: { items: [POST] } }]);
    const result = await layers.publishing.publishNow({
      containerId: "cnt_1",
      targets: [{ socialAccountId: "sa_1" }],
    });
    assert.deepEqual(result, { gateStatus: "scheduled", items: [POST] });
  });

  it("runs the contract's cancel example as written", async () => {
    const canceled = { id: POST.id, status: "canceled", canceledAt: "2026-04-18T19:22:41Z" };
    const { layers, sent } = fake([{ status: 200, body: canceled }]);
    // docs/api.md, "Cancel a scheduled post", the TypeScript example:
    const result = await layers.publishing.cancel({
      id: "sp_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60",
      reason: "Brand asked us to hold - legal review pending.",
    });
    assert.deepEqual(result, canceled);
    assert.equal(
      sent[0]?.url.pathname,
      "/v1/scheduled-posts/sp_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60",
    );
    assert.deepEqual(sent[0]?.body, { reason: "Brand asked us to hold - legal review pending." });
  });
});

describe("package", () => {
  it("reports package.json's version in its User-Agent", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8"));
    assert.equal(VERSION, pkg.version);
  });
});
