//! `pgswarm serve`: one watcher for the whole swarm. It polls every configured database through the
//! same snapshot stream as the dashboard (incremental refresh, fast polls while anything waits),
//! keeps the flight log, and answers every reader from memory: dashboards and agents over the JSON
//! API and the event stream, Prometheus over `/metrics`. N readers cost the database one probe.
//!
//! Layering: like `tui`, this depends on `domain` and on `pg::stream`; `cmd::serve` only parses
//! flags and starts it. `hub` holds what was published; `routes` is the HTTP surface.
//!
//! Safe by default: it listens on loopback unless told otherwise, and `cmd::serve` refuses any
//! other address without a bearer token. It is read-only unless `--allow-actions` (which needs a
//! token even on loopback): then `actions` plans and carries out exactly what the CLI would.

pub mod actions;
pub mod client;
pub mod conn;
pub mod hub;
pub mod routes;
pub mod tls;

use crate::pg::config::Settings;
use crate::pg::conninfo::Environment;
use crate::pg::flightlog::FlightLog;
use crate::pg::stream::SnapshotStream;
use hub::Hub;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The service log on stderr: one line per event, JSON lines with `json` (for a log collector).
pub fn init_service_log(json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Raises the soft limit of open files towards `want` (up to the hard limit): the connection cap,
/// not the common soft default of 1,024, should be what bounds the clients.
fn raise_open_files_limit(want: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub interval: Duration,
    pub limits: routes::Limits,
    /// TLS on the listener (`--tls-cert`, `--tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `--allow-actions`: cancel, terminate and sweep over the API (needs a token).
    pub allow_actions: bool,
}

/// Why `serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Binds `opts.listen` (the bound address is sent on `bound`, for a port 0), polls, serves until
/// `shutdown` resolves, then stops accepting, lets requests in flight finish and stops polling.
pub async fn run(
    settings: &Settings,
    opts: &ServeOptions,
    env: Arc<dyn Environment + Send + Sync>,
    flight_log: Option<FlightLog>,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    raise_open_files_limit(opts.limits.max_connections as u64 + 256);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    // Said before anything else can log: a supervisor (or a test) reads the address first.
    bound(addr);
    let hub = Hub::new();
    let mut stream = SnapshotStream::spawn(
        settings,
        opts.interval,
        env.clone(),
        flight_log,
        crate::sqlite::report_source(&settings.sqlite),
    );
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            while let Some(update) = stream.updates.recv().await {
                if let Some(e) = &update.flight_log_error {
                    tracing::warn!(error = %e, "flight log write failed");
                }
                hub.publish(&update);
            }
        })
    };
    tracing::info!(%addr, "serving");
    let actions = opts
        .allow_actions
        .then(|| actions::Actions::new(settings.clone(), env.clone()));
    let app = routes::router(hub, opts.token.clone(), &opts.limits)
        .merge(routes::action_routes(actions, opts.token.clone()));
    conn::serve(listener, opts.tls.clone(), app, &opts.limits, shutdown).await;
    publisher.abort();
    Ok(())
}
