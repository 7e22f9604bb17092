//! The dashboard's event loop: the only code that touches the terminal, signals and pollers.
//!
//! Three sources feed one channel: a thread reading terminal input, the poller tasks, and a clock.
//! The loop applies events to [`App`], coalesces whatever queued up meanwhile into one frame, and
//! carries out effects (refresh now, new interval) by messages. It never awaits a database.
//!
//! The terminal is always given back: on `q`, Ctrl-C, SIGTERM/SIGINT/SIGHUP, and on a panic in any
//! thread or task (the hook restores the terminal, prints the report after that, and exits).

use crate::domain::sweep::SweepRules;
use crate::pg::config::Settings;
use crate::pg::conninfo::ProcessEnv;
use crate::pg::poller::{group_targets, spawn_pollers, PollControl};
use crate::tui::app::{probe_latencies, Aggregator, App, Effect, Event};
use crate::tui::theme::Theme;
use crate::tui::view::draw;
use chrono::Utc;
use crossterm::event::{self as ct, KeyEventKind};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Where the dashboard logs: `$XDG_STATE_HOME/pgswarm/pgswarm.log` (else `~/.local/state/...`).
pub fn log_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("pgswarm").join("pgswarm.log"))
}

/// Sends `tracing` to the log file (never to the terminal).
pub fn init_logging() -> Option<PathBuf> {
    let path = log_path()?;
    std::fs::create_dir_all(path.parent()?).ok()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ok()?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .try_init();
    Some(path)
}

/// Restores the terminal, then lets the previous hook print the report, then exits: a panicking
/// poller task must not leave a dead dashboard in a raw-mode terminal.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        ratatui::restore();
        previous(info);
        std::process::exit(101);
    }));
}

/// Runs the dashboard until the user quits. Returns the exit code.
pub fn run_dashboard(settings: Settings, interval: Duration) -> i32 {
    let runtime = match crate::cmd::build_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let code = run_dashboard_on(&runtime, settings, interval);
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Runs the dashboard on an existing runtime (the demo runs its simulator on the same one).
pub fn run_dashboard_on(
    runtime: &tokio::runtime::Runtime,
    settings: Settings,
    interval: Duration,
) -> i32 {
    with_terminal(
        "For scripts and pipes use `pgswarm snapshot` (or `pgswarm snapshot --json`).",
        |terminal| {
            tracing::info!(databases = settings.databases.len(), "dashboard starting");
            runtime.block_on(event_loop(terminal, settings, interval))
        },
    )
}

/// Takes the terminal, runs `body`, and always gives the terminal back: the one place that sets
/// up logging, the panic hook and raw mode, and maps the outcome to an exit code.
fn with_terminal(
    no_tty_hint: &str,
    body: impl FnOnce(&mut ratatui::DefaultTerminal) -> std::io::Result<()>,
) -> i32 {
    if !std::io::stdout().is_terminal() {
        eprintln!("pgswarm: the dashboard needs a terminal (stdout is not one). {no_tty_hint}");
        return crate::cmd::exit::USAGE;
    }
    let log = init_logging();
    install_panic_hook();
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pgswarm: error: cannot set up the terminal: {e}");
            return crate::cmd::exit::USAGE;
        }
    };
    let result = body(&mut terminal);
    ratatui::restore();
    match result {
        Ok(()) => crate::cmd::exit::OK,
        Err(e) => {
            eprintln!("pgswarm: terminal error: {e}");
            if let Some(p) = log {
                eprintln!("pgswarm: log: {}", p.display());
            }
            crate::cmd::exit::USAGE
        }
    }
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    settings: Settings,
    interval: Duration,
) -> std::io::Result<()> {
    let theme = Theme::from_env();
    let names: Vec<String> = settings.databases.iter().map(|d| d.name.clone()).collect();
    let groups = group_targets(&settings.databases).len();
    let mut app = App::new(
        settings.convention.clone(),
        names,
        groups,
        interval,
        Utc::now(),
    );
    app.utc_offset = *chrono::Local::now().offset();
    app.read_only = settings.read_only;

    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let (control_tx, control_rx) = watch::channel(PollControl {
        interval,
        refresh_seq: 0,
    });
    let (poll_tx, mut polls) = mpsc::unbounded_channel::<crate::pg::poller::GroupResult>();
    let pollers = spawn_pollers(
        &settings.databases,
        &settings.session,
        &settings.convention.schema_prefix,
        Arc::new(ProcessEnv),
        control_rx,
        poll_tx,
    );

    // Snapshots are built here, off the UI loop: the loop only builds rows and draws.
    let mut aggregator =
        Aggregator::new(settings.convention.clone(), app.databases.clone(), groups);
    let snapshot_tx = events_tx.clone();
    let aggregator_task = tokio::spawn(async move {
        while let Some(result) = polls.recv().await {
            let latencies = probe_latencies(&result);
            let snap = aggregator.accept(result);
            let event = Event::Snapshot(Box::new(snap), latencies, Utc::now());
            if snapshot_tx.send(event).is_err() {
                return;
            }
        }
    });

    spawn_input_thread(events_tx.clone());

    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    terminal.draw(|f| draw(f, &app, &theme))?;
    loop {
        let first = tokio::select! {
            Some(e) = events.recv() => e,
            _ = clock.tick() => Event::Tick(Utc::now()),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => break,
        };
        // Apply this event and everything else already queued, then draw once.
        let mut batch = vec![first];
        while let Ok(e) = events.try_recv() {
            batch.push(e);
        }
        for event in batch {
            for effect in app.update(event) {
                match effect {
                    Effect::Quit => {}
                    Effect::Refresh => control_tx.send_modify(|c| c.refresh_seq += 1),
                    Effect::SetInterval(d) => control_tx.send_modify(|c| c.interval = d),
                    Effect::PlanSweep => {
                        let (settings, tx) = (settings.clone(), events_tx.clone());
                        tokio::spawn(async move {
                            let plan = crate::pg::sweep::discover_and_plan(
                                &settings,
                                &SweepRules::default(),
                                crate::pg::sweep::DependencyCheck::AtPlan,
                                &ProcessEnv,
                            )
                            .await;
                            let _ = tx.send(Event::SweepPlanned(Box::new(plan)));
                        });
                    }
                    Effect::RunSweep(plan) => {
                        let (settings, tx) = (settings.clone(), events_tx.clone());
                        tokio::spawn(run_sweep(settings, *plan, tx));
                    }
                }
            }
        }
        if let Some(old) = app.retired.take() {
            // Freeing a 5,000-session snapshot is not the UI thread's job.
            tokio::task::spawn_blocking(move || drop(old));
        }
        if app.quit {
            break;
        }
        terminal.draw(|f| draw(f, &app, &theme))?;
    }
    tracing::info!("dashboard stopping");
    aggregator_task.abort();
    for p in pollers {
        p.abort();
    }
    Ok(())
}

