//! Webhook signatures (design §3a): one [`Signer`] renders every scheme of a destination —
//! the presets (`standard`, `github`, `stripe`, `slack`, `shopify`, which are [`Scheme`] values
//! in `config/schemes.rs`) and custom schemes alike. Also the Standard Webhooks and GitHub
//! helpers of `pollhook sign` / `pollhook verify`. Pure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::header::HeaderName;
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::config::{Destination, Encoding, KeyForm, Scheme, standard_key};
use crate::template::{Values, Var};

/// `content-type`.
pub const CONTENT_TYPE: &str = "content-type";
/// `webhook-id`.
pub const WEBHOOK_ID: &str = "webhook-id";
/// `webhook-timestamp`.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// `webhook-signature`.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// `idempotency-key`.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// `x-hub-signature-256`.
pub const HUB_SIGNATURE: &str = "x-hub-signature-256";
/// `user-agent`.
pub const USER_AGENT: &str = "user-agent";
/// Value of `user-agent`.
pub use crate::http::USER_AGENT_VALUE;

/// HMAC-SHA256 of the concatenated `parts` (ring's assembly: about twice `hmac` + `sha2`
/// without SHA extensions; ring is already linked for TLS).
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// One Standard Webhooks signature: `v1,` + base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}").
pub fn standard_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", B64.encode(mac))
}

/// GitHub's `sha256=` + hex HMAC-SHA256(secret bytes as configured, body).
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        data_encoding::HEXLOWER.encode(&hmac(secret.as_bytes(), &[body]))
    )
}

/// Checks a `webhook-signature` header (possibly several space-separated signatures) against a
/// `whsec_` secret, in constant time per candidate. Timestamp tolerance is the caller's choice.
pub fn verify_standard(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Ok(key) = standard_key(secret) else {
        return false;
    };
    let expected = standard_signature(&key, id, timestamp, body);
    header
        .split(' ')
        .any(|candidate| candidate.as_bytes().ct_eq(expected.as_bytes()).into())
}

/// Checks an `x-hub-signature-256` header in constant time.
pub fn verify_github(secret: &str, body: &[u8], header: &str) -> bool {
    github_signature(secret, body)
        .as_bytes()
        .ct_eq(header.trim().as_bytes())
        .into()
}

/// One scheme with its HMAC keys prepared (ring precomputes the pads once per key).
struct Prepared {
    scheme: Scheme,
    /// The first secret's key, then (when the header holds several) the others'.
    keys: Vec<hmac::Key>,
}

/// Precomputed signing material of one destination: every scheme of its `signature`, each
/// with its keys. Presets are data ([`Scheme`] values); this is the only signing code path.
pub struct Signer {
    schemes: Vec<Prepared>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.schemes.iter().map(|p| p.scheme.name).collect();
        write!(f, "Signer({names:?})")
    }
}

/// What a signature template is rendered with.
struct Context<'a> {
    id: &'a str,
    timestamp: &'a str,
    body: &'a [u8],
    signature: &'a str,
}

impl Values for Context<'_> {
    fn write(&self, var: Var, out: &mut Vec<u8>) {
        out.extend_from_slice(match var {
            Var::Id => self.id.as_bytes(),
            Var::Timestamp => self.timestamp.as_bytes(),
            Var::Body => self.body,
            Var::Signature => self.signature.as_bytes(),
            // Not allowed in signature templates (checked when they are parsed).
            _ => b"",
        });
    }
}

impl Signer {
    /// Builds the signer from a validated destination (its secrets already fit its schemes).
    pub fn new(dest: &Destination) -> Signer {
        let schemes = dest
            .signatures
            .iter()
            .map(|scheme| {
                let take = if scheme.more.is_some() {
                    dest.secrets.len()
                } else {
                    1
                };
                let keys = dest
                    .secrets
                    .iter()
                    .take(take)
                    .filter_map(|s| match scheme.key {
                        KeyForm::Utf8 => Some(s.expose().as_bytes().to_vec()),
                        KeyForm::Whsec => standard_key(s.expose()).ok(),
                    })
                    .map(|k| hmac::Key::new(hmac::HMAC_SHA256, &k))
                    .collect();
                Prepared {
                    scheme: scheme.clone(),
                    keys,
                }
            })
            .collect();
        Signer { schemes }
    }

    /// The signature headers of one attempt of the body `body` of event `id` at `timestamp`.
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<(HeaderName, String)> {
        let ts = timestamp.to_string();
        let ctx = Context {
            id,
            timestamp: &ts,
            body,
            signature: "",
        };
        let mut out = Vec::with_capacity(self.schemes.len() + 1);
        let mut message = Vec::with_capacity(body.len() + 64);
        for p in &self.schemes {
            message.clear();
            p.scheme.signs.render_into(&ctx, &mut message);
            let mut value = Vec::new();
            for (i, key) in p.keys.iter().enumerate() {
                let tag = hmac::sign(key, &message);
                let encoded = match p.scheme.encoding {
                    Encoding::Hex => data_encoding::HEXLOWER.encode(tag.as_ref()),
                    Encoding::Base64 => B64.encode(tag.as_ref()),
                };
                let signed = Context {
                    signature: &encoded,
                    ..ctx
                };
                match (i, &p.scheme.more) {
                    (0, _) => p.scheme.value.render_into(&signed, &mut value),
                    (_, Some(more)) => more.render_into(&signed, &mut value),
                    (_, None) => {}
                }
            }
            if p.keys.is_empty() {
                continue;
            }
            out.push((
                p.scheme.header.clone(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
            for (name, template) in &p.scheme.extra {
                out.push((name.clone(), template.render(&ctx)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification.
    #[test]
    fn matches_standard_webhooks_test_vector() {
        let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = standard_signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
    #[test]
    fn matches_github_documented_example() {
        assert_eq!(
            github_signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn verify_accepts_any_listed_signature_and_rejects_tampering() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let key = standard_key(secret).unwrap();
        let good = standard_signature(&key, "evt_a", 10, b"{}");
        let header = format!("v1,bm90IGl0 {good}");
        assert!(verify_standard(secret, "evt_a", 10, b"{}", &header));
        assert!(!verify_standard(secret, "evt_a", 11, b"{}", &header));
        assert!(!verify_standard(secret, "evt_a", 10, b"{ }", &header));
        assert!(!verify_standard(
            "whsec_bm90IGl0",
            "evt_a",
            10,
            b"{}",
            &header
        ));
    }
}
