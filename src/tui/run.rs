//! The dashboard's event loop: the only code that touches the terminal, signals and the snapshot
//! stream.
//!
//! Three sources feed the loop: a thread reading terminal input, the snapshot stream (`pg::stream`:
//! pollers and aggregator, off this loop), and a clock. The loop applies events to [`App`], coalesces
//! whatever queued up meanwhile into one frame (only the newest snapshot becomes a model), and carries
//! out effects (refresh now, new interval, plan or run a sweep) by messages. It never awaits a
//! database.
//!
//! The terminal is always given back: on `q`, Ctrl-C, SIGTERM/SIGINT/SIGHUP, and on a panic in any
//! thread or task (the hook restores the terminal, prints the report after that, and exits).

use crate::domain::incidents::Episode;
use crate::domain::signal::build_signal_report;
use crate::domain::snapshot::Snapshot;
use crate::domain::sweep::{build_report, RunMode, SweepPlan, SweepRules, Timings};
use crate::pg::config::Settings;
use crate::pg::conninfo::ProcessEnv;
use crate::pg::flightlog::FlightLog;
use crate::pg::stream::SnapshotStream;
use crate::pg::sweep::SweepRun;
use crate::pg::sweep::{discover_and_plan, execute_plan, DependencyCheck, DropSettings, Progress};
use crate::tui::app::{coalesce, App, Effect, Event};
use crate::tui::theme::Theme;
use crate::tui::view::draw;
use chrono::Utc;
use crossterm::event::{self as ct, KeyEventKind};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The clock of the live dashboard: ages and "last poll" move on between polls.
pub const LIVE_TICK: Duration = Duration::from_secs(1);
/// The clock of a replay: the recorded time advances smoothly while playing.
pub const REPLAY_TICK: Duration = Duration::from_millis(250);
/// How often the input thread checks whether the dashboard is gone.
const INPUT_POLL: Duration = Duration::from_millis(250);

/// Why the dashboard could not run or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("the dashboard needs a terminal (stdout is not one). {hint}")]
    NoTerminal { hint: &'static str },
    #[error("cannot set up the terminal: {0}")]
    Setup(std::io::Error),
    #[error("terminal error: {error}{}", log.as_ref().map(|p| format!(" (log: {})", p.display())).unwrap_or_default())]
    Terminal {
        error: std::io::Error,
        log: Option<PathBuf>,
    },
}

/// Where the dashboard logs: `$XDG_STATE_HOME/pgswarm/pgswarm.log` (else `~/.local/state/...`).
pub fn log_path() -> Option<PathBuf> {
    Some(crate::pg::flightlog::state_dir()?.join("pgswarm.log"))
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

/// How the live dashboard runs.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    pub interval: Duration,
    /// Where ended lock waits are appended (`None`: nowhere, e.g. the demo's simulated ones).
    pub flight_log: Option<FlightLog>,
    /// Why the flight log is off for this run when it was meant to be on (it could not be appended
    /// to): said under the Incidents pane from the start.
    pub flight_log_off: Option<String>,
    /// Ring the bell when a wait between two invocations begins.
    pub bell: bool,
}

/// A picture read from elsewhere (a `pgswarm serve`) instead of polled here: updates shaped like
/// the local stream's, and the source's state (`Some(reason)`: it stopped answering; `None`: it
/// answers again). Built by `cmd` (the reader lives in `serve::client`).
pub struct RemoteSource {
    /// Where the picture comes from, said in the header.
    pub label: String,
    pub databases: Vec<String>,
    pub updates: mpsc::UnboundedReceiver<crate::pg::stream::Update>,
    pub status: mpsc::UnboundedReceiver<Option<String>>,
    pub refresh: Box<dyn Fn() + Send>,
    pub set_interval: Box<dyn Fn(Duration) + Send>,
}

/// Runs the live dashboard on `runtime` until the user quits: polling `settings`' databases, or
/// showing what `remote` reads.
pub fn run_dashboard(
    runtime: &tokio::runtime::Runtime,
    settings: Settings,
    options: DashboardOptions,
    remote: Option<RemoteSource>,
) -> Result<DashboardEnd, TuiError> {
    with_terminal(
        "For scripts and pipes use `pgswarm snapshot` (or `pgswarm snapshot --json`).",
        |terminal| {
            tracing::info!(databases = settings.databases.len(), "dashboard starting");
            runtime.block_on(event_loop(terminal, settings, options, remote))
        },
    )
}

