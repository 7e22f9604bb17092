//! Opening monitor connections: libpq semantics on top of tokio-postgres.
//!
//! - Every attempt, TCP connect *and* startup/authentication, is bounded by the connect timeout, so a
//!   host that accepts TCP and never answers costs at most that long.
//! - Hosts are tried in order (libpq's host lists); the password comes from the target, then from the
//!   password file for that very host.
//! - `sslmode` keeps libpq's meaning: `prefer`/`require` encrypt without verifying (a stock Debian
//!   server with a self-signed certificate works), `verify-ca` checks the chain against `sslrootcert`,
//!   `verify-full` also the host name; `prefer` falls back to plaintext when TLS fails and `allow` tries
//!   plaintext first. Unix sockets never use TLS, as in libpq.
//! - Monitor sessions identify as `application_name=pgswarm` and carry their own `statement_timeout`
//!   and `lock_timeout` in the startup packet (no extra round trip), so pgswarm never queues behind DDL.
//! - Every session is **pinned** before it sends anything else (`pin_session`): `search_path` is set
//!   to `pg_catalog, pg_temp` and `jit` off, after startup, whatever the URL's `options`, the role or
//!   the database say, and both are read back and verified in the same round trip. A database owner
//!   can put look-alike functions, operators, views and types in any schema they like; with the pin
//!   none of them is ever chosen (the temporary schema is never searched for functions or
//!   operators, and only this session could create relations in it). A session whose pin cannot be
//!   verified is closed and reported as a connection error: nothing is read through it. See
//!   docs/architecture.md ("The catalog is input").
//! - The backend pid (and start) of every session this process opens is remembered (`is_own_session`):
//!   pgswarm knows its own sessions by pid, never by the name a session gives itself.
//!
//! Error messages are built from our own fields and the server's error fields; they never contain a
//! password.

use crate::pg::conninfo::{lookup_passfile, Environment, Host, SslMode, Target};
use chrono::{DateTime, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The `application_name` of every pgswarm connection; such sessions are left out of results.
pub const APPLICATION_NAME: &str = "pgswarm";

/// How monitor (and sweep) sessions are opened.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// `pgswarm` for every monitor and sweep session; the demo's simulated test sessions set theirs.
    pub application_name: String,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    /// `default_transaction_read_only=on`: discovery can never write, even by mistake.
    pub read_only: bool,
    /// `idle_in_transaction_session_timeout`; `None`: twice `statement_timeout`.
    pub idle_in_transaction: Option<Duration>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            application_name: APPLICATION_NAME.to_string(),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(1),
            read_only: true,
            idle_in_transaction: None,
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub message: String,
    pub sqlstate: Option<String>,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Describes a tokio-postgres error fully: since 0.7.15 its `Display` says only "db error".
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; detail: {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut parts = vec![e.to_string()];
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
}

fn options_string(target: &Target, s: &SessionSettings) -> String {
    let mut o = format!(
        "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
        s.statement_timeout.as_millis(),
        s.lock_timeout.as_millis(),
        // An abandoned pgswarm transaction must never become the idle-in-transaction blocker.
        s.idle_in_transaction
            .unwrap_or(s.statement_timeout * 2)
            .as_millis()
    );
    if s.read_only {
        o.push_str(" -c default_transaction_read_only=on");
    }
    if let Some(user) = &target.options {
        o.push(' ');
        o.push_str(user);
    }
    o
}

/// Opens one session to `target`, trying its hosts in order.
pub async fn connect(
    target: &Target,
    settings: &SessionSettings,
    env: &(dyn Environment + Sync),
) -> Result<Client, ConnectError> {
    let timeout = target.connect_timeout.unwrap_or(settings.connect_timeout);
    let mut errors = Vec::new();
    for (host, port) in &target.hosts {
        let mut config = tokio_postgres::Config::new();
        match host {
            Host::Tcp(h) => config.host(h),
            Host::Unix(p) => config.host_path(p),
        };
        config
            .port(*port)
            .user(&target.user)
            .dbname(&target.dbname)
            .application_name(&settings.application_name)
            .options(options_string(target, settings))
            .connect_timeout(timeout);
        let mut passfile_note = None;
        match &target.password {
            Some(p) => {
                config.password(p.expose());
            }
            None => match lookup_passfile(
                &target.passfile,
                host,
                *port,
                &target.dbname,
                &target.user,
                env.default_socket_dir().as_deref(),
            ) {
                Ok(Some(p)) => {
                    config.password(p.expose());
                }
                Ok(None) => {}
                Err(warning) => passfile_note = Some(warning),
            },
        }
        let attempt = tokio::time::timeout(timeout, async {
            let client = connect_host(config, host, target).await?;
            // Only monitor sessions are pgswarm's own: the demo's simulated test sessions go
            // through here too, and must be seen (and signalled) like any test run's.
            pin_session(&client, settings.application_name == APPLICATION_NAME).await?;
            Ok::<_, ConnectError>(client)
        });
        match attempt.await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(mut e)) => {
                if let Some(note) = passfile_note {
                    e.message.push_str(&format!(" (note: {note})"));
                }
                errors.push((format!("{host}:{port}"), e));
            }
            Err(_) => errors.push((
                format!("{host}:{port}"),
                ConnectError {
                    message: format!(
                        "timed out after {} s (connect_timeout): the server did not complete the \
                         connection",
                        timeout.as_secs_f64()
                    ),
                    sqlstate: None,
                },
            )),
        }
    }
    let sqlstate = errors.last().and_then(|(_, e)| e.sqlstate.clone());
    let message = errors
        .into_iter()
        .map(|(h, e)| format!("{h}: {}", e.message))
        .collect::<Vec<_>>()
        .join("; ");
    Err(ConnectError { message, sqlstate })
}

