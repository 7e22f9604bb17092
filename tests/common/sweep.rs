//! Sweep helpers shared by the sweep tests: stale namespaces, schemas with tables, and a sweep run
//! through the library that checks the accounting invariant on every report it returns.

use pgswarm::cmd::sweep::run_plan;
use pgswarm::domain::sweep::{
    build_report, KeepReason, RunMode, SweepPlan, SweepReport, SweepRules, Timings,
};
use pgswarm::pg::cluster::TempCluster;
use pgswarm::pg::config::Settings;
use pgswarm::pg::conninfo::ProcessEnv;
use pgswarm::pg::sweep::DropSettings;
use pgswarm::pg::sweep::{discover_and_plan, DependencyCheck};
use std::time::Instant;

/// A namespace whose token says it started in 2023: old enough for any --min-age.
pub fn stale_ns(i: usize) -> String {
    format!(
        "p{}t1700000000r{:08x}",
        30_000 + i,
        0xdead_0000u32 + i as u32
    )
}

/// Creates `schema` with `tables` tables (serial PK, a text column, one extra index), in one
/// server-side transaction.
pub fn create_schema(srv: &TempCluster, db: &str, schema: &str, tables: usize) {
    srv.psql(
        db,
        &format!(
            "DO $$ BEGIN EXECUTE format('CREATE SCHEMA %I', '{schema}'); \
             FOR i IN 0..{} LOOP \
               EXECUTE format('CREATE TABLE %I.%I (id serial PRIMARY KEY, name text, created int)', '{schema}', 't' || i); \
               EXECUTE format('CREATE INDEX ON %I.%I (created)', '{schema}', 't' || i); \
             END LOOP; END $$",
            tables as i64 - 1
        ),
    )
    .unwrap_or_else(|e| panic!("create {schema}: {e}"));
}

pub fn schema_exists(srv: &TempCluster, db: &str, schema: &str) -> bool {
    srv.psql(
        db,
        &format!(
            "SELECT count(*) FROM pg_namespace WHERE nspname = '{}'",
            schema.replace('\'', "''")
        ),
    )
    .unwrap()
    .trim()
        == "1"
}

/// Asserts the accounting invariant: every planned schema is reported exactly once.
pub fn assert_accounted(plan: &SweepPlan, r: &SweepReport) {
    let errors = r.accounting_errors(plan);
    assert!(errors.is_empty(), "accounting broken: {errors:?}\n{r:#?}");
}

/// Plans, runs and reports a sweep through the library (as `sweep --yes` does), checking the
/// accounting invariant.
pub async fn sweep(settings: &Settings, rules: &SweepRules, drop: &DropSettings) -> SweepReport {
    sweep_with(settings, rules, drop, DependencyCheck::AtPlan).await
}

/// [`sweep`], choosing where the dependency closure runs besides the drop's transaction.
pub async fn sweep_with(
    settings: &Settings,
    rules: &SweepRules,
    drop: &DropSettings,
    check: DependencyCheck,
) -> SweepReport {
    let plan = discover_and_plan(settings, rules, check, &ProcessEnv).await;
    run_planned(&plan, settings, rules, drop).await
}

/// Runs a plan made earlier and reports, checking the accounting invariant.
pub async fn run_planned(
    plan: &SweepPlan,
    settings: &Settings,
    rules: &SweepRules,
    drop: &DropSettings,
) -> SweepReport {
    let started = Instant::now();
    let (outcomes, drop_time) = run_plan(plan, settings, rules, drop, &ProcessEnv).await;
    let r = build_report(
        plan,
        &outcomes,
        RunMode::Executed,
        Timings {
            drop: drop_time,
            total: started.elapsed(),
            ..Default::default()
        },
    );
    assert_accounted(plan, &r);
    r
}

pub fn dropped(r: &SweepReport, db: &str) -> Vec<String> {
    let mut v = r
        .databases
        .iter()
        .find(|d| d.name == db)
        .unwrap()
        .dropped
        .clone();
    v.sort();
    v
}

pub fn kept(r: &SweepReport, db: &str, schema: &str) -> Option<KeepReason> {
    r.databases
        .iter()
        .find(|d| d.name == db)?
        .kept
        .iter()
        .find(|k| k.schema == schema)
        .map(|k| k.reason)
}
