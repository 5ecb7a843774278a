//! The status page's HTML building blocks: the stylesheet, escaping, the page frame and the
//! small pages (sign-in, refusal). Every interpolated value goes through [`esc`].

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:0 1rem 3rem;color:#1b1f24}\
h1{font-size:1.4rem;margin:1rem 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .4rem}\
table{border-collapse:collapse;width:100%;margin:.3rem 0}th,td{border-bottom:1px solid #d0d7de;padding:.3rem .45rem;text-align:left;vertical-align:top}\
th{background:#f6f8fa;font-weight:600}.wrap{overflow-x:auto}code,pre{font:13px ui-monospace,monospace}pre{background:#f6f8fa;padding:.5rem;white-space:pre-wrap;word-break:break-all}\
.bad{color:#b3261e;font-weight:600}.ok{color:#116329}.warn{color:#9a6700;font-weight:600}.muted{color:#57606a}\
form.inline{display:inline}button{font:inherit;padding:.15rem .6rem;cursor:pointer}label{margin-right:.6rem}\
input,select{font:inherit;padding:.1rem .3rem}nav a{margin-right:1rem}\
.right{float:right;margin-top:1rem}svg.chart{vertical-align:middle;margin-right:.3rem}td.charts{white-space:nowrap}.pages{margin:.4rem 0}\
del{background:#ffebe9;color:#82071e}ins{background:#dafbe1;color:#116329;text-decoration:none}pre.diff del,pre.diff ins{display:block}";

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page saying why a request was refused.
pub(super) fn refuse(status: StatusCode, why: &str) -> Response {
    (
        status,
        Html(layout("pollhook: refused", &format!("<h1>Refused</h1><p role=\"alert\" class=\"bad\">{}</p><p><a href=\"/\">Back to the status page</a></p>", esc(why)))),
    )
        .into_response()
}

pub(super) fn layout(title: &str, body: &str) -> String {
    layout_with(title, "", body)
}

/// [`layout`] with extra `<head>` elements (already HTML).
pub(super) fn layout_with(title: &str, head: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{head}<title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

pub(super) fn login_page(message: Option<&str>, form: &str) -> String {
    let note = message.map_or(String::new(), |m| {
        format!("<p role=\"alert\" class=\"bad\">{}</p>", esc(m))
    });
    layout(
        "pollhook: sign in",
        &format!(
            "<h1>pollhook</h1><p>This status page needs the admin token (<code>admin.token</code> in bridge.yaml).</p>{note}\
             <form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"form\" value=\"{}\"><label for=\"token\">Admin token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required> \
             <button type=\"submit\">Sign in</button></form>",
            esc(form)
        ),
    )
}

pub(super) fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("—".to_owned(), |v| esc(&v.to_string()))
}

pub(super) fn select(
    name: &str,
    label: &str,
    current: &Option<String>,
    options: &[String],
) -> String {
    let mut out = format!(
        "<label for=\"f-{name}\">{label}</label><select id=\"f-{name}\" name=\"{name}\"><option value=\"\">all</option>"
    );
    for o in options {
        let selected = if current.as_deref() == Some(o.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option{selected}>{}</option>", esc(o));
    }
    out.push_str("</select> ");
    out
}
