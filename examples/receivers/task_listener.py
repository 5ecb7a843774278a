"""Three webhook receivers as tutorials write them, for pollhook to drive unchanged.

    POST /webhook/new_task       bare JSON body {task_id, description, assigned_agent_id};
                                 acts only on tasks assigned to this agent
    POST /webhook/secure_task    the same, checking X-Signature-256 = hex HMAC-SHA256 of the
                                 raw body keyed with the shared secret
    POST /webhook/customer       dedupes on an X-Event-ID header; reads customer_id and email,
                                 and checks a `secret` field inside the JSON body

Run: WEBHOOK_SECRET=... python3 task_listener.py PORT [PROCESSED_LOG]
Each processed task or customer is appended to PROCESSED_LOG as a JSON line (default: stdout).
The matching pollhook destinations are in bridge.yaml beside this file.
"""

import hashlib
import hmac
import json
import os
import sys

from flask import Flask, abort, request

app = Flask(__name__)
SECRET = os.environ["WEBHOOK_SECRET"]
MY_AGENT_ID = "my_agent_id_123"
LOG = sys.argv[2] if len(sys.argv) > 2 else None
seen_event_ids = set()


def processed(kind, record):
    line = json.dumps({"kind": kind, **record})
    if LOG:
        with open(LOG, "a") as f:
            f.write(line + "\n")
    else:
        print(line, flush=True)


@app.post("/webhook/new_task")
def new_task():
    task = request.get_json()
    if task.get("assigned_agent_id") != MY_AGENT_ID:
        return {"status": "ignored"}, 200
    processed("task", {"task_id": task["task_id"], "description": task["description"]})
    return {"status": "accepted"}, 200


@app.post("/webhook/secure_task")
def secure_task():
    expected = hmac.new(SECRET.encode(), request.get_data(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Signature-256", "")):
        abort(401)
    task = request.get_json()
    processed("secure_task", {"task_id": task["task_id"]})
    return {"status": "accepted"}, 200


@app.post("/webhook/customer")
def customer():
    event_id = request.headers.get("X-Event-ID")
    if not event_id:
        abort(400)
    if event_id in seen_event_ids:
        return {"status": "duplicate"}, 200
    body = request.get_json()
    if body.get("secret") != SECRET:
        abort(403)
    seen_event_ids.add(event_id)
    processed("customer", {"customer_id": body["customer_id"], "email": body["email"]})
    return {"status": "ok"}, 200


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
