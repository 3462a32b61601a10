/**
 * The wire shapes of the Layers publishing API v1, as docs/api.md describes them. Times are
 * ISO 8601 strings in UTC with a `Z`, to the second (`2026-04-18T19:22:41Z`).
 */

/** An ISO 8601 time. Times sent must carry an offset (`Z` or `±hh:mm`). */
export type IsoTime = string;

export type Platform = "tiktok" | "instagram";

/** A public post, or one delivered to the platform's drafts (TikTok only). */
export type PostMode = "publish" | "draft";

/** `queued` and `publishing` are live; the other four are terminal. */
export type PostStatus = "queued" | "publishing" | "published" | "draft" | "failed" | "canceled";

export type ContainerStatus = "pending_approval" | "completed" | "rejected";

export type ApprovalStatus = "pending" | "approved" | "rejected";

export type MediaType = "video" | "image";

export type SocialAccountStatus = "connected" | "reauth_required" | "disconnected";

export type ScheduleIntentStatus = "blocked" | "promoted" | "failed" | "rejected" | "canceled";

export type WebhookEndpointStatus = "enabled" | "disabled" | "auto_paused";

export type WebhookDeliveryStatus = "pending" | "succeeded" | "failed" | "abandoned";

/** What an endpoint may subscribe to. */
export type WebhookEventType =
  | "post.scheduled"
  | "post.published"
  | "post.failed"
  | "post.canceled"
  | "content.approved"
  | "content.rejected"
  | "social_account.connected"
  | "social_account.needs_reauth"
  | "social_account.revoked";

/** `lastError.code` of a failed post. */
export type PostErrorCode =
  | "PLATFORM_ERROR"
  | "PLATFORM_UNAVAILABLE"
  | "UPLOAD_OUTCOME_UNKNOWN"
  | "OPERATOR_SETTLED"
  | "ATTEMPTS_EXHAUSTED"
  | "PLATFORM_QUOTA_EXHAUSTED"
  | "ACCOUNT_REAUTH_REQUIRED"
  | "ACCOUNT_DISCONNECTED"
  | "CONTAINER_NOT_READY";

/** One page of a list; `nextCursor` is null on the last page. */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface PostError {
  code: PostErrorCode | (string & {});
  message: string;
  platformCode: string | null;
}

export interface ScheduledPost {
  id: string;
  containerId: string;
  socialAccountId: string;
  platform: Platform;
  mode: PostMode;
  status: PostStatus;
  scheduledFor: IsoTime;
  attemptedAt: IsoTime | null;
  publishedAt: IsoTime | null;
  canceledAt: IsoTime | null;
  externalId: string | null;
  externalUrl: string | null;
  lastError: PostError | null;
  createdAt: IsoTime;
  updatedAt: IsoTime;
}

export interface Media {
  url: string;
  type: MediaType;
}

/** A media item to upload; `type` is guessed from the URL's path when left out. */
export interface MediaInput {
  url: string;
  type?: MediaType;
}

export interface Approval {
  status: ApprovalStatus;
  decidedAt: IsoTime | null;
  /** True when the policy's `autoApproveAfter` approved it, not a caller. */
  auto: boolean;
  reason: string | null;
}

export interface ContentContainer {
  id: string;
  projectId: string;
  status: ContainerStatus;
  caption: string;
  media: Media[];
  /** Null for content its project's policy never held for approval. */
  approval: Approval | null;
  createdAt: IsoTime;
}

export interface ApprovalPolicy {
  requiresApproval: boolean;
  firstNPostsBlocked: number;
  /** An ISO 8601 duration (`PT2H`, `P1D`), or null. */
  autoApproveAfter: string | null;
}

export interface SocialAccount {
  id: string;
  projectId: string;
  platform: Platform;
  handle: string;
  status: SocialAccountStatus;
  statusReason: string | null;
  connectedAt: IsoTime;
  tokenExpiresAt: IsoTime | null;
  avatarUrl: string | null;
  createdAt: IsoTime;
}

/** One target of a schedule or a publish-now. */
export interface Target {
  socialAccountId: string;
  mode?: PostMode;
  /** `sp_<uuid>` of your choosing, unused in your organization. */
  scheduledPostId?: string;
  captionOverride?: string;
  firstCommentOverride?: string;
}

/** A target as a schedule intent keeps it. */
export interface IntentTarget {
  socialAccountId: string;
  mode: PostMode;
  scheduledPostId: string | null;
  captionOverride: string | null;
  firstCommentOverride: string | null;
}

/** A schedule of content awaiting approval, saved until the decision. */
export interface ScheduleIntent {
  id: string;
  containerId: string;
  status: ScheduleIntentStatus;
  scheduledFor: IsoTime;
  targets: IntentTarget[];
  /** The posts it became once approved (`promoted`). */
  scheduledPostIds: string[];
  /** Why an approved intent made no post (`failed`): the error the schedule would answer. */
  lastError: { code: string; message: string; details?: Record<string, unknown> } | null;
  createdAt: IsoTime;
  updatedAt: IsoTime;
}

