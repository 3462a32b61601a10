/**
 * Verifying a webhook delivery: `X-Layers-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]`,
 * each `v1` an HMAC-SHA256 of `"<t>.<raw body>"` under one signing secret (two during a
 * rotation). A delivery is genuine when some `v1` matches some secret of yours and `t` is
 * within the tolerance of now.
 */

import { createHmac, timingSafeEqual } from "node:crypto";

import { WebhookSignatureError } from "./errors.js";
import type { WebhookEvent } from "./types.js";

export const SIGNATURE_HEADER = "X-Layers-Signature";
export const EVENT_ID_HEADER = "X-Layers-Event-Id";

export interface VerifyWebhookParams {
  /** The request body exactly as received: bytes, or their UTF-8 text. Never a re-serialised
   * object: the signature is over the bytes. */
  body: string | Uint8Array;
  /** The `X-Layers-Signature` header's value. */
  signatureHeader: string | null | undefined;
  /** Your endpoint's secret, or its secrets while you switch over after a rotation. */
  secrets: string | readonly string[];
  /** How far `t` may be from now, either way. Default 300 s. */
  toleranceSeconds?: number;
  /** Now, as a `Date` or milliseconds since the epoch. Default the clock. */
  now?: Date | number;
}

const HEX_SHA256 = /^[0-9a-f]{64}$/i;

/**
 * The delivery's event, parsed and typed, once its signature is checked; a
 * `WebhookSignatureError` otherwise (`reason`: `malformed` header, `stale` timestamp, no
 * `mismatch`ing signature, or a signed `body` that is not an event).
 */
export function verifyWebhook(params: VerifyWebhookParams): WebhookEvent {
  const { body, signatureHeader, toleranceSeconds = 300 } = params;
  const secrets = typeof params.secrets === "string" ? [params.secrets] : [...params.secrets];
  if (secrets.length === 0 || secrets.some((s) => typeof s !== "string" || s === "")) {
    throw new TypeError("verifyWebhook: at least one non-empty secret is required");
  }
  const { timestamp, signatures } = parseHeader(signatureHeader);
  const nowMs = params.now instanceof Date ? params.now.getTime() : (params.now ?? Date.now());
  if (Math.abs(nowMs / 1000 - Number(timestamp)) > toleranceSeconds) {
    throw new WebhookSignatureError(
      "stale",
      `signature timestamp ${timestamp} is more than ${toleranceSeconds} s from now`,
    );
  }
  const raw = typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body);
  const signed = Buffer.concat([Buffer.from(`${timestamp}.`, "utf8"), raw]);
  const given = signatures.map((hex) => Buffer.from(hex, "hex"));
  let matched = false;
  // Every pair is compared, each in constant time: how long this takes tells nothing of
  // which secret or which signature came close.
  for (const secret of secrets) {
    const expected = createHmac("sha256", secret).update(signed).digest();
    for (const candidate of given) {
      if (timingSafeEqual(expected, candidate)) {
        matched = true;
      }
    }
  }
  if (!matched) {
    throw new WebhookSignatureError("mismatch", "no v1 signature matches any of the secrets");
  }
  let event: unknown;
  try {
    event = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new WebhookSignatureError("body", "the signed body is not JSON");
  }
  if (!isEvent(event)) {
    throw new WebhookSignatureError("body", "the signed body is not an event");
  }
  return event;
}

function parseHeader(header: string | null | undefined): {
  timestamp: string;
  signatures: string[];
} {
  if (typeof header !== "string" || header.trim() === "") {
    throw new WebhookSignatureError("malformed", `no ${SIGNATURE_HEADER} header`);
  }
  const stamps: string[] = [];
  const signatures: string[] = [];
  for (const part of header.split(",")) {
    const at = part.indexOf("=");
    if (at < 0) {
      throw new WebhookSignatureError("malformed", `${SIGNATURE_HEADER} part without '='`);
    }
    const key = part.slice(0, at).trim();
    const value = part.slice(at + 1).trim();
    if (key === "t") {
      stamps.push(value);
    } else if (key === "v1") {
      signatures.push(value);
    }
    // Other schemes (a later v2) are skipped, as the protocol allows.
  }
  const [timestamp] = stamps;
  if (stamps.length !== 1 || timestamp === undefined || !/^\d{1,12}$/.test(timestamp)) {
    throw new WebhookSignatureError("malformed", `${SIGNATURE_HEADER} needs one numeric t=`);
  }
  if (signatures.length === 0 || !signatures.every((s) => HEX_SHA256.test(s))) {
    throw new WebhookSignatureError(
      "malformed",
      `${SIGNATURE_HEADER} needs v1= signatures of 64 hex digits`,
    );
  }
  return { timestamp, signatures };
}

function isEvent(value: unknown): value is WebhookEvent {
  if (typeof value !== "object" || value === null) {
    return false;
  }
  const event = value as Record<string, unknown>;
  return (
    typeof event["id"] === "string" &&
    typeof event["type"] === "string" &&
    typeof event["createdAt"] === "string" &&
    typeof event["data"] === "object" &&
    event["data"] !== null
  );
}
