//! pollhook's entry point: parse the command line, start logging, run the subcommand, map the
//! result to an exit code (0 ok, 1 runtime failure, 2 usage or config error).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use pollhook::cli::{self, Cli, Command, LogFormat};
use pollhook::config::ConfigError;

/// jemalloc rather than glibc's malloc: glibc keeps per-thread arenas whose freed pages stay
/// resident after the first baseline's burst of short-lived JSON buffers.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format, cli.color.ansi());
    let result = match cli.command {
        Command::Check(args) => cli::check(args),
        Command::Completions { shell } => cli::completions(shell),
        Command::Man => cli::man(),
        Command::JqWorker(args) => {
            pollhook::jq::worker::serve(args.limits()).map_err(anyhow::Error::from)
        }
        Command::State { command } => cli::state(command),
        Command::Verify(args) => match cli::verify(args) {
            Ok(false) => return ExitCode::from(1),
            other => other.map(|_| ()),
        },
        command => runtime().and_then(|rt| {
            rt.block_on(async {
                match command {
                    Command::Run(args) => cli::run(args).await,
                    Command::Preview {
                        source,
                        destination,
                        config,
                    } => cli::preview(source, destination, config).await,
                    Command::Sign(args) => cli::sign(args).await,
                    Command::Demo(args) => pollhook::demo::run(args).await,
                    Command::Status(ops) => cli::status(ops).await,
                    Command::Sources {
                        action,
                        name,
                        discard,
                        ops,
                    } => cli::sources(action, name, discard, ops).await,
                    Command::Dead { command } => cli::dead(command).await,
                    Command::Events { command, list } => cli::events(command, list).await,
                    Command::Replay {
                        source,
                        since,
                        destination,
                        ops,
                    } => cli::replay(source, since, destination, ops).await,
                    _ => unreachable!("handled above"),
                }
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    // One worker thread unless TOKIO_WORKER_THREADS says otherwise: pollhook's async work is
    // waiting on sockets and timers; its CPU work (extraction, the state writer, jq) runs on
    // threads of its own. A second worker only adds cross-thread wake-ups: at 10,000 polls/s
    // one worker costs about 40% less CPU per poll (docs/performance.md).
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        b.worker_threads(1);
    }
    Ok(b.enable_all().build()?)
}

/// Logs on stderr: text for people (coloured only when `ansi`; without timestamps under
/// journald, which stamps every line itself), or JSON lines for collectors.
fn init_logging(level: &str, format: LogFormat, ansi: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A closed stderr (e.g. a pager that quit) must not panic the logging path.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, journald) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => builder.with_ansi(ansi).without_time().init(),
        (LogFormat::Text, false) => builder.with_ansi(ansi).init(),
    }
}
