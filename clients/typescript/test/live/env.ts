/**
 * What the live tests get from tests/test_client_typescript.py, which starts the real stack
 * and runs them: the API's URL, keys, the tenant's project and accounts, a webhook receiver.
 * Without LAYERS_BASE_URL every live test is skipped.
 */

import { Layers, type FetchLike, type LayersOptions } from "../../src/index.js";

function need(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new Error(`${name} is not set`);
  }
  return value;
}

export const LIVE = process.env["LAYERS_BASE_URL"] !== undefined;
export const SKIP = LIVE ? false : "LAYERS_BASE_URL is not set: run from pytest against the stack";

export const env = {
  get baseUrl() {
    return need("LAYERS_BASE_URL");
  },
  get apiKey() {
    return need("LAYERS_API_KEY");
  },
  get projectId() {
    return need("LAYERS_PROJECT_ID");
  },
  get tiktok() {
    return need("LAYERS_TIKTOK_ACCOUNT_ID");
  },
  get instagram() {
    return need("LAYERS_INSTAGRAM_ACCOUNT_ID");
  },
  /** A key with publish:read only. */
  get readOnlyKey() {
    return need("LAYERS_READ_ONLY_KEY");
  },
  /** A key of its own limit: 60 reads a minute, whatever the stack's multiplier. */
  get limitedKey() {
    return need("LAYERS_LIMITED_KEY");
  },
  /** A webhook receiver: POST /hook records a delivery, GET /received lists them. */
  get receiverUrl() {
    return need("LAYERS_RECEIVER_URL");
  },
};

export function layers(options: Partial<LayersOptions> = {}): Layers {
  return new Layers({ apiKey: env.apiKey, baseUrl: env.baseUrl, ...options });
}

/** Polls `probe` until it answers something, or fails after `timeoutMs`. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 60_000,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export function secondsFromNow(seconds: number): Date {
  return new Date(Date.now() + seconds * 1000);
}

/** A `fetch` that records each answer's status, for seeing what a call went through. */
export function recordingFetch(statuses: number[]): FetchLike {
  return async (url, init) => {
    const response = await fetch(url, init);
    statuses.push(response.status);
    return response;
  };
}