/** 201 of a schedule or a publish-now: one `queued` post per target, in request order. */
export interface PostsScheduled {
  gateStatus: "scheduled";
  items: ScheduledPost[];
}

/** 202 of a schedule of content awaiting approval: the request saved as a blocked intent. */
export interface BlockedOnApproval {
  gateStatus: "blocked_on_approval";
  containerId: string;
  intent: ScheduleIntent;
}

/**
 * What a schedule answers: the posts, or the intent its content's approval will turn into
 * posts. Branch on `gateStatus`. (The wire's 201 body has no `gateStatus`; the client adds
 * `"scheduled"` so the union is discriminated.)
 */
export type ScheduleResult = PostsScheduled | BlockedOnApproval;

/**
 * The answer of a cancel that won: the post never reaches the platform.
 *
 * `recovered` is true when an earlier attempt of this call lost its answer (a timeout, a
 * dropped connection, a 503) and the retry was told `409 CONFLICT` with `details.status`
 * `"canceled"`: the post is canceled, most likely by this very call. That 409 carries no
 * time, so `canceledAt` is then null (`getScheduledPost` has it); it is null only then.
 */
export interface CanceledPost {
  id: string;
  status: "canceled";
  /** When the cancel won; null only when `recovered`. */
  canceledAt: IsoTime | null;
  /** True for a retry's 409 "canceled" after a lost answer; absent on a 200. */
  recovered?: boolean;
}

export interface RescheduledPost {
  id: string;
  status: "queued";
  scheduledFor: IsoTime;
  updatedAt: IsoTime;
}

export interface WebhookEndpoint {
  id: string;
  url: string;
  description: string | null;
  eventTypes: WebhookEventType[];
  status: WebhookEndpointStatus;
  consecutiveFailures: number;
  previousSecretExpiresAt: IsoTime | null;
  createdAt: IsoTime;
  updatedAt: IsoTime;
}

/** An endpoint as registration and rotation answer it: with its signing secret, shown once. */
export interface WebhookEndpointWithSecret extends WebhookEndpoint {
  secret: string;
}

export interface WebhookAttempt {
  number: number;
  startedAt: IsoTime;
  durationMs: number;
  statusCode: number | null;
  error: string | null;
}

export interface WebhookDelivery {
  id: string;
  endpointId: string;
  eventId: string;
  eventType: WebhookEventType | "test.ping";
  replayOf: string | null;
  status: WebhookDeliveryStatus;
  attempts: WebhookAttempt[];
  nextAttemptAt: IsoTime | null;
  deliveredAt: IsoTime | null;
  createdAt: IsoTime;
}

export interface Liveness {
  status: "ok";
}

export interface Readiness {
  status: "ok" | "unavailable";
  checks: { database: string; redis: string };
}

// --- webhook events -------------------------------------------------------------------------

/** `data` of a `post.*` event: the post as it is after the transition. */
export interface PostEventData {
  scheduledPostId: string;
  containerId: string;
  socialAccountId: string;
  platform: Platform;
  status: PostStatus;
  scheduledFor: IsoTime;
  externalId?: string;
  externalUrl?: string;
  lastError?: PostError;
  [more: string]: unknown;
}

/** `data` of a `content.*` event. */
export interface ContentEventData {
  containerId: string;
  projectId: string;
  status: ContainerStatus;
  decidedAt: IsoTime | null;
  auto: boolean;
  [more: string]: unknown;
}

/** `data` of a `social_account.*` event. */
export interface SocialAccountEventData {
  socialAccountId: string;
  platform: Platform;
  handle: string;
  status: SocialAccountStatus;
  tokenExpiresAt: IsoTime | null;
  [more: string]: unknown;
}

interface EventBase<T extends string, D> {
  /** `evt_…`; the same as the `X-Layers-Event-Id` header: dedupe on it. */
  id: string;
  type: T;
  createdAt: IsoTime;
  data: D;
  /** On a replayed delivery: the original event's id. */
  replayOf?: string;
}

export type PostEvent = EventBase<
  "post.scheduled" | "post.published" | "post.failed" | "post.canceled",
  PostEventData
>;
export type ContentEvent = EventBase<"content.approved" | "content.rejected", ContentEventData>;
export type SocialAccountEvent = EventBase<
  "social_account.connected" | "social_account.needs_reauth" | "social_account.revoked",
  SocialAccountEventData
>;
export type PingEvent = EventBase<"test.ping", { endpointId: string }>;

/** A verified webhook delivery's body; branch on `type`. */
export type WebhookEvent = PostEvent | ContentEvent | SocialAccountEvent | PingEvent;