/// Runs exactly the confirmed plan, reporting progress as events.
async fn run_sweep(
    settings: crate::pg::config::Settings,
    plan: crate::domain::sweep::SweepPlan,
    tx: mpsc::UnboundedSender<Event>,
) {
    let started = std::time::Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let progress = |p: crate::pg::sweep::Progress| match p {
        crate::pg::sweep::Progress::Dropping { database, schema } => {
            let _ = tx.send(Event::SweepProgress {
                done: done.load(std::sync::atomic::Ordering::Relaxed),
                current: Some(format!("{database}.{schema}")),
            });
        }
        crate::pg::sweep::Progress::Done { .. } => {
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let _ = tx.send(Event::SweepProgress {
                done: n,
                current: None,
            });
        }
    };
    let rules = SweepRules::default();
    let run = crate::pg::sweep::SweepRun {
        plan: &plan,
        targets: &settings.databases,
        session: &settings.session,
        app_prefix: &settings.convention.app_prefix,
        rules: &rules,
        drop: &crate::pg::sweep::DropSettings::default(),
        env: &ProcessEnv,
    };
    let outcomes = crate::pg::sweep::execute_plan(&run, &progress).await;
    let elapsed = started.elapsed();
    tracing::info!(
        dropped = outcomes.iter().map(|o| o.dropped.len()).sum::<usize>(),
        "sweep finished"
    );
    let report = crate::domain::sweep::build_report(
        &plan,
        &outcomes,
        crate::domain::sweep::RunMode::Executed,
        crate::domain::sweep::Timings {
            drop: elapsed,
            total: elapsed,
            ..Default::default()
        },
    );
    let _ = tx.send(Event::SweepFinished(Box::new(report)));
}

/// Replays a recording in the dashboard: no pollers, no database, the sweep disabled.
pub fn run_replay(snapshots: Vec<crate::domain::snapshot::Snapshot>, settings: Settings) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgswarm: error: cannot start the async runtime: {e}");
            return crate::cmd::exit::USAGE;
        }
    };
    with_terminal(
        "For a recorded moment as text or JSON use `pgswarm snapshot --replay FILE --at TIME`.",
        |terminal| runtime.block_on(replay_loop(terminal, snapshots, settings)),
    )
}

async fn replay_loop(
    terminal: &mut ratatui::DefaultTerminal,
    snapshots: Vec<crate::domain::snapshot::Snapshot>,
    settings: Settings,
) -> std::io::Result<()> {
    let theme = Theme::from_env();
    let mut app = App::new_replay(settings.convention.clone(), snapshots, Utc::now());
    app.utc_offset = *chrono::Local::now().offset();
    let (tx, mut events) = mpsc::unbounded_channel::<Event>();
    spawn_input_thread(tx);
    let mut clock = tokio::time::interval(Duration::from_millis(250));
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        terminal.draw(|f| draw(f, &app, &theme))?;
        let event = tokio::select! {
            Some(e) = events.recv() => e,
            _ = clock.tick() => Event::Tick(Utc::now()),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        };
        app.update(event);
        if app.quit {
            break;
        }
    }
    Ok(())
}

/// Terminal input on its own thread (crossterm's read blocks); ends when the receiver is gone.
fn spawn_input_thread(input_tx: mpsc::UnboundedSender<Event>) {
    std::thread::spawn(move || loop {
        match ct::poll(Duration::from_millis(250)) {
            Ok(true) => match ct::read() {
                Ok(ct::Event::Key(k)) if k.kind == KeyEventKind::Press => {
                    if input_tx.send(Event::Key(k)).is_err() {
                        return;
                    }
                }
                Ok(ct::Event::Resize(..)) => {
                    if input_tx.send(Event::Tick(Utc::now())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            },
            Ok(false) => {
                if input_tx.is_closed() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
}
