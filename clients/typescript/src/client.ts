/**
 * `new Layers({ apiKey, baseUrl })`: one resource per tag of the API, one method per
 * operation (src/operations.ts), each taking its parameters as one object and an optional
 * last `RequestOptions`.
 */

import { ConflictError, LayersError } from "./errors.js";
import type { OperationId } from "./operations.js";
import {
  type Answer,
  type Call,
  type LayersOptions,
  type Query,
  type RequestOptions,
  Transport,
} from "./transport.js";
import type {
  ApprovalPolicy,
  BlockedOnApproval,
  CanceledPost,
  ContentContainer,
  IsoTime,
  Liveness,
  MediaInput,
  Page,
  Platform,
  PostsScheduled,
  PostStatus,
  Readiness,
  RescheduledPost,
  ScheduledPost,
  ScheduleIntent,
  ScheduleResult,
  SocialAccount,
  SocialAccountStatus,
  Target,
  WebhookDelivery,
  WebhookEndpoint,
  WebhookEndpointWithSecret,
  WebhookEventType,
} from "./types.js";

/** A time to send: an ISO 8601 string with an offset, or a `Date`. */
export type TimeInput = IsoTime | Date;

export interface PageParams {
  cursor?: string;
  /** 1 to 100; the server's default is 50. */
  limit?: number;
}

/** A list's parameters without the cursor, for the `iter…` methods (they page for you). */
export type IterParams<P extends PageParams> = Omit<P, "cursor">;

function time(value: TimeInput): string;
function time(value: TimeInput | undefined): string | undefined;
function time(value: TimeInput | undefined): string | undefined {
  return value instanceof Date ? value.toISOString() : value;
}

/** Only the fields that were given (a JSON body never carries `undefined`). */
function given<T extends Record<string, unknown>>(fields: T): Partial<T> {
  return Object.fromEntries(
    Object.entries(fields).filter(([, value]) => value !== undefined),
  ) as Partial<T>;
}

/**
 * Every item of every page, fetching the next page only as the loop gets to it. A cursor
 * answered twice would loop for ever: it throws `LayersError` `INVALID_RESPONSE` instead.
 */
async function* paginate<T>(
  fetchPage: (cursor: string | undefined) => Promise<Page<T>>,
): AsyncGenerator<T, void, undefined> {
  const seen = new Set<string>();
  let cursor: string | undefined;
  do {
    const page = await fetchPage(cursor);
    yield* page.items;
    cursor = page.nextCursor ?? undefined;
    if (cursor !== undefined && seen.has(cursor)) {
      throw new LayersError({
        status: 200,
        code: "INVALID_RESPONSE",
        message: `The API answered the cursor ${cursor} again: the walk would never end`,
        requestId: "",
      });
    }
    if (cursor !== undefined) {
      seen.add(cursor);
    }
  } while (cursor !== undefined);
}

abstract class Resource {
  constructor(protected readonly transport: Transport) {}

  protected async call<T>(call: Call, options?: RequestOptions): Promise<T> {
    return (await this.transport.send<T>(call, options)).body;
  }

  protected list<T>(
    operation: OperationId,
    path: Record<string, string>,
    query: Query,
    options?: RequestOptions,
  ): Promise<Page<T>> {
    return this.call<Page<T>>({ operation, path, query }, options);
  }
}

// --- content ---------------------------------------------------------------------------------

export interface UploadParams {
  projectId: string;
  /** 1 to 2,200 characters. */
  caption: string;
  /** 1 to 10 `https://` references. */
  media: MediaInput[];
}

export interface SetApprovalPolicyParams {
  projectId: string;
  requiresApproval?: boolean;
  firstNPostsBlocked?: number;
  /** An ISO 8601 duration, `PT1S` to `P90D`, or null for none. */
  autoApproveAfter?: string | null;
}

export interface DecisionParams {
  /** The container's id. */
  id: string;
  /** Kept on the content and the event log; up to 1,024 characters. */
  reason?: string | null;
}