/// The `search_path` every pgswarm session runs with.
pub const PINNED_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// Pins the session and reads back what it needs to verify the pin and to know itself.
///
/// One simple-protocol round trip: the statements are parsed only when each one runs, so the
/// `SELECT` is resolved under the pin the two `SET`s just made, and it is written fully qualified
/// (functions, casts and the operator) in case the pin did not take. A `SET` after startup wins over
/// anything the connection's `options`, `ALTER ROLE … SET` or `ALTER DATABASE … SET` chose; the
/// values are read back anyway, because the proof is cheaper than the argument.
///
/// `jit = off`: pgswarm's statements are catalog-sized, so JIT compilation never pays, and under
/// `plan_cache_mode = force_generic_plan` a generic plan's estimate on a database with catalog
/// churn can cross `jit_above_cost` and cost seconds per execution of a millisecond query.
///
/// The other settings a database owner (`ALTER DATABASE … SET`) could use to steer a session are
/// pinned too: `role` (the owner could make pgswarm's superuser session act as the owner: a
/// half-blind activity scan, a DROP run as someone else), the default transaction isolation and
/// deferrability (a REPEATABLE READ drop transaction would judge dependents on a snapshot older
/// than its locks; a DEFERRABLE one waits for a safe snapshot), `TimeZone` and `DateStyle` (the
/// server's identity is its start time printed as text: two databases of one server must print it
/// alike, or one server reads as two and its sessions are counted and signalled twice),
/// `transform_null_equals` and `standard_conforming_strings` (what `= NULL` and `'\_'` mean).
const PIN_SQL: &str = "SET search_path TO pg_catalog, pg_temp; SET jit TO off; SET ROLE NONE; \
     SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, MDY'; SET IntervalStyle TO postgres; \
     SET default_transaction_isolation TO 'read committed'; \
     SET default_transaction_deferrable TO off; SET transform_null_equals TO off; \
     SET standard_conforming_strings TO on; \
     SELECT pg_catalog.current_setting('search_path'), \
            pg_catalog.array_to_string(pg_catalog.current_schemas(true), ','), \
            pg_catalog.current_setting('jit'), \
            pg_catalog.current_setting('default_transaction_isolation'), \
            pg_catalog.\"current_user\"()::pg_catalog.text, pg_catalog.\"session_user\"()::pg_catalog.text, \
            pg_catalog.pg_backend_pid()::pg_catalog.text, \
            pg_catalog.textcat(pg_catalog.textcat(pg_catalog.pg_postmaster_start_time()::pg_catalog.text, ' port '), \
                               pg_catalog.current_setting('port')), \
            (SELECT pg_catalog.float8mul(pg_catalog.date_part('epoch', a.backend_start), 1000000) \
                    ::pg_catalog.int8::pg_catalog.text \
               FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a)";

