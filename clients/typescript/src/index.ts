/**
 * The Layers publishing API v1 client:
 *
 *     import { Layers } from "@layers/publisher-client";
 *     const layers = new Layers({ apiKey, baseUrl });
 *     await layers.publishing.cancel({ id, reason });
 */

export * from "./client.js";
export * from "./errors.js";
export { OPERATIONS, type HttpMethod, type Operation, type OperationId } from "./operations.js";
export {
  type FetchLike,
  type LayersOptions,
  type RequestOptions,
  type SleepLike,
  USER_AGENT,
} from "./transport.js";
export type * from "./types.js";
export { VERSION } from "./version.js";
export {
  EVENT_ID_HEADER,
  SIGNATURE_HEADER,
  verifyWebhook,
  type VerifyWebhookParams,
} from "./webhooks.js";
