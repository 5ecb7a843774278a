//! `pollhook check` on a corpus of broken configs: exit 2, the message names the path, no panic.
//! Every example config in the repository must pass.

use std::process::Command;

use crate::helpers::binary;

const VALID: &str = "state: ./state.redb
destinations:
  agent:
    url: http://127.0.0.1:8080/hook
    secret: ${SECRET}
sources:
  issues:
    url: http://127.0.0.1:9000/issues
    every: 60s
    key: /id
    to: [agent]
";

/// Runs `pollhook check` on `yaml` and returns (exit code, stderr + stdout).
fn check(yaml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = Command::new(binary());
    cmd.args(["check", "-c"]).arg(&path).env_remove("SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pollhook check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!text.contains("panicked"), "pollhook panicked:\n{text}");
    (out.status.code().unwrap_or(-1), text)
}

const SECRET: (&str, &str) = ("SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");

fn assert_rejected(yaml: &str, env: &[(&str, &str)], must_contain: &[&str]) {
    let (code, text) = check(yaml, env);
    assert_eq!(code, 2, "expected exit 2, got {code}:\n{text}");
    for needle in must_contain {
        assert!(text.contains(needle), "message lacks {needle:?}:\n{text}");
    }
}

/// The baseline config is valid.
#[test]
fn valid_config_passes() {
    let (code, text) = check(VALID, &[SECRET]);
    assert_eq!(code, 0, "{text}");
}

/// An unknown key is named with its path and line.
#[test]
fn unknown_key_is_rejected() {
    assert_rejected(
        &VALID.replace("    every: 60s\n", "    every: 60s\n    evry: 5s\n"),
        &[SECRET],
        &["sources.issues.evry", "line 10", "unknown field"],
    );
}

/// A bad duration names the key and gives an example.
#[test]
fn bad_duration_is_rejected() {
    assert_rejected(
        &VALID.replace("every: 60s", "every: sixty"),
        &[SECRET],
        &["sources.issues.every", "line 9", "\"sixty\"", "e.g. 30s"],
    );
}

/// A bad cron expression names the key; the year field is refused.
#[test]
fn bad_cron_is_rejected() {
    assert_rejected(
        &VALID.replace("every: 60s", "cron: \"0 9 * * 1 2027\""),
        &[SECRET],
        &["sources.issues.cron", "5-field"],
    );
    assert_rejected(
        &VALID.replace("every: 60s", "cron: \"99 * * * *\""),
        &[SECRET],
        &["sources.issues.cron"],
    );
}

/// A missing environment variable is named.
#[test]
fn missing_env_var_is_rejected() {
    assert_rejected(
        VALID,
        &[],
        &["destinations.agent.secret", "SECRET is not set"],
    );
}

/// `to:` must name a configured destination.
#[test]
fn unknown_destination_is_rejected() {
    assert_rejected(
        &VALID.replace("to: [agent]", "to: [agnet]"),
        &[SECRET],
        &["sources.issues.to", "\"agnet\"", "known: [agent]"],
    );
}

/// Two sources with one name are refused by the parser with the line.
#[test]
fn duplicate_source_name_is_rejected() {
    let dup = format!(
        "{VALID}  issues:\n    url: http://127.0.0.1:9000/x\n    every: 5s\n    key: /id\n    to: [agent]\n"
    );
    assert_rejected(&dup, &[SECRET], &["sources.issues", "line 12", "duplicate"]);
}

/// An invalid URL names the key.
#[test]
fn invalid_url_is_rejected() {
    assert_rejected(
        &VALID.replace("http://127.0.0.1:9000/issues", "not a url"),
        &[SECRET],
        &["sources.issues.url", "line 8", "http or https URL"],
    );
}

/// A YAML syntax error gives the line.
#[test]
fn yaml_syntax_error_is_rejected() {
    assert_rejected(
        &VALID.replace("    key: /id\n", "    key: [/id\n"),
        &[SECRET],
        &["line"],
    );
}

/// A value of the wrong type names the key.
#[test]
fn wrong_type_is_rejected() {
    assert_rejected(
        &VALID.replace(
            "    to: [agent]\n",
            "    to: [agent]\n    include: yes-please\n",
        ),
        &[SECRET],
        &["sources.issues.include", "line 12"],
    );
}

/// Every problem is reported at once, not just the first.
#[test]
fn all_problems_are_reported_together() {
    let yaml = VALID
        .replace("every: 60s", "every: sixty")
        .replace("to: [agent]", "to: [nobody]")
        .replace("http://127.0.0.1:8080/hook", "ftp://x");
    assert_rejected(
        &yaml,
        &[SECRET],
        &[
            "3 problem(s)",
            "sources.issues.every",
            "sources.issues.to",
            "destinations.agent.url",
        ],
    );
}

/// Budgets are validated: `N/DURATION` rates, host concurrency of at least 1.
#[test]
fn rates_and_host_limits_are_validated() {
    let rate = VALID.replace("    key: /id\n", "    key: /id\n    rate: fast\n");
    assert_rejected(
        &rate,
        &[SECRET],
        &["sources.issues.rate", "\"fast\"", "60/1m"],
    );
    let hosts = format!("hosts:\n  api.github.com:\n    rate: 0/1h\n    concurrency: 0\n{VALID}");
    assert_rejected(
        &hosts,
        &[SECRET],
        &[
            "hosts.api.github.com.rate",
            "hosts.api.github.com.concurrency",
        ],
    );
    let ok = format!(
        "hosts:\n  api.github.com:\n    rate: 5000/1h\n    concurrency: 4\n{}",
        VALID.replace("    key: /id\n", "    key: /id\n    rate: 30/1m\n")
    );
    let (code, text) = check(&ok, &[SECRET]);
    assert_eq!(code, 0, "{text}");
}

/// Pagination settings are validated: one style, `link: next`, a pointer, max_pages ≥ 1.
#[test]
fn pagination_settings_are_validated() {
    let with = |extra: &str| VALID.replace("    key: /id\n", &format!("    key: /id\n{extra}"));
    assert_rejected(
        &with("    paginate: { link: prev }\n"),
        &[SECRET],
        &["sources.issues.paginate.link", "next"],
    );
    assert_rejected(
        &with("    paginate: { link: next, page: { param: p } }\n"),
        &[SECRET],
        &[
            "sources.issues.paginate",
            "exactly one of link, cursor or page",
        ],
    );
    assert_rejected(
        &with("    paginate: { cursor: { param: after, from: meta } }\n"),
        &[SECRET],
        &["sources.issues.paginate.cursor.from"],
    );
    assert_rejected(
        &with("    paginate: { link: next }\n    max_pages: 0\n"),
        &[SECRET],
        &["sources.issues.max_pages"],
    );
    let (code, text) = check(
        &with("    paginate: { page: { param: page } }\n    max_pages: 5\n"),
        &[SECRET],
    );
    assert_eq!(code, 0, "{text}");
}

/// The admin section is validated: a bad listen address names the key.
#[test]
fn admin_listen_is_validated() {
    let admin = format!("admin:\n  listen: localhost-ish\n{VALID}");
    assert_rejected(
        &admin,
        &[SECRET],
        &["admin.listen", "line 2", "host:port or off"],
    );
    let (code, text) = check(
        &format!("admin:\n  listen: off\n  token: t0k\n{VALID}"),
        &[SECRET],
    );
    assert_eq!(code, 0, "{text}");
}

/// An admin API on a non-loopback address without a token is refused (it can resend, purge
/// and reload); with a token it is accepted.
#[test]
fn admin_on_the_network_needs_a_token() {
    assert_rejected(
        &format!("admin:\n  listen: 0.0.0.0:9464\n{VALID}"),
        &[SECRET],
        &["admin.listen", "line 2", "0.0.0.0:9464", "admin.token"],
    );
    let (code, text) = check(
        &format!("admin:\n  listen: 0.0.0.0:9464\n  token: t0k3n\n{VALID}"),
        &[SECRET],
    );
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("t0k3n"), "{text}");
}

