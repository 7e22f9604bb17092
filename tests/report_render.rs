//! Golden text of `pgswarm snapshot` (the plain-text report) for the fixture observations: the report
//! is what gets pasted into tickets, so a change in it is reviewed like a change in the dashboard.

use pgswarm::cmd::report::render_report;
use pgswarm::domain::fixtures;
use pgswarm::domain::snapshot::{build_snapshot, Convention, Observation};

fn report(obs: Observation) -> String {
    render_report(&build_snapshot(obs, &Convention::default()))
}

#[test]
fn collision() {
    insta::assert_snapshot!("report_collision", report(fixtures::collision()));
}

#[test]
fn deep_chain() {
    insta::assert_snapshot!("report_deep_chain", report(fixtures::deep_chain(4)));
}

#[test]
fn unreachable() {
    insta::assert_snapshot!("report_unreachable", report(fixtures::unreachable()));
}

#[test]
fn permission_limited() {
    insta::assert_snapshot!(
        "report_permission_limited",
        report(fixtures::permission_limited())
    );
}

#[test]
fn empty() {
    insta::assert_snapshot!("report_empty", report(fixtures::empty()));
}

/// Issue 27: "1 session", never "1 sessions", in the header and the database lines.
#[test]
fn one_session_is_one_session() {
    let mut obs = fixtures::collision();
    obs.sessions.retain(|s| s.pid == 301);
    let text = report(obs);
    let first = text.lines().next().unwrap();
    assert!(first.contains(" · 1 session · "), "{first}");
    assert!(!text.contains("1 sessions"), "{text}");
    assert!(text.contains("   1 session    0 blocked"), "{text}");
}