export class ContentResource extends Resource {
  /** Create a content container in a project. Idempotent by `idempotencyKey`. */
  upload(params: UploadParams, options?: RequestOptions): Promise<ContentContainer> {
    const { projectId, caption, media } = params;
    return this.call(
      { operation: "uploadContent", path: { projectId }, body: { caption, media } },
      options,
    );
  }

  /** One content container. */
  get(params: { id: string }, options?: RequestOptions): Promise<ContentContainer> {
    return this.call({ operation: "getContent", path: { containerId: params.id } }, options);
  }

  /** The project's approval policy. */
  getApprovalPolicy(
    params: { projectId: string },
    options?: RequestOptions,
  ): Promise<ApprovalPolicy> {
    return this.call(
      { operation: "getApprovalPolicy", path: { projectId: params.projectId } },
      options,
    );
  }

  /** Replace the project's approval policy; fields left out take their defaults (off). */
  setApprovalPolicy(
    params: SetApprovalPolicyParams,
    options?: RequestOptions,
  ): Promise<ApprovalPolicy> {
    const { projectId, requiresApproval, firstNPostsBlocked, autoApproveAfter } = params;
    return this.call(
      {
        operation: "setApprovalPolicy",
        path: { projectId },
        body: given({ requiresApproval, firstNPostsBlocked, autoApproveAfter }),
      },
      options,
    );
  }

  /** Approve content awaiting approval: its blocked intents become posts. */
  approve(params: DecisionParams, options?: RequestOptions): Promise<ContentContainer> {
    return this.decide("approveContent", params, options);
  }

  /** Reject content awaiting approval, for good. */
  reject(params: DecisionParams, options?: RequestOptions): Promise<ContentContainer> {
    return this.decide("rejectContent", params, options);
  }

  private decide(
    operation: "approveContent" | "rejectContent",
    params: DecisionParams,
    options?: RequestOptions,
  ): Promise<ContentContainer> {
    return this.call(
      { operation, path: { containerId: params.id }, body: given({ reason: params.reason }) },
      options,
    );
  }
}

// --- social accounts -------------------------------------------------------------------------

export interface ListAccountsParams extends PageParams {
  projectId: string;
  platform?: Platform;
  status?: SocialAccountStatus;
}

export class SocialResource extends Resource {
  /** One page of the project's social accounts, oldest first. */
  listAccounts(params: ListAccountsParams, options?: RequestOptions): Promise<Page<SocialAccount>> {
    const { projectId, platform, status, cursor, limit } = params;
    return this.list(
      "listSocialAccounts",
      { projectId },
      { platform, status, cursor, limit },
      options,
    );
  }

  /** Every social account of the project: `for await (const account of …)`. */
  iterAccounts(
    params: IterParams<ListAccountsParams>,
    options?: RequestOptions,
  ): AsyncGenerator<SocialAccount, void, undefined> {
    return paginate((cursor) => this.listAccounts({ ...params, cursor }, options));
  }
}

// --- publishing ------------------------------------------------------------------------------

export interface ScheduleParams {
  containerId: string;
  /** Rounded up to the whole second by the server. */
  scheduledFor: TimeInput;
  /** 1 to 50. */
  targets: Target[];
}

export interface PublishNowParams {
  containerId: string;
  targets: Target[];
}

export interface ListScheduledPostsParams extends PageParams {
  projectId: string;
  /** One status or several. */
  status?: PostStatus | readonly PostStatus[];
  socialAccountId?: string;
  /** `scheduledFor >= since`. */
  since?: TimeInput;
  /** `scheduledFor <= until`. */
  until?: TimeInput;
}

export interface ListScheduleIntentsParams extends PageParams {
  containerId: string;
}

export interface CancelParams {
  /** The scheduled post's (or intent's) id. */
  id: string;
  /** Stored on the audit log; up to 1,024 characters. */
  reason?: string | null;
}

