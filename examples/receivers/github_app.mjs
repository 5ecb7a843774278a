// A GitHub App webhook receiver built on @octokit/webhooks, as GitHub's docs show it: it
// verifies x-hub-signature-256, dispatches on X-GitHub-Event + action, and reads the
// {action, issue, repository} payload. pollhook drives it unchanged (destination in bridge.yaml).
//
// Run: WEBHOOK_SECRET=... node github_app.mjs PORT [PROCESSED_LOG]
import { Webhooks, createNodeMiddleware } from "@octokit/webhooks";
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";

const [port, log] = process.argv.slice(2);
const webhooks = new Webhooks({ secret: process.env.WEBHOOK_SECRET });

function processed(record) {
  const line = JSON.stringify(record);
  if (log) appendFileSync(log, line + "\n");
  else console.log(line);
}

webhooks.on(["issues.opened", "issues.edited", "issues.closed"], ({ id, name, payload }) => {
  processed({
    delivery: id,
    event: `${name}.${payload.action}`,
    issue: payload.issue.number,
    title: payload.issue.title,
    repository: payload.repository.full_name,
  });
});

createServer(createNodeMiddleware(webhooks, { path: "/github/events" })).listen(
  Number(port),
  "127.0.0.1",
);
