//! `pgswarm demo`: a private PostgreSQL, a simulated agent swarm with real incidents, the dashboard.
//!
//! A new user sees pgswarm do its job within a minute, with nothing set up: the server is started
//! from the installed binaries on a Unix socket in a temporary directory (as root through `runuser`),
//! with a platform and three tenant databases, and is stopped and removed on exit, on Ctrl-C, on
//! SIGTERM, and (through the cluster's watchdog) even after a panic or a kill.
//!
//! The demo's lock waits are real episodes but not real incidents: they go to a flight log of
//! their own (`demo-incidents.jsonl` in the state directory, started afresh by each demo), never to
//! the user's, and the demo ends by printing the `pgswarm incidents --log …` line that lists them.
//! Every command line it prints is quoted for a POSIX shell, and its `PGSWARM_DB` line uses the
//! entry quoting of `pg::config::split_env_entries`, so each works when pasted.

use crate::cmd::cli::DemoArgs;
use crate::cmd::recording::{parse_recording, report_bad_lines, BUNDLED_RECORDING};
use crate::cmd::{emit_stderr, CmdError, Exit};
use crate::pg::cluster::{ClusterOptions, TempCluster};
use crate::pg::config::{build_target, quote_env_entry, Settings};
use crate::pg::conninfo::ProcessEnv;
use crate::pg::flightlog::{self, FlightLog, ANSWER_WITHIN};
use crate::pg::probe::DbTarget;
use crate::pg::simulator::{SimConfig, Simulator};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The demo's databases: the first is the platform database.
pub const DEMO_DATABASES: [&str; 4] = [
    "platform_test",
    "tenant_a_test",
    "tenant_b_test",
    "tenant_c_test",
];

/// Database names the simulator may write to without `--force`.
pub fn looks_like_test_database(name: &str) -> bool {
    let n = name.to_lowercase();
    ["test", "demo", "tmp", "scratch"]
        .iter()
        .any(|w| n.contains(w))
}

fn say(msg: &str) {
    emit_stderr(&format!("pgswarm demo: {msg}\n"));
}

/// Runs the demo: on its own private server, or (`own_databases`) on the configured databases.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    base: &Settings,
    args: &DemoArgs,
    own_databases: bool,
) -> Result<Exit, CmdError> {
    // Keep the cluster alive until the very end of this function.
    let mut cluster: Option<TempCluster> = None;
    let databases = if own_databases {
        if let Some(bad) = base
            .databases
            .iter()
            .find(|d| !args.force && !looks_like_test_database(&d.target.dbname))
        {
            return Err(CmdError::Usage(format!(
                "refusing to simulate test runs in database {:?}: its name does not look like a \
                 test database (expected it to contain 'test', 'demo', 'tmp' or 'scratch'). Pass \
                 --force if it really is a throwaway database.",
                bad.target.dbname
            )));
        }
        base.databases.clone()
    } else {
        say("starting a private PostgreSQL server (it is removed on exit)…");
        match TempCluster::start(&ClusterOptions {
            databases: DEMO_DATABASES.iter().map(|s| s.to_string()).collect(),
            // Its own initdb in its own directory: the demo leaves nothing behind (no cached
            // template in the temp directory).
            private_initdb: true,
            // Its server log is read for lock waits, so the Incidents pane shows short waits too.
            settings: crate::pg::cluster::lock_log_settings(),
            ..Default::default()
        }) {
            Ok(c) => {
                let targets = demo_targets(&c)?;
                cluster = Some(c);
                targets
            }
            Err(e) => {
                say(&e.to_string());
                return fallback_to_recording(runtime, args, base);
            }
        }
    };
    if databases.len() < 2 {
        return Err(CmdError::Usage(
            "the demo needs at least two databases (a platform and a tenant)".into(),
        ));
    }
    let settings = Settings {
        databases,
        ..base.clone()
    };
    let result = simulate(runtime, &settings, args);
    if let Some(c) = cluster.take() {
        say("stopping the private server…");
        c.stop();
    }
    result
}

