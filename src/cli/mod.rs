//! The command line: clap definitions and one small function per subcommand. The operator
//! commands that talk to a running daemon live in `ops.rs`.

mod generate;
mod ops;
mod render;

pub use generate::{completions, man};
pub use ops::{dead, events, replay, sources, status};

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, standard_key};
use crate::delivery::signing::{
    IDEMPOTENCY_KEY, WEBHOOK_ID, WEBHOOK_TIMESTAMP, github_signature, standard_signature,
    verify_github, verify_standard,
};
use crate::extract::extract;
use crate::http::upstream_client as client;
use crate::poller::fetch;

/// pollhook: webhooks for APIs that have none.
#[derive(Debug, Parser)]
#[command(name = "pollhook", version, about)]
pub struct Cli {
    /// Log filter for `run` and `demo` (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, global = true, default_value = "info", env = "POLLHOOK_LOG")]
    pub log_level: String,
    /// Log format: text for people, json for log collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "POLLHOOK_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Colour in text logs: auto (only when stderr is a terminal and NO_COLOR is unset),
    /// always or never.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        env = "POLLHOOK_COLOR"
    )]
    pub color: ColorChoice,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (systemd runs this).
    Run(ConfigArg),
    /// Validate the config; exit 0 when valid, 2 when not.
    Check(ConfigArg),
    /// Fetch one source once and print its extracted items as JSON lines; no state, no delivery.
    Preview {
        /// Source name from the config.
        source: String,
        /// Print the bodies this destination would receive for the current items instead.
        #[arg(long)]
        destination: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the headers pollhook would send for the body on stdin.
    Sign(SignArgs),
    /// Check a signature over the body on stdin; exit 0 valid, 1 invalid.
    Verify(VerifyArgs),
    /// Run a self-contained demo: fake upstream, verifying receiver and the daemon, on loopback.
    Demo(DemoArgs),
    /// Show the running daemon's sources, last polls, errors and outbox.
    Status(OpsArgs),
    /// Poll, pause or resume a source of the running daemon.
    Sources {
        /// What to do.
        #[arg(value_enum)]
        action: SourceAction,
        /// Source name.
        name: String,
        /// With resume: drop the changes the flood guard held and record the current state
        /// without events.
        #[arg(long)]
        discard: bool,
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// Inspect, re-send or purge dead letters of the running daemon.
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// The delivery log of the running daemon: list (newest first), show one event, resend.
    #[command(args_conflicts_with_subcommands = true)]
    Events {
        #[command(subcommand)]
        command: Option<EventsCommand>,
        #[command(flatten)]
        list: EventsList,
    },
    /// Send again, in order, what a source emitted since a time.
    Replay {
        /// Source name.
        #[arg(long)]
        source: String,
        /// How far back: a duration (2h), an RFC 3339 time, or unix ms.
        #[arg(long)]
        since: String,
        /// Only to this destination.
        #[arg(long)]
        destination: Option<String>,
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// Move state between stores: export it as JSON lines, import them into an empty store.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Print shell completions: `pollhook completions bash > /etc/bash_completion.d/pollhook`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `pollhook man | man -l -`.
    Man,
    /// Internal: evaluate jq programs for a running daemon (started by it, speaks on stdio).
    #[command(hide = true)]
    JqWorker(JqWorkerArgs),
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Only when stderr is a terminal and `NO_COLOR` is unset.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether text logs on stderr carry ANSI colours.
    pub fn ansi(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// `pollhook jq-worker` (internal): the limits the daemon starts it with.
#[derive(Debug, clap::Args)]
pub struct JqWorkerArgs {
    /// Address-space limit of this process, bytes.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Largest output of one program, bytes.
    #[arg(long, default_value_t = u64::MAX)]
    pub max_output: u64,
}

impl JqWorkerArgs {
    /// The limits to serve under.
    pub fn limits(&self) -> crate::jq::worker::WorkerLimits {
        crate::jq::worker::WorkerLimits {
            memory: self.memory,
            max_output: self.max_output,
        }
    }
}

/// `pollhook state`.
#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Write the whole store (sources, items, pending deliveries, dead letters, delivery log)
    /// to stdout as JSON lines. On redb, stop the daemon first.
    Export(ConfigArg),
    /// Load an export from stdin into the config's store, which must be empty.
    Import(ConfigArg),
}

/// `pollhook events` filters.
#[derive(Debug, clap::Args)]
pub struct EventsList {
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only this destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// Only this status: delivered, pending, dead, filtered.
    #[arg(long)]
    pub status: Option<String>,
    /// Only deliveries that failed at least once (dead, or pending after a failed attempt).
    #[arg(long, conflicts_with = "status")]
    pub failed: bool,
    /// How far back: a duration (1h), an RFC 3339 time, or unix ms.
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many (default 100).
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// `pollhook events ...`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// One event: every delivery, its attempts, the body and headers as sent.
    Show {
        /// Event id (evt_…).
        id: String,
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// Send an event again with the same id and body (all its destinations, or one).
    Resend {
        /// Event id (evt_…).
        id: String,
        /// Only to this destination.
        #[arg(long)]
        destination: Option<String>,
        #[command(flatten)]
        ops: OpsArgs,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `-c` and `--json` for commands that talk to the daemon's admin API.
#[derive(Debug, clap::Args)]
pub struct OpsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `pollhook sources ACTION`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SourceAction {
    /// Poll now (also when paused).
    Poll,
    /// Stop polling until resumed (survives restarts).
    Pause,
    /// Resume polling.
    Resume,
}

/// `pollhook dead ...`.
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead letters.
    List(OpsArgs),
    /// Re-send one dead letter (by id) or all of them (--all).
    Retry {
        /// Dead letter id from `dead list`.
        id: Option<u64>,
        /// Re-send every dead letter.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[command(flatten)]
        ops: OpsArgs,
    },
    /// Delete every dead letter.
    Purge(OpsArgs),
}

/// `-c bridge.yaml`.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Config file.
    #[arg(
        short = 'c',
        long = "config",
        default_value = "bridge.yaml",
        env = "POLLHOOK_CONFIG"
    )]
    pub path: PathBuf,
}

/// Which signature headers `sign` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SignatureArg {
    /// Standard Webhooks.
    Standard,
    /// GitHub `x-hub-signature-256`.
    Github,
    /// Both.
    Both,
}

/// `pollhook sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Secret (`whsec_…` for standard; any string for github); not with --destination.
    #[arg(long, env = "POLLHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Print exactly the request this destination of the config would receive (its filter,
    /// body, headers and signatures) for a sample event or `--event`.
    #[arg(long)]
    pub destination: Option<String>,
    /// With --destination: an event (design §3 JSON) to render instead of the sample.
    #[arg(long, requires = "destination")]
    pub event: Option<PathBuf>,
    /// With --destination: the config file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Event id (default: a fixed example id).
    #[arg(long, default_value = "evt_test")]
    pub id: String,
    /// Unix timestamp (default: now).
    #[arg(long)]
    pub timestamp: Option<i64>,
    /// Which signatures.
    #[arg(long, value_enum, default_value = "standard")]
    pub signature: SignatureArg,
}

