//! The HTTP surface of `serve`: read-only JSON documents of the latest poll, the event stream and
//! the OpenMetrics exposition, all answered from memory ([`Hub`]); no handler queries a database.
//!
//! Bounds: request bodies (none is expected) are capped, every request but the event stream has a
//! time limit, requests in flight are capped, and event-stream clients are capped and dropped when
//! they fall [`SUBSCRIBER_QUEUE`](super::hub::SUBSCRIBER_QUEUE) events behind. With a token,
//! everything but `/healthz` needs `Authorization: Bearer TOKEN` (compared in constant time).

use super::actions::{ActionError, Actions, PlanRequest};
use super::hub::{Event, Hub};
use crate::domain::incidents::{Episode, EPISODES_VERSION};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{self, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Bounds of the HTTP surface.
#[derive(Debug, Clone)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    pub max_event_clients: usize,
    pub max_body_bytes: usize,
    /// Connections open at once, idle kept-alive ones included.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_address: usize,
    /// How long a client may take to send a request's headers (from its connection's start, or
    /// from the previous response's end): idle and slow clients give their slot back.
    pub header_timeout: Duration,
    /// How long a client may take to finish its TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(10),
            max_in_flight: 256,
            max_event_clients: 1_000,
            max_body_bytes: 16 * 1024,
            max_connections: 4_096,
            max_connections_per_address: 512,
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    token: Option<Arc<str>>,
    event_clients: Arc<AtomicUsize>,
    max_event_clients: usize,
}

/// The router with its bounds and (optional) bearer-token check.
pub fn router(hub: Arc<Hub>, token: Option<String>, limits: &Limits) -> Router {
    let state = AppState {
        hub,
        token: token.map(Arc::from),
        event_clients: Arc::new(AtomicUsize::new(0)),
        max_event_clients: limits.max_event_clients,
    };
    let bounded = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/live", get(live))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ));
    Router::new()
        .merge(bounded)
        .route("/api/v1/events", get(events))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/healthz", get(healthz))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.max_body_bytes,
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.max_in_flight,
        ))
        .with_state(state)
}

/// The client's address, for the audit lines of actions (plain TCP and TLS alike).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

#[derive(Clone)]
struct ActionState {
    actions: Option<Arc<Actions>>,
    token: Option<Arc<str>>,
}

/// `POST /api/v1/actions/plan` and `POST /api/v1/actions/{id}/confirm`: with `actions` (serve
/// `--allow-actions`, which needs a token), plans and their confirmation; without, 403 saying how
/// to turn them on. Outside the 10 s request bound (a sweep takes as long as it takes); the body
/// bound applies.
pub fn action_routes(actions: Option<Arc<Actions>>, token: Option<String>) -> Router {
    let state = ActionState {
        actions,
        token: token.map(Arc::from),
    };
    Router::new()
        .route("/api/v1/actions/plan", axum::routing::post(plan_action))
        .route(
            "/api/v1/actions/{id}/confirm",
            axum::routing::post(confirm_action),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authorize_actions,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(16 * 1024))
        .with_state(state)
}

async fn authorize_actions(State(st): State<ActionState>, req: Request, next: Next) -> Response {
    let Some(token) = &st.token else {
        return (
            StatusCode::FORBIDDEN,
            "actions need a token: start serve with --allow-actions --token-file FILE\n",
        )
            .into_response();
    };
    if !bearer_matches(req.headers(), token) {
        return unauthorized();
    }
    next.run(req).await
}

fn action_error(e: ActionError) -> Response {
    let status = match &e {
        ActionError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ActionError::Forbidden(_) => StatusCode::FORBIDDEN,
        ActionError::NoSuchPlan(_) => StatusCode::NOT_FOUND,
        ActionError::TooManyPlans => StatusCode::TOO_MANY_REQUESTS,
    };
    (status, format!("{e}\n")).into_response()
}

fn read_only_serve() -> Response {
    (
        StatusCode::FORBIDDEN,
        "this serve is read-only: start it with --allow-actions (and --token-file) to cancel, \
         terminate or sweep over the API\n",
    )
        .into_response()
}

async fn plan_action(
    State(st): State<ActionState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>,
    body: axum::body::Bytes,
) -> Response {
    let Some(actions) = &st.actions else {
        return read_only_serve();
    };
    let req: PlanRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return action_error(ActionError::BadRequest(format!(
                "the body is not a plan request ({e}): e.g. {{\"action\": \"terminate\", \
                 \"namespace\": \"p4242t1795510800r0a1b2c3d\"}}"
            )))
        }
    };
    match actions.plan(req, Some(peer.0)).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => action_error(e),
    }
}

