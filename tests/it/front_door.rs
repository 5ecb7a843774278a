//! What a new operator meets first, through the real binary: logs fit a file and the journal,
//! the admin commands need only the admin settings, completions and the man page are there.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::upstream::Upstream;
use crate::helpers::{
    Daemon, KillOnDrop, SECRET, admin, binary, simple_yaml, terminate, wait_until,
};

const T: Duration = Duration::from_secs(10);

/// Runs the daemon with stderr going to a file (as under a service manager or `2> log`), with
/// `env`, until its log says it runs; returns the log.
async fn log_of_a_run(env: &[(&str, &str)]) -> String {
    let up = Upstream::start("[]").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    std::fs::write(&path, simple_yaml(&up.url, "http://127.0.0.1:9", "")).unwrap();
    let log = dir.path().join("stderr.log");
    let mut cmd = Command::new(binary());
    cmd.args(["run", "-c"])
        .arg(&path)
        .env("SECRET", SECRET)
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    wait_until(T, "the daemon logs that it runs", || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("pollhook running"))
    })
    .await;
    terminate(&mut child.0);
    std::fs::read_to_string(&log).unwrap()
}

/// Text logs written to a file carry no ANSI escape codes; under journald (`JOURNAL_STREAM`)
/// they carry no timestamp of their own, which the journal adds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_fit_a_file_and_the_journal() {
    let plain = log_of_a_run(&[]).await;
    assert!(
        !plain.contains('\u{1b}'),
        "escape codes in a log file:\n{plain}"
    );
    let stamped = |l: &str| l.len() > 10 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T';
    assert!(
        plain.lines().all(stamped),
        "a line without its timestamp:\n{plain}"
    );
    let journal = log_of_a_run(&[("JOURNAL_STREAM", "8:12345")]).await;
    assert!(
        !journal.contains('\u{1b}'),
        "escape codes for the journal:\n{journal}"
    );
    assert!(
        journal
            .lines()
            .all(|l| !stamped(l) && l.trim_start().starts_with(['I', 'W', 'E', 'D', 'T'])),
        "lines for the journal should start with their level:\n{journal}"
    );
    let forced = log_of_a_run(&[("POLLHOOK_COLOR", "always")]).await;
    assert!(forced.contains('\u{1b}'), "--color always gave no colour");
}

/// `pollhook status` reads only `admin.listen` and `admin.token`: a config whose other secrets
/// are not in the CLI's environment still reaches the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_need_only_the_admin_settings() {
    let up = Upstream::start("[]").await;
    let d = Daemon::start(&simple_yaml(&up.url, "http://127.0.0.1:9", ""));
    wait_until(T, "ready", || async {
        admin("GET", &format!("{}/readyz", d.admin), None).await.0 == 200
    })
    .await;
    let addr = d.admin.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    // The daemon's own config, with its admin address, as an operator's shell sees it: the
    // destination's ${SECRET} and a source token are not set here.
    let yaml = simple_yaml(
        &up.url,
        "http://127.0.0.1:9",
        "    auth: { bearer: \"${UPSTREAM_TOKEN}\" }\n",
    )
    .replace(
        "admin:\n  listen: off\n",
        &format!("admin:\n  listen: {addr}\n"),
    );
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(binary())
        .args(["status", "--json", "-c"])
        .arg(&path)
        .env_remove("SECRET")
        .env_remove("UPSTREAM_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("things"), "{stdout}");
    // `check` still wants everything.
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&path)
        .env_remove("SECRET")
        .env_remove("UPSTREAM_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    d.stop().await;
}

/// `pollhook completions bash|zsh|fish` print scripts (bash's parses) and `pollhook man` a
/// roff page.
#[test]
fn completions_and_the_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(binary())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.len() > 1000, "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("dead") && text.contains("replay"),
            "{shell}: {text}"
        );
        if shell == "bash" && Command::new("bash").arg("--version").output().is_ok() {
            let check = Command::new("bash")
                .args(["-n", "-c"])
                .arg(text.as_ref())
                .status()
                .unwrap();
            assert!(check.success(), "bash -n refused the completions");
        }
    }
    let out = Command::new(binary()).arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && page.contains(".TH pollhook 1"),
        "{page}"
    );
    assert!(page.contains("completions") && page.contains("status"));
}