/// Why a pin could not be verified, from what the server read back (`None`: verified).
#[derive(Clone, Copy)]
struct PinReadBack<'a> {
    search_path: &'a str,
    schemas: &'a str,
    jit: &'a str,
    isolation: &'a str,
    current_user: &'a str,
    session_user: &'a str,
}

fn check_pin(r: &PinReadBack<'_>) -> Option<String> {
    let (search_path, schemas) = (r.search_path, r.schemas);
    if search_path != PINNED_SEARCH_PATH {
        return Some(format!(
            "search_path reads back as {search_path:?} after SET (expected {PINNED_SEARCH_PATH:?})"
        ));
    }
    // `current_schemas(true)` lists the implicit schemas too; only pg_catalog and this session's
    // own temporary schema may be searched.
    if schemas
        .split(',')
        .any(|s| s != "pg_catalog" && !s.starts_with("pg_temp_"))
    {
        return Some(format!("the effective search path is {schemas:?}"));
    }
    if r.jit != "off" {
        return Some(format!(
            "jit reads back as {:?} after SET jit TO off",
            r.jit
        ));
    }
    if r.isolation != "read committed" {
        return Some(format!(
            "default_transaction_isolation reads back as {:?}",
            r.isolation
        ));
    }
    (r.current_user != r.session_user).then(|| {
        format!(
            "the session acts as role {:?}, not as its login role {:?}",
            r.current_user, r.session_user
        )
    })
}

async fn pin_session(client: &Client, own: bool) -> Result<(), ConnectError> {
    let messages = client
        .simple_query(PIN_SQL)
        .await
        .map_err(|e| ConnectError {
            message: format!(
                "could not pin the session's search_path: {}",
                describe_error(&e)
            ),
            sqlstate: e.code().map(|c| c.code().to_string()),
        })?;
    let row = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    let col = |i: usize| row.and_then(|r| r.get(i)).unwrap_or_default();
    let problem = match row {
        None => Some("the server returned no row".to_string()),
        Some(_) => check_pin(&PinReadBack {
            search_path: col(0),
            schemas: col(1),
            jit: col(2),
            isolation: col(3),
            current_user: col(4),
            session_user: col(5),
        }),
    };
    if let Some(problem) = problem {
        return Err(ConnectError {
            message: format!(
                "refusing this session: its catalog resolution could not be pinned ({problem}); \
                 pgswarm reads nothing through a session whose search_path it does not control"
            ),
            sqlstate: None,
        });
    }
    if let (true, Ok(pid), key, Ok(start)) =
        (own, col(6).parse::<i32>(), col(7), col(8).parse::<i64>())
    {
        own_sessions().insert((key.to_string(), pid, start));
    }
    Ok(())
}

/// `(server key, pid, backend_start in µs since the epoch)` of every session this process opened.
type OwnSession = (String, i32, i64);

