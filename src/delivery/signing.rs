//! Webhook signatures: Standard Webhooks (`webhook-signature: v1,<base64>`) and GitHub
//! (`x-hub-signature-256: sha256=<hex>`). Pure; used by the dispatcher, `pollhook sign` and
//! `pollhook verify`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{Destination, Secret, standard_key};

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

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A Standard Webhooks signing key with its HMAC state precomputed once (the key's inner and
/// outer pads are hashed at construction, not per signature).
#[derive(Clone)]
pub struct StandardKey(HmacSha256);

impl StandardKey {
    /// Prepares `key` (the decoded bytes of a `whsec_` secret).
    pub fn new(key: &[u8]) -> StandardKey {
        // HMAC accepts keys of any length.
        StandardKey(HmacSha256::new_from_slice(key).expect("hmac takes any key length"))
    }

    /// `v1,` + base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}").
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

/// One Standard Webhooks signature: `v1,` + base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}").
pub fn standard_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    StandardKey::new(key).sign(id, timestamp, body)
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

/// Precomputed signing material of one destination.
pub struct Signer {
    standard_keys: Vec<StandardKey>,
    github_secret: Option<Secret>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Signer({} standard keys, github: {})",
            self.standard_keys.len(),
            self.github_secret.is_some()
        )
    }
}

impl Signer {
    /// Builds the signer from a validated destination (its secrets already decode).
    pub fn new(dest: &Destination) -> Signer {
        let standard_keys = if dest.signature.standard() {
            let keys = dest
                .secrets
                .iter()
                .filter_map(|s| standard_key(s.expose()).ok());
            keys.map(|k| StandardKey::new(&k)).collect()
        } else {
            Vec::new()
        };
        // GitHub's header carries one signature: the first (newest) secret signs it.
        let github_secret = dest
            .signature
            .github()
            .then(|| dest.secrets.first().cloned())
            .flatten();
        Signer {
            standard_keys,
            github_secret,
        }
    }

    /// The signature headers for one attempt.
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(2);
        if !self.standard_keys.is_empty() {
            let sigs: Vec<String> = self
                .standard_keys
                .iter()
                .map(|k| k.sign(id, timestamp, body))
                .collect();
            out.push((WEBHOOK_SIGNATURE, sigs.join(" ")));
        }
        if let Some(secret) = &self.github_secret {
            out.push((HUB_SIGNATURE, github_signature(secret.expose(), body)));
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
