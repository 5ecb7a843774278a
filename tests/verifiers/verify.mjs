// Verifies recorded GitHub-style deliveries with @octokit/webhooks-methods, the library
// @octokit/webhooks uses. Reads JSON lines {"secret", "headers", "body" (base64)} on stdin and
// prints "ok" or "fail <why>" per line. Used by tests/it/signatures.rs.
import { verify } from "@octokit/webhooks-methods";
import { createInterface } from "node:readline";

for await (const line of createInterface({ input: process.stdin })) {
  const req = JSON.parse(line);
  const body = Buffer.from(req.body, "base64").toString("utf8");
  const sig = req.headers["x-hub-signature-256"];
  try {
    console.log((await verify(req.secret, body, sig)) ? "ok" : "fail verify returned false");
  } catch (e) {
    console.log("fail " + e);
  }
}
