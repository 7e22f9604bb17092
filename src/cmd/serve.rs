//! `pgswarm serve`: checks the flags (an address off loopback needs a token), starts the service
//! (`crate::serve`) and stops it on SIGTERM or Ctrl-C.

use crate::cmd::cli::ServeArgs;
use crate::cmd::{emit_stderr, CmdError, Exit};
use crate::pg::config::Settings;
use crate::pg::conninfo::ProcessEnv;
use crate::serve::{routes::Limits, ServeOptions};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Runs until SIGTERM or Ctrl-C.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    args: &ServeArgs,
) -> Result<Exit, CmdError> {
    let listen = parse_listen(&args.listen)?;
    let token = match &args.token_file {
        Some(path) => Some(read_token(path)?),
        None if !listen.ip().is_loopback() => {
            return Err(CmdError::Usage(format!(
                "--listen {listen} is reachable from other hosts: give --token-file FILE (a \
                 secret clients send as Authorization: Bearer TOKEN), or listen on 127.0.0.1"
            )))
        }
        None => None,
    };
    if args.allow_actions && token.is_none() {
        return Err(CmdError::Usage(
            "--allow-actions lets clients terminate sessions and drop schemas with this \
             server's database credentials: give --token-file FILE too (also on loopback)"
                .into(),
        ));
    }
    if args.allow_actions && settings.read_only {
        return Err(CmdError::Usage(format!(
            "--allow-actions contradicts {}",
            settings.read_only_reason()
        )));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::serve::tls::server_config(cert, key)
                .map_err(|e| CmdError::Usage(e.to_string()))?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let opts = ServeOptions {
        listen,
        token,
        interval: args.interval.interval,
        limits: Limits::default(),
        tls,
        allow_actions: args.allow_actions,
    };
    let log = crate::cmd::watch::flight_log_or_warn(&args.flight_log);
    runtime.block_on(async {
        let result = crate::serve::run(
            settings,
            &opts,
            Arc::new(ProcessEnv),
            log,
            |addr| emit_stderr(&format!("pgswarm serve: listening on {scheme}://{addr}\n")),
            stop_signal(),
        )
        .await;
        result.map_err(|e| match e {
            crate::serve::ServeError::Bind { .. } => CmdError::Usage(e.to_string()),
            e => CmdError::Io(e.to_string()),
        })
    })?;
    Ok(Exit::Ok)
}

/// `ADDR:PORT`, or a bare port (loopback).
fn parse_listen(s: &str) -> Result<SocketAddr, CmdError> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        CmdError::Usage(format!(
            "--listen {s:?} is not ADDR:PORT (e.g. 127.0.0.1:9187, [::1]:9187, 0.0.0.0:9187)"
        ))
    })
}

/// The token file's first line, trimmed; it must not be empty, and a token readable by others is
/// refused like libpq refuses such a password file.
pub(crate) fn read_token(path: &Path) -> Result<String, CmdError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| CmdError::Usage(format!("--token-file {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(CmdError::Usage(format!(
            "--token-file {} is not a regular file",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(CmdError::Usage(format!(
            "--token-file {} can be read by group or others: chmod 600 it",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| CmdError::Usage(format!("--token-file {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(CmdError::Usage(format!(
            "--token-file {} is empty: put a long random secret on its first line",
            path.display()
        )));
    }
    Ok(token)
}

/// Resolves on the first SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
