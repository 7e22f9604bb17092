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
    #[error("{0}")]
    BadCa(String),
    #[error("the pgswarm server at {url} does not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "the pgswarm server at {0} has not finished its first poll yet; try again in a moment"
    )]
    NotReady(String),
    #[error("the pgswarm server at {0} wants a token: give --token-file FILE (the file serve's --token-file names)")]
    Unauthorized(String),
    #[error("the pgswarm server at {0} refused the token from --token-file: it is not the one its --token-file holds")]
    WrongToken(String),
    #[error("cannot verify the TLS certificate of the pgswarm server at {url}: {reason}{hint}")]
    Certificate {
        url: String,
        reason: String,
        hint: &'static str,
    },
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
    tls: ureq::tls::TlsConfig,
    agent: ureq::Agent,
}

impl Remote {
    /// `ca`: a PEM file of the certificates to trust for an `https://` URL instead of the public
    /// roots (a `serve` with its own self-signed certificate).
    pub fn new(
        url: &str,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> Result<Remote, RemoteError> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RemoteError::BadUrl(url.to_string()));
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = ca {
            let bad =
                |why: String| RemoteError::BadCa(format!("--server-ca {}: {why}", path.display()));
            super::tls::check_pem_file("--server-ca", path).map_err(RemoteError::BadCa)?;
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad(
                    "no PEM certificate in it (-----BEGIN CERTIFICATE-----)".into(),
                ));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let tls = tls.build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .tls_config(tls.clone())
            .build()
            .into();
        Ok(Remote {
            base,
            token,
            tls,
            agent,
        })
    }

    /// GETs `path` (with its query) and decodes the JSON body.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().map_err(|e| self.call_error(e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(BODY_MAX_BYTES)
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
            401 => Err(self.unauthorized()),
            503 => Err(RemoteError::NotReady(self.base.clone())),
            _ => Err(RemoteError::Status {
                url: self.base.clone(),
                status,
                body: shown_body(&body),
            }),
        }
    }

    fn unauthorized(&self) -> RemoteError {
        match self.token {
            Some(_) => RemoteError::WrongToken(self.base.clone()),
            None => RemoteError::Unauthorized(self.base.clone()),
        }
    }

    /// A request that got no answer: a certificate that cannot be verified is said as such (not
    /// as "does not answer"), with how to fix the usual cause.
    fn call_error(&self, e: ureq::Error) -> RemoteError {
        let reason = e.to_string();
        if reason.contains("certificate") {
            let hint = if reason.contains("CaUsedAsEndEntity") {
                ". The certificate serve presents is a CA certificate (basicConstraints CA:TRUE, \
                 which openssl req -x509 makes by default); TLS clients refuse a CA as a server's \
                 own certificate: make it with -addext basicConstraints=critical,CA:FALSE, or sign \
                 it with a CA and give the CA to --server-ca (docs/serve.md)"
            } else if reason.contains("UnknownIssuer") {
                ". Give the CA that signed it (or the self-signed certificate itself) to --server-ca FILE"
            } else {
                ""
            };
            return RemoteError::Certificate {
                url: self.base.clone(),
                reason,
                hint,
            };
        }
        RemoteError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }
}

/// The most a document from a server may take (a 5,000-session snapshot is a few MB).
pub const BODY_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// An error body as shown: sanitised and cut to a line's worth.
fn shown_body(body: &str) -> String {
    const SHOWN: usize = 300;
    let clean = crate::domain::text::sanitize(body.trim());
    let mut out: String = clean.chars().take(SHOWN).collect();
    if clean.chars().count() > SHOWN {
        out.push('…');
    }
    out
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
                                    ended_public_writes: Vec::new(),
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
                                ended_public_writes: Vec::new(),
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

/// How long an event stream may stay silent before it counts as gone (the server sends a
/// keep-alive comment every 15 s).
pub const EVENT_SILENCE: Duration = Duration::from_secs(40);
/// The longest event-stream line or event kept; a longer one is skipped (a server is input too).
pub const EVENT_MAX_BYTES: usize = 16 * 1024 * 1024;

/// One server-sent event as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub kind: String,
    pub data: String,
}

/// The event-stream format, one line at a time (pure: tested without a server). An event is
/// complete at its blank line; comments (`:`) are keep-alives.
#[derive(Debug, Default)]
pub struct SseParser {
    id: Option<u64>,
    kind: String,
    data: String,
    has_data: bool,
    oversized: bool,
}

impl SseParser {
    /// The event being read had a line too long to keep: it is skipped.
    pub fn oversized(&mut self) {
        self.oversized = true;
    }

    /// Takes one line (with or without its line ending); returns an event when one is complete.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let event = (self.has_data && !self.oversized).then(|| SseEvent {
                id: self.id,
                kind: if self.kind.is_empty() {
                    "message".into()
                } else {
                    std::mem::take(&mut self.kind)
                },
                data: self
                    .data
                    .strip_suffix('\n')
                    .unwrap_or(&self.data)
                    .to_string(),
            });
            self.kind.clear();
            self.data.clear();
            self.has_data = false;
            self.oversized = false;
            return event;
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() > EVENT_MAX_BYTES {
                    self.oversized = true;
                } else {
                    self.data.push_str(value);
                    self.data.push('\n');
                }
                self.has_data = true;
            }
            "event" => self.kind = value.chars().take(64).collect(),
            "id" => self.id = value.trim().parse().ok().or(self.id),
            _ => {}
        }
        None
    }
}

