//! Signature presets as data (design §3a): each is a [`Scheme`] value, checked in tests against
//! the provider's own verifier. `both` is `[standard, github]`; `none` signs nothing.

use reqwest::header::HeaderName;

use super::validated::{Encoding, KeyForm, Scheme};
use crate::template::{SIGNS_VARS, Template, VALUE_VARS, Var};

/// Preset names, for messages.
pub const PRESETS: &str = "standard, github, stripe, slack, shopify, none, both";

fn t(text: &str, vars: &[Var]) -> Template {
    Template::parse(text, vars).unwrap_or_else(|e| unreachable!("preset template {text}: {e}"))
}

#[allow(clippy::too_many_arguments)]
fn scheme(
    name: &'static str,
    header: &'static str,
    value: &str,
    signs: &str,
    encoding: Encoding,
    key: KeyForm,
    more: Option<&str>,
    extra: &[(&'static str, &str)],
) -> Scheme {
    Scheme {
        name,
        header: HeaderName::from_static(header),
        value: t(value, VALUE_VARS),
        signs: t(signs, SIGNS_VARS),
        encoding,
        key,
        more: more.map(|m| t(m, VALUE_VARS)),
        extra: extra
            .iter()
            .map(|(h, v)| (HeaderName::from_static(h), t(v, VALUE_VARS)))
            .collect(),
    }
}

/// The schemes of preset `name`, or `None` when there is no such preset.
pub fn preset(name: &str) -> Option<Vec<Scheme>> {
    use Encoding::{Base64, Hex};
    use KeyForm::{Utf8, Whsec};
    let one = |s| Some(vec![s]);
    match name {
        // Standard Webhooks: several signatures, space-separated.
        "standard" => one(scheme(
            "standard",
            "webhook-signature",
            "v1,{signature}",
            "{id}.{timestamp}.{body}",
            Base64,
            Whsec,
            Some(" v1,{signature}"),
            &[],
        )),
        // GitHub: one signature; the secret string as configured is the key.
        "github" => one(scheme(
            "github",
            "x-hub-signature-256",
            "sha256={signature}",
            "{body}",
            Hex,
            Utf8,
            None,
            &[],
        )),
        // Stripe: `t=…,v1=…[,v1=…]`, keyed with the whole `whsec_…` string, as Stripe does.
        "stripe" => one(scheme(
            "stripe",
            "stripe-signature",
            "t={timestamp},v1={signature}",
            "{timestamp}.{body}",
            Hex,
            Utf8,
            Some(",v1={signature}"),
            &[],
        )),
        "slack" => one(scheme(
            "slack",
            "x-slack-signature",
            "v0={signature}",
            "v0:{timestamp}:{body}",
            Hex,
            Utf8,
            None,
            &[("x-slack-request-timestamp", "{timestamp}")],
        )),
        "shopify" => one(scheme(
            "shopify",
            "x-shopify-hmac-sha256",
            "{signature}",
            "{body}",
            Base64,
            Utf8,
            None,
            &[],
        )),
        "both" => Some([preset("standard")?, preset("github")?].concat()),
        "none" => Some(Vec::new()),
        _ => None,
    }
}