/// Credentials to a plain-http upstream and events to a plain-http destination off this machine
/// are warnings, not errors; loopback is quiet.
#[test]
fn plain_http_off_the_machine_warns() {
    let remote = VALID
        .replace("http://127.0.0.1:9000", "http://10.1.2.3:9000")
        .replace("http://127.0.0.1:8080", "http://hooks.internal:8080")
        .replace(
            "    every: 60s",
            "    every: 60s\n    auth: { bearer: t0k3n }",
        );
    let (code, text) = check(&remote, &[SECRET]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("warning: sources.issues.url"), "{text}");
    assert!(text.contains("warning: destinations.agent.url"), "{text}");
    assert!(!text.contains("t0k3n"), "{text}");
    let (_, quiet) = check(VALID, &[SECRET]);
    assert!(!quiet.contains("warning"), "{quiet}");
}

/// `every` is bounded (100ms to 365d), and so is each retry step (30d).
#[test]
fn huge_durations_are_rejected() {
    assert_rejected(
        &VALID.replace("every: 60s", "every: 100000000y"),
        &[SECRET],
        &["sources.issues.every", "365d"],
    );
    assert_rejected(
        &VALID.replace(
            "secret: ${SECRET}",
            "secret: ${SECRET}\n    retry: [5s, 1000y]",
        ),
        &[SECRET],
        &["destinations.agent.retry[1]", "30d"],
    );
}

