//! Merging the observations of several pollers into one, and carrying a failed read's previous
//! reading forward (marked stale) so a frame never goes blank because one read failed.

use super::{DatabaseInfo, Observation, ObservedDatabase, ServerId, Stale};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Merges observations made independently (one per poller) into one, in the configured database
/// order. Servers are matched by key, so a server polled by two pollers contributes its sessions once.
pub fn merge_observations(parts: &[&Observation], order: &[String]) -> Observation {
    let mut out = Observation {
        shared: Default::default(),
        taken_at: parts
            .iter()
            .map(|p| p.taken_at)
            .max()
            .unwrap_or_else(|| DateTime::<Utc>::from_timestamp(0, 0).expect("epoch")),
        databases: Vec::new(),
        servers: Vec::new(),
        sessions: Vec::new(),
        schemas: Vec::new(),
    };
    for part in parts {
        // Map this part's server ids to merged ids; a server already merged keeps its sessions.
        let mut map = Vec::with_capacity(part.servers.len());
        let mut fresh = Vec::with_capacity(part.servers.len());
        for sv in &part.servers {
            match out.servers.iter().position(|m| m.key == sv.key) {
                Some(i) => {
                    map.push(i);
                    fresh.push(false);
                }
                None => {
                    map.push(out.servers.len());
                    fresh.push(true);
                    out.servers.push(sv.clone());
                }
            }
        }
        for s in &part.sessions {
            if fresh.get(s.server).copied().unwrap_or(false) {
                let mut s = s.clone();
                s.server = map[s.server];
                out.sessions.push(s);
            }
        }
        for d in &part.databases {
            let mut d = d.clone();
            if let Ok(info) = &mut d.outcome {
                info.server = map.get(info.server).copied().unwrap_or(info.server);
            }
            out.databases.push(d);
        }
        out.schemas.extend(part.schemas.iter().cloned());
        out.shared.locks.extend(part.shared.locks.iter().cloned());
        out.shared
            .counters
            .extend(part.shared.counters.iter().cloned());
    }
    out.databases.sort_by_key(|d| {
        order
            .iter()
            .position(|n| *n == d.name)
            .unwrap_or(usize::MAX)
    });
    out
}

/// Why a configured database's reading in `obs` failed, if it did: unreachable, its server's
/// activity scan failed, or its schema listing failed.
fn failed_read(obs: &Observation, d: &ObservedDatabase) -> Option<String> {
    match &d.outcome {
        Err(e) => Some(e.clone()),
        Ok(info) => obs
            .servers
            .get(info.server)
            .and_then(|s| s.activity_error.clone())
            .map(|e| format!("activity scan failed: {e}"))
            .or_else(|| {
                info.schema_error
                    .clone()
                    .map(|e| format!("schema listing failed: {e}"))
            }),
    }
}

/// A poll that could not read a database its previous poll did (the monitor's backend was
/// terminated, a network blip) would show that database with nothing in it. Instead the previous
/// reading is carried forward and marked stale: the database's info, its schemas, and the sessions
/// of its server, with the failed read's error and the time the reading was taken. The snapshot built
/// from it is incomplete (no schema is `orphaned`), and says so. Databases the previous poll could not
/// read either stay as they are.
pub fn carry_forward(prev: &Observation, mut next: Observation) -> Observation {
    // Judge every database before anything is carried: carrying a server clears its scan error.
    let failures: Vec<(usize, String)> = next
        .databases
        .iter()
        .enumerate()
        .filter_map(|(i, d)| failed_read(&next, d).map(|e| (i, e)))
        .collect();
    let mut server_map: HashMap<ServerId, ServerId> = HashMap::new();
    for (i, error) in failures {
        let name = next.databases[i].name.clone();
        let Some(p) = prev.databases.iter().find(|p| p.name == name) else {
            continue;
        };
        let Ok(pinfo) = &p.outcome else {
            continue;
        };
        let since = p.stale.as_ref().map_or(prev.taken_at, |st| st.since);
        let new_id = match server_map.get(&pinfo.server) {
            Some(&id) => id,
            None => {
                let id = adopt_server(prev, pinfo.server, &mut next);
                server_map.insert(pinfo.server, id);
                id
            }
        };
        if !next.schemas.iter().any(|s| s.database == name) {
            let carried = prev.schemas.iter().filter(|s| s.database == name).cloned();
            next.schemas.extend(carried);
        }
        let d = &mut next.databases[i];
        d.outcome = Ok(DatabaseInfo {
            server: new_id,
            ..pinfo.clone()
        });
        d.stale = Some(Stale { since, error });
    }
    next
}

/// Brings a server of `prev` and its sessions into `next` (replacing a failed scan of the same
/// server, matched by key), and returns its id in `next`.
fn adopt_server(prev: &Observation, id: ServerId, next: &mut Observation) -> ServerId {
    let server = &prev.servers[id];
    let new_id = match next.servers.iter().position(|s| s.key == server.key) {
        Some(i) => {
            // Its scan failed this time: the sessions shown are the previous ones.
            next.servers[i].activity_error = None;
            next.servers[i].now = server.now;
            next.sessions.retain(|s| s.server != i);
            i
        }
        None => {
            next.servers.push(server.clone());
            next.servers.len() - 1
        }
    };
    let carried = prev.sessions.iter().filter(|s| s.server == id).map(|s| {
        let mut s = s.clone();
        s.server = new_id;
        s
    });
    next.sessions.extend(carried);
    new_id
}
