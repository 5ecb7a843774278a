//! Operator commands that talk to the running daemon through its admin API: `status`,
//! `sources poll|pause|resume`, `dead list|retry|purge`. Tables for people, `--json` for scripts.

use anyhow::bail;
use reqwest::Method;
use serde_json::Value;

use super::{DeadCommand, OpsArgs, SourceAction};
use crate::admin::client::AdminClient;

async fn client(ops: &OpsArgs) -> anyhow::Result<AdminClient> {
    let config = crate::config::load(&ops.config.path)?;
    Ok(AdminClient::new(&config.admin)?)
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
    if ops.json {
        println!(
            "{}",
            serde_json::json!({ "sources": sources["sources"], "outbox": outbox, "reload_errors": ready["reload_errors"] })
        );
        return Ok(());
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
