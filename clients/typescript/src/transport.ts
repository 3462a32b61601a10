/**
 * One HTTP call of the API, done carefully: the key, a `User-Agent`, an `Idempotency-Key` on
 * every POST (kept across that call's retries), a timeout per attempt, and retries with
 * exponential backoff and full jitter where a retry is safe. See the README, "Retries and
 * idempotency", for the rules.
 */

import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";

import { ConnectionError, errorFromResponse, LayersError, retryAfterSeconds } from "./errors.js";
import { OPERATIONS, type OperationId } from "./operations.js";
import { VERSION } from "./version.js";

/** The part of `fetch` the client uses; Node's global one by default. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

/** Waits `ms`; rejects with the signal's reason if it aborts first. */
export type SleepLike = (ms: number, signal?: AbortSignal) => Promise<void>;

export interface LayersOptions {
  /** `lp_<env>_<keyId>_<secret>`. */
  apiKey: string;
  /** Where the API is, e.g. `http://127.0.0.1:8000`. */
  baseUrl?: string;
  /** Retries after the first attempt, for the failures worth retrying. Default 3. */
  maxRetries?: number;
  /** Each attempt's time limit, answer body included; 0 for none. Default 30 000 ms. */
  timeoutMs?: number;
  /** The first retry's backoff ceiling; it doubles with each retry. Default 500 ms. */
  retryBaseDelayMs?: number;
  /** The longest wait before a retry. A `Retry-After` longer than this is not waited
   * for: the error is thrown at once (a daily cap, say). Default 30 000 ms. */
  maxRetryDelayMs?: number;
  /** A `fetch` of your own (a proxy agent, a test double). */
  fetch?: FetchLike;
  /** How to wait between attempts (tests pass one that does not). */
  sleep?: SleepLike;
  /** A number in [0, 1) for the jitter. Default `Math.random`. */
  random?: () => number;
}

/** The last, optional argument of every method. */
export interface RequestOptions {
  /** For the POSTs the server deduplicates; generated (a UUID) when not given, and the
   * same on every retry of the call. */
  idempotencyKey?: string;
  /** Sent as `X-Request-Id` (1 to 200 of `A-Z a-z 0-9 . _ : -`); the server echoes it
   * and logs every line of the request under it. */
  requestId?: string;
  /** Aborts the call, retries and waits included. */
  signal?: AbortSignal;
  /** This call's per-attempt time limit. */
  timeoutMs?: number;
  /** This call's retries. */
  maxRetries?: number;
}

export const USER_AGENT = `layers-client-typescript/${VERSION}`;

const DEFAULT_BASE_URL = "https://api.layers.com";
// Connection failures where the request cannot have reached the server.
const NEVER_SENT = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ENETUNREACH"]);

export type Query = Record<string, string | number | readonly string[] | null | undefined>;

export interface Call {
  operation: OperationId;
  /** Values of the path's `{name}` parameters. */
  path?: Record<string, string>;
  query?: Query;
  /** A JSON body; `undefined` sends none. */
  body?: unknown;
  /** Statuses that are answers, not errors, besides the 2xx (readiness's 503, a cancel's
   * 409). */
  accept?: readonly number[];
  /** Override of the retries (readiness is never retried). */
  maxRetries?: number;
}

export interface Answer<T> {
  status: number;
  headers: Headers;
  body: T;
  /** For a status outside the 2xx that the call accepts: the error that answer is. */
  error?: LayersError;
  /** An earlier attempt of this call may have reached the server, and done its work,
   * without its answer arriving: it timed out or lost its connection after the request
   * started, or it was answered 503. A 429 did nothing, nor did a refused connection. This
   * tells a retried cancel's 409 "canceled" (most likely its own earlier attempt's work)
   * from a cancel that someone else made first. */
  earlierAttemptUnknown: boolean;
}

export class Transport {
  readonly baseUrl: string;
  private readonly apiKey: string;
  private readonly maxRetries: number;
  private readonly timeoutMs: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly fetch: FetchLike;
  private readonly sleep: SleepLike;
  private readonly random: () => number;

