//! Discovery: read every configured database on read-only sessions, plan with the pure rules, and
//! (for a plan a person confirms) check each candidate's dependency closure.

use crate::domain::snapshot::build_snapshot;
use crate::domain::sweep::{plan_sweep, KeepReason, SweepPlan, SweepRules};
use crate::pg::config::Settings;
use crate::pg::conninfo::Environment;
use crate::pg::probe::ReadError;
use crate::pg::probe::{observe, open_all, ProbeOptions};
use chrono::Utc;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::time::Duration;

use super::closure::{external_dependents_prepared, prepare_closure};

/// When the dependency closure (what `DROP SCHEMA … CASCADE` would also remove outside a schema) is
/// computed besides inside each drop's transaction, where it always is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyCheck {
    /// Also at discovery, so the plan a person confirms shows what will be kept and why.
    AtPlan,
    /// Only at drop time (`--yes`: nobody reads the plan first).
    AtDropOnly,
}

/// Discovers on read-only sessions and plans. With [`DependencyCheck::AtPlan`] the closure is computed
/// for the planned drops, one schema per statement, databases in parallel; a database whose check
/// fails keeps all its candidates.
pub async fn discover_and_plan(
    settings: &Settings,
    rules: &SweepRules,
    check: DependencyCheck,
    env: &(dyn Environment + Sync),
) -> SweepPlan {
    let sessions = open_all(&settings.databases, &settings.session, env).await;
    let opts = ProbeOptions {
        // Public writes are not looked for here: neither a sweep nor a signal needs them.
        shared_schemas: Vec::new(),
        ..ProbeOptions::of(&settings.convention)
    };
    let obs = observe(
        &settings.databases,
        &sessions,
        &opts,
        settings.session.statement_timeout,
    )
    .await;
    let snap = build_snapshot(obs, &settings.convention);
    let mut plan = plan_sweep(&snap, rules, Utc::now());
    if check == DependencyCheck::AtDropOnly {
        return plan;
    }
    let limit = settings.session.statement_timeout + crate::pg::probe::CLIENT_SLACK;
    let checks = settings.databases.iter().zip(&sessions).map(|(t, s)| {
        let candidates: Vec<String> = plan
            .databases
            .iter()
            .filter(|d| d.name == t.name)
            .flat_map(|d| d.drop.iter().map(|x| x.schema.clone()))
            .collect();
        async move {
            let found = match s {
                Ok(s) if !candidates.is_empty() => closures(&s.client, &candidates, limit).await,
                _ => Ok(HashMap::new()),
            };
            (t.name.clone(), found)
        }
    });
    for (db, result) in join_all(checks).await {
        match result {
            Ok(found) => plan.keep_with_dependents(&db, &found),
            // Without the dependency check nothing in that database is provably safe: keep it all.
            Err(e) => plan.keep_all_in(
                &db,
                KeepReason::ActiveDetectionIncomplete,
                format!("dependency check failed: {e}"),
            ),
        }
    }
    plan
}

/// The closure of each schema, one bounded statement each (prepared once).
async fn closures(
    client: &tokio_postgres::Client,
    schemas: &[String],
    limit: Duration,
) -> Result<HashMap<String, Vec<String>>, ReadError> {
    let describe =
        |e: tokio_postgres::Error| ReadError::Server(crate::pg::connect::describe_error(&e));
    let late = |_| ReadError::Timeout(limit);
    let stmt = tokio::time::timeout(limit, prepare_closure(client))
        .await
        .map_err(late)?
        .map_err(describe)?;
    let mut found = HashMap::new();
    for schema in schemas {
        let one = std::slice::from_ref(schema);
        let deps = tokio::time::timeout(limit, external_dependents_prepared(client, &stmt, one))
            .await
            .map_err(late)?
            .map_err(describe)?;
        found.extend(deps);
    }
    Ok(found)
}