fn demo_targets(cluster: &TempCluster) -> Result<Vec<DbTarget>, CmdError> {
    Ok(DEMO_DATABASES
        .iter()
        .map(|d| build_target(Some(d), &cluster.conninfo(d), "demo", &ProcessEnv))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The simulated swarm, with the dashboard (or, with `--no-tui`, until interrupted).
fn simulate(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    args: &DemoArgs,
) -> Result<Exit, CmdError> {
    let sim = Arc::new(Simulator {
        databases: settings.databases.clone(),
        convention: settings.convention.clone(),
        config: SimConfig::default(),
        env: Arc::new(ProcessEnv),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    say("starting the simulated swarm (3 invocations, a debug run, a crashed run, incidents every few seconds)…");
    let sim_task = runtime.spawn(Arc::clone(&sim).run(stop_rx));
    let log = if args.flight_log.no_flight_log {
        None
    } else {
        demo_flight_log()
    };
    let result = if args.no_tui {
        say("simulator running; watch it from another terminal with:");
        let into_log = log
            .as_ref()
            .map(|l| {
                format!(
                    "PGSWARM_INCIDENTS_LOG={} ",
                    shell_quote(&l.path().to_string_lossy())
                )
            })
            .unwrap_or_default();
        emit_stderr(&format!(
            "  {into_log}pgswarm {}\n",
            watch_args(settings).join(" ")
        ));
        say("or name its databases once, for every pgswarm command in that shell:");
        emit_stderr(&format!("  {}\n", pgswarm_db_line(settings)));
        // The demo's waits go to the demo's log in that shell too, never to the real one.
        if let Some(l) = &log {
            emit_stderr(&format!(
                "  export PGSWARM_INCIDENTS_LOG={}\n",
                shell_quote(&l.path().to_string_lossy())
            ));
        }
        if let Some(l) = &log {
            say("the lock waits that dashboard sees, afterwards:");
            emit_stderr(&format!("  {}\n", incidents_line(l.path())));
        }
        say("Ctrl-C or SIGTERM stops it and removes the server.");
        runtime.block_on(wait_for_a_signal());
        Ok(Exit::Ok)
    } else {
        // Give the swarm a moment so the first frame already shows it.
        runtime.block_on(async { tokio::time::sleep(FIRST_FRAME_DELAY).await });
        // The simulated swarm's lock waits are not real incidents: they go to the demo's own log.
        let options = crate::tui::run::DashboardOptions {
            interval: args.interval.interval,
            flight_log: log.clone(),
            flight_log_off: None,
            bell: false,
        };
        let end = crate::tui::run::run_dashboard(runtime, settings.clone(), options, None)
            .map(|_| Exit::Ok)
            .map_err(CmdError::from);
        if let Some(l) = &log {
            say_where_the_waits_are(l.path());
        }
        end
    };
    let _ = stop_tx.send(true);
    // Timers are created inside the runtime: building one outside its context panics.
    let _ = runtime.block_on(async { tokio::time::timeout(SIMULATOR_STOP, sim_task).await });
    result
}

/// How long the swarm runs before the first frame, so that frame already shows it.
const FIRST_FRAME_DELAY: Duration = Duration::from_secs(2);
/// How long the simulator may take to end its sessions on exit.
const SIMULATOR_STOP: Duration = Duration::from_secs(5);

async fn wait_for_a_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The demo's own flight log, started afresh: `demo-incidents.jsonl` in the state directory (it
/// outlives the demo, so that `pgswarm incidents --log` can read it afterwards). None, said, when
/// it cannot be written.
fn demo_flight_log() -> Option<FlightLog> {
    let path = flightlog::state_dir()?.join(DEMO_LOG);
    let rotated = PathBuf::from(format!("{}.1", path.display()));
    for p in [&path, &rotated] {
        // Only regular files of an earlier demo are removed; anything else is refused below.
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()) {
            let _ = std::fs::remove_file(p);
        }
    }
    let log = FlightLog::new(path);
    match log.check_writable_within(ANSWER_WITHIN) {
        Ok(()) => Some(log),
        Err(e) => {
            say(&format!("the demo's lock waits are not kept: {e}"));
            None
        }
    }
}

/// The file name of the demo's flight log in the state directory.
pub const DEMO_LOG: &str = "demo-incidents.jsonl";

/// After the dashboard: how many lock waits the demo kept, and the line that lists them.
fn say_where_the_waits_are(path: &Path) {
    let n = flightlog::read(path).map_or(0, |r| r.episodes.len());
    say(&format!(
        "{} kept in {}; list {}:",
        plural(n, "lock wait"),
        path.display(),
        if n == 1 { "it" } else { "them" }
    ));
    emit_stderr(&format!("  {}\n", incidents_line(path)));
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// `pgswarm incidents --log '/path'`.
fn incidents_line(path: &Path) -> String {
    format!(
        "pgswarm incidents --log {}",
        shell_quote(&path.to_string_lossy())
    )
}

/// `NAME=host=… port=… user=… dbname=…`: one demo database as a `--db` entry.
fn db_entry(d: &DbTarget) -> String {
    format!(
        "{}=host={} port={} user={} dbname={}",
        d.name,
        host_of(d),
        d.target.hosts[0].1,
        d.target.user,
        d.target.dbname
    )
}

/// `--db` arguments that point another pgswarm at the demo's databases.
fn watch_args(settings: &Settings) -> Vec<String> {
    settings
        .databases
        .iter()
        .map(|d| format!("--db {}", shell_quote(&db_entry(d))))
        .collect()
}

/// `export PGSWARM_DB="a='host=… dbname=…' b='…'"`: the entries quoted for `PGSWARM_DB`, the
/// whole value quoted for the shell.
pub fn pgswarm_db_line(settings: &Settings) -> String {
    let value: Vec<String> = settings
        .databases
        .iter()
        .map(|d| quote_env_entry(&db_entry(d)))
        .collect();
    format!("export PGSWARM_DB={}", shell_quote(&value.join(" ")))
}

/// Quotes `s` as one word for a POSIX shell: in double quotes when it holds a single quote (with
/// `$`, `` ` ``, `"` and `\` escaped), else in single quotes.
pub fn shell_quote(s: &str) -> String {
    if !s.contains('\'') {
        return format!("'{s}'");
    }
    let mut q = String::from('"');
    for c in s.chars() {
        if matches!(c, '$' | '`' | '"' | '\\') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Without server binaries the demo says how to install them and replays the bundled recording.
fn fallback_to_recording(
    runtime: &tokio::runtime::Runtime,
    args: &DemoArgs,
    base: &Settings,
) -> Result<Exit, CmdError> {
    say(
        "to run the live demo, install the PostgreSQL server binaries (Debian/Ubuntu: apt-get \
         install postgresql; or set PGSWARM_PG_BINDIR). Showing the bundled recording instead, \
         marked REPLAY.",
    );
    if args.no_tui {
        return Err(CmdError::Usage(
            "demo --no-tui needs a server to simulate against; nothing to do".into(),
        ));
    }
    let (snaps, bad) = parse_recording("the bundled recording", BUNDLED_RECORDING)?;
    report_bad_lines("bundled recording", &bad);
    crate::tui::run::run_replay(runtime, snaps, base.clone())?;
    Ok(Exit::Ok)
}

fn host_of(d: &DbTarget) -> String {
    d.target.hosts[0].0.to_string()
}
