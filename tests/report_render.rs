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