type Scheduled = { items: ScheduledPost[] } | BlockedOnApproval;

function scheduleResult(body: Scheduled): ScheduleResult {
  return "gateStatus" in body ? body : { gateStatus: "scheduled", items: body.items };
}

export class PublishingResource extends Resource {
  /**
   * Queue the content for each target at `scheduledFor`, all targets or none. Content
   * awaiting approval answers `{ gateStatus: "blocked_on_approval", intent }` instead of
   * posts. Idempotent by `idempotencyKey`.
   */
  async schedule(params: ScheduleParams, options?: RequestOptions): Promise<ScheduleResult> {
    const { containerId, scheduledFor, targets } = params;
    const body = await this.call<Scheduled>(
      {
        operation: "scheduleContent",
        path: { containerId },
        body: { scheduledFor: time(scheduledFor), targets },
      },
      options,
    );
    return scheduleResult(body);
  }

  /** Publish now: each post due in 30 s, your window to cancel it. Idempotent by
   * `idempotencyKey`. Content awaiting approval is an `ApprovalRequiredError`. */
  async publishNow(params: PublishNowParams, options?: RequestOptions): Promise<PostsScheduled> {
    const { containerId, targets } = params;
    const body = await this.call<{ items: ScheduledPost[] }>(
      { operation: "publishContentNow", path: { containerId }, body: { targets } },
      options,
    );
    return { gateStatus: "scheduled", items: body.items };
  }

  /** One scheduled post; check its status before canceling. */
  getScheduledPost(params: { id: string }, options?: RequestOptions): Promise<ScheduledPost> {
    return this.call({ operation: "getScheduledPost", path: { id: params.id } }, options);
  }

  /** One page of the project's posts, newest `scheduledFor` first. */
  listScheduledPosts(
    params: ListScheduledPostsParams,
    options?: RequestOptions,
  ): Promise<Page<ScheduledPost>> {
    const { projectId, status, socialAccountId, since, until, cursor, limit } = params;
    const query = {
      status: typeof status === "string" ? [status] : status,
      socialAccountId,
      since: time(since),
      until: time(until),
      cursor,
      limit,
    };
    return this.list("listScheduledPosts", { projectId }, query, options);
  }

  /** Every post of the project that matches: `for await (const post of …)`. */
  iterScheduledPosts(
    params: IterParams<ListScheduledPostsParams>,
    options?: RequestOptions,
  ): AsyncGenerator<ScheduledPost, void, undefined> {
    return paginate((cursor) => this.listScheduledPosts({ ...params, cursor }, options));
  }

  /** Move a `queued` post to a new time, at least 30 s ahead. Idempotent by
   * `idempotencyKey`. */
  reschedule(
    params: { id: string; scheduledFor: TimeInput },
    options?: RequestOptions,
  ): Promise<RescheduledPost> {
    return this.call(
      {
        operation: "rescheduleScheduledPost",
        path: { id: params.id },
        body: { scheduledFor: time(params.scheduledFor) },
      },
      options,
    );
  }

  /**
   * Cancel a post that has not started publishing: a result means it never reaches the
   * platform. A `ConflictError` (409) when it is too late: `objectStatus` is `"publishing"`
   * (the upload started; it will complete) or the terminal status it has.
   *
   * Retried like any call. A retry that follows a lost answer (a timeout, a dropped
   * connection, a 503) and is told 409 `"canceled"` returns `{ recovered: true,
   * canceledAt: null }`: the post is canceled, which is what was asked. A 409 `"canceled"`
   * on the first attempt, or after only 429s or a refused connection, is thrown: someone
   * else canceled it (see the README, "Cancel and retries").
   */
  async cancel(params: CancelParams, options?: RequestOptions): Promise<CanceledPost> {
    const answer = await this.transport.send<unknown>(
      {
        operation: "cancelScheduledPost",
        path: { id: params.id },
        body: given({ reason: params.reason }),
        accept: [409],
      },
      options,
    );
    if (answer.error === undefined) {
      return answer.body as CanceledPost;
    }
    if (recoveredCancel(answer)) {
      return { id: params.id, status: "canceled", canceledAt: null, recovered: true };
    }
    throw answer.error;
  }

