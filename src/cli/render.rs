//! `pollhook sign --destination` and `pollhook preview --destination`: what a destination would
//! receive, rendered by the same code the daemon uses (its `filter`, `body`, headers and
//! signatures), so a receiver can be tested by hand before going live.

use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::SignArgs;
use crate::config::{self, Config, Destination, Source};
use crate::delivery::send::request_headers;
use crate::delivery::signing::Signer;
use crate::delivery::transform::{Rendering, render_for};
use crate::event::event_id;
use crate::extract::Item;
use crate::jq::JqPool;
use crate::store::OutboxRow;

fn destination(config: &Config, name: &str) -> anyhow::Result<Arc<Destination>> {
    config.destinations.get(name).cloned().with_context(|| {
        let known: Vec<&str> = config.destinations.keys().map(String::as_str).collect();
        format!("no destination named {name:?}; known: {}", known.join(", "))
    })
}

/// A jq worker for `dest`, under its limits.
fn jq(dest: &Destination) -> anyhow::Result<JqPool> {
    let exe = std::env::current_exe().context("cannot find this executable for the jq worker")?;
    Ok(JqPool::new(exe, dest.jq, &dest.name))
}

/// A sample `item.created` event, or the one in `--event`.
fn event(args: &SignArgs, now: i64) -> anyhow::Result<Value> {
    let id = args.id.clone();
    match &args.event {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut event: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            if event.get("id").is_none() {
                event["id"] = json!(id);
            }
            Ok(event)
        }
        None => Ok(json!({
            "type": "item.created",
            "timestamp": chrono::DateTime::from_timestamp(now, 0).map(crate::event::timestamp),
            "source": "example",
            "id": id,
            "key": "1",
            "revision": 1,
            "data": {"id": 1, "title": "an example item"},
        })),
    }
}

/// `pollhook sign --destination NAME`.
pub async fn sign_destination(args: &SignArgs, name: &str) -> anyhow::Result<()> {
    let config = config::load(&args.config.path)?;
    let dest = destination(&config, name)?;
    let now = args
        .timestamp
        .unwrap_or_else(|| chrono::Utc::now().timestamp());
    let event = event(args, now)?;
    let envelope = serde_json::to_vec(&event)?;
    let body = match render_for(&jq(&dest)?, &dest, &event).await {
        Rendering::Filtered => {
            println!("# {name}'s filter drops this event: nothing would be sent");
            return Ok(());
        }
        Rendering::Failed(why) => bail!("{name} would dead-letter this event: {why}"),
        Rendering::Body(body) => body.unwrap_or(envelope),
    };
    let text = |k: &str| event[k].as_str().unwrap_or_default().to_owned();
    let row = OutboxRow {
        seq: 0,
        destination: name.to_owned(),
        source: text("source"),
        key: text("key"),
        revision: event["revision"].as_u64().unwrap_or(1),
        event_id: text("id"),
        event_type: text("type"),
        attempts: 0,
        due_ms: 0,
        created_ms: 0,
        last_error: None,
        dead_reason: None,
        dead_ms: None,
        render: false,
        body: Arc::from(body),
    };
    println!("POST {}", dest.url);
    for (header, value) in request_headers(&dest, &Signer::new(&dest), &row, now) {
        println!("{header}: {}", value.to_str().unwrap_or("<not UTF-8>"));
    }
    println!();
    println!("{}", String::from_utf8_lossy(&row.body));
    Ok(())
}

/// `pollhook preview SOURCE --destination NAME`: one line per current item, the body the
/// destination would receive if the item were created now.
pub async fn preview_destination(
    config: &Config,
    source: &Source,
    name: &str,
    items: &[Item],
) -> anyhow::Result<()> {
    let dest = destination(config, name)?;
    let jq = jq(&dest)?;
    let now = chrono::Utc::now();
    for item in items {
        let hash = source.extract.hash(&item.data);
        let event = json!({
            "type": "item.created",
            "timestamp": crate::event::timestamp(now),
            "source": source.name,
            "id": event_id(&source.name, &item.key, 1, &hash),
            "key": item.key,
            "revision": 1,
            "data": item.data,
        });
        match render_for(&jq, &dest, &event).await {
            Rendering::Filtered => println!("# key {}: filtered", item.key),
            Rendering::Failed(why) => println!("# key {}: dead letter: {why}", item.key),
            Rendering::Body(Some(body)) => println!("{}", String::from_utf8_lossy(&body)),
            Rendering::Body(None) => println!("{event}"),
        }
    }
    eprintln!("{} items rendered for {name}", items.len());
    Ok(())
}
