/**
 * Every `4xx`/`5xx` of the API is `{"error": {code, message, requestId, details}}`; each code
 * has its class here, all of them `LayersError`s. A failure to get any answer (after the
 * retries) is a `ConnectionError` instead.
 */

/** The error codes the API sends (docs/api.md, "The error envelope"). */
export type ErrorCode =
  | "UNAUTHENTICATED"
  | "FORBIDDEN_SCOPE"
  | "APPROVAL_REQUIRED"
  | "NOT_FOUND"
  | "METHOD_NOT_ALLOWED"
  | "REQUEST_TIMEOUT"
  | "CONFLICT"
  | "CONTENT_REJECTED"
  | "PLATFORM_ERROR"
  | "IDEMPOTENCY_CONFLICT"
  | "PAYLOAD_TOO_LARGE"
  | "VALIDATION"
  | "RATE_LIMITED"
  | "INTERNAL"
  | "UNAVAILABLE"
  | "HTTP_ERROR";

export interface ErrorInit {
  status: number;
  code: string;
  message: string;
  requestId: string;
  details?: Record<string, unknown>;
  headers?: Headers;
}

/** An answer of the API that is an error. Branch on the subclass, or on `code`. */
export class LayersError extends Error {
  /** The HTTP status. */
  readonly status: number;
  /** A stable string to branch on (`ErrorCode`, or whatever a newer server sends). */
  readonly code: ErrorCode | (string & {});
  /** The answer's `X-Request-Id`: quote it to support. */
  readonly requestId: string;
  /** Always an object; empty when there is nothing to add. */
  readonly details: Record<string, unknown>;
  /** The answer's headers. */
  readonly headers: Headers;

  constructor(init: ErrorInit) {
    super(init.message);
    this.name = new.target.name;
    this.status = init.status;
    this.code = init.code;
    this.requestId = init.requestId;
    this.details = init.details ?? {};
    this.headers = init.headers ?? new Headers();
  }
}

/** 401: missing, malformed, unknown or revoked key. */
export class UnauthenticatedError extends LayersError {}

/** 403: the key lacks the endpoint's scope (`details.requiredScope`). */
export class ForbiddenScopeError extends LayersError {
  get requiredScope(): string | undefined {
    return stringOf(this.details["requiredScope"]);
  }
}

/** 403: publish-now of content awaiting approval; nothing was saved. */
export class ApprovalRequiredError extends LayersError {}

/** 404: no such object in your organization (or a malformed id). */
export class NotFoundError extends LayersError {}

/** 405: the path exists, not with this method (`Allow` lists those it takes). */
export class MethodNotAllowedError extends LayersError {}

/** 408: the request body did not arrive in full in time. */
export class RequestTimeoutError extends LayersError {}

/**
 * 409 CONFLICT: the object's state forbids the change. `status` (`details.status`) is the
 * object's status: for a cancel, `"publishing"` means the upload started and the post will
 * complete; a terminal status means it already ended so. `"canceled"` means someone canceled
 * it first; a retry after a lost answer that is told so is a recovered cancel instead, not
 * this error (see the README, "Cancel and retries").
 */
export class ConflictError extends LayersError {
  /** `details.status`: the object's status when the change was refused. */
  get objectStatus(): string | undefined {
    return stringOf(this.details["status"]);
  }
}

/** 409: schedule or publish-now of content whose approval was refused. */
export class ContentRejectedError extends LayersError {}

/**
 * 409: publish-now to an account whose token the platform refuses (`reauth_required`);
 * nothing was saved. Reconnect the account; `platformCode` is the platform's own code.
 */
export class PlatformError extends LayersError {
  get platformCode(): string | undefined {
    return stringOf(this.details["platformCode"]);
  }
  get socialAccountId(): string | undefined {
    return stringOf(this.details["socialAccountId"]);
  }
}

/** 409: an `Idempotency-Key` reused with another request (`details.idempotencyKey`). */
export class IdempotencyConflictError extends LayersError {}

/** 413: the body is over the server's cap (`details.maxBytes`). */
export class PayloadTooLargeError extends LayersError {}

export interface ValidationIssue {
  path: string;
  message: string;
}

/** 422: bad input; `issues` names each one in wire terms (`targets[0].socialAccountId`). */
export class ValidationError extends LayersError {
  get issues(): ValidationIssue[] {
    const issues = this.details["issues"];
    return Array.isArray(issues) ? (issues as ValidationIssue[]) : [];
  }
}