/// The next change of a remote source's state; never, without one.
async fn next_status(
    status: &mut Option<mpsc::UnboundedReceiver<Option<String>>>,
) -> Option<Option<String>> {
    match status {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Where the live dashboard's pictures come from.
enum Feed {
    Local(SnapshotStream),
    Remote(RemoteSource),
}

impl Feed {
    /// Takes the receivers out, so that the loop can wait on them while effects use the feed.
    #[allow(clippy::type_complexity)]
    fn receivers(
        &mut self,
    ) -> (
        mpsc::UnboundedReceiver<crate::pg::stream::Update>,
        Option<mpsc::UnboundedReceiver<Option<String>>>,
    ) {
        let none = || mpsc::unbounded_channel().1;
        match self {
            Feed::Local(s) => (std::mem::replace(&mut s.updates, none()), None),
            Feed::Remote(r) => (
                std::mem::replace(&mut r.updates, none()),
                Some(std::mem::replace(
                    &mut r.status,
                    mpsc::unbounded_channel().1,
                )),
            ),
        }
    }

    fn refresh(&self) {
        match self {
            Feed::Local(s) => s.refresh(),
            Feed::Remote(r) => (r.refresh)(),
        }
    }

    fn set_interval(&self, d: Duration) {
        match self {
            Feed::Local(s) => s.set_interval(d),
            Feed::Remote(r) => (r.set_interval)(d),
        }
    }
}

/// Replays a recording in the dashboard: no pollers, no database, the sweep disabled.
pub fn run_replay(
    runtime: &tokio::runtime::Runtime,
    snapshots: Vec<Snapshot>,
    settings: Settings,
) -> Result<(), TuiError> {
    with_terminal(
        "For a recorded moment as text or JSON use `pgswarm snapshot --replay FILE --at TIME`.",
        |terminal| runtime.block_on(replay_loop(terminal, snapshots, settings)),
    )
}

/// Takes the terminal, runs `body`, and always gives the terminal back: the one place that sets
/// up logging, the panic hook and raw mode.
fn with_terminal<T>(
    no_tty_hint: &'static str,
    body: impl FnOnce(&mut ratatui::DefaultTerminal) -> std::io::Result<T>,
) -> Result<T, TuiError> {
    if !std::io::stdout().is_terminal() {
        return Err(TuiError::NoTerminal { hint: no_tty_hint });
    }
    let log = init_logging();
    install_panic_hook();
    let mut terminal = ratatui::try_init().map_err(TuiError::Setup)?;
    let result = body(&mut terminal);
    ratatui::restore();
    result.map_err(|error| TuiError::Terminal { error, log })
}

/// How the live dashboard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DashboardEnd {
    /// Some database's sessions were read at least once.
    pub ever_read: bool,
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    settings: Settings,
    options: DashboardOptions,
    remote: Option<RemoteSource>,
) -> std::io::Result<DashboardEnd> {
    let theme = Theme::from_env();
    let interval = options.interval;
    let logging = options.flight_log.is_some();
    let (mut stream, names, groups, source) = match remote {
        Some(r) => {
            let names = r.databases.clone();
            let (groups, label) = (names.len().max(1), r.label.clone());
            (Feed::Remote(r), names, groups, Some(label))
        }
        None => {
            let local = SnapshotStream::spawn(
                &settings,
                interval,
                Arc::new(ProcessEnv),
                options.flight_log,
                crate::sqlite::report_source(&settings.sqlite),
            );
            let names = settings.databases.iter().map(|d| d.name.clone()).collect();
            let groups = local.groups();
            (Feed::Local(local), names, groups, None)
        }
    };
    let (mut updates, mut status) = stream.receivers();
    let mut app = App::new(
        settings.convention.clone(),
        names,
        groups,
        interval,
        Utc::now(),
    );
    app.utc_offset = *chrono::Local::now().offset();
    app.read_only = settings.read_only;
    app.read_only_source = settings.read_only_source.clone();
    if let Some(label) = source {
        // Actions need the databases' credentials, which a reader of a server does not have.
        app.read_only = true;
        app.read_only_source = Some(format!(
            "reading {label}: cancel, terminate and sweep run where the databases are configured"
        ));
        app.source = Some(label);
    }
    app.nothing_configured = settings.nothing_configured;
    app.bell = options.bell;
    if let Some(off) = options.flight_log_off {
        app.update(Event::FlightLog(Err(off)));
    }

    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    spawn_input_thread(events_tx.clone());

    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut clock = tokio::time::interval(LIVE_TICK);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    terminal.draw(|f| draw(f, &app, &theme))?;
    loop {
        let first = tokio::select! {
            Some(e) = events.recv() => e,
            Some(u) = updates.recv() => {
                for e in update_events(u.ended, u.ongoing, u.flight_log_error, logging) {
                    events_tx.send(e).ok();
                }
                Event::Snapshot(u.snapshot, u.latencies, u.at)
            }
            Some(down) = next_status(&mut status) => Event::Source(down, Utc::now()),
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
        while let Ok(u) = updates.try_recv() {
            batch.push(Event::Snapshot(u.snapshot, u.latencies, u.at));
            batch.extend(update_events(
                u.ended,
                u.ongoing,
                u.flight_log_error,
                logging,
            ));
        }
        for event in coalesce(batch) {
            for effect in app.update(event) {
                carry_out(effect, &stream, &settings, &events_tx);
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
    Ok(DashboardEnd {
        ever_read: app.ever_read,
    })
}

/// The events an update carries besides its snapshot: its episodes, and the flight log's state when
/// there were episodes to write (`logging`: a flight log is on; without one, nothing was written and
/// a message saying why it is off stays).
fn update_events(
    ended: Vec<Episode>,
    ongoing: Vec<Episode>,
    flight_log_error: Option<String>,
    logging: bool,
) -> Vec<Event> {
    let wrote = logging && !ended.is_empty();
    let mut events = vec![Event::Episodes { ended, ongoing }];
    match flight_log_error {
        Some(e) => events.push(Event::FlightLog(Err(e))),
        None if wrote => events.push(Event::FlightLog(Ok(()))),
        None => {}
    }
    events
}

/// Carries out one effect of the app, off the UI loop.
fn carry_out(
    effect: Effect,
    stream: &Feed,
    settings: &Settings,
    events: &mpsc::UnboundedSender<Event>,
) {
    match effect {
        Effect::Quit => {}
        Effect::Bell => {
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = out.write_all(b"\x07").and_then(|_| out.flush());
        }
        Effect::Refresh => stream.refresh(),
        Effect::SetInterval(d) => stream.set_interval(d),
        Effect::PlanSweep(request) => {
            let (settings, tx) = (settings.clone(), events.clone());
            tokio::spawn(async move {
                let rules = SweepRules::default();
                let check = DependencyCheck::AtPlan;
                let plan = discover_and_plan(&settings, &rules, check, &ProcessEnv).await;
                let _ = tx.send(Event::SweepPlanned(request, Box::new(plan)));
            });
        }
        Effect::RunSweep(plan) => {
            let (settings, tx) = (settings.clone(), events.clone());
            tokio::spawn(run_sweep(settings, *plan, tx));
        }
        Effect::Signal(plan) => {
            let (settings, tx) = (settings.clone(), events.clone());
            tokio::spawn(async move {
                let outcomes = crate::pg::signal::send(&plan, &settings, &ProcessEnv).await;
                let report = build_signal_report(&plan, Some(&outcomes));
                let _ = tx.send(Event::SignalDone(Box::new(report)));
            });
        }
    }
}

/// Runs exactly the confirmed plan, reporting progress as events.
async fn run_sweep(settings: Settings, plan: SweepPlan, tx: mpsc::UnboundedSender<Event>) {
    let started = std::time::Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let progress = |p: Progress| match p {
        Progress::Dropping { database, schema } => {
            let _ = tx.send(Event::SweepProgress {
                done: done.load(std::sync::atomic::Ordering::Relaxed),
                current: Some(format!("{database}.{schema}")),
            });
        }
        Progress::Done { .. } => {
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let _ = tx.send(Event::SweepProgress {
                done: n,
                current: None,
            });
        }
    };
    let rules = SweepRules::default();
    let run = SweepRun {
        plan: &plan,
        targets: &settings.databases,
        session: &settings.session,
        app_prefix: &settings.convention.app_prefix,
        rules: &rules,
        drop: &DropSettings::default(),
        env: &ProcessEnv,
    };
    let outcomes = execute_plan(&run, &progress).await;
    let elapsed = started.elapsed();
    tracing::info!(
        dropped = outcomes.iter().map(|o| o.dropped.len()).sum::<usize>(),
        "sweep finished"
    );
    let timings = Timings {
        drop: elapsed,
        total: elapsed,
        ..Default::default()
    };
    let report = build_report(&plan, &outcomes, RunMode::Executed, timings);
    let _ = tx.send(Event::SweepFinished(Box::new(report)));
}

async fn replay_loop(
    terminal: &mut ratatui::DefaultTerminal,
    snapshots: Vec<Snapshot>,
    settings: Settings,
) -> std::io::Result<()> {
    let theme = Theme::from_env();
    let mut app = App::new_replay(settings.convention.clone(), snapshots, Utc::now());
    app.utc_offset = *chrono::Local::now().offset();
    let (tx, mut events) = mpsc::unbounded_channel::<Event>();
    spawn_input_thread(tx);
    let mut clock = tokio::time::interval(REPLAY_TICK);
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
        match ct::poll(INPUT_POLL) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::domain::incidents::episodes_of;
    use crate::domain::snapshot::{build_snapshot, Convention};

    fn flight_log_events(events: Vec<Event>) -> Vec<Result<(), String>> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::FlightLog(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Issue 23: a flight log turned off before the run (a FIFO, a device, a mount that does not
    /// answer) is said under the Incidents pane, and an ended episode must not clear that as if it
    /// had been written.
    #[test]
    fn only_a_written_flight_log_clears_its_message() {
        let ended = episodes_of(&[build_snapshot(
            fixtures::collision(),
            &Convention::default(),
        )]);
        assert!(!ended.is_empty());
        let with_log = update_events(ended.clone(), Vec::new(), None, true);
        assert_eq!(flight_log_events(with_log), vec![Ok(())]);
        let without_log = update_events(ended.clone(), Vec::new(), None, false);
        assert_eq!(flight_log_events(without_log), vec![]);
        let failed = update_events(ended, Vec::new(), Some("not written".into()), true);
        assert_eq!(flight_log_events(failed), vec![Err("not written".into())]);
    }
}
