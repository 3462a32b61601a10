/** A scripted `fetch` that records what it was asked, and a `sleep` that only records. */

import { Layers, type LayersOptions } from "../../src/index.js";

export interface Sent {
  url: URL;
  method: string;
  headers: Headers;
  body: unknown;
}

/** What the fake answers one request with: a response, a thrown error, or no answer until
 * the request is aborted. */
export type Script =
  | { status: number; body?: unknown; headers?: Record<string, string> }
  | { throws: unknown }
  | "hang"
  | ((sent: Sent) => Script);

export function envelope(code: string, message = "no", details: Record<string, unknown> = {}) {
  return { error: { code, message, requestId: "req_test", details } };
}

/** A `fetch` error as Node's undici throws it: TypeError("fetch failed") with the socket's
 * error as its cause. */
export function networkError(code = "ECONNRESET"): TypeError {
  const cause = Object.assign(new Error(`socket: ${code}`), { code });
  return new TypeError("fetch failed", { cause });
}

export interface Fake {
  layers: Layers;
  sent: Sent[];
  sleeps: number[];
}

/** A client whose fetch plays `scripts` in order (the last one again once they run out). */
export function fake(scripts: Script[], options: Partial<LayersOptions> = {}): Fake {
  const sent: Sent[] = [];
  const sleeps: number[] = [];
  const fetch = async (url: string, init: RequestInit): Promise<Response> => {
    const body = typeof init.body === "string" ? JSON.parse(init.body) : undefined;
    const request: Sent = {
      url: new URL(url),
      method: init.method ?? "GET",
      headers: new Headers(init.headers),
      body,
    };
    sent.push(request);
    let script = scripts[Math.min(sent.length - 1, scripts.length - 1)];
    while (typeof script === "function") {
      script = script(request);
    }
    if (script === undefined) {
      throw new Error("no script");
    }
    if (script === "hang") {
      return new Promise<Response>((_, reject) => {
        init.signal?.addEventListener("abort", () => reject(init.signal?.reason));
      });
    }
    if ("throws" in script) {
      throw script.throws;
    }
    const text = script.body === undefined ? "" : JSON.stringify(script.body);
    return new Response(text === "" ? null : text, {
      status: script.status,
      headers: {
        "content-type": "application/json",
        "x-request-id": "req_test",
        ...script.headers,
      },
    });
  };
  const layers = new Layers({
    apiKey: "lp_test_key_secret",
    baseUrl: "http://api.test",
    fetch,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    random: () => 0.5,
    ...options,
  });
  return { layers, sent, sleeps };
}

export const POST = {
  id: "sp_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60",
  containerId: "cnt_1",
  socialAccountId: "sa_1",
  platform: "tiktok",
  mode: "publish",
  status: "queued",
  scheduledFor: "2031-06-01T09:00:00Z",
  attemptedAt: null,
  publishedAt: null,
  canceledAt: null,
  externalId: null,
  externalUrl: null,
  lastError: null,
  createdAt: "2031-05-01T09:00:00Z",
  updatedAt: "2031-05-01T09:00:00Z",
} as const;