/** Seconds of a `Retry-After` header (delta-seconds or an HTTP date), if it has one. */
export function retryAfterSeconds(headers: Headers, now: number = Date.now()): number | undefined {
  const value = headers.get("retry-after");
  if (value === null || value.trim() === "") {
    return undefined;
  }
  if (/^\d+$/.test(value.trim())) {
    return Number(value.trim());
  }
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

/**
 * 429: over the key's limit of the endpoint's class (`window: "minute"`) or the
 * organization's daily write cap (`window: "day"`). Retried by the client when
 * `Retry-After` is within its cap; thrown when the retries are spent or the wait is longer.
 */
export class RateLimitedError extends LayersError {
  /** `Retry-After`, in seconds. */
  get retryAfter(): number | undefined {
    return retryAfterSeconds(this.headers);
  }
  get limit(): number | undefined {
    const limit = this.details["limit"];
    return typeof limit === "number" ? limit : undefined;
  }
  get limitClass(): string | undefined {
    return stringOf(this.details["class"]);
  }
  get window(): "minute" | "day" | undefined {
    const window = this.details["window"];
    return window === "minute" || window === "day" ? window : undefined;
  }
}

/** 500: a bug on the server's side. */
export class InternalError extends LayersError {}

/** 503: a dependency of the server is down; retried by the client. */
export class UnavailableError extends LayersError {
  get retryAfter(): number | undefined {
    return retryAfterSeconds(this.headers);
  }
}

const CLASSES: Record<string, typeof LayersError> = {
  UNAUTHENTICATED: UnauthenticatedError,
  FORBIDDEN_SCOPE: ForbiddenScopeError,
  APPROVAL_REQUIRED: ApprovalRequiredError,
  NOT_FOUND: NotFoundError,
  METHOD_NOT_ALLOWED: MethodNotAllowedError,
  REQUEST_TIMEOUT: RequestTimeoutError,
  CONFLICT: ConflictError,
  CONTENT_REJECTED: ContentRejectedError,
  PLATFORM_ERROR: PlatformError,
  IDEMPOTENCY_CONFLICT: IdempotencyConflictError,
  PAYLOAD_TOO_LARGE: PayloadTooLargeError,
  VALIDATION: ValidationError,
  RATE_LIMITED: RateLimitedError,
  INTERNAL: InternalError,
  UNAVAILABLE: UnavailableError,
};

/** An answer's status, headers and text as the error of its code. A body that is not the
 * envelope (a proxy's page, the server's plain-text 400) is an `HTTP_ERROR`. */
export function errorFromResponse(status: number, headers: Headers, text: string): LayersError {
  let envelope: unknown;
  try {
    envelope = JSON.parse(text);
  } catch {
    envelope = undefined;
  }
  const error = isObject(envelope) ? envelope["error"] : undefined;
  const requestIdHeader = headers.get("x-request-id") ?? "";
  if (isObject(error) && typeof error["code"] === "string") {
    const code = error["code"];
    const Class = CLASSES[code] ?? LayersError;
    return new Class({
      status,
      code,
      message: typeof error["message"] === "string" ? error["message"] : `HTTP ${status}`,
      requestId: typeof error["requestId"] === "string" ? error["requestId"] : requestIdHeader,
      details: isObject(error["details"]) ? error["details"] : {},
      headers,
    });
  }
  return new LayersError({
    status,
    code: "HTTP_ERROR",
    message: text.trim().slice(0, 200) || `HTTP ${status}`,
    requestId: requestIdHeader,
    headers,
  });
}

/**
 * No answer at all: the connection failed or the attempt timed out, on every attempt the
 * client made (or on the one attempt it could not safely repeat). `cause` is the last
 * failure; `timedOut` says whether it was the client's timeout.
 */
export class ConnectionError extends Error {
  readonly timedOut: boolean;
  readonly attempts: number;

  constructor(message: string, options: { cause: unknown; timedOut: boolean; attempts: number }) {
    super(message, { cause: options.cause });
    this.name = "ConnectionError";
    this.timedOut = options.timedOut;
    this.attempts = options.attempts;
  }
}

/** A webhook delivery that must not be trusted: see `verifyWebhook`. */
export class WebhookSignatureError extends Error {
  readonly reason: "malformed" | "stale" | "mismatch" | "body";

  constructor(reason: WebhookSignatureError["reason"], message: string) {
    super(message);
    this.name = "WebhookSignatureError";
    this.reason = reason;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function stringOf(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}
