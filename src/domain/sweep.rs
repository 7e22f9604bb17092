//! Deciding which test schemas are stale: the fail-closed rules of the sweep, as a pure function.
//!
//! Dropping the wrong schema destroys a live test run, so the plan keeps everything it cannot prove
//! stale, and says why. A schema is dropped only if all of these hold:
//!
//! - the live set of namespaces is complete: every configured database answered and every server's
//!   sessions were read (else *every* candidate is kept as `active_detection_incomplete`);
//! - no session carries the app prefix without being attributable to a namespace (else every candidate
//!   is kept as `unattributed_sessions`), unless explicitly allowed;
//! - its name matches the strict pattern (anything else never becomes a candidate at all);
//! - its namespace has no session on any polled server (the live set is a union over all databases: a
//!   run connected only to `platform` keeps its schemas in every tenant database);
//! - its namespace token's start time is older than `min_age` (forced namespaces have no start time:
//!   `unknown_age`; legacy `test_gwN` names have no namespace: `legacy_name`; each only with a flag);
//! - nothing outside the schema depends on it (`external_dependents`).
//!
//! The executor checks liveness again inside each drop's transaction (`became_live`).

use crate::domain::naming::{parse_schema_name, Namespace, SchemaName};
use crate::domain::snapshot::{LabelKind, Snapshot};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Why a candidate schema is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// Its namespace has a session somewhere.
    Live,
    /// Some configured database or server could not be read: nothing is dropped.
    ActiveDetectionIncomplete,
    /// A session carries the app prefix but no attributable namespace: nothing is dropped.
    UnattributedSessions,
    /// Younger than `--min-age`.
    TooYoung,
    /// A forced namespace: no start time in the token.
    UnknownAge,
    /// `{prefix}_{worker}` from before namespacing.
    LegacyName,
    /// Objects in other schemas depend on it; CASCADE would drop them too.
    ExternalDependents,
    /// A session of its namespace connected between discovery and drop.
    BecameLive,
    /// Gone before the drop (someone else dropped it).
    Vanished,
    /// Another sweep holds this database's sweep lock.
    SweepInProgress,
    /// The plan was only planned (`--dry-run`) or not confirmed.
    NotConfirmed,
}

impl KeepReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KeepReason::Live => "live",
            KeepReason::ActiveDetectionIncomplete => "active_detection_incomplete",
            KeepReason::UnattributedSessions => "unattributed_sessions",
            KeepReason::TooYoung => "too_young",
            KeepReason::UnknownAge => "unknown_age",
            KeepReason::LegacyName => "legacy_name",
            KeepReason::ExternalDependents => "external_dependents",
            KeepReason::BecameLive => "became_live",
            KeepReason::Vanished => "vanished",
            KeepReason::SweepInProgress => "sweep_in_progress",
            KeepReason::NotConfirmed => "not_confirmed",
        }
    }
}

/// What may be dropped beyond the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepRules {
    pub min_age: Duration,
    pub include_forced: bool,
    pub include_legacy: bool,
    pub allow_unattributed: bool,
}

impl Default for SweepRules {
    fn default() -> Self {
        SweepRules {
            min_age: Duration::from_secs(600),
            include_forced: false,
            include_legacy: false,
            allow_unattributed: false,
        }
    }
}

/// A schema the plan will drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedDrop {
    pub schema: String,
    pub namespace: Option<String>,
    pub tables: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub schema: String,
    pub reason: KeepReason,
    /// For `external_dependents`: what depends on it.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub detail: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabasePlan {
    pub name: String,
    /// The server the database lives on (drops on one server run one at a time).
    pub server: Option<String>,
    pub drop: Vec<PlannedDrop>,
    pub keep: Vec<Kept>,
}

/// The plan: exactly what will be dropped, and what is kept and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepPlan {
    pub planned_at: DateTime<Utc>,
    pub active_detection_complete: bool,
    pub active_namespaces: Vec<String>,
    pub unattributed_sessions: Vec<String>,
    pub errors: Vec<DatabaseError>,
    pub databases: Vec<DatabasePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseError {
    pub database: String,
    pub error: String,
}

impl SweepPlan {
    pub fn drop_count(&self) -> usize {
        self.databases.iter().map(|d| d.drop.len()).sum()
    }
    pub fn keep_count(&self) -> usize {
        self.databases.iter().map(|d| d.keep.len()).sum()
    }
}