/// `pollhook verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Secret (`whsec_…` for standard; any string for a `sha256=` signature).
    #[arg(long, env = "POLLHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
    /// `webhook-id` header.
    #[arg(long, default_value = "")]
    pub id: String,
    /// `webhook-timestamp` header.
    #[arg(long, default_value_t = 0)]
    pub timestamp: i64,
    /// `webhook-signature` (v1,…) or `x-hub-signature-256` (sha256=…) header.
    #[arg(long)]
    pub signature: String,
}

/// `pollhook demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How often the fake upstream changes an item.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub change_every: Duration,
}

/// `pollhook run`.
pub async fn run(args: ConfigArg) -> anyhow::Result<()> {
    let config = config::load(&args.path)?;
    let shutdown = crate::shutdown::on_signals();
    let options = crate::daemon::Options {
        config_path: Some(args.path.clone()),
        ..Default::default()
    };
    crate::daemon::run(config, options, shutdown).await?;
    Ok(())
}

/// `pollhook check`.
pub fn check(args: ConfigArg) -> anyhow::Result<()> {
    let config = config::load(&args.path)?;
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "{}: ok ({} sources, {} destinations)",
        args.path.display(),
        config.sources.len(),
        config.destinations.len()
    );
    Ok(())
}

/// `pollhook preview`: the extracted items, or with `destination` the bodies it would get.
pub async fn preview(
    source: String,
    destination: Option<String>,
    args: ConfigArg,
) -> anyhow::Result<()> {
    let config = config::load(&args.path)?;
    let Some(src) = config.sources.get(&source) else {
        let known: Vec<&str> = config.sources.keys().map(String::as_str).collect();
        bail!(
            "no source named {source:?} in {}; known: {}",
            args.path.display(),
            known.join(", ")
        );
    };
    // Preview sends its requests one at a time: one idle connection is all it reuses.
    let client = client(1)?;
    let items = match &src.paginate {
        Some(p) => {
            let gate = crate::poller::rate_limit::Gate::open(&src.request.url);
            let run = crate::poller::paginate::Run {
                client: &client,
                source: src,
                paginate: p,
                gate: &gate,
                cache: &Default::default(),
                items: &Default::default(),
            };
            crate::poller::paginate::fetch_pages(run)
                .await
                .map(|pages| pages.extraction.items)
                .with_context(|| format!("source {source}"))?
        }
        None => extract(
            &src.extract,
            &fetch(&client, &src.request)
                .await
                .with_context(|| format!("source {source}"))?,
        )
        .with_context(|| format!("source {source}"))?,
    };
    if let Some(dest) = destination {
        return render::preview_destination(&config, src, &dest, &items).await;
    }
    for item in &items {
        let line = serde_json::json!({"key": item.key, "version": item.version, "hash": src.extract.hash(&item.data).to_hex()});
        println!("{line}");
    }
    eprintln!("{} items", items.len());
    Ok(())
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("cannot read the body from stdin")?;
    Ok(body)
}

