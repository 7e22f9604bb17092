//! `serve`'s accept loop: every connection in a task of its own, bounded in number (in all and per
//! client address), in how long its handshake and each request's headers may take, and stopped
//! gracefully.
//!
//! Why not `axum::serve`: it sets no timer on hyper's connections, so hyper's header-read timeout
//! never applied, and a connection that never sends a byte (or sends its headers one line every few
//! seconds, or stays idle after a kept-alive request) was held for ever; a few thousand of them
//! filled the connection cap and locked everyone out (found by the black-box attack, with TLS
//! handshakes capped at 128 the lever was smaller still). Here hyper's HTTP/1 connection runs with
//! a timer: the headers of every request, the first included, must arrive within
//! `Limits::header_timeout` (10 s) of the connection's start or of the previous response's end, so an idle
//! or slow client frees its slot. A response in progress (the event stream) is not affected.

use super::routes::{Limits, Peer};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How long the connections still open at shutdown (event streams) are given to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Counts the connections of each client address; a slot is given back when its guard drops.
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct AddressSlot {
    table: PerAddress,
    ip: IpAddr,
}

impl PerAddress {
    fn take(&self, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` resolves; then stops
/// accepting, gives open connections [`SHUTDOWN_GRACE`] to finish, and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: &Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = PerAddress::default();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(address_slot) = per_address.take(peer.ip(), limits.max_connections_per_address)
        else {
            tracing::info!(%peer, "too many connections from this address: closed");
            continue;
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        let (header_timeout, handshake_timeout) = (limits.header_timeout, limits.handshake_timeout);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slots = (permit, address_slot);
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(ConnectInfo(Peer(peer)));
                    router.clone().oneshot(req)
                });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let result = match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => {
                    let conn = http.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_slots_are_counted_and_given_back() {
        let t = PerAddress::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let a = t.take(ip, 2).unwrap();
        let _b = t.take(ip, 2).unwrap();
        assert!(
            t.take(ip, 2).is_none(),
            "a third from one address is refused"
        );
        assert!(t.take(other, 2).is_some(), "another address is not");
        drop(a);
        assert!(t.take(ip, 2).is_some(), "a freed slot is taken again");
    }
}
