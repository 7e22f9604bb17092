//! The `pgswarm` binary: parse arguments, dispatch, map errors to exit codes. Everything else lives in
//! the library.

use clap::{Args, Parser, Subcommand};
use pgswarm::cmd::exit;
use pgswarm::cmd::snapshot::{render_snapshot, snapshot_exit_code, take_snapshot};
use pgswarm::pg::config::{parse_duration, resolve_settings, CliSettings};
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
  pgswarm demo
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
    /// Never drop anything: `sweep` refuses and the dashboard's sweep key is disabled
    #[arg(long, global = true)]
    read_only: bool,
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
    /// Drop stale test schemas, fail-closed: plan, confirm, drop one schema per transaction
    #[command(after_help = SWEEP_HELP)]
    Sweep(SweepArgs),
    /// A private PostgreSQL with a simulated agent swarm and real incidents, in the dashboard
    Demo(DemoArgs),
    /// Write one snapshot per tick as JSON Lines (for replay and incident review)
    Record(RecordArgs),
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Run only the simulator (no dashboard) until interrupted
    #[arg(long)]
    no_tui: bool,
    /// With --db: simulate against databases whose names do not look like test databases
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct RecordArgs {
    /// The JSON Lines file to append to
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Stop after this long (default: until Ctrl-C or SIGTERM)
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
    /// Stop once the file reaches this many bytes
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<u64>,
}

const SWEEP_HELP: &str = "\
A schema is dropped only if the live set of namespaces was read from EVERY configured database, no
session of its namespace is connected anywhere, its namespace token is older than --min-age, and nothing
outside it depends on it. Everything else is kept, with the reason in the output.

Examples:
  pgswarm sweep --dry-run --db platform=postgres://ci@db1/platform_test --db tenant=postgres://ci@db2/tenant_test
  pgswarm sweep --yes --json --config pgswarm.toml > sweep.json

Exit codes: 0 done, no failure (also when nothing was stale); 2 usage error; 3 the live set could not
be established, nothing dropped; 4 some drops failed or could not run (see docs/sweep.md).";

#[derive(Args, Debug)]
struct SweepArgs {
    /// Plan only: show what would be dropped and why the rest is kept
    #[arg(long)]
    dry_run: bool,
    /// Drop without asking (required when stdin is not a terminal)
    #[arg(long)]
    yes: bool,
    /// Print one JSON document (fields documented in the README)
    #[arg(long)]
    json: bool,
    /// Keep namespaces whose token is younger than this
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    min_age: String,
    /// Also drop forced (debug) namespaces, whose age is unknown
    #[arg(long)]
    include_forced: bool,
    /// Also drop legacy {prefix}_gwN schemas, whose owner is unknown
    #[arg(long)]
    include_legacy: bool,
    /// Sweep even when a session carries the prefix but no attributable namespace
    #[arg(long)]
    allow_unattributed: bool,
    /// lock_timeout of each drop transaction
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    lock_timeout: String,
    /// statement_timeout of each drop transaction
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    statement_timeout: String,
    /// Servers swept in parallel (one drop at a time per server)
    #[arg(long, value_name = "N", default_value_t = 4)]
    jobs: usize,
}

