//! The `pgswarm` binary: parse arguments, dispatch, map errors to exit codes. Everything else lives in
//! the library.

use clap::{Args, Parser, Subcommand};
use pgswarm::cmd::config::{parse_duration, resolve_settings, CliSettings};
use pgswarm::cmd::exit;
use pgswarm::cmd::snapshot::{render_snapshot, snapshot_exit_code, take_snapshot};
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::tui::app::{INTERVAL_MAX, INTERVAL_MIN};
use pgswarm::tui::run::run_dashboard;
use std::io::Write;
use std::path::PathBuf;

/// The poll -> snapshot path allocates per session; glibc malloc spent half its time there (and in
/// page faults from trimming). mimalloc keeps that path ~3x cheaper (see README, Benchmarks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXAMPLES: &str = "\
Examples:
  pgswarm --db platform=postgres://app@db1/platform_test --db tenant=postgres://app@db2/tenant_test
  pgswarm snapshot --db platform=postgres://app@db1/platform_test --db tenant=postgres://app@db2/tenant_test
  pgswarm snapshot --json --db 'platform=host=/var/run/postgresql dbname=platform_test' | jq .blocking
  PGSWARM_DB='postgres://db1/a_test postgres://db2/b_test' pgswarm snapshot --fail-on-blocked
  pgswarm snapshot --config pgswarm.toml

Databases: --db [NAME=]CONNINFO (repeatable), else PGSWARM_DB (whitespace-separated entries), else the
`databases` of --config, else one database from the libpq environment (PGHOST, PGDATABASE, ...).
CONNINFO is a postgres:// URL or a libpq key=value string; NAME is anything before the first '=' that
is not a libpq keyword (host, dbname, ...), and defaults to the database name.

Exit codes: 0 ok; 1 blocked sessions with --fail-on-blocked; 2 usage or configuration error;
3 some database unreachable (the rest is still reported).";

/// Lock triage and fail-closed schema sweeping for parallel test runs on shared PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "pgswarm", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// A database to watch: [NAME=]CONNINFO (repeatable)
    #[arg(long = "db", value_name = "[NAME=]CONNINFO", global = true)]
    db: Vec<String>,
    /// TOML file with `databases = [{ name, url }]` and the options below
    #[arg(long, value_name = "FILE", env = "PGSWARM_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Prefix of test application_names: {prefix}_{worker}_{namespace}[_{suffix}] [default: pytest]
    #[arg(long, value_name = "PREFIX", env = "PGSWARM_APP_PREFIX", global = true)]
    app_prefix: Option<String>,
    /// Prefix of test schemas: {prefix}_{namespace}_{worker} [default: test]
    #[arg(
        long,
        value_name = "PREFIX",
        env = "PGSWARM_SCHEMA_PREFIX",
        global = true
    )]
    schema_prefix: Option<String>,
    /// Bound on every connection attempt, TCP and startup together [default: 5s]
    #[arg(
        long,
        value_name = "DURATION",
        env = "PGSWARM_CONNECT_TIMEOUT",
        global = true
    )]
    connect_timeout: Option<String>,
    /// Dashboard refresh interval, 0.25s to 60s [default: 1s]
    #[arg(long, value_name = "DURATION", env = "PGSWARM_INTERVAL", global = true)]
    interval: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The live dashboard (the default without a command): invocations, lock trees, schemas
    Watch(WatchArgs),
    /// Poll every configured database once: lock trees, invocations, schemas (text or --json)
    Snapshot(SnapshotArgs),
}

#[derive(Args, Debug, Default)]
struct WatchArgs {}

#[derive(Args, Debug)]
struct SnapshotArgs {
    /// Print one JSON document (fields documented in the README)
    #[arg(long)]
    json: bool,
    /// Exit 1 when any session is blocked
    #[arg(long)]
    fail_on_blocked: bool,
}

fn main() {
    let cli = Cli::parse();
    std::process::exit(run(cli));
}

/// Writes to stdout; a closed pipe (`| head`) is success, not an error.
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        Err(e) => {
            eprintln!("pgswarm: error: cannot write output: {e}");
            false
        }
    }
}

fn run(cli: Cli) -> i32 {
    let command = cli.command.unwrap_or(Command::Watch(WatchArgs::default()));
    let g = cli.global;
    let g_interval = g.interval.clone();
    let cli_settings = CliSettings {
        db: g.db,
        env_db: std::env::var("PGSWARM_DB").ok(),
        config: g.config,
        app_prefix: g.app_prefix,
        schema_prefix: g.schema_prefix,
        connect_timeout: g.connect_timeout,
        read_only: false,
    };
    let settings = match resolve_settings(&cli_settings, &ProcessEnv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgswarm: error: {e}");
            return exit::USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgswarm: error: cannot start the async runtime: {e}");
            return exit::USAGE;
        }
    };
    match command {
        Command::Watch(WatchArgs {}) => {
            let interval = match g_interval
                .as_deref()
                .map(|s| parse_duration("--interval", s))
            {
                None => std::time::Duration::from_secs(1),
                Some(Ok(d)) if (INTERVAL_MIN..=INTERVAL_MAX).contains(&d) => d,
                Some(Ok(_)) => {
                    eprintln!(
                        "pgswarm: error: invalid --interval {:?}: use 0.25s to 60s",
                        g_interval.unwrap_or_default()
                    );
                    return exit::USAGE;
                }
                Some(Err(e)) => {
                    eprintln!("pgswarm: error: {e}");
                    return exit::USAGE;
                }
            };
            drop(runtime);
            run_dashboard(settings, interval)
        }
        Command::Snapshot(args) => {
            let snap = runtime.block_on(take_snapshot(&settings, &ProcessEnv));
            emit(&render_snapshot(&snap, args.json));
            for d in snap.unreachable() {
                eprintln!(
                    "pgswarm: database {:?} unreachable: {}",
                    d.name,
                    d.error.as_deref().unwrap_or("?")
                );
            }
            snapshot_exit_code(&snap, args.fail_on_blocked)
        }
    }
}