/// `pollhook sign`: with `--destination`, the whole request that destination would receive;
/// otherwise the signature headers for the body on stdin.
pub async fn sign(args: SignArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.destination {
        return render::sign_destination(&args, name).await;
    }
    let Some(secret) = args.secret.as_deref() else {
        bail!("give --secret (or --destination NAME to use a destination of the config)");
    };
    let body = read_stdin()?;
    let ts = args
        .timestamp
        .unwrap_or_else(|| chrono::Utc::now().timestamp());
    println!("content-type: application/json");
    println!("{WEBHOOK_ID}: {}", args.id);
    println!("{WEBHOOK_TIMESTAMP}: {ts}");
    println!("{IDEMPOTENCY_KEY}: {}", args.id);
    if matches!(args.signature, SignatureArg::Standard | SignatureArg::Both) {
        let key = standard_key(secret)
            .map_err(|why| anyhow::anyhow!("--secret {why}; expected whsec_<base64>"))?;
        println!(
            "webhook-signature: {}",
            standard_signature(&key, &args.id, ts, &body)
        );
    }
    if matches!(args.signature, SignatureArg::Github | SignatureArg::Both) {
        println!("x-hub-signature-256: {}", github_signature(secret, &body));
    }
    Ok(())
}

/// `pollhook verify`: returns whether the signature is valid.
pub fn verify(args: VerifyArgs) -> anyhow::Result<bool> {
    let body = read_stdin()?;
    let valid = if args.signature.trim_start().starts_with("sha256=") {
        verify_github(&args.secret, &body, &args.signature)
    } else {
        standard_key(&args.secret)
            .map_err(|why| anyhow::anyhow!("--secret {why}; expected whsec_<base64>"))?;
        verify_standard(
            &args.secret,
            &args.id,
            args.timestamp,
            &body,
            &args.signature,
        )
    };
    println!("{}", if valid { "valid" } else { "invalid" });
    Ok(valid)
}

/// `pollhook state export | import`.
pub fn state(command: StateCommand) -> anyhow::Result<()> {
    use crate::store::Dump;
    use std::io::{BufRead, Write};
    match command {
        StateCommand::Export(args) => {
            let config = config::load(&args.path)?;
            let backend = crate::store::open_backend(&config)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut lines = 0usize;
            backend.export(&mut |line| {
                let write = serde_json::to_writer(&mut out, &line)
                    .map_err(std::io::Error::other)
                    .and_then(|()| out.write_all(b"\n"));
                lines += 1;
                write.map_err(|e| crate::store::StoreError::Backend(format!("cannot write: {e}")))
            })?;
            out.flush()?;
            eprintln!("exported {lines} lines");
        }
        StateCommand::Import(args) => {
            let config = config::load(&args.path)?;
            let mut lines = Vec::new();
            for (i, text) in std::io::stdin().lock().lines().enumerate() {
                let text = text?;
                if text.trim().is_empty() {
                    continue;
                }
                let line: Dump = serde_json::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("line {}: not a pollhook state line: {e}", i + 1)
                })?;
                if i == 0
                    && !matches!(line, Dump::Header { format, .. } if format == crate::store::dump_format())
                {
                    bail!(
                        "line 1: not a pollhook state export of format {} (run pollhook state export)",
                        crate::store::dump_format()
                    );
                }
                lines.push(line);
            }
            if lines.is_empty() {
                bail!("nothing on stdin: pipe in the output of pollhook state export");
            }
            let backend = crate::store::open_backend(&config)?;
            let n = backend.import(&lines)?;
            eprintln!("imported {n} lines");
        }
    }
    Ok(())
}