async fn confirm_action(
    State(st): State<ActionState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(actions) = &st.actions else {
        return read_only_serve();
    };
    match actions.confirm(&id, Some(peer.0)).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => action_error(e),
    }
}

/// Compares in time that depends only on the lengths.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110).
        .and_then(|v| {
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| &v[7..])
        })
        .unwrap_or("");
    same_secret(given.as_bytes(), token.as_bytes())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a bearer token is required: Authorization: Bearer TOKEN (the serve --token-file)\n",
    )
        .into_response()
}

async fn authorize(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.token {
        if !bearer_matches(req.headers(), token) {
            return unauthorized();
        }
    }
    next.run(req).await
}

/// Nothing published yet: a reader must not take "no data" for "nothing blocked".
fn not_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        "no poll has finished yet\n",
    )
        .into_response()
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    last_poll_at: Option<DateTime<Utc>>,
    databases: usize,
    databases_read: usize,
}

async fn healthz(State(st): State<AppState>) -> Response {
    match st.hub.latest() {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "starting",
                last_poll_at: None,
                databases: 0,
                databases_read: 0,
            }),
        )
            .into_response(),
        Some(l) => {
            let read = l.snapshot.databases.len() - l.snapshot.unread().count();
            Json(Health {
                status: if read == l.snapshot.databases.len() {
                    "ok"
                } else {
                    "degraded"
                },
                last_poll_at: Some(l.at),
                databases: l.snapshot.databases.len(),
                databases_read: read,
            })
            .into_response()
        }
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    match st.hub.encode_metrics() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text.to_string(),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn snapshot(State(st): State<AppState>) -> Response {
    match st.hub.latest() {
        Some(l) => Json(&*l.snapshot).into_response(),
        None => not_ready(),
    }
}

async fn summary(State(st): State<AppState>) -> Response {
    match st.hub.latest() {
        Some(l) => Json(&*l.summary).into_response(),
        None => not_ready(),
    }
}

#[derive(Deserialize)]
struct LiveQuery {
    /// The poll the client already shows: its snapshot is left out.
    poll: Option<u64>,
    /// The number of the last ended episode the client has.
    after: Option<u64>,
}

/// What the dashboard over a server reads each interval: [`LiveDocument`](super::hub::LiveDocument).
async fn live(State(st): State<AppState>, Query(q): Query<LiveQuery>) -> Response {
    let Some(l) = st.hub.latest() else {
        return not_ready();
    };
    let (ended, ended_seq) = st.hub.episodes_after(q.after.unwrap_or(0));
    Json(super::hub::LiveView {
        schema_version: EPISODES_VERSION,
        instance: st.hub.started,
        poll: l.poll,
        at: l.at,
        latencies_ms: l
            .latencies
            .iter()
            .map(|(n, d)| (n.clone(), d.as_secs_f64() * 1000.0))
            .collect(),
        snapshot: (q.poll != Some(l.poll)).then_some(&*l.snapshot),
        ongoing: &l.ongoing,
        ended,
        ended_seq,
    })
    .into_response()
}

#[derive(Deserialize)]
struct IncidentsQuery {
    since: Option<String>,
    namespace: Option<String>,
    worker: Option<String>,
}

#[derive(Serialize)]
struct IncidentsDocument {
    schema_version: u32,
    source: String,
    episodes: Vec<Episode>,
    public_writes: Vec<crate::domain::public_write::PublicWrite>,
}

/// `since`: a duration back from now (`90s`, `1h`) or an RFC 3339 time.
fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        format!("since={s:?} is neither a duration (90s, 1h) nor an RFC 3339 time: {e}")
    })?;
    let d = chrono::Duration::from_std(d).map_err(|_| format!("since={s:?} is too long"))?;
    Ok(now
        .checked_sub_signed(d)
        .unwrap_or(DateTime::<Utc>::MIN_UTC))
}

