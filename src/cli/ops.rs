//! Operator commands that talk to the running daemon through its admin API: `status`,
//! `sources poll|pause|resume`, `dead list|retry|purge`. Tables for people, `--json` for scripts.

use anyhow::bail;
use reqwest::Method;
use serde_json::Value;

use super::{DeadCommand, EventsCommand, EventsList, OpsArgs, SourceAction};
use crate::admin::client::AdminClient;

async fn client(ops: &OpsArgs) -> anyhow::Result<AdminClient> {
    // Only the admin settings: the daemon's other secrets need not be in this environment.
    let admin = crate::config::load_admin(&ops.config.path)?;
    Ok(AdminClient::new(&admin)?)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns under `headers`.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        println!("{}", line(row.clone()));
    }
}

/// `pollhook status`.
pub async fn status(ops: OpsArgs) -> anyhow::Result<()> {
    let c = client(&ops).await?;
    let sources = c.call(Method::GET, "/v1/sources").await?;
    let outbox = c.call(Method::GET, "/v1/outbox").await?;
    let ready = c.call(Method::GET, "/readyz").await.unwrap_or(Value::Null);
    let cluster = c
        .call(Method::GET, "/v1/cluster")
        .await
        .unwrap_or(Value::Null);
    if ops.json {
        println!(
            "{}",
            serde_json::json!({ "sources": sources["sources"], "outbox": outbox, "reload_errors": ready["reload_errors"], "cluster": cluster })
        );
        return Ok(());
    }
    if cluster["store"] == "postgres" {
        let rows: Vec<Vec<String>> = cluster["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                let me = if i["name"] == cluster["instance"] {
                    " (this one)"
                } else {
                    ""
                };
                vec![
                    format!("{}{me}", text(&i["name"])),
                    if i["alive"] == true { "alive" } else { "gone" }.to_owned(),
                    text(&i["leases"]),
                    text(&i["claims"]),
                    text(&i["heartbeat_at"]),
                ]
            })
            .collect();
        table(
            &["INSTANCE", "STATE", "LEASES", "CLAIMS", "HEARTBEAT"],
            &rows,
        );
        println!();
    }
    let rows: Vec<Vec<String>> = sources["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let state = if s["paused"].is_null() {
                "running".to_owned()
            } else {
                format!("paused: {}", text(&s["paused"]))
            };
            let error = if s["consecutive_failures"].as_u64().unwrap_or(0) > 0 {
                text(&s["last_error"])
            } else {
                String::new()
            };
            vec![
                text(&s["name"]),
                state,
                text(&s["last_poll"]),
                text(&s["last_outcome"]),
                text(&s["items"]),
                text(&s["events"]),
                text(&s["next_poll"]),
                error,
            ]
        })
        .collect();
    table(
        &[
            "SOURCE",
            "STATE",
            "LAST POLL",
            "OUTCOME",
            "ITEMS",
            "EVENTS",
            "NEXT POLL",
            "ERROR",
        ],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = outbox["destinations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                text(&d["destination"]),
                text(&d["pending"]),
                text(&d["in_flight"]),
                d["oldest_pending_age_seconds"]
                    .as_f64()
                    .map_or("-".into(), |a| format!("{a:.1}s")),
            ]
        })
        .collect();
    table(&["DESTINATION", "PENDING", "IN FLIGHT", "OLDEST"], &rows);
    if let Some(errors) = ready["reload_errors"].as_array().filter(|e| !e.is_empty()) {
        println!("\nlast reload was rejected; the previous config is running:");
        errors.iter().for_each(|e| println!("  - {}", text(e)));
    }
    Ok(())
}

/// `pollhook sources poll|pause|resume NAME`.
pub async fn sources(
    action: SourceAction,
    name: String,
    discard: bool,
    ops: OpsArgs,
) -> anyhow::Result<()> {
    let verb = match action {
        SourceAction::Poll => "poll",
        SourceAction::Pause => "pause",
        SourceAction::Resume => "resume",
    };
    let answer = client(&ops)
        .await?
        .call(
            Method::POST,
            &format!(
                "/v1/sources/{name}/{verb}{}",
                if discard { "?discard=true" } else { "" }
            ),
        )
        .await?;
    if ops.json {
        println!("{answer}");
    } else {
        println!("{name}: {}", text(&answer["result"]));
    }
    Ok(())
}