/// Plans the sweep from a snapshot (the live set, the schemas) and each candidate's external
/// dependents (`(database, schema) -> dependent object descriptions`). `now` is a parameter.
pub fn plan_sweep(
    snap: &Snapshot,
    dependents: &HashMap<(String, String), Vec<String>>,
    rules: &SweepRules,
    now: DateTime<Utc>,
) -> SweepPlan {
    let errors: Vec<DatabaseError> = snap
        .databases
        .iter()
        .filter_map(|d| {
            d.error.as_ref().map(|e| DatabaseError {
                database: d.name.clone(),
                error: e.clone(),
            })
        })
        .collect();
    // Any error while reading (unreachable, activity scan, schema listing) makes the picture partial.
    let complete = snap.active_detection_complete && errors.is_empty();
    let active: BTreeSet<String> = snap
        .sessions
        .iter()
        .filter_map(|s| s.namespace.clone())
        .collect();
    let unattributed: Vec<String> = snap
        .sessions
        .iter()
        .filter(|s| s.label == LabelKind::Unattributed)
        .map(|s| s.application_name.clone())
        .collect();
    let blocked_globally = if !complete {
        Some(KeepReason::ActiveDetectionIncomplete)
    } else if !unattributed.is_empty() && !rules.allow_unattributed {
        Some(KeepReason::UnattributedSessions)
    } else {
        None
    };
    let min_age = chrono::Duration::from_std(rules.min_age).unwrap_or(chrono::Duration::MAX);

    let mut per_db: BTreeMap<&str, DatabasePlan> = BTreeMap::new();
    let order: Vec<&str> = snap.databases.iter().map(|d| d.name.as_str()).collect();
    for d in &snap.databases {
        per_db.insert(
            d.name.as_str(),
            DatabasePlan {
                name: d.name.clone(),
                server: d.server.clone(),
                drop: vec![],
                keep: vec![],
            },
        );
    }
    for s in &snap.schemas {
        // Re-parse: only the strict pattern is ever a candidate, whatever the snapshot says.
        let Some(name) = parse_schema_name(&snap.schema_prefix, &s.schema) else {
            continue;
        };
        let Some(plan) = per_db.get_mut(s.database.as_str()) else {
            continue;
        };
        let keep = |reason: KeepReason| Kept {
            schema: s.schema.clone(),
            reason,
            detail: vec![],
        };
        let reason = if let Some(r) = blocked_globally {
            Some(r)
        } else {
            match &name {
                SchemaName::Legacy { .. } if !rules.include_legacy => Some(KeepReason::LegacyName),
                SchemaName::Legacy { .. } => None,
                SchemaName::Namespaced { namespace, .. } => {
                    decide_namespaced(namespace, &active, rules, min_age, now)
                }
            }
        };
        if let Some(r) = reason {
            plan.keep.push(keep(r));
            continue;
        }
        if let Some(deps) = dependents
            .get(&(s.database.clone(), s.schema.clone()))
            .filter(|d| !d.is_empty())
        {
            plan.keep.push(Kept {
                schema: s.schema.clone(),
                reason: KeepReason::ExternalDependents,
                detail: deps.clone(),
            });
            continue;
        }
        plan.drop.push(PlannedDrop {
            schema: s.schema.clone(),
            namespace: name.namespace().map(|n| n.to_string()),
            tables: s.tables,
            bytes: s.bytes,
        });
    }
    let databases = order.into_iter().filter_map(|n| per_db.remove(n)).collect();
    SweepPlan {
        planned_at: now,
        active_detection_complete: complete,
        active_namespaces: active.into_iter().collect(),
        unattributed_sessions: unattributed,
        errors,
        databases,
    }
}

fn decide_namespaced(
    namespace: &Namespace,
    active: &BTreeSet<String>,
    rules: &SweepRules,
    min_age: chrono::Duration,
    now: DateTime<Utc>,
) -> Option<KeepReason> {
    if active.contains(namespace.as_str()) {
        return Some(KeepReason::Live);
    }
    match namespace.token() {
        Some(t) if now - t.started_at < min_age => Some(KeepReason::TooYoung),
        Some(_) => None,
        None if rules.include_forced => None,
        None => Some(KeepReason::UnknownAge),
    }
}

/// Quotes an identifier for SQL (`"` doubled). Names come from the catalog; this is belt and braces.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests;
