"""Verifies recorded pollhook deliveries with the providers' own libraries.

Reads JSON lines {"scheme", "secret", "headers", "body" (base64)} on stdin and prints one line
per request: "ok" or "fail <why>". Used by tests/it/signatures.rs; CI installs the libraries
(pip install standardwebhooks stripe slack_sdk).
"""

import base64
import hashlib
import hmac
import json
import sys

import stripe
from slack_sdk.signature import SignatureVerifier
from standardwebhooks.webhooks import Webhook


def verify(scheme, secret, headers, body):
    if scheme == "standard":
        Webhook(secret).verify(body, headers)
    elif scheme == "stripe":
        # Stripe's own check: signature over "{t}.{payload}", timestamp within 300 s.
        stripe.Webhook.construct_event(body, headers["stripe-signature"], secret)
    elif scheme == "slack":
        if not SignatureVerifier(secret).is_valid_request(body, headers):
            raise ValueError("slack_sdk rejected the request")
    elif scheme == "shopify":
        # Shopify documents this check (there is no official Python verifier package).
        digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
        if not hmac.compare_digest(digest.decode(), headers["x-shopify-hmac-sha256"]):
            raise ValueError("shopify digest mismatch")
    elif scheme == "x-signature-256":
        # The Flask tutorial receiver: lowercase hex HMAC of the raw body, no prefix.
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(digest, headers["x-signature-256"]):
            raise ValueError("x-signature-256 mismatch")
    else:
        raise ValueError("unknown scheme " + scheme)


for line in sys.stdin:
    req = json.loads(line)
    headers = {k.lower(): v for k, v in req["headers"].items()}
    try:
        verify(req["scheme"], req["secret"], headers, base64.b64decode(req["body"]))
        print("ok", flush=True)
    except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
        print("fail", type(e).__name__, e, flush=True)