#[derive(Args, Debug, Default)]
struct WatchArgs {
    /// Replay a recording instead of polling (space play/pause, . , step, + - speed, [ ] seek)
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SnapshotArgs {
    /// Print the state recorded in FILE (with --at) instead of polling
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// With --replay: RFC 3339 time, HH:MM:SS (UTC) or +90s from the start [default: the end]
    #[arg(long, value_name = "TIME", requires = "replay")]
    at: Option<String>,
    /// Print one JSON document (fields documented in the README)
    #[arg(long)]
    json: bool,
    /// Exit 1 when any session is blocked
    #[arg(long)]
    fail_on_blocked: bool,
}

fn main() {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    std::process::exit(run(cli));
}

/// The allocator hands freed memory back to the kernel between polls and faults it in again on the
/// next one. With transparent huge pages each of those faults zeroes 2 MiB: profiled at 1,000
/// sessions and a 1 s refresh, that was about 15% of the process's CPU. A monitor wants small pages.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
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
    // Replays and the demo need no configured database: do not fail on the libpq environment.
    let offline = matches!(&command, Command::Watch(WatchArgs { replay: Some(_) }))
        || matches!(
            &command,
            Command::Snapshot(SnapshotArgs {
                replay: Some(_),
                ..
            })
        )
        || (matches!(&command, Command::Demo(_)) && cli.global.db.is_empty());
    let g = cli.global;
    let g_interval = g.interval.clone();
    let cli_settings = CliSettings {
        db: g.db,
        env_db: std::env::var("PGSWARM_DB").ok(),
        config: g.config,
        app_prefix: g.app_prefix,
        schema_prefix: g.schema_prefix,
        connect_timeout: g.connect_timeout,
        read_only: g.read_only,
    };
    let settings = match resolve_settings(&cli_settings, &ProcessEnv) {
        Ok(s) => s,
        Err(_) if offline => {
            // Only the convention matters offline; fall back to the defaults for everything else.
            match resolve_settings(
                &CliSettings {
                    db: vec!["dbname=offline".into()],
                    ..cli_settings.clone()
                },
                &ProcessEnv,
            ) {
                Ok(s) => s,
                Err(e) => {
                    pgswarm::cmd::print_error(&e);
                    return exit::USAGE;
                }
            }
        }
        Err(e) => {
            pgswarm::cmd::print_error(&e);
            return exit::USAGE;
        }
    };
    let runtime = match pgswarm::cmd::build_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match command {
        Command::Watch(WatchArgs { replay: Some(path) }) => {
            drop(runtime);
            match pgswarm::cmd::replay::read_recording(&path) {
                Ok((snaps, bad)) => {
                    pgswarm::cmd::replay::report_bad_lines(&path.display().to_string(), &bad);
                    if snaps.is_empty() {
                        eprintln!(
                            "pgswarm: error: {} holds no readable snapshot",
                            path.display()
                        );
                        return exit::USAGE;
                    }
                    pgswarm::tui::run::run_replay(snaps, settings)
                }
                Err(e) => {
                    pgswarm::cmd::print_error(&e);
                    exit::USAGE
                }
            }
        }
        Command::Demo(args) => {
            drop(runtime);
            let interval = match parse_interval(g_interval.as_deref()) {
                Ok(d) => d,
                Err(code) => return code,
            };
            let databases = if cli_settings.db.is_empty() {
                Vec::new()
            } else {
                settings.databases.clone()
            };
            pgswarm::cmd::demo::run_demo(
                pgswarm::cmd::demo::DemoOptions {
                    no_tui: args.no_tui,
                    databases,
                    force: args.force,
                    interval,
                },
                &settings,
            )
        }
        Command::Record(args) => {
            let duration = match args
                .duration
                .as_deref()
                .map(|s| parse_duration("--duration", s))
            {
                None => None,
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => {
                    pgswarm::cmd::print_error(&e);
                    return exit::USAGE;
                }
            };
            let interval = match parse_interval(g_interval.as_deref()) {
                Ok(d) => d,
                Err(code) => return code,
            };
            let opts = pgswarm::cmd::record::RecordOptions {
                out: args.out,
                interval,
                duration,
                max_bytes: args.max_bytes,
            };
            runtime.block_on(pgswarm::cmd::record::record(&settings, &opts))
        }
        Command::Watch(WatchArgs { replay: None }) => {
            let interval = match parse_interval(g_interval.as_deref()) {
                Ok(d) => d,
                Err(code) => return code,
            };
            drop(runtime);
            run_dashboard(settings, interval)
        }
        Command::Sweep(args) => runtime.block_on(run_sweep(&settings, args)),
        Command::Snapshot(SnapshotArgs {
            replay: Some(path),
            at,
            json,
            ..
        }) => {
            let (snaps, bad) = match pgswarm::cmd::replay::read_recording(&path) {
                Ok(r) => r,
                Err(e) => {
                    pgswarm::cmd::print_error(&e);
                    return exit::USAGE;
                }
            };
            pgswarm::cmd::replay::report_bad_lines(&path.display().to_string(), &bad);
            let Some(first) = snaps.first() else {
                eprintln!(
                    "pgswarm: error: {} holds no readable snapshot",
                    path.display()
                );
                return exit::USAGE;
            };
            let snap = match at.as_deref() {
                None => snaps.last(),
                Some(t) => match pgswarm::cmd::replay::parse_at(t, first.taken_at) {
                    Ok(at) => pgswarm::cmd::replay::snapshot_at(&snaps, at),
                    Err(e) => {
                        pgswarm::cmd::print_error(&e);
                        return exit::USAGE;
                    }
                },
            };
            match snap {
                Some(s) => {
                    emit(&render_snapshot(s, json));
                    exit::OK
                }
                None => {
                    eprintln!(
                        "pgswarm: error: the recording starts at {}: nothing was recorded at or before {:?}",
                        first.taken_at,
                        at.unwrap_or_default()
                    );
                    exit::USAGE
                }
            }
        }
        Command::Snapshot(args) => {
            let snap = runtime.block_on(take_snapshot(&settings, &ProcessEnv));
            emit(&render_snapshot(&snap, args.json));
            for d in snap.unreachable() {
                eprintln!(
                    "pgswarm: database {:?} unreachable: {}",
                    d.name,
                    pgswarm::domain::text::sanitize(d.error.as_deref().unwrap_or("?"))
                );
            }
            snapshot_exit_code(&snap, args.fail_on_blocked)
        }
    }
}