async fn incidents(State(st): State<AppState>, Query(q): Query<IncidentsQuery>) -> Response {
    let now = Utc::now();
    let since = match q.since.as_deref().map(|s| parse_since(s, now)).transpose() {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e + "\n").into_response(),
    };
    let mut episodes: Vec<Episode> = st
        .hub
        .episodes()
        .into_iter()
        .filter(|e| since.is_none_or(|t| e.sort_time() >= t))
        .filter(|e| {
            q.namespace.as_deref().is_none_or(|ns| {
                e.waiter_namespace.as_deref() == Some(ns)
                    || e.root_namespace.as_deref() == Some(ns)
                    || e.blocker_namespaces.iter().any(|b| b == ns)
            })
        })
        .filter(|e| {
            q.worker
                .as_deref()
                .is_none_or(|w| e.waiter_worker.as_deref() == Some(w))
        })
        .collect();
    episodes.sort_by_key(|e| std::cmp::Reverse(e.sort_time()));
    let last_seen =
        |w: &crate::domain::public_write::PublicWrite| w.last_seen.or(w.window_end).or(w.since);
    let mut public_writes: Vec<_> = st
        .hub
        .public_writes()
        .into_iter()
        .filter(|w| since.is_none_or(|t| last_seen(w).is_none_or(|l| l >= t)))
        .filter(|w| q.namespace.as_deref().is_none_or(|ns| w.involves(ns)))
        .filter(|w| {
            q.worker
                .as_deref()
                .is_none_or(|wk| w.worker.as_deref() == Some(wk))
        })
        .collect();
    public_writes.sort_by_key(|w| std::cmp::Reverse(last_seen(w)));
    Json(IncidentsDocument {
        schema_version: EPISODES_VERSION,
        source: "serve".into(),
        episodes,
        public_writes,
    })
    .into_response()
}

/// Releases an event-stream slot when the stream ends (or the client goes away).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn sse_event(e: &Event) -> sse::Event {
    sse::Event::default()
        .id(e.id.to_string())
        .event(e.kind)
        .data(e.data.as_str())
}

async fn events(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if st.event_clients.fetch_add(1, Ordering::Relaxed) >= st.max_event_clients {
        st.event_clients.fetch_sub(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event-stream clients\n",
        )
            .into_response();
    }
    let slot = Slot(st.event_clients.clone());
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (backlog, rx) = st.hub.subscribe(last_id);
    let sent = last_id.unwrap_or(0);
    Sse::new(event_stream(backlog, rx, sent, slot))
        .keep_alive(sse::KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The backlog, then live events; ends when the subscriber lags (it is dropped, not buffered for).
fn event_stream(
    backlog: Vec<Arc<Event>>,
    rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    sent: u64,
    slot: Slot,
) -> impl Stream<Item = Result<sse::Event, Infallible>> {
    let backlog = backlog.into_iter();
    stream::unfold(
        (backlog, rx, sent, slot),
        |(mut backlog, mut rx, sent, slot)| async move {
            if let Some(e) = backlog.next() {
                let id = e.id;
                return Some((Ok(sse_event(&e)), (backlog, rx, id, slot)));
            }
            loop {
                match rx.recv().await {
                    Ok(e) if e.id <= sent => continue,
                    Ok(e) => {
                        let id = e.id;
                        return Some((Ok(sse_event(&e)), (backlog, rx, id, slot)));
                    }
                    // Too slow: dropped. It can resume with Last-Event-ID.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event-stream client that cannot keep up is dropped (its stream ends), not buffered for;
    /// the slot it held is given back.
    #[tokio::test]
    async fn a_lagging_event_stream_ends_and_frees_its_slot() {
        use crate::domain::fixtures;
        use crate::domain::snapshot::{build_snapshot, Convention};
        use futures_util::StreamExt;
        let hub = Hub::new();
        let clients = Arc::new(AtomicUsize::new(1));
        let (backlog, rx) = hub.subscribe(None);
        let stream = event_stream(backlog, rx, 0, Slot(clients.clone()));
        let update = crate::pg::stream::Update {
            snapshot: Arc::new(build_snapshot(
                fixtures::collision(),
                &Convention::default(),
            )),
            latencies: Vec::new(),
            at: fixtures::fixture_now(),
            ended: Vec::new(),
            ongoing: Vec::new(),
            flight_log_error: None,
            ended_public_writes: Vec::new(),
        };
        for _ in 0..(super::super::hub::SUBSCRIBER_QUEUE * 2) {
            hub.publish(&update);
        }
        let got: Vec<_> = stream.collect().await;
        assert!(
            got.is_empty(),
            "a lagging reader gets nothing more: {}",
            got.len()
        );
        assert_eq!(clients.load(Ordering::Relaxed), 0, "its slot is free again");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = Utc::now();
        assert_eq!(
            parse_since("90s", now).unwrap(),
            now - chrono::Duration::seconds(90)
        );
        assert!(parse_since("2026-01-01T00:00:00Z", now).is_ok());
        assert!(parse_since("yesterday", now)
            .unwrap_err()
            .contains("\"yesterday\""));
        assert_eq!(
            parse_since("100000000000d", now).unwrap(),
            DateTime::<Utc>::MIN_UTC
        );
    }
}
