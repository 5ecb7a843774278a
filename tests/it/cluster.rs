//! Several instances on one PostgreSQL store (design §8), with the real binary: sources are
//! polled by exactly one live instance, spread evenly, moved on join, kill -9 and SIGSTOP
//! without a lost change, a phantom, or one event id with two bodies; the schema migrates once;
//! a host's budget is shared; an instance names the one that runs a source.

use std::time::{Duration, Instant};

use crate::helpers::fleet::*;
use crate::helpers::{KillOnDrop, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_sources_each_polled_by_one() {
    let Some(Setup {
        _serial,
        db,
        dir,
        w,
        base,
    }) = setup("three_instances_share_sources_each_polled_by_one").await
    else {
        return;
    };
    const N: usize = 300;
    let names = ["alpha", "bravo", "charlie"];
    let _fleet = fleet(dir.path(), &names, |n| yaml(&db, n, &base, N, "1s", "3s"));
    spread(&db, 3, N).await;
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let to = Instant::now();
    let spread = leases(&db).await;
    for (instance, n) in &spread {
        assert!(
            (80..=120).contains(n),
            "{instance} holds {n} of 300: {spread:?}"
        );
    }
    let w = w.lock().unwrap();
    let doubled: Vec<_> = gaps(&w, from, to)
        .into_iter()
        .filter(|(_, gap)| *gap < Duration::from_millis(500))
        .collect();
    assert!(
        doubled.is_empty(),
        "sources polled twice in one interval: {doubled:?}"
    );
    let quiet: Vec<usize> = (0..N)
        .filter(|n| {
            w.polls
                .get(n)
                .is_none_or(|t| t.iter().filter(|t| **t >= from && **t < to).count() < 4)
        })
        .collect();
    assert!(
        quiet.is_empty(),
        "sources not polled every second: {quiet:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_an_empty_database_migrate_once() {
    let Some(Setup {
        _serial,
        db,
        dir,
        w: _w,
        base,
    }) = setup("three_instances_on_an_empty_database_migrate_once").await
    else {
        return;
    };
    let _fleet = fleet(dir.path(), &["a", "b", "c"], |n| {
        yaml(&db, n, &base, 3, "1s", "3s")
    });
    wait_until(T, "three instances registered", || async {
        query(
            &db,
            "SELECT 1 FROM pg_tables WHERE tablename = 'pollhook_instances'",
        )
        .await
        .len()
            == 1
            && query(&db, "SELECT name FROM pollhook_instances")
                .await
                .len()
                == 3
    })
    .await;
    let applied = query(&db, "SELECT version, applied_by FROM pollhook_migrations").await;
    let versions: Vec<i64> = applied.iter().map(|r| r.get(0)).collect();
    let expected: Vec<i64> = (1..=versions.len() as i64).collect();
    assert!(!versions.is_empty());
    assert_eq!(versions, expected, "each migration applied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_moves_sources_within_the_lease_and_loses_nothing() {
    let Some(Setup {
        _serial,
        db,
        dir,
        w,
        base,
    }) = setup("kill_9_moves_sources_within_the_lease_and_loses_nothing").await
    else {
        return;
    };
    w.lock().unwrap().flaky = true;
    const N: usize = 30;
    let lease = Duration::from_secs(2);
    let mut fleet: Vec<KillOnDrop> = fleet(dir.path(), &["a", "b", "c"], |n| {
        yaml(&db, n, &base, N, "1s", "2s")
    });
    spread(&db, 3, N).await;
    let churning = churn(&w, N);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victims = held_by(&db, "a").await;
    assert!(!victims.is_empty());
    let mut a = fleet.remove(0);
    a.0.kill().expect("kill -9");
    let _ = a.0.wait();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    churning.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_until(T, "every source's last version delivered", || async {
        all_delivered(&w.lock().unwrap(), N)
    })
    .await;
    let w = w.lock().unwrap();
    for n in &victims {
        let next = w.polls[n].iter().find(|t| **t > killed).copied();
        let after = next.map(|t| t.duration_since(killed));
        // Within the lease plus one interval (1 s), and 1 s of slack for a loaded machine.
        assert!(
            after.is_some_and(|d| d <= lease + Duration::from_secs(2)),
            "s{n} of the killed instance polled again after {after:?} (lease 2s + interval 1s)"
        );
    }
    check_deliveries(&w, N, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_paused_past_its_lease_cannot_commit_stale_state() {
    let Some(Setup {
        _serial,
        db,
        dir,
        w,
        base,
    }) = setup("an_instance_paused_past_its_lease_cannot_commit_stale_state").await
    else {
        return;
    };
    const N: usize = 20;
    let fleet: Vec<KillOnDrop> = fleet(dir.path(), &["a", "b"], |n| {
        yaml(&db, n, &base, N, "500ms", "2s")
    });
    spread(&db, 2, N).await;
    let churning = churn(&w, N);
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&fleet[0], "-STOP");
    wait_until(
        Duration::from_secs(15),
        "b took every source over",
        || async { held_by(&db, "b").await.len() == N },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&fleet[0], "-CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    churning.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_until(T, "every source's last version delivered", || async {
        all_delivered(&w.lock().unwrap(), N)
    })
    .await;
    // Both instances are alive again: the sources are spread again.
    wait_until(T, "a holds sources again", || async {
        leases(&db).await.len() == 2
    })
    .await;
    // A frozen instance's request in flight may land late: order is not checked here.
    check_deliveries(&w.lock().unwrap(), N, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_joining_takes_sources_without_a_missed_or_doubled_poll() {
    let test = "an_instance_joining_takes_sources_without_a_missed_or_doubled_poll";
    let Some(Setup {
        _serial,
        db,
        dir,
        w,
        base,
    }) = setup(test).await
    else {
        return;
    };
    const N: usize = 60;
    let mut fleet: Vec<KillOnDrop> = fleet(dir.path(), &["a", "b"], |n| {
        yaml(&db, n, &base, N, "1s", "3s")
    });
    spread(&db, 2, N).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = Instant::now();
    fleet.push(spawn(
        dir.path(),
        "c",
        &yaml(&db, "c", &base, N, "1s", "3s"),
    ));
    wait_until(T, "the new instance holds its share", || async {
        leases(&db).await.get("c").copied().unwrap_or(0) >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let to = Instant::now();
    let moved = held_by(&db, "c").await;
    let w = w.lock().unwrap();
    let all = gaps(&w, from, to);
    let doubled: Vec<_> = all
        .iter()
        .filter(|(_, g)| *g < Duration::from_millis(500))
        .collect();
    assert!(
        doubled.is_empty(),
        "polled twice in one interval during the move: {doubled:?}"
    );
    let missed: Vec<_> = all
        .iter()
        .filter(|(_, g)| *g > Duration::from_millis(1900))
        .collect();
    assert!(
        missed.is_empty(),
        "a poll missed during the move (interval 1s): {missed:?}"
    );
    assert!(moved.len() >= 10, "{moved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_a_host_budget() {
    let Some(Setup {
        _serial,
        db,
        dir,
        w,
        base,
    }) = setup("instances_share_a_host_budget").await
    else {
        return;
    };
    const N: usize = 20;
    // 20 sources every 100 ms want 200 requests/s; the host allows 10/s, for all instances.
    let host = base.trim_start_matches("http://");
    let limited = |name: &str| {
        format!(
            "hosts:\n  {host}:\n    rate: 10/1s\n{}",
            yaml(&db, name, &base, N, "100ms", "3s")
        )
    };
    let _fleet = fleet(dir.path(), &["a", "b"], limited);
    spread(&db, 2, N).await;
    // Past the first heartbeats (the budget is split once both instances are live) and the
    // limiters' initial bursts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let count = || {
        w.lock()
            .unwrap()
            .polls
            .values()
            .map(Vec::len)
            .sum::<usize>()
    };
    let before = count();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = count() - before;
    // 10/s for 5 s, plus a little for the window's edges; alone, each would send 10/s (100).
    assert!(
        sent <= 60,
        "{sent} requests in 5 s against a shared budget of 10/s"
    );
    assert!(sent >= 25, "{sent} requests in 5 s: the budget is not used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_names_the_one_that_runs_a_source() {
    let Some(Setup {
        _serial,
        db,
        dir,
        w: _w,
        base,
    }) = setup("an_instance_names_the_one_that_runs_a_source").await
    else {
        return;
    };
    const N: usize = 8;
    let ports = [crate::helpers::free_port(), crate::helpers::free_port()];
    let _fleet: Vec<KillOnDrop> = ["a", "b"]
        .iter()
        .zip(ports)
        .map(|(n, port)| {
            let text = yaml(&db, n, &base, N, "1s", "3s").replace(
                "admin:\n  listen: off",
                &format!("admin:\n  listen: 127.0.0.1:{port}"),
            );
            spawn(dir.path(), n, &text)
        })
        .collect();
    spread(&db, 2, N).await;
    let on_b = held_by(&db, "b").await[0];
    let (a, b) = (
        format!("http://127.0.0.1:{}", ports[0]),
        format!("http://127.0.0.1:{}", ports[1]),
    );
    let (status, body) =
        crate::helpers::admin("GET", &format!("{a}/v1/sources/s{on_b}"), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["instance"], "b", "{body}");
    let (status, body) =
        crate::helpers::admin("POST", &format!("{a}/v1/sources/s{on_b}/poll"), None).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) =
        crate::helpers::admin("POST", &format!("{b}/v1/sources/s{on_b}/poll"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = crate::helpers::admin("GET", &format!("{a}/v1/sources/nope"), None).await;
    assert_eq!(status, 404);
    let (status, body) = crate::helpers::admin("GET", &format!("{a}/v1/cluster"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["store"], "postgres", "{body}");
    assert_eq!(
        body["instances"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
}
