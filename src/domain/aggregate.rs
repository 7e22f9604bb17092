//! Observations from several pollers into one snapshot, truthfully: a database no poller has read yet
//! is marked so (the snapshot is not complete before every configured database has answered), and a
//! failed read shows the previous reading marked stale (`snapshot::carry_forward`), never an empty
//! frame. Pure: the poll results come in as values.

use crate::domain::snapshot::{
    build_snapshot, carry_forward, merge_observations, Convention, Observation, ObservedDatabase,
    Snapshot,
};

/// Turns the observations of several pollers (one per server group) into snapshots of everything
/// known now. The dashboard and `record` run it off their UI and write paths (`pg::stream`).
#[derive(Debug, Clone)]
pub struct Aggregator {
    convention: Convention,
    order: Vec<String>,
    groups: Vec<Option<Observation>>,
}

impl Aggregator {
    pub fn new(convention: Convention, order: Vec<String>, group_count: usize) -> Self {
        Aggregator {
            convention,
            order,
            groups: vec![None; group_count.max(1)],
        }
    }

    /// The snapshot of nothing read yet (SQLite targets alone, before or without PostgreSQL).
    pub fn empty(&self, now: chrono::DateTime<chrono::Utc>) -> Snapshot {
        let databases = self
            .order
            .iter()
            .map(|n| ObservedDatabase::not_read_yet(n))
            .collect();
        build_snapshot(
            Observation {
                shared: Default::default(),
                taken_at: now,
                databases,
                servers: Vec::new(),
                sessions: Vec::new(),
                schemas: Vec::new(),
            },
            &self.convention,
        )
    }

    /// Takes one group's result and returns the snapshot of everything known now: a database whose
    /// newest read failed shows its previous reading, marked stale (`carry_forward`), and one no
    /// group has reported yet is marked not read yet, so the snapshot is never complete before
    /// every configured database has answered.
    pub fn accept(&mut self, group: usize, observation: Observation) -> Snapshot {
        let g = group.min(self.groups.len() - 1);
        let next = match &self.groups[g] {
            Some(prev) => carry_forward(prev, observation),
            None => observation,
        };
        let mut merged = if self.groups.len() == 1 {
            // One group: nothing to merge; the copy kept is what the next poll may carry forward.
            let copy = next.clone();
            self.groups[g] = Some(next);
            copy
        } else {
            self.groups[g] = Some(next);
            let parts: Vec<&Observation> = self.groups.iter().flatten().collect();
            merge_observations(&parts, &self.order)
        };
        for name in &self.order {
            if !merged.databases.iter().any(|d| &d.name == name) {
                merged.databases.push(ObservedDatabase::not_read_yet(name));
            }
        }
        merged.databases.sort_by_key(|d| {
            self.order
                .iter()
                .position(|n| *n == d.name)
                .unwrap_or(usize::MAX)
        });
        build_snapshot(merged, &self.convention)
    }
}
