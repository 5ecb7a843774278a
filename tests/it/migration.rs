//! Moving up (design §8): a redb deployment's state exported and imported into PostgreSQL,
//! then run there with nothing re-baselined or re-sent.

use std::collections::HashSet;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::helpers::fleet::*;
use crate::helpers::{SECRET, binary, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_state_moves_to_postgres_without_rebaseline_or_resend() {
    let Some(Setup {
        _serial,
        db,
        dir,
        w,
        base,
    }) = setup("redb_state_moves_to_postgres_without_rebaseline_or_resend").await
    else {
        return;
    };
    const N: usize = 3;
    // On redb, with receivers that refuse: `agent` keeps its rows pending (3 s between
    // attempts; the export carries the schedule), `dead-end` dead-letters them.
    let redb_cfg = dir.path().join("redb.yaml");
    std::fs::write(&redb_cfg, redb_yaml(&dir, &base, N)).unwrap();
    let mut daemon = run(&redb_cfg);
    wait_until(
        T,
        "first events refused on redb, dead letters made",
        || async {
            let w = w.lock().unwrap();
            let refused = w
                .deliveries
                .iter()
                .filter(|d| d.0.starts_with("refusing"))
                .count();
            let gone = w
                .deliveries
                .iter()
                .filter(|d| d.0.starts_with("gone"))
                .count();
            refused >= N && gone >= 2 * N
        },
    )
    .await;
    crate::helpers::terminate(&mut daemon.0);
    let export = Command::new(binary())
        .args(["state", "export", "-c"])
        .arg(&redb_cfg)
        .env("SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let dump = String::from_utf8(export.stdout).unwrap();
    let count = |kind: &str| {
        dump.lines()
            .filter(|l| l.contains(&format!("\"kind\":\"{kind}\"")))
            .count()
    };
    assert_eq!(count("outbox"), N, "pending rows exported");
    assert_eq!(count("dead"), N, "dead letters exported");
    let pg_cfg = dir.path().join("pg.yaml");
    std::fs::write(&pg_cfg, pg_yaml(&db, &base, N)).unwrap();
    let mut import = Command::new(binary())
        .args(["state", "import", "-c"])
        .arg(&pg_cfg)
        .env("SECRET", SECRET)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        import
            .stdin
            .take()
            .unwrap()
            .write_all(dump.as_bytes())
            .unwrap();
    }
    let out = import.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead = query(&db, "SELECT count(*) FROM pollhook_dead").await[0].get::<_, i64>(0);
    assert_eq!(dead, N as i64, "dead letters carried over");
    let pending: HashSet<String> = w
        .lock()
        .unwrap()
        .deliveries
        .iter()
        .filter(|d| d.0.starts_with("refusing"))
        .map(|d| d.0.clone())
        .collect();
    ACCEPT.store(true, std::sync::atomic::Ordering::SeqCst);
    let _pg = run(&pg_cfg);
    wait_until(T, "the pending rows delivered from PostgreSQL", || async {
        let w = w.lock().unwrap();
        pending
            .iter()
            .all(|id| w.deliveries.iter().any(|d| &d.0 == id && d.2))
    })
    .await;
    // A change after the move is revision 2: nothing was re-baselined.
    w.lock().unwrap().version.insert(0, 2);
    wait_until(T, "the change after the move delivered", || async {
        w.lock().unwrap().deliveries.iter().any(|d| {
            d.2 && serde_json::from_slice::<Value>(&d.1).is_ok_and(|e| e["data"]["v"] == 2)
        })
    })
    .await;
    let w = w.lock().unwrap();
    let accepted: HashSet<&String> = w
        .deliveries
        .iter()
        .filter(|d| d.2 && d.0.starts_with("refusing"))
        .map(|d| &d.0)
        .collect();
    let new: Vec<&&String> = accepted
        .iter()
        .filter(|id| !pending.contains(**id))
        .collect();
    assert_eq!(
        new.len(),
        1,
        "only the change after the move is a new event: {new:?}"
    );
    let change = w
        .deliveries
        .iter()
        .find_map(|d| {
            serde_json::from_slice::<Value>(&d.1)
                .ok()
                .filter(|e| e["data"]["v"] == 2)
        })
        .unwrap();
    assert_eq!(change["revision"], 2, "{change}");
}

/// Both destinations of the move: `agent` at the refusing receiver, `dead-end` dead-letters.
fn destinations(base: &str, retry: &str) -> String {
    format!(
        "destinations:\n  agent:\n    url: {base}/refusing\n    secret: ${{SECRET}}\n    retry: [{retry}]\n  \
         dead-end:\n    url: {base}/gone\n    secret: ${{SECRET}}\n    retry: [1ms]\n"
    )
}

fn redb_yaml(dir: &tempfile::TempDir, base: &str, n: usize) -> String {
    format!(
        "state: {}\nadmin:\n  listen: off\n{}sources:\n{}",
        dir.path().join("state.redb").display(),
        destinations(base, "3s, 3s, 3s, 3s, 3s"),
        sources_yaml(base, n)
    )
}

fn pg_yaml(db: &str, base: &str, n: usize) -> String {
    format!(
        "store:\n  postgres: {db}\n  lease: 3s\ninstance: moved\nadmin:\n  listen: off\n{}sources:\n{}",
        destinations(base, "3s, 3s, 3s, 3s, 3s"),
        sources_yaml(base, n)
    )
}

fn sources_yaml(base: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("  s{i}:\n    url: {base}/s/{i}\n    every: 200ms\n    jitter: 0%\n    key: /id\n    to: [agent, dead-end]\n    on_first_poll: emit\n"))
        .collect()
}
