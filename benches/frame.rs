//! Dashboard frame cost: building the model from a poll and drawing one frame, at the size the
//! dashboard issue names (5,000 sessions, 200 invocations, 4 databases) and at a small size, side by
//! side in one run. Prints a Markdown table (median and p10..p90 over many frames).
//!
//! Run: `cargo bench --bench frame`

use chrono::Duration as ChronoDuration;

// The same allocator as the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pgswarm::domain::aggregate::Aggregator;
use pgswarm::domain::fixtures::{fixture_now, synthetic};
use pgswarm::domain::snapshot::Convention;
use pgswarm::pg::poller::GroupResult;
use pgswarm::pg::stream::latencies as probe_latencies;
use pgswarm::tui::app::{App, Event};
use pgswarm::tui::theme::Theme;
use pgswarm::tui::view::draw;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |p: f64| ms(v[((v.len() - 1) as f64 * p).round() as usize]);
    (at(0.5), at(0.1), at(0.9))
}

struct Row {
    label: String,
    aggregate: (f64, f64, f64),
    ui: (f64, f64, f64),
    draw: (f64, f64, f64),
}

fn measure(label: &str, sessions: usize, invocations: usize, dbs: usize, w: u16, h: u16) -> Row {
    let obs = synthetic(sessions, invocations, dbs, 2);
    let names: Vec<String> = obs.databases.iter().map(|d| d.name.clone()).collect();
    let mut aggregator = Aggregator::new(Convention::default(), names.clone(), 1);
    let mut app = App::new(
        Convention::default(),
        names,
        1,
        Duration::from_secs(1),
        fixture_now(),
    );
    let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    let theme = Theme {
        color: true,
        ascii: false,
    };
    let runs = 200;
    let (mut aggregate, mut ui, mut frame) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let result = GroupResult {
            group: 0,
            observation: obs.clone(),
            elapsed: Duration::from_millis(2),
        };
        // Off the UI thread in the dashboard: poll result -> snapshot.
        let t = Instant::now();
        let latencies = probe_latencies(&result);
        let snap = aggregator.accept(result.group, result.observation);
        aggregate.push(t.elapsed());
        // On the UI thread: rows for the panes (filter, order, selection), then one frame.
        let now = fixture_now() + ChronoDuration::seconds(i as i64);
        let t = Instant::now();
        app.update(Event::Snapshot(Arc::new(snap), latencies, now));
        ui.push(t.elapsed());
        let t = Instant::now();
        terminal.draw(|f| draw(f, &app, &theme)).expect("draw");
        frame.push(t.elapsed());
        // Freed off the UI thread in the dashboard.
        drop(app.retired.take());
    }
    assert_eq!(
        app.model.snapshot.as_ref().map(|s| s.sessions.len()),
        Some(sessions)
    );
    Row {
        label: label.to_string(),
        aggregate: percentiles(aggregate),
        ui: percentiles(ui),
        draw: percentiles(frame),
    }
}

fn main() {
    let rows = [
        measure(
            "50 sessions, 5 invocations, 2 dbs, 120x40",
            50,
            5,
            2,
            120,
            40,
        ),
        measure(
            "5,000 sessions, 200 invocations, 4 dbs, 80x24",
            5_000,
            200,
            4,
            80,
            24,
        ),
        measure(
            "5,000 sessions, 200 invocations, 4 dbs, 120x40",
            5_000,
            200,
            4,
            120,
            40,
        ),
        measure(
            "5,000 sessions, 200 invocations, 4 dbs, 200x60",
            5_000,
            200,
            4,
            200,
            60,
        ),
    ];
    println!("| model | poll → snapshot (aggregator task) | rows for the panes (UI) | draw one frame (UI) | UI total | all |");
    println!("|---|---|---|---|---|---|");
    let f = |p: (f64, f64, f64)| format!("{:.2} ms ({:.2}–{:.2})", p.0, p.1, p.2);
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.2} ms | {:.2} ms |",
            r.label,
            f(r.aggregate),
            f(r.ui),
            f(r.draw),
            r.ui.0 + r.draw.0,
            r.aggregate.0 + r.ui.0 + r.draw.0,
        );
    }
    println!("\nmedians (p10–p90) over 200 frames each");
    let all = |r: &Row| r.aggregate.0 + r.ui.0 + r.draw.0;
    println!(
        "5,000 sessions / 50 sessions, whole path at 120x40: {:.1}x",
        all(&rows[2]) / all(&rows[0])
    );
}