  /** One page of a container's schedule intents, oldest first. */
  listScheduleIntents(
    params: ListScheduleIntentsParams,
    options?: RequestOptions,
  ): Promise<Page<ScheduleIntent>> {
    const { containerId, cursor, limit } = params;
    return this.list("listScheduleIntents", { containerId }, { cursor, limit }, options);
  }

  /** Every schedule intent of a container. */
  iterScheduleIntents(
    params: IterParams<ListScheduleIntentsParams>,
    options?: RequestOptions,
  ): AsyncGenerator<ScheduleIntent, void, undefined> {
    return paginate((cursor) => this.listScheduleIntents({ ...params, cursor }, options));
  }

  /** One schedule intent. */
  getScheduleIntent(params: { id: string }, options?: RequestOptions): Promise<ScheduleIntent> {
    return this.call({ operation: "getScheduleIntent", path: { intentId: params.id } }, options);
  }

  /** Cancel a `blocked` intent. A `ConflictError` once it is not (`details.status`, and
   * `details.scheduledPostIds` once promoted: cancel those posts). A retry after a lost
   * answer that is told `"canceled"` reads the intent and returns it, as `cancel` does; if
   * that read fails, the `ConflictError` is thrown. */
  async cancelScheduleIntent(
    params: CancelParams,
    options?: RequestOptions,
  ): Promise<ScheduleIntent> {
    const answer = await this.transport.send<unknown>(
      {
        operation: "cancelScheduleIntent",
        path: { intentId: params.id },
        body: given({ reason: params.reason }),
        accept: [409],
      },
      options,
    );
    if (answer.error === undefined) {
      return answer.body as ScheduleIntent;
    }
    if (recoveredCancel(answer)) {
      // A read: the cancel's Idempotency-Key, if the caller gave one, is not for it.
      const { idempotencyKey: _, ...readOptions } = options ?? {};
      try {
        return await this.getScheduleIntent({ id: params.id }, readOptions);
      } catch {
        // The caller's abort is reported as such, as everywhere else.
        options?.signal?.throwIfAborted();
      }
    }
    throw answer.error;
  }
}

/** A 409 `"canceled"` answering the retry of a cancel whose earlier answer was lost. */
function recoveredCancel(answer: Answer<unknown>): boolean {
  return (
    answer.earlierAttemptUnknown &&
    answer.error instanceof ConflictError &&
    answer.error.objectStatus === "canceled"
  );
}

// --- webhooks --------------------------------------------------------------------------------

export interface CreateEndpointParams {
  url: string;
  eventTypes: WebhookEventType[];
  description?: string;
}

export interface UpdateEndpointParams {
  id: string;
  url?: string;
  eventTypes?: WebhookEventType[];
  description?: string;
  /** `"disabled"` holds deliveries; `"enabled"` sends every waiting one now. */
  status?: "enabled" | "disabled";
}

export interface ListDeliveriesParams extends PageParams {
  endpointId: string;
}

export class WebhooksResource extends Resource {
  /** Register an endpoint; the answer's `secret` is shown this once. Idempotent by
   * `idempotencyKey`. */
  createEndpoint(
    params: CreateEndpointParams,
    options?: RequestOptions,
  ): Promise<WebhookEndpointWithSecret> {
    const { url, eventTypes, description } = params;
    return this.call(
      { operation: "createWebhookEndpoint", body: given({ url, eventTypes, description }) },
      options,
    );
  }

  /** One page of the organization's endpoints, oldest first. */
  listEndpoints(params: PageParams = {}, options?: RequestOptions): Promise<Page<WebhookEndpoint>> {
    const { cursor, limit } = params;
    return this.list("listWebhookEndpoints", {}, { cursor, limit }, options);
  }