/// Reads one line of at most [`EVENT_MAX_BYTES`] (a longer one is cut there, the rest skipped,
/// and it comes back as `(line, true)`); `Ok(None)` at the end of the stream.
fn read_capped_line(r: &mut impl std::io::BufRead) -> std::io::Result<Option<(String, bool)>> {
    let mut buf = Vec::new();
    let mut skipping = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(
                (!buf.is_empty()).then(|| (String::from_utf8_lossy(&buf).into_owned(), skipping))
            );
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !skipping {
            let room = EVENT_MAX_BYTES.saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..take.min(room)]);
            skipping = take > room;
        }
        r.consume(take);
        if done {
            return Ok(Some((String::from_utf8_lossy(&buf).into_owned(), skipping)));
        }
    }
}

impl Remote {
    /// Opens `GET /api/v1/events` (resuming after `last_id`), calls `on_open` once the server
    /// answered, and hands each event to `on_event` until the stream ends, fails, stays silent
    /// longer than [`EVENT_SILENCE`], or `on_event` returns false. `Ok(())` only when `on_event`
    /// stopped it. A server that does not answer within [`REQUEST_TIMEOUT`] is an error.
    pub fn follow_events(
        &self,
        last_id: Option<u64>,
        on_open: impl FnOnce(),
        mut on_event: impl FnMut(SseEvent) -> bool,
    ) -> Result<(), RemoteError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(REQUEST_TIMEOUT))
            .timeout_recv_response(Some(REQUEST_TIMEOUT))
            .timeout_per_read(Some(EVENT_SILENCE))
            .tls_config(self.tls.clone())
            .build()
            .into();
        let mut req = agent
            .get(format!("{}/api/v1/events", self.base))
            .header("Accept", "text/event-stream");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", &id.to_string());
        }
        let unreachable = |reason: String| RemoteError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let resp = req.call().map_err(|e| self.call_error(e))?;
        match resp.status().as_u16() {
            200 => on_open(),
            401 => return Err(self.unauthorized()),
            status => {
                return Err(RemoteError::Status {
                    url: self.base.clone(),
                    status,
                    body: String::new(),
                })
            }
        }
        let mut reader = std::io::BufReader::new(resp.into_body().into_reader());
        let mut parser = SseParser::default();
        loop {
            match read_capped_line(&mut reader) {
                Ok(Some((line, cut))) => {
                    if cut {
                        parser.oversized();
                    }
                    if let Some(event) = parser.line(&line) {
                        if !on_event(event) {
                            return Ok(());
                        }
                    }
                }
                Ok(None) => return Err(unreachable("the event stream ended".into())),
                Err(e) => return Err(unreachable(e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(text: &str) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        text.split_inclusive('\n')
            .filter_map(|l| p.line(l))
            .collect()
    }

    #[test]
    fn events_are_split_at_blank_lines_with_ids_kinds_and_multiline_data() {
        let got = feed(
            ": keep-alive\n\nid: 7\nevent: episode\ndata: {\"a\":1}\n\n\
             id: 8\r\nevent: summary\r\ndata: x\r\ndata: y\r\n\r\ndata:z\n\n",
        );
        assert_eq!(
            got,
            vec![
                SseEvent {
                    id: Some(7),
                    kind: "episode".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    id: Some(8),
                    kind: "summary".into(),
                    data: "x\ny".into()
                },
                // The last id stays the stream's; a kind is per event.
                SseEvent {
                    id: Some(8),
                    kind: "message".into(),
                    data: "z".into()
                },
            ]
        );
    }

    #[test]
    fn an_oversized_line_is_cut_and_its_event_skipped() {
        let long = "a".repeat(EVENT_MAX_BYTES + 10);
        let text = format!("event: episode\ndata: {long}\n\nevent: episode\ndata: ok\n\n");
        let mut r = std::io::BufReader::with_capacity(4096, text.as_bytes());
        let mut p = SseParser::default();
        let mut got = Vec::new();
        while let Some((line, cut)) = read_capped_line(&mut r).unwrap() {
            assert!(line.len() <= EVENT_MAX_BYTES);
            if cut {
                p.oversized();
            }
            got.extend(p.line(&line));
        }
        assert_eq!(got.len(), 1, "only the event that fits");
        assert_eq!(got[0].data, "ok");
    }

    #[test]
    fn a_stale_picture_marks_every_database_and_keeps_the_sessions() {
        use crate::domain::fixtures;
        use crate::domain::snapshot::{build_snapshot, Convention};
        let snap = build_snapshot(fixtures::collision(), &Convention::default());
        let at = fixtures::fixture_now();
        let stale = stale_picture(&snap, at, "gone");
        assert_eq!(stale.sessions.len(), snap.sessions.len());
        assert!(stale.databases.iter().all(|d| !d.reachable
            && d.stale_since.is_some()
            && d.error.as_deref() == Some("gone")));
    }
}
