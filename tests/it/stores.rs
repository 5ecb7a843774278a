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

/// The modules run again with three instances on one database (every test daemon is three
/// daemons, the test talking to the first): those whose tests do not call a source's admin
/// routes, which only the instance running the source answers.
const ON_THREE: &[&str] = &[
    "delivery::",
    "detection::",
    "fetch_failures::",
    "history::",
    "hostile::",
    "ops::",
    "ordering::",
    "pruning::",
    "receivers::",
    "signatures::",
    "transform::",
    // The status page lists the sources of the instance that serves it.
    "--skip",
    "history::page_refuses_cross_site_posts",
];

#[test]
fn invariant_tests_pass_on_postgres() {
    run_on_postgres("invariant_tests_pass_on_postgres", PARAMETERISED, 1, 60);
}

#[test]
fn invariant_tests_pass_on_three_instances() {
    run_on_postgres("invariant_tests_pass_on_three_instances", ON_THREE, 3, 40);
}

/// Runs `modules` of this binary in a child process on PostgreSQL with `instances` instances
/// per test daemon; fails unless all pass and at least `min` ran.
fn run_on_postgres(test: &str, modules: &[&str], instances: usize, min: usize) {
    if pg::enabled() {
        return; // already a PostgreSQL run
    }
    if !pg::installed(test) {
        return;
    }
    let _heavy = crate::helpers::HEAVY.blocking_lock();
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .env(pg::STORE_ENV, "postgres")
        .env("POLLHOOK_TEST_INSTANCES", instances.to_string())
        .args(modules)
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
        "the suite failed on PostgreSQL ({instances} instances):\n{summary}\n\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = stdout.lines().filter(|l| l.ends_with("... ok")).count();
    assert!(
        passed >= min,
        "only {passed} tests ran on PostgreSQL:\n{stdout}"
    );
    eprintln!("on PostgreSQL, {instances} instance(s): {summary}");
}