  /** Every endpoint of the organization. */
  iterEndpoints(
    params: IterParams<PageParams> = {},
    options?: RequestOptions,
  ): AsyncGenerator<WebhookEndpoint, void, undefined> {
    return paginate((cursor) => this.listEndpoints({ ...params, cursor }, options));
  }

  /** One endpoint. */
  getEndpoint(params: { id: string }, options?: RequestOptions): Promise<WebhookEndpoint> {
    return this.call({ operation: "getWebhookEndpoint", path: { endpointId: params.id } }, options);
  }

  /** Change the URL, event types, description or status; fields left out stay. */
  updateEndpoint(params: UpdateEndpointParams, options?: RequestOptions): Promise<WebhookEndpoint> {
    const { id, url, eventTypes, description, status } = params;
    return this.call(
      {
        operation: "updateWebhookEndpoint",
        path: { endpointId: id },
        body: given({ url, eventTypes, description, status }),
      },
      options,
    );
  }

  /** A new signing secret, shown this once; the previous one keeps signing for 24 h.
   * Not deduplicated by the server, so never repeated after an answer that may be lost. */
  rotateSecret(
    params: { id: string },
    options?: RequestOptions,
  ): Promise<WebhookEndpointWithSecret> {
    return this.call(
      { operation: "rotateWebhookEndpointSecret", path: { endpointId: params.id } },
      options,
    );
  }

  /** Send a signed `test.ping` to the endpoint now; its delivery. */
  ping(params: { id: string }, options?: RequestOptions): Promise<WebhookDelivery> {
    return this.call(
      { operation: "pingWebhookEndpoint", path: { endpointId: params.id } },
      options,
    );
  }

  /** One page of an endpoint's deliveries, newest first, each with its attempts. */
  listDeliveries(
    params: ListDeliveriesParams,
    options?: RequestOptions,
  ): Promise<Page<WebhookDelivery>> {
    const { endpointId, cursor, limit } = params;
    return this.list("listWebhookDeliveries", { endpointId }, { cursor, limit }, options);
  }

  /** Every delivery of an endpoint. */
  iterDeliveries(
    params: IterParams<ListDeliveriesParams>,
    options?: RequestOptions,
  ): AsyncGenerator<WebhookDelivery, void, undefined> {
    return paginate((cursor) => this.listDeliveries({ ...params, cursor }, options));
  }

  /** Send a delivery's event again, as a new event whose body carries `replayOf`. */
  replayDelivery(params: { id: string }, options?: RequestOptions): Promise<WebhookDelivery> {
    return this.call(
      { operation: "replayWebhookDelivery", path: { deliveryId: params.id } },
      options,
    );
  }
}

// --- health ----------------------------------------------------------------------------------

export class HealthResource extends Resource {
  /** `/healthz`: the API process is up. */
  live(options?: RequestOptions): Promise<Liveness> {
    return this.call({ operation: "getLiveness" }, options);
  }

  /** `/readyz`: whether the database and Redis answer. A 503 is an answer here
   * (`status: "unavailable"`, with the failed check), and a probe is never retried. */
  ready(options?: RequestOptions): Promise<Readiness> {
    return this.call({ operation: "getReadiness", accept: [503], maxRetries: 0 }, options);
  }
}

/** The client: `new Layers({ apiKey, baseUrl })`. */
export class Layers {
  readonly content: ContentResource;
  readonly social: SocialResource;
  readonly publishing: PublishingResource;
  readonly webhooks: WebhooksResource;
  readonly health: HealthResource;

  constructor(options: LayersOptions) {
    const transport = new Transport(options);
    this.content = new ContentResource(transport);
    this.social = new SocialResource(transport);
    this.publishing = new PublishingResource(transport);
    this.webhooks = new WebhooksResource(transport);
    this.health = new HealthResource(transport);
  }
}