fn sweep_usage(msg: &str) -> i32 {
    pgswarm::cmd::print_error(msg);
    exit::USAGE
}

async fn run_sweep(settings: &pgswarm::pg::config::Settings, args: SweepArgs) -> i32 {
    use pgswarm::cmd::sweep::*;
    use pgswarm::domain::sweep::{build_report, RunMode, Timings};
    use pgswarm::pg::sweep::{discover_and_plan, DependencyCheck};
    use std::io::IsTerminal;
    if settings.read_only {
        return sweep_usage("read-only mode (--read-only or read_only in the config): sweep refuses to drop anything");
    }
    let dur = |what: &str, v: &str| parse_duration(what, v).map_err(|e| e.to_string());
    let (min_age, lock_timeout, statement_timeout) = match (
        dur("--min-age", &args.min_age),
        dur("--lock-timeout", &args.lock_timeout),
        dur("--statement-timeout", &args.statement_timeout),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return sweep_usage(&e),
    };
    // PostgreSQL takes at most INT_MAX milliseconds (about 24.8 days) for either.
    let most = std::time::Duration::from_millis(i32::MAX as u64);
    if lock_timeout > most || statement_timeout > most {
        return sweep_usage("--lock-timeout and --statement-timeout must be at most 24 days: PostgreSQL refuses longer timeouts");
    }
    if lock_timeout.is_zero() || statement_timeout.is_zero() {
        return sweep_usage("--lock-timeout and --statement-timeout must be positive: a drop must never wait forever");
    }
    if args.jobs == 0 {
        return sweep_usage("invalid --jobs 0: use 1 or more");
    }
    let interactive = std::io::stdin().is_terminal();
    if !args.dry_run && !args.yes && !interactive {
        return sweep_usage("stdin is not a terminal, so pgswarm cannot ask before dropping: check with --dry-run, then pass --yes");
    }
    let rules = pgswarm::domain::sweep::SweepRules {
        min_age,
        include_forced: args.include_forced,
        include_legacy: args.include_legacy,
        allow_unattributed: args.allow_unattributed,
    };
    let drop = pgswarm::pg::sweep::DropSettings {
        lock_timeout,
        statement_timeout,
        jobs: args.jobs,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    // With --yes nobody reads the plan before it runs: the dependency closure is computed once,
    // inside each drop's transaction, where it decides anyway.
    let check = if args.yes && !args.dry_run {
        DependencyCheck::AtDropOnly
    } else {
        DependencyCheck::AtPlan
    };
    let plan = discover_and_plan(settings, &rules, check, &ProcessEnv).await;
    let discovery = started.elapsed();
    if !args.json {
        emit(&render_plan(&plan));
    }
    let proceed = plan.active_detection_complete && plan.drop_count() > 0 && !args.dry_run;
    let confirmed = proceed && (args.yes || confirm_on_terminal(plan.drop_count()));
    let (outcomes, drop_time) = if confirmed {
        // The executor refuses a plan older than PLAN_MAX_AGE (a slow answer at the prompt).
        run_plan(&plan, settings, &rules, &drop, &ProcessEnv).await
    } else {
        (Vec::new(), std::time::Duration::ZERO)
    };
    let mode = if args.dry_run {
        RunMode::DryRun
    } else if confirmed {
        RunMode::Executed
    } else {
        RunMode::Cancelled
    };
    let report = build_report(
        &plan,
        &outcomes,
        mode,
        Timings {
            discovery,
            drop: drop_time,
            total: started.elapsed(),
            ..Default::default()
        },
    );
    if args.json {
        let mut text = serde_json::to_string_pretty(&report).expect("report serializes");
        text.push('\n');
        emit(&text);
    } else {
        emit(&render_outcome(&plan, &report));
    }
    sweep_exit_code(&report)
}

/// Asks on the terminal; anything but "yes" cancels.
fn confirm_on_terminal(drops: usize) -> bool {
    eprint!("Drop {drops} schemas? Type 'yes' to proceed: ");
    let mut answer = String::new();
    let ok = std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes";
    if !ok {
        eprintln!("cancelled: nothing dropped");
    }
    ok
}

/// `--interval`: 0.25 s to 60 s, default 1 s.
fn parse_interval(value: Option<&str>) -> Result<std::time::Duration, i32> {
    match value.map(|s| parse_duration("--interval", s)) {
        None => Ok(std::time::Duration::from_secs(1)),
        Some(Ok(d)) if (INTERVAL_MIN..=INTERVAL_MAX).contains(&d) => Ok(d),
        Some(Ok(_)) => {
            eprintln!(
                "pgswarm: error: invalid --interval {:?}: use 0.25s to 60s",
                value.unwrap_or_default()
            );
            Err(exit::USAGE)
        }
        Some(Err(e)) => {
            pgswarm::cmd::print_error(&e);
            Err(exit::USAGE)
        }
    }
}
