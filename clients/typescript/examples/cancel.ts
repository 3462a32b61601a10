// The contract's TypeScript example of cancel, as docs/api.md quotes it, unchanged below the
// client's construction. Run against a post of that id: LAYERS_API_KEY and LAYERS_BASE_URL.
import { Layers } from "@layers/publisher-client";

const apiKey = process.env["LAYERS_API_KEY"] ?? "";
const baseUrl = process.env["LAYERS_BASE_URL"];
const layers = new Layers({ apiKey, baseUrl });

const result = await layers.publishing.cancel({
  id: "sp_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60",
  reason: "Brand asked us to hold - legal review pending.",
});

console.log(JSON.stringify(result));