/// Signature presets, lists and custom schemes are validated with their path, line and an
/// example; unknown header placeholders are refused; `none` needs no secret.
#[test]
fn signatures_and_placeholders_are_validated() {
    let with = |extra: &str| {
        VALID.replace(
            "    secret: ${SECRET}\n",
            &format!("    secret: ${{SECRET}}\n{extra}"),
        )
    };
    assert_rejected(
        &with("    signature: stripey\n"),
        &[SECRET],
        &[
            "destinations.agent.signature",
            "line 6",
            "stripey",
            "standard, github, stripe",
        ],
    );
    assert_rejected(
        &with("    signature: [standard, nope]\n"),
        &[SECRET],
        &["destinations.agent.signature[1]", "nope"],
    );
    assert_rejected(
        &with("    signature: { header: X-Sig, value: \"v={sig}\", encoding: base32 }\n"),
        &[SECRET],
        &[
            "destinations.agent.signature.value",
            "unknown placeholder {sig}",
            "destinations.agent.signature.encoding",
            "hex or base64",
        ],
    );
    assert_rejected(
        &with("    signature: { header: X-Sig, value: \"static\" }\n"),
        &[SECRET],
        &[
            "destinations.agent.signature.value",
            "must contain {signature}",
        ],
    );
    assert_rejected(
        &with("    headers: { X-Event: \"{event_id}\" }\n"),
        &[SECRET],
        &[
            "destinations.agent.headers.X-Event",
            "unknown placeholder {event_id}",
            "{id}",
        ],
    );
    let (code, text) = check(
        &with(
            "    signature: [stripe, slack, shopify, github]\n    headers: { X-Event-ID: \"{id}\", X-Lit: \"{{x}}\" }\n",
        ),
        &[SECRET],
    );
    assert_eq!(code, 0, "{text}");
    let none = VALID.replace("    secret: ${SECRET}\n", "    signature: none\n");
    let (code, text) = check(&none, &[]);
    assert_eq!(code, 0, "{text}");
    let plain = VALID.replace(
        "    secret: ${SECRET}\n",
        "    secret: not-a-whsec\n    signature: stripe\n",
    );
    let (code, text) = check(&plain, &[]);
    assert_eq!(code, 0, "a utf8-keyed scheme takes any secret: {text}");
}

/// A jq syntax or name error in `body` or `filter` is a check error with the path, the line
/// and jq's message.
#[test]
fn jq_programs_are_compiled_at_check() {
    let with = |extra: &str| {
        VALID.replace(
            "    secret: ${SECRET}\n",
            &format!("    secret: ${{SECRET}}\n{extra}"),
        )
    };
    assert_rejected(
        &with("    body: '.data |'\n"),
        &[SECRET],
        &[
            "destinations.agent.body",
            "line 6",
            "jq error at character 8",
            "expected term",
        ],
    );
    assert_rejected(
        &with("    filter: '.type == $nope'\n"),
        &[SECRET],
        &["destinations.agent.filter", "undefined variable $nope"],
    );
    assert_rejected(
        &with("    body: env\n"),
        &[SECRET],
        &["destinations.agent.body", "env"],
    );
    let (code, text) = check(
        &with(
            "    body: '{task_id: .data.id, secret: $secret}'\n    filter: '.type == \"item.created\"'\n",
        ),
        &[SECRET],
    );
    assert_eq!(code, 0, "{text}");
}

