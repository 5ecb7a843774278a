//! The invariant tests of design §1 on both stores (design §8): this suite runs on redb, and
//! this test runs the same tests again in a child process of this binary with
//! `POLLHOOK_TEST_STORE=postgres`, where every daemon the helpers start keeps its state in a
//! database of a real PostgreSQL server (`helpers::pg`).

use std::process::Command;

use crate::helpers::pg;

/// The modules whose tests exercise the store: detection, delivery, ordering, durability and
/// recovery, flood guard, retention, the delivery log, reload, operator tools, failing and
/// hostile upstreams (state untouched), pagination, transforms and signatures. Left out: tests
/// of the config, the CLI, the browser page, and two that read `/metrics` text whose labels
/// gain `instance` on a shared store (admin, rate_limits).
const PARAMETERISED: &[&str] = &[
    "conditional::",
    "delivery::",
    "detection::",
    "durability::",
    "fetch_failures::",
    "flood::",
    "history::",
    "hostile::",
    "ops::",
    "ordering::",
    "pagination::",
    "pruning::",
    "receivers::",
    "recovery::",
    "reload::",
    "signatures::",
    "transform::",
];

#[test]
fn invariant_tests_pass_on_postgres() {
    if pg::enabled() {
        return; // already the PostgreSQL run
    }
    if !pg::installed("invariant_tests_pass_on_postgres") {
        return;
    }
    let _heavy = crate::helpers::HEAVY.blocking_lock();
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .env(pg::STORE_ENV, "postgres")
        .args(PARAMETERISED)
        .args(["--test-threads", "2"])
        .output()
        .expect("run the suite on PostgreSQL");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .filter(|l| l.starts_with("test result") || l.contains("FAILED"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        out.status.success(),
        "the suite failed on PostgreSQL:\n{summary}\n\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = stdout.lines().filter(|l| l.ends_with("... ok")).count();
    assert!(
        passed >= 60,
        "only {passed} tests ran on PostgreSQL:\n{stdout}"
    );
    eprintln!("on PostgreSQL: {summary}");
}
