//! `pollhook demo`: everything on loopback, no internet, no config. A fake upstream whose items
//! change every few seconds, a receiver that verifies every signature, and the real daemon
//! between them (config text → `config::load_str` → `daemon::run`) on a temporary state dir.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::cli::DemoArgs;
use crate::delivery::signing::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, verify_standard};

type Items = Arc<Mutex<BTreeMap<u64, Value>>>;

/// Runs the demo until Ctrl-C or `--for`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let items: Items = Arc::new(Mutex::new(
        (1..=5).map(|id| (id, item(id, "open", 0))).collect(),
    ));
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>())
    );
    let upstream = serve(
        Router::new()
            .route("/items", get(list))
            .with_state(items.clone()),
    )
    .await?;
    let receiver = serve(
        Router::new()
            .route("/hooks", post(receive))
            .with_state(Arc::new(secret.clone())),
    )
    .await?;
    let dir = std::env::temp_dir().join(format!("pollhook-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = demo_config(upstream, receiver);
    let path = dir.join("bridge.yaml");
    std::fs::write(&path, &text)?;
    let config = crate::config::load_str(&text, &path, &|name| {
        (name == "DEMO_SECRET").then(|| secret.clone())
    })?;
    println!(
        "pollhook demo: upstream http://{upstream}/items, receiver http://{receiver}/hooks, state {}",
        dir.display()
    );
    println!(
        "items change every {}; events appear below as the receiver verifies them. Ctrl-C stops.\n",
        humantime::format_duration(args.change_every)
    );

    let shutdown = crate::shutdown::on_signals();
    if let Some(limit) = args.duration {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            stop.cancel();
        });
    }
    tokio::spawn(mutate(items, args.change_every, shutdown.clone()));
    let result = crate::daemon::run(config, crate::daemon::Options::default(), shutdown).await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(())
}

fn demo_config(upstream: std::net::SocketAddr, receiver: std::net::SocketAddr) -> String {
    format!(
        "state: ./state.redb
admin:
  listen: off
destinations:
  demo-agent:
    url: http://{receiver}/hooks
    secret: ${{DEMO_SECRET}}
    retry: [1s, 2s, 5s]
sources:
  demo-issues:
    url: http://{upstream}/items
    every: 1s
    jitter: 0%
    items: /items
    key: /id
    version: /updated_at
    on_first_poll: emit
    include: {{ changes: true }}
    to: [demo-agent]
"
    )
}

fn item(id: u64, status: &str, rev: u64) -> Value {
    json!({"id": id, "title": format!("Issue #{id}"), "status": status, "updated_at": format!("rev-{rev}")})
}

async fn serve(app: Router) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a loopback port")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

async fn list(State(items): State<Items>) -> axum::Json<Value> {
    let list: Vec<Value> = items
        .lock()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    axum::Json(json!({ "items": list }))
}

/// Changes one item per tick: a status flip, a new item, or a deletion.
async fn mutate(items: Items, every: Duration, stop: CancellationToken) {
    let mut tick = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        tick += 1;
        let Ok(mut map) = items.lock() else { return };
        let next_id = map.keys().max().copied().unwrap_or(0) + 1;
        match tick % 5 {
            0 => {
                map.insert(next_id, item(next_id, "open", tick));
            }
            4 if map.len() > 3 => {
                let first = map.keys().next().copied();
                first.map(|k| map.remove(&k));
            }
            _ => {
                let ids: Vec<u64> = map.keys().copied().collect();
                let id = ids[(tick as usize) % ids.len()];
                let status = if tick.is_multiple_of(2) {
                    "open"
                } else {
                    "closed"
                };
                map.insert(id, item(id, status, tick));
            }
        }
    }
}

async fn receive(State(secret): State<Arc<String>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let ts = h(WEBHOOK_TIMESTAMP).parse().unwrap_or(0);
    if !verify_standard(&secret, &h(WEBHOOK_ID), ts, &body, &h(WEBHOOK_SIGNATURE)) {
        println!("✗ signature INVALID for {}", h(WEBHOOK_ID));
        return StatusCode::UNAUTHORIZED;
    }
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let changes = event
        .get("changes")
        .map(|c| format!(" changes={c}"))
        .unwrap_or_default();
    println!(
        "✓ verified {} {} key={} rev={} id={}{}",
        event["timestamp"].as_str().unwrap_or(""),
        event["type"].as_str().unwrap_or("?"),
        event["key"].as_str().unwrap_or("?"),
        event["revision"],
        h(WEBHOOK_ID),
        changes
    );
    StatusCode::NO_CONTENT
}