fn own_sessions() -> std::sync::MutexGuard<'static, BTreeSet<OwnSession>> {
    static OWN: Mutex<BTreeSet<OwnSession>> = Mutex::new(BTreeSet::new());
    // A panic elsewhere while holding the lock leaves a set that is still a set.
    OWN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the backend `pid` started at `backend_start` on the server `server_key` (the probe's
/// key: postmaster start and port) is a session this process opened. A pid reused by another
/// backend has another start, so it is never mistaken for ours.
pub fn is_own_session(server_key: &str, pid: i32, backend_start: Option<DateTime<Utc>>) -> bool {
    let Some(start) = backend_start else {
        return false;
    };
    own_sessions().contains(&(server_key.to_string(), pid, start.timestamp_micros()))
}

fn to_connect_error(e: tokio_postgres::Error) -> ConnectError {
    ConnectError {
        sqlstate: e.code().map(|c| c.code().to_string()),
        message: describe_error(&e),
    }
}

async fn connect_plain(mut config: tokio_postgres::Config) -> Result<Client, ConnectError> {
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, conn) = config.connect(NoTls).await.map_err(to_connect_error)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn connect_tls(
    mut config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
) -> Result<Client, ConnectError> {
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = config.connect(tls).await.map_err(to_connect_error)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn connect_host(
    config: tokio_postgres::Config,
    host: &Host,
    target: &Target,
) -> Result<Client, ConnectError> {
    if matches!(host, Host::Unix(_)) {
        // libpq never negotiates TLS over a Unix socket, whatever sslmode says.
        return connect_plain(config).await;
    }
    match target.sslmode {
        SslMode::Disable => connect_plain(config).await,
        SslMode::Allow => match connect_plain(config.clone()).await {
            Ok(c) => Ok(c),
            Err(_) => connect_tls(config, tls_config(target)?).await,
        },
        SslMode::Prefer => match connect_tls(config.clone(), tls_config(target)?).await {
            Ok(c) => Ok(c),
            // Server without TLS, or a failed handshake: libpq retries in plaintext.
            Err(tls_err) => connect_plain(config)
                .await
                .map_err(|plain_err| ConnectError {
                    message: format!("{} (with TLS: {})", plain_err.message, tls_err.message),
                    sqlstate: plain_err.sqlstate,
                }),
        },
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            connect_tls(config, tls_config(target)?).await
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(target: &Target) -> Result<MakeRustlsConnect, ConnectError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError {
            message: format!("TLS setup failed: {e}"),
            sqlstate: None,
        })?;
    let verifier: Arc<dyn ServerCertVerifier> = match target.sslmode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer | SslMode::Require => {
            Arc::new(EncryptOnly(provider()))
        }
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = load_roots(&target.sslrootcert)?;
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| ConnectError {
                message: format!("TLS setup failed: {e}"),
                sqlstate: None,
            })?;
            Arc::new(VerifyChain {
                inner,
                check_name: target.sslmode == SslMode::VerifyFull,
            })
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn load_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, ConnectError> {
    let err = |m: String| ConnectError {
        message: m,
        sqlstate: None,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            err(format!(
                "root certificate file {} cannot be read ({e}): give sslrootcert=FILE or \
                 PGSSLROOTCERT, or use sslmode=require to encrypt without verifying",
                path.display()
            ))
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("root certificate file {}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(err(format!(
            "root certificate file {} holds no usable certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// `prefer`/`require`: the channel is encrypted and the handshake signatures are checked, but the
/// certificate is not (libpq's meaning of these modes).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (chain only) and `verify-full` (chain and host name).
#[derive(Debug)]
struct VerifyChain {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for VerifyChain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::{check_pin, PinReadBack};

    #[test]
    fn only_the_exact_pin_passes() {
        let ok = PinReadBack {
            search_path: "pg_catalog, pg_temp",
            schemas: "pg_catalog",
            jit: "off",
            isolation: "read committed",
            current_user: "monitor",
            session_user: "monitor",
        };
        assert_eq!(check_pin(&ok), None);
        let temp = PinReadBack {
            schemas: "pg_catalog,pg_temp_3",
            ..ok
        };
        assert_eq!(check_pin(&temp), None);
        for bad in [
            PinReadBack {
                search_path: "evil, pg_catalog",
                ..ok
            },
            PinReadBack {
                schemas: "pg_catalog,evil",
                ..ok
            },
            PinReadBack { jit: "on", ..ok },
            PinReadBack {
                isolation: "repeatable read",
                ..ok
            },
            PinReadBack {
                current_user: "mallory",
                ..ok
            },
        ] {
            assert!(check_pin(&bad).is_some());
        }
    }
}
