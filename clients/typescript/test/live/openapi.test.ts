/**
 * The served OpenAPI document against the client: every operation has its client method,
 * under the same method and path, in the namespace of the operation's tag (the SDK's
 * namespaces), and the client calls no operation the document lacks.
 * LAYERS_OPENAPI_PATH is the document, written by the pytest side from create_app().
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { Layers, OPERATIONS } from "../../src/index.js";

const PATH = process.env["LAYERS_OPENAPI_PATH"];
const METHODS = ["get", "put", "post", "delete", "patch"] as const;

interface Document {
  paths: Record<
    string,
    Partial<Record<(typeof METHODS)[number], { operationId?: string; tags?: string[] }>>
  >;
}

describe(
  "the OpenAPI document",
  { skip: PATH === undefined ? "LAYERS_OPENAPI_PATH is not set" : false },
  () => {
    it("has a client method for every operation, and an operation for every method", () => {
      const doc = JSON.parse(readFileSync(PATH ?? "", "utf8")) as Document;
      const layers = new Layers({ apiKey: "lp_test_k_s" });
      const served = new Map<string, string>();
      const missing: string[] = [];
      for (const [path, item] of Object.entries(doc.paths)) {
        for (const method of METHODS) {
          const operation = item[method];
          if (operation === undefined) {
            continue;
          }
          const where = `${method.toUpperCase()} ${path}`;
          const id = operation.operationId ?? "(none)";
          served.set(id, where);
          const mapped = Object.hasOwn(OPERATIONS, id)
            ? OPERATIONS[id as keyof typeof OPERATIONS]
            : undefined;
          if (mapped === undefined) {
            missing.push(`${where}: operationId ${id} has no client method`);
            continue;
          }
          if (`${mapped.method} ${mapped.path}` !== where) {
            missing.push(
              `${id}: the client calls ${mapped.method} ${mapped.path}, the document ${where}`,
            );
          }
          const tags = operation.tags ?? [];
          if (!tags.includes(mapped.resource)) {
            missing.push(
              `${id}: tags [${tags.join(", ")}], the client has it at layers.${mapped.resource}`,
            );
          }
          const resource = layers[mapped.resource] as unknown as Record<string, unknown>;
          if (typeof resource[mapped.call] !== "function") {
            missing.push(`${id}: layers.${mapped.resource}.${mapped.call} is not a method`);
          }
        }
      }
      for (const id of Object.keys(OPERATIONS)) {
        if (!served.has(id)) {
          missing.push(`${id}: the client has it, the document does not`);
        }
      }
      assert.equal(missing.length, 0, `${missing.length} mismatches:\n${missing.join("\n")}`);
    });
  },
);