/// `pollhook dead list|retry|purge`.
pub async fn dead(command: DeadCommand) -> anyhow::Result<()> {
    match command {
        DeadCommand::List(ops) => {
            let answer = client(&ops).await?.call(Method::GET, "/v1/dead").await?;
            if ops.json {
                println!("{answer}");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = answer["dead"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    vec![
                        text(&d["id"]),
                        text(&d["destination"]),
                        text(&d["source"]),
                        text(&d["key"]),
                        text(&d["revision"]),
                        text(&d["attempts"]),
                        text(&d["dead_at"]),
                        text(&d["reason"]),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "DESTINATION",
                    "SOURCE",
                    "KEY",
                    "REV",
                    "ATTEMPTS",
                    "DEAD AT",
                    "REASON",
                ],
                &rows,
            );
        }
        DeadCommand::Retry { id, all, ops } => {
            let path = match (id, all) {
                (Some(id), false) => format!("/v1/dead/{id}/retry"),
                (None, true) => "/v1/dead/retry".to_owned(),
                _ => bail!("give a dead letter id (see `pollhook dead list`) or --all"),
            };
            let answer = client(&ops).await?.call(Method::POST, &path).await?;
            if ops.json {
                println!("{answer}");
            } else {
                println!("re-queued: {}", text(&answer["retried"]));
            }
        }
        DeadCommand::Purge(ops) => {
            let answer = client(&ops).await?.call(Method::DELETE, "/v1/dead").await?;
            if ops.json {
                println!("{answer}");
            } else {
                println!("purged {} dead letters", text(&answer["purged"]));
            }
        }
    }
    Ok(())
}

fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// `pollhook events [filters] | show ID | resend ID`.
pub async fn events(command: Option<EventsCommand>, list: EventsList) -> anyhow::Result<()> {
    match command {
        None => events_list(list).await?,
        Some(EventsCommand::Show { id, ops }) => {
            let path = format!("/v1/events/{}", urlencoding(&id));
            let answer = client(&ops).await?.call(Method::GET, &path).await?;
            if ops.json {
                println!("{answer}");
                return Ok(());
            }
            for d in answer["deliveries"].as_array().into_iter().flatten() {
                println!(
                    "{} → {}  {}  (seq {}, {} {}, rev {})",
                    text(&d["id"]),
                    text(&d["destination"]),
                    text(&d["status"]).to_uppercase(),
                    text(&d["seq"]),
                    text(&d["source"]),
                    text(&d["key"]),
                    text(&d["revision"]),
                );
                if !d["reason"].is_null() {
                    println!("  reason: {}", text(&d["reason"]));
                }
                for a in d["attempts"].as_array().into_iter().flatten() {
                    let result = match a["status"].as_u64() {
                        Some(code) => format!("HTTP {code}"),
                        None => text(&a["error"]),
                    };
                    println!(
                        "  attempt {}  {}  {} ms  {}",
                        text(&a["n"]),
                        text(&a["at"]),
                        text(&a["duration_ms"]),
                        result
                    );
                    if let Some(r) = a["response"].as_str() {
                        println!("    response: {}", r.replace('\n', " "));
                    }
                }
                for h in d["headers"].as_array().into_iter().flatten() {
                    println!("  {}: {}", text(&h["name"]), text(&h["value"]));
                }
                if let Some(body) = d["body"].as_str() {
                    println!("  body: {body}");
                }
            }
        }
        Some(EventsCommand::Resend {
            id,
            destination,
            ops,
        }) => {
            let path = format!(
                "/v1/events/{}/resend?{}",
                urlencoding(&id),
                query_string(&[("destination", destination)])
            );
            let answer = client(&ops).await?.call(Method::POST, &path).await?;
            print_queued(&answer, ops.json);
        }
    }
    Ok(())
}

fn urlencoding(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn print_queued(answer: &Value, json: bool) {
    if json {
        println!("{answer}");
        return;
    }
    let queued = answer["queued"].as_array().map_or(0, Vec::len);
    println!("queued {queued} deliveries");
    for s in answer["superseded"].as_array().into_iter().flatten() {
        println!(
            "left dead (its item has a newer revision {}): dead letter {}",
            text(&s["current"]),
            text(&s["seq"])
        );
    }
}

async fn events_list(list: EventsList) -> anyhow::Result<()> {
    let status = list.status.clone();
    let path = format!(
        "/v1/events?{}",
        query_string(&[
            ("source", list.source),
            ("destination", list.destination),
            ("status", status),
            ("since", list.since),
            ("limit", list.limit.map(|l| l.to_string())),
        ])
    );
    let answer = client(&list.ops).await?.call(Method::GET, &path).await?;
    let failed =
        |e: &Value| e["status"] == "dead" || e["failed_attempts"].as_u64().is_some_and(|n| n > 0);
    let events: Vec<&Value> = answer["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| !list.failed || failed(e))
        .collect();
    if list.ops.json {
        println!(
            "{}",
            serde_json::json!({ "events": events, "next_cursor": answer["next_cursor"] })
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let last = match e["last_status"].as_u64() {
                Some(code) => format!("HTTP {code}"),
                None => text(&e["last_error"]),
            };
            vec![
                text(&e["created_at"]),
                text(&e["id"]),
                text(&e["type"]),
                text(&e["source"]),
                text(&e["destination"]),
                text(&e["status"]),
                text(&e["attempts"]),
                last,
            ]
        })
        .collect();
    table(
        &[
            "DETECTED",
            "EVENT",
            "TYPE",
            "SOURCE",
            "DESTINATION",
            "STATUS",
            "ATTEMPTS",
            "LAST",
        ],
        &rows,
    );
    Ok(())
}

/// `pollhook replay --source S --since T [--destination D]`.
pub async fn replay(
    source: String,
    since: String,
    destination: Option<String>,
    ops: OpsArgs,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "source": source, "since": since, "destination": destination });
    let answer = client(&ops)
        .await?
        .send(Method::POST, "/v1/replay", Some(&body))
        .await?;
    print_queued(&answer, ops.json);
    Ok(())
}