  constructor(options: LayersOptions) {
    if (!options.apiKey) {
      throw new TypeError("Layers: apiKey is required");
    }
    this.apiKey = options.apiKey;
    this.baseUrl = (options.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
    this.maxRetries = nonNegative("maxRetries", options.maxRetries ?? 3);
    this.timeoutMs = nonNegative("timeoutMs", options.timeoutMs ?? 30_000);
    this.baseDelayMs = nonNegative("retryBaseDelayMs", options.retryBaseDelayMs ?? 500);
    this.maxDelayMs = nonNegative("maxRetryDelayMs", options.maxRetryDelayMs ?? 30_000);
    this.fetch = options.fetch ?? ((url, init) => globalThis.fetch(url, init));
    this.sleep = options.sleep ?? ((ms, signal) => delay(ms, undefined, { signal }));
    this.random = options.random ?? Math.random;
  }

  /** Send `call`, retrying what is safe to retry; the parsed answer, or the error thrown. */
  async send<T>(call: Call, options: RequestOptions = {}): Promise<Answer<T>> {
    const op = OPERATIONS[call.operation];
    const url = this.url(op.path, call.path ?? {}, call.query ?? {});
    const headers: Record<string, string> = {
      Accept: "application/json",
      "User-Agent": USER_AGENT,
    };
    if (op.auth) {
      headers["Authorization"] = `Bearer ${this.apiKey}`;
    }
    const idempotencyKey =
      options.idempotencyKey ?? (op.method === "POST" ? randomUUID() : undefined);
    if (idempotencyKey !== undefined) {
      headers["Idempotency-Key"] = idempotencyKey;
    }
    if (options.requestId !== undefined) {
      headers["X-Request-Id"] = options.requestId;
    }
    let payload: string | undefined;
    if (call.body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(call.body);
    }
    // Safe to send twice: reads, PUT/PATCH/DELETE (a repeated cancel is a 409, not a second
    // cancel), and POSTs the server deduplicates by the key above. The others (rotate a
    // secret, ping, replay) are repeated only when the first attempt provably did nothing.
    const repeatable = op.method !== "POST" || op.deduplicated;
    const maxRetries = call.maxRetries ?? options.maxRetries ?? this.maxRetries;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const signal = options.signal;
    let earlierAttemptUnknown = false;

    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      const retriesLeft = attempt < maxRetries;
      let response: Response;
      let text: string;
      const controller = new AbortController();
      let timedOut = false;
      // A timeout of 0 is none.
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              timedOut = true;
              controller.abort(new Error(`timed out after ${timeoutMs} ms`));
            }, timeoutMs)
          : undefined;
      const onAbort = (): void => controller.abort(signal?.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        const init: RequestInit = { method: op.method, headers, signal: controller.signal };
        if (payload !== undefined) {
          init.body = payload;
        }
        response = await this.fetch(url, init);
        text = await response.text();
      } catch (err) {
        signal?.throwIfAborted();
        const sentNothing = !timedOut && neverSent(err);
        if (!retriesLeft || !(repeatable || sentNothing)) {
          throw new ConnectionError(
            `${op.method} ${url}: ${timedOut ? `timed out after ${timeoutMs} ms` : describe(err)}`,
            { cause: err, timedOut, attempts: attempt + 1 },
          );
        }
        earlierAttemptUnknown ||= !sentNothing;
        await this.wait(this.backoff(attempt), signal);
        continue;
      } finally {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      }

      const status = response.status;
      const answered = { status, headers: response.headers, earlierAttemptUnknown };
      if (status >= 200 && status < 300) {
        return { ...answered, body: parse(text) as T };
      }
      const error = errorFromResponse(status, response.headers, text);
      if (call.accept?.includes(status)) {
        return { ...answered, body: parse(text) as T, error };
      }
      const wait = retriesLeft ? this.retryDelay(error, attempt, repeatable) : undefined;
      if (wait === undefined) {
        throw error;
      }
      // A 429 was refused before any work; a 503 may have failed after its commit.
      earlierAttemptUnknown ||= status === 503;
      await this.wait(wait, signal);
    }
  }

  /** The pause before a retry; a caller's abort ends it with the caller's reason. */
  private async wait(ms: number, signal: AbortSignal | undefined): Promise<void> {
    try {
      await this.sleep(ms, signal);
    } catch (err) {
      signal?.throwIfAborted();
      throw err;
    }
  }

  /** How long to wait before retrying after `error`, or undefined for no retry. */
  private retryDelay(error: LayersError, attempt: number, repeatable: boolean): number | undefined {
    // 429 is refused before any work (it spends nothing): always worth a retry, once the
    // server's Retry-After has passed, unless that is longer than we are willing to wait.
    // 503 is the database out of reach: retried where a repeat is safe.
    if (error.status !== 429 && !(error.status === 503 && repeatable)) {
      return undefined;
    }
    const after = retryAfterSeconds(error.headers);
    if (after !== undefined && after * 1000 > this.maxDelayMs) {
      return undefined;
    }
    return Math.max((after ?? 0) * 1000, this.backoff(attempt));
  }

  /** Full jitter: uniform in [0, min(cap, base·2^attempt)). */
  private backoff(attempt: number): number {
    return this.random() * Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** attempt);
  }

  private url(template: string, params: Record<string, string>, query: Query): string {
    const path = template.replace(/\{(\w+)\}/g, (_, name: string) => {
      const value = params[name];
      if (value === undefined || value === "") {
        throw new TypeError(`Layers: ${name} is required`);
      }
      return encodeURIComponent(value);
    });
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value === undefined || value === null) {
        continue;
      }
      for (const one of Array.isArray(value) ? value : [value]) {
        search.append(name, String(one));
      }
    }
    const qs = search.toString();
    return `${this.baseUrl}${path}${qs ? `?${qs}` : ""}`;
  }
}

function parse(text: string): unknown {
  if (text === "") {
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function neverSent(err: unknown): boolean {
  // Node's fetch throws TypeError("fetch failed") with the socket's error as its cause (an
  // AggregateError of one per address when several were tried).
  const cause = err instanceof Error ? err.cause : undefined;
  const causes = cause instanceof AggregateError ? cause.errors : [cause];
  return (
    causes.length > 0 &&
    causes.every((c) => {
      const code = typeof c === "object" && c !== null ? (c as { code?: unknown }).code : undefined;
      return typeof code === "string" && NEVER_SENT.has(code);
    })
  );
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? ` (${err.cause.message})` : "";
    return `${err.message}${cause}`;
  }
  return String(err);
}

function nonNegative(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new TypeError(`Layers: ${name} must be a number >= 0`);
  }
  return value;
}
