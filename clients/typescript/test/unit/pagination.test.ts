/** Lists page by cursor; the iterators walk every page, keeping the filters. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { LayersError, type ScheduledPost } from "../../src/index.js";
import { fake, POST, type Sent } from "./fake.js";

function pages(sent: Sent): { status: number; body: unknown } {
  const cursor = sent.url.searchParams.get("cursor");
  const next: Record<string, string | null> = { "": "c1", c1: "c2", c2: null };
  const page = cursor ?? "";
  return {
    status: 200,
    body: {
      items: [`${page}a`, `${page}b`].map((id) => ({ ...POST, id })),
      nextCursor: next[page] ?? null,
    },
  };
}

describe("pagination", () => {
  it("iterates every item of every page, with the same filters on each", async () => {
    const { layers, sent } = fake([pages]);
    const seen: string[] = [];
    for await (const post of layers.publishing.iterScheduledPosts({
      projectId: "prj_1",
      status: ["queued", "failed"],
      socialAccountId: "sa_1",
      since: new Date("2031-01-01T00:00:00Z"),
      until: "2031-12-31T00:00:00Z",
      limit: 2,
    })) {
      seen.push(post.id);
    }
    assert.deepEqual(seen, ["a", "b", "c1a", "c1b", "c2a", "c2b"]);
    assert.deepEqual(
      sent.map((s) => s.url.searchParams.get("cursor")),
      [null, "c1", "c2"],
    );
    for (const s of sent) {
      assert.equal(s.url.pathname, "/v1/projects/prj_1/scheduled-posts");
      assert.deepEqual(s.url.searchParams.getAll("status"), ["queued", "failed"]);
      assert.equal(s.url.searchParams.get("socialAccountId"), "sa_1");
      assert.equal(s.url.searchParams.get("since"), "2031-01-01T00:00:00.000Z");
      assert.equal(s.url.searchParams.get("until"), "2031-12-31T00:00:00Z");
      assert.equal(s.url.searchParams.get("limit"), "2");
    }
  });

  it("fetches a page only when the loop reaches it", async () => {
    const { layers, sent } = fake([pages]);
    const first: ScheduledPost[] = [];
    for await (const post of layers.publishing.iterScheduledPosts({ projectId: "prj_1" })) {
      first.push(post);
      if (first.length === 2) {
        break;
      }
    }
    assert.equal(sent.length, 1);
  });

  it("stops with an error when the API answers a cursor it answered before", async () => {
    // c1 -> c2 -> c1: a loop, never the same cursor twice in a row.
    const loop: Record<string, string> = { "": "c1", c1: "c2", c2: "c1" };
    const { layers, sent } = fake([
      (s: Sent) => {
        const page = s.url.searchParams.get("cursor") ?? "";
        return { status: 200, body: { items: [{ ...POST, id: page }], nextCursor: loop[page] } };
      },
    ]);
    const seen: string[] = [];
    await assert.rejects(
      async () => {
        for await (const post of layers.publishing.iterScheduledPosts({ projectId: "prj_1" })) {
          seen.push(post.id);
        }
      },
      (e: unknown) => e instanceof LayersError && e.code === "INVALID_RESPONSE",
    );
    assert.deepEqual(seen, ["", "c1", "c2"]);
    assert.equal(sent.length, 3);
  });

  it("answers one page, with its cursor, from the list methods", async () => {
    const { layers, sent } = fake([pages]);
    const page = await layers.social.listAccounts({
      projectId: "prj_1",
      platform: "tiktok",
      status: "reauth_required",
      cursor: "c2",
    });
    assert.equal(page.nextCursor, null);
    assert.equal(page.items.length, 2);
    assert.equal(sent[0]?.url.search, "?platform=tiktok&status=reauth_required&cursor=c2");
  });

  it("pages every list of the API", async () => {
    const { layers, sent } = fake([pages]);
    const count = async <T>(items: AsyncIterable<T>): Promise<number> => {
      let n = 0;
      for await (const _ of items) {
        n++;
      }
      return n;
    };
    assert.equal(await count(layers.social.iterAccounts({ projectId: "prj_1" })), 6);
    assert.equal(await count(layers.publishing.iterScheduleIntents({ containerId: "cnt_1" })), 6);
    assert.equal(await count(layers.webhooks.iterEndpoints()), 6);
    assert.equal(await count(layers.webhooks.iterDeliveries({ endpointId: "we_1" })), 6);
    assert.deepEqual(
      [...new Set(sent.map((s) => s.url.pathname))],
      [
        "/v1/projects/prj_1/social-accounts",
        "/v1/content/cnt_1/schedule-intents",
        "/v1/webhook-endpoints",
        "/v1/webhook-endpoints/we_1/deliveries",
      ],
    );
  });
});
