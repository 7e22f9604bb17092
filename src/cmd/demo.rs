//! `pgswarm demo`: a private PostgreSQL, a simulated agent swarm with real incidents, the dashboard.
//!
//! A new user sees pgswarm do its job within a minute, with nothing set up: the server is started
//! from the installed binaries on a Unix socket in a temporary directory (as root through `runuser`),
//! with a platform and three tenant databases, and is stopped and removed on exit, on Ctrl-C, on
//! SIGTERM, and (through the cluster's watchdog) even after a panic or a kill.

use crate::cmd::exit;
use crate::pg::cluster::{ClusterOptions, TempCluster};
use crate::pg::config::{build_target, Settings};
use crate::pg::conninfo::ProcessEnv;
use crate::pg::probe::DbTarget;
use crate::pg::simulator::{SimConfig, Simulator};
use std::sync::Arc;
use std::time::Duration;

/// The demo's databases: the first is the platform database.
pub const DEMO_DATABASES: [&str; 4] = [
    "platform_test",
    "tenant_a_test",
    "tenant_b_test",
    "tenant_c_test",
];

/// What the demo should do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Run only the simulator (no dashboard) until interrupted.
    pub no_tui: bool,
    /// Existing databases to simulate against (instead of a private server).
    pub databases: Vec<DbTarget>,
    /// Accept database names that do not look like test databases.
    pub force: bool,
    pub interval: Duration,
}

/// Database names the simulator may write to without `--force`.
pub fn looks_like_test_database(name: &str) -> bool {
    let n = name.to_lowercase();
    ["test", "demo", "tmp", "scratch"]
        .iter()
        .any(|w| n.contains(w))
}

fn say(msg: &str) {
    eprintln!("pgswarm demo: {msg}");
}

/// Runs the demo; returns the exit code.
pub fn run_demo(opts: DemoOptions, base: &Settings) -> i32 {
    let runtime = match crate::cmd::build_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    // Keep the cluster alive until the very end of this function.
    let mut _cluster: Option<TempCluster> = None;
    let databases = if opts.databases.is_empty() {
        say("starting a private PostgreSQL server (it is removed on exit)…");
        let cluster = match TempCluster::start(&ClusterOptions {
            databases: DEMO_DATABASES.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("pgswarm demo: {e}");
                return crate::cmd::replay::fallback_to_recording(&opts, base);
            }
        };
        let targets: Result<Vec<DbTarget>, _> = DEMO_DATABASES
            .iter()
            .map(|d| build_target(Some(d), &cluster.conninfo(d), "demo", &ProcessEnv))
            .collect();
        _cluster = Some(cluster);
        match targets {
            Ok(t) => t,
            Err(e) => {
                eprintln!("pgswarm demo: {e}");
                return exit::USAGE;
            }
        }
    } else {
        if let Some(bad) = opts
            .databases
            .iter()
            .find(|d| !opts.force && !looks_like_test_database(&d.target.dbname))
        {
            eprintln!(
                "pgswarm demo: refusing to simulate test runs in database {:?}: its name does not \
                 look like a test database (expected it to contain 'test', 'demo', 'tmp' or \
                 'scratch'). Pass --force if it really is a throwaway database.",
                bad.target.dbname
            );
            return exit::USAGE;
        }
        opts.databases.clone()
    };
    if databases.len() < 2 {
        eprintln!("pgswarm demo: give at least two databases (a platform and a tenant)");
        return exit::USAGE;
    }

    let sim = Arc::new(Simulator {
        databases: databases.clone(),
        convention: base.convention.clone(),
        config: SimConfig::default(),
        env: Arc::new(ProcessEnv),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    say("starting the simulated swarm (3 invocations, a debug run, a crashed run, incidents every few seconds)…");
    let sim_task = runtime.spawn(Arc::clone(&sim).run(stop_rx));

    let settings = Settings {
        databases,
        ..base.clone()
    };
    let code = if opts.no_tui {
        say("simulator running; watch it from another terminal with:");
        let args: Vec<String> = settings
            .databases
            .iter()
            .map(|d| {
                format!(
                    "--db '{}=host={} port={} user={} dbname={}'",
                    d.name,
                    host_of(d),
                    d.target.hosts[0].1,
                    d.target.user,
                    d.target.dbname
                )
            })
            .collect();
        eprintln!("  pgswarm {}", args.join(" "));
        say("Ctrl-C or SIGTERM stops it and removes the server.");
        runtime.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("signal handler");
            let mut int = signal(SignalKind::interrupt()).expect("signal handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        exit::OK
    } else {
        // Give the swarm a moment so the first frame already shows it.
        runtime.block_on(async { tokio::time::sleep(Duration::from_secs(2)).await });
        crate::tui::run::run_dashboard_on(&runtime, settings, opts.interval)
    };
    let _ = stop_tx.send(true);
    let _ =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), sim_task).await });
    runtime.shutdown_timeout(Duration::from_millis(500));
    if let Some(c) = _cluster.take() {
        say("stopping the private server…");
        c.stop();
    }
    code
}

fn host_of(d: &DbTarget) -> String {
    d.target.hosts[0].0.to_string()
}
