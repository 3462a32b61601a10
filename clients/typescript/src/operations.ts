/**
 * Every operation of the API by its OpenAPI `operationId`: its method and path, and the
 * client method that calls it (`layers[resource][method]`). The one table of the mapping:
 * the transport reads method and path here, and a test checks it against the served
 * /openapi.json, both ways.
 */

export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

export interface Operation {
  method: HttpMethod;
  path: string;
  resource: "content" | "social" | "publishing" | "webhooks" | "health";
  call: string;
  /** Whether the server deduplicates it by `Idempotency-Key` (POSTs only). */
  deduplicated: boolean;
  /** Whether it needs the API key (health and readiness do not). */
  auth: boolean;
}

function op(
  method: HttpMethod,
  path: string,
  resource: Operation["resource"],
  call: string,
  flags: { deduplicated?: boolean; auth?: boolean } = {},
): Operation {
  return {
    method,
    path,
    resource,
    call,
    deduplicated: flags.deduplicated ?? false,
    auth: flags.auth ?? true,
  };
}

const DEDUP = { deduplicated: true };

export const OPERATIONS = {
  uploadContent: op("POST", "/v1/projects/{projectId}/content/upload", "content", "upload", DEDUP),
  getContent: op("GET", "/v1/content/{containerId}", "content", "get"),
  getApprovalPolicy: op(
    "GET",
    "/v1/projects/{projectId}/approval-policy",
    "content",
    "getApprovalPolicy",
  ),
  setApprovalPolicy: op(
    "PUT",
    "/v1/projects/{projectId}/approval-policy",
    "content",
    "setApprovalPolicy",
  ),
  approveContent: op("POST", "/v1/content/{containerId}/approve", "content", "approve", DEDUP),
  rejectContent: op("POST", "/v1/content/{containerId}/reject", "content", "reject", DEDUP),
  listSocialAccounts: op(
    "GET",
    "/v1/projects/{projectId}/social-accounts",
    "social",
    "listAccounts",
  ),
  scheduleContent: op(
    "POST",
    "/v1/content/{containerId}/schedule",
    "publishing",
    "schedule",
    DEDUP,
  ),
  publishContentNow: op(
    "POST",
    "/v1/content/{containerId}/publish",
    "publishing",
    "publishNow",
    DEDUP,
  ),
  getScheduledPost: op("GET", "/v1/scheduled-posts/{id}", "publishing", "getScheduledPost"),
  listScheduledPosts: op(
    "GET",
    "/v1/projects/{projectId}/scheduled-posts",
    "publishing",
    "listScheduledPosts",
  ),
  rescheduleScheduledPost: op(
    "POST",
    "/v1/scheduled-posts/{id}/reschedule",
    "publishing",
    "reschedule",
    DEDUP,
  ),
  cancelScheduledPost: op("DELETE", "/v1/scheduled-posts/{id}", "publishing", "cancel"),
  listScheduleIntents: op(
    "GET",
    "/v1/content/{containerId}/schedule-intents",
    "publishing",
    "listScheduleIntents",
  ),
  getScheduleIntent: op(
    "GET",
    "/v1/schedule-intents/{intentId}",
    "publishing",
    "getScheduleIntent",
  ),
  cancelScheduleIntent: op(
    "DELETE",
    "/v1/schedule-intents/{intentId}",
    "publishing",
    "cancelScheduleIntent",
  ),
  createWebhookEndpoint: op("POST", "/v1/webhook-endpoints", "webhooks", "createEndpoint", DEDUP),
  listWebhookEndpoints: op("GET", "/v1/webhook-endpoints", "webhooks", "listEndpoints"),
  getWebhookEndpoint: op("GET", "/v1/webhook-endpoints/{endpointId}", "webhooks", "getEndpoint"),
  updateWebhookEndpoint: op(
    "PATCH",
    "/v1/webhook-endpoints/{endpointId}",
    "webhooks",
    "updateEndpoint",
  ),
  rotateWebhookEndpointSecret: op(
    "POST",
    "/v1/webhook-endpoints/{endpointId}/rotate-secret",
    "webhooks",
    "rotateSecret",
  ),
  pingWebhookEndpoint: op("POST", "/v1/webhook-endpoints/{endpointId}/ping", "webhooks", "ping"),
  listWebhookDeliveries: op(
    "GET",
    "/v1/webhook-endpoints/{endpointId}/deliveries",
    "webhooks",
    "listDeliveries",
  ),
  replayWebhookDelivery: op(
    "POST",
    "/v1/webhook-deliveries/{deliveryId}/replay",
    "webhooks",
    "replayDelivery",
  ),
  getLiveness: op("GET", "/healthz", "health", "live", { auth: false }),
  getReadiness: op("GET", "/readyz", "health", "ready", { auth: false }),
} as const satisfies Record<string, Operation>;

export type OperationId = keyof typeof OPERATIONS;
