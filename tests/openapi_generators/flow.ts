// A short flow on the running API through openapi-fetch, typed by what openapi-typescript
// generated from the served document (schema.ts, written beside this file by the test):
// upload, schedule, read, list, cancel without a body, and a typed error answer. tsc checks
// it in strict mode first, so every call, body and answer below is as the document says.
// It prints one JSON line of what it saw; tests/test_openapi_generators.py reads it.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Schemas = components["schemas"];

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function check(condition: unknown, what: string): asserts condition {
  if (!condition) throw new Error(`failed: ${what}`);
}

const projectId = env("PROJECT_ID");
const socialAccountId = env("SOCIAL_ACCOUNT_ID");
const api = createClient<paths>({
  baseUrl: env("API_URL"),
  headers: { Authorization: `Bearer ${env("API_KEY")}` },
});

const uploaded = await api.POST("/v1/projects/{projectId}/content/upload", {
  params: { path: { projectId }, header: { "Idempotency-Key": `ts-${Date.now()}` } },
  body: { caption: "From the generated TypeScript types", media: [{ url: "https://cdn.example.com/clip.mp4" }] },
});
check(uploaded.data, `upload answered ${uploaded.response.status}`);
const container: Schemas["ContainerOut"] = uploaded.data;
check(container.status === "completed", "the container is ready");

const scheduledFor = new Date(Date.now() + 3_600_000).toISOString();
const scheduled = await api.POST("/v1/content/{containerId}/schedule", {
  params: { path: { containerId: container.id } },
  body: { scheduledFor, targets: [{ socialAccountId }] },
});
check(scheduled.response.status === 201, `schedule answered ${scheduled.response.status}`);
check(scheduled.data && "items" in scheduled.data, "schedule made posts, not an intent");
const first = scheduled.data.items[0];
check(first, "one post per target");
const post: Schemas["ScheduledPostOut"] = first;
const status: Schemas["PostStatus"] = post.status;
check(status === "queued", "the post is queued");

const read = await api.GET("/v1/scheduled-posts/{id}", { params: { path: { id: post.id } } });
check(read.data, `get answered ${read.response.status}`);
check(read.data.scheduledFor === post.scheduledFor, "the post reads back");
check(read.response.headers.get("x-request-id"), "every answer has its request id");

const listed = await api.GET("/v1/projects/{projectId}/scheduled-posts", {
  params: { path: { projectId }, query: { status: ["queued", "publishing"], limit: 10 } },
});
check(listed.data, `list answered ${listed.response.status}`);
const ids = listed.data.items.map((p) => p.id);
check(ids.includes(post.id), "the list holds the post");

// No body at all: the optional body stays unsent.
const canceled = await api.DELETE("/v1/scheduled-posts/{id}", { params: { path: { id: post.id } } });
check(canceled.data, `cancel answered ${canceled.response.status}`);
check(canceled.data.status === "canceled", "the post is canceled");

// A second cancel: 409 CONFLICT, its details typed by its code.
const again = await api.DELETE("/v1/scheduled-posts/{id}", {
  params: { path: { id: post.id } },
  body: { reason: "once more" },
});
check(again.error, `the second cancel answered ${again.response.status}`);
const error = again.error.error;
check(error.code === "CONFLICT", `code ${error.code}`);
const details: Schemas["ConflictDetails"] = error.details;

const missing = await api.GET("/v1/scheduled-posts/{id}", {
  params: { path: { id: "sp_00000000-0000-4000-8000-000000000000" } },
});
check(missing.error?.error.code === "NOT_FOUND", "an unknown post is NOT_FOUND");

console.log(
  JSON.stringify({
    container: container.id,
    post: post.id,
    listed: ids.length,
    canceledAt: canceled.data.canceledAt,
    conflict: { status: again.response.status, code: error.code, detailsStatus: details.status, requestId: error.requestId },
  }),
);
