//! The client side of `serve`: `snapshot --server URL` and `incidents --server URL` read a running
//! `pgswarm serve` instead of the databases, and need no database credentials. The documents come
//! back as the same domain types the local path builds, so the text report, JSON and exit codes
//! cannot tell the difference.
//!
//! A server that cannot be reached, answers with an error, or has not finished its first poll is
//! an error of its own (`RemoteError`): never an empty picture that reads as "nothing blocked".

use serde::de::DeserializeOwned;
use std::time::Duration;

/// How long one request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a `serve` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("--server {0:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:9187)")]
    BadUrl(String),
    #[error("the pgswarm server at {url} does not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "the pgswarm server at {0} has not finished its first poll yet; try again in a moment"
    )]
    NotReady(String),
    #[error("the pgswarm server at {0} wants a token: give --token-file FILE (the file serve's --token-file names)")]
    Unauthorized(String),
    #[error("the pgswarm server at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the pgswarm server at {url} sent a document this version cannot read: {reason}")]
    BadBody { url: String, reason: String },
}

/// A `serve` to read from.
pub struct Remote {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Remote {
    pub fn new(url: &str, token: Option<String>) -> Result<Remote, RemoteError> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RemoteError::BadUrl(url.to_string()));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Ok(Remote { base, token, agent })
    }

    /// GETs `path` (with its query) and decodes the JSON body.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().map_err(|e| RemoteError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| RemoteError::Unreachable {
                url: self.base.clone(),
                reason: e.to_string(),
            })?;
        match status {
            200 => serde_json::from_str(&body).map_err(|e| RemoteError::BadBody {
                url: self.base.clone(),
                reason: e.to_string(),
            }),
            401 => Err(RemoteError::Unauthorized(self.base.clone())),
            503 => Err(RemoteError::NotReady(self.base.clone())),
            _ => Err(RemoteError::Status {
                url: self.base.clone(),
                status,
                body: crate::domain::text::sanitize(body.trim()).into_owned(),
            }),
        }
    }
}

/// What the dashboard asks of a [`spawn_live`] reader.
#[derive(Debug, Clone, Copy)]
pub enum LiveControl {
    /// Read now.
    Refresh,
    /// Read this often.
    Interval(Duration),
}

/// The dashboard's feed from a `serve`: updates shaped like the local snapshot stream's, and the
/// server's state (`Some(reason)` when it stopped answering, `None` when it answers again).
pub struct LiveFeed {
    pub updates: tokio::sync::mpsc::UnboundedReceiver<crate::pg::stream::Update>,
    pub status: tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
    pub control: std::sync::mpsc::Sender<LiveControl>,
}

impl Remote {
    /// The server's URL as given (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// One `GET /api/v1/live`: the picture unless the client has poll `poll`, and the episodes
    /// that ended after number `after`.
    pub fn live(
        &self,
        poll: Option<u64>,
        after: u64,
    ) -> Result<super::hub::LiveDocument, RemoteError> {
        let path = match poll {
            Some(p) => format!("/api/v1/live?poll={p}&after={after}"),
            None => format!("/api/v1/live?after={after}"),
        };
        self.get_json(&path)
    }
}

/// Marks every database of the last picture as shown-as-last-read: what a reader sees when the
/// server it reads stops answering (never an empty picture that reads as "nothing blocked").
pub fn stale_picture(
    last: &crate::domain::snapshot::Snapshot,
    since: chrono::DateTime<chrono::Utc>,
    reason: &str,
) -> crate::domain::snapshot::Snapshot {
    let mut s = last.clone();
    for d in &mut s.databases {
        d.reachable = false;
        d.stale_since.get_or_insert(since);
        d.error = Some(reason.to_string());
    }
    s
}

/// Reads `remote` every `interval` on a thread of its own (the UI loop never waits for it),
/// starting from `first` (already read, so that a dead server is an error before the dashboard
/// starts). Stops when the feed is dropped.
pub fn spawn_live(remote: Remote, interval: Duration, first: super::hub::LiveDocument) -> LiveFeed {
    use crate::pg::stream::Update;
    use std::sync::mpsc::RecvTimeoutError;
    use std::sync::Arc;
    let (tx, updates) = tokio::sync::mpsc::unbounded_channel();
    let (status_tx, status) = tokio::sync::mpsc::unbounded_channel();
    let (control, control_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut interval = interval;
        let mut poll = None;
        let mut after = 0;
        let mut last: Option<(
            Arc<crate::domain::snapshot::Snapshot>,
            chrono::DateTime<chrono::Utc>,
        )> = None;
        let mut down = false;
        let mut instance = first.instance;
        let mut next = Some(Ok(first));
        loop {
            let mut read = next.take().unwrap_or_else(|| remote.live(poll, after));
            if let Ok(doc) = &read {
                if doc.instance != instance {
                    // A restarted server counts polls and episodes anew: read it whole.
                    instance = doc.instance;
                    (poll, after) = (None, 0);
                    read = remote.live(None, 0);
                }
            }
            let sent = match read {
                Ok(doc) => {
                    if down {
                        down = false;
                        let _ = status_tx.send(None);
                    }
                    let snapshot = match (doc.snapshot, &last) {
                        (Some(s), _) => Some(Arc::new(s)),
                        (None, Some((s, _))) if poll == Some(doc.poll) => Some(s.clone()),
                        // Asked for a poll the server no longer has: read it whole next time.
                        (None, _) => None,
                    };
                    match snapshot {
                        Some(snapshot) => {
                            let new = poll != Some(doc.poll) || !doc.ended.is_empty();
                            poll = Some(doc.poll);
                            after = doc.ended_seq;
                            last = Some((snapshot.clone(), doc.at));
                            !new || tx
                                .send(Update {
                                    snapshot,
                                    latencies: doc
                                        .latencies_ms
                                        .into_iter()
                                        .map(|(n, ms)| {
                                            (n, Duration::from_secs_f64(ms.max(0.0) / 1000.0))
                                        })
                                        .collect(),
                                    at: doc.at,
                                    ended: doc.ended,
                                    ongoing: doc.ongoing,
                                    flight_log_error: None,
                                })
                                .is_ok()
                        }
                        None => {
                            poll = None;
                            true
                        }
                    }
                }
                Err(e) if !down => {
                    down = true;
                    poll = None;
                    let reason = e.to_string();
                    let _ = status_tx.send(Some(reason.clone()));
                    match &last {
                        Some((s, at)) => tx
                            .send(Update {
                                snapshot: Arc::new(stale_picture(s, *at, &reason)),
                                latencies: Vec::new(),
                                at: *at,
                                ended: Vec::new(),
                                ongoing: Vec::new(),
                                flight_log_error: None,
                            })
                            .is_ok(),
                        None => true,
                    }
                }
                Err(_) => !tx.is_closed(),
            };
            if !sent {
                return;
            }
            match control_rx.recv_timeout(interval) {
                Ok(LiveControl::Refresh) | Err(RecvTimeoutError::Timeout) => {}
                Ok(LiveControl::Interval(d)) => interval = d,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    LiveFeed {
        updates,
        status,
        control,
    }
}