/// `secret: { credential: NAME }` reads $CREDENTIALS_DIRECTORY/NAME (systemd LoadCredential=).
#[test]
fn credential_secrets_are_read_from_the_credentials_directory() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("triage"), format!("{}\n", SECRET.1)).unwrap();
    let yaml = VALID.replace("secret: ${SECRET}", "secret: { credential: triage }");
    let dir = creds.path().to_str().unwrap();
    let (code, text) = check(&yaml, &[("CREDENTIALS_DIRECTORY", dir)]);
    assert_eq!(code, 0, "{text}");
    assert_rejected(
        &yaml.replace("triage }", "missing }"),
        &[("CREDENTIALS_DIRECTORY", dir)],
        &["destinations.agent.secret", "credential"],
    );
    assert_rejected(&yaml, &[], &["CREDENTIALS_DIRECTORY is not set"]);
}

/// A secret's value never appears in check output, even when it is wrong.
#[test]
fn secrets_never_appear_in_check_output() {
    let secret = "whsec_not-base64-but-very-secret!!";
    let (code, text) = check(VALID, &[("SECRET", secret)]);
    assert_eq!(code, 2);
    assert!(text.contains("destinations.agent.secret"), "{text}");
    assert!(!text.contains("very-secret"), "secret leaked:\n{text}");
}

/// A value's content never changes the YAML structure: a secret with `: `, `#` and a newline
/// stays one string.
#[test]
fn env_values_cannot_change_structure() {
    let yaml = VALID.replace(
        "secret: ${SECRET}",
        "secret: ${SECRET}\n    signature: github",
    );
    let (code, text) = check(&yaml, &[("SECRET", "a: b # c\nsources: {}")]);
    assert_eq!(code, 0, "{text}");
}

/// Every example config and the reference bridge.yaml validate.
#[test]
fn repository_examples_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("bridge.yaml"),
        root.join("examples/receivers/bridge.yaml"),
        root.join("deploy/postgres/bridge.yaml"),
    ];
    for entry in std::fs::read_dir(root.join("examples")).expect("examples/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    assert!(
        files.len() >= 4,
        "expected the reference config and several examples"
    );
    let env = |name: &str| {
        Some(if name.contains("SECRET") {
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()
        } else {
            format!("test-{name}")
        })
    };
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if let Err(e) = pollhook::config::load_str(&text, &file, &env) {
            panic!("{} is invalid: {e}", file.display());
        }
    }
}

/// The Debian package's starter config validates once its credential exists, as the package
/// instructions set it up.
#[test]
fn the_packaged_starter_config_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("debian/bridge.yaml");
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(
        creds.path().join("agent"),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    )
    .unwrap();
    let dir = creds.path().to_string_lossy().into_owned();
    let env = move |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| dir.clone());
    let text = std::fs::read_to_string(&file).unwrap();
    if let Err(e) = pollhook::config::load_str(&text, &file, &env) {
        panic!("{} is invalid: {e}", file.display());
    }
}

/// Secrets from every place a config can hold them stay out of `Debug` output.
#[test]
fn secrets_never_appear_in_debug_output() {
    let yaml = "destinations:
  a:
    url: http://127.0.0.1:1/h
    secret: [\"${SECRET}\", whsec_c2Vjb25kLXNlY3JldC12YWx1ZQ==]
    headers: { X-Token: hdr-secret-1 }
sources:
  s1:
    url: http://127.0.0.1:1/x
    every: 1s
    key: /id
    auth: { bearer: bearer-secret-2 }
    headers: { Authorization: hdr-secret-3 }
    to: [a]
  s2:
    url: http://127.0.0.1:1/y
    every: 1s
    key: /id
    auth: { basic: { username: u, password: basic-secret-4 } }
    to: [a]
  s3:
    url: http://127.0.0.1:1/z
    every: 1s
    key: /id
    auth: { header: { name: X-Api-Key, value: header-secret-5 } }
    to: [a]
";
    let env = |n: &str| (n == "SECRET").then(|| SECRET.1.to_owned());
    let config =
        pollhook::config::load_str(yaml, std::path::Path::new("bridge.yaml"), &env).expect("valid");
    let debug = format!("{config:?}");
    for secret in [
        SECRET.1,
        "c2Vjb25kLXNlY3JldC12YWx1ZQ",
        "hdr-secret-1",
        "bearer-secret-2",
        "hdr-secret-3",
        "basic-secret-4",
        "header-secret-5",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked into Debug output");
    }
}
