//! TLS on the listener (`serve --tls-cert FILE --tls-key FILE`), with rustls: the server
//! configuration from PEM files. Handshakes run in each connection's own task (`conn`), bounded in
//! time and counted against the connection caps like any connection.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The certificate chain and key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(pub String);

/// Reads a PEM certificate chain and private key into a server configuration (HTTP/1.1 only).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    for (flag, path) in [("--tls-cert", cert), ("--tls-key", key)] {
        check_pem_file(flag, path).map_err(TlsSetupError)?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsSetupError(format!("--tls-cert {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError(format!("--tls-cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TlsSetupError(format!(
            "--tls-cert {}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        TlsSetupError(format!(
            "--tls-key {}: {e} (a PEM private key: PKCS#8, PKCS#1 or SEC1)",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            TlsSetupError(format!(
                "--tls-cert {} and --tls-key {} do not make a usable pair: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The most a PEM file given to pgswarm may hold (a chain of a few certificates is a few KiB).
pub const PEM_MAX_BYTES: u64 = 1024 * 1024;

/// A PEM file must be a regular file of at most [`PEM_MAX_BYTES`]: a device, a FIFO or a huge
/// file would hang the reader or fill the memory before any parsing.
pub fn check_pem_file(flag: &str, path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "{flag} {} is not a regular file (a PEM file is expected)",
            path.display()
        ));
    }
    if meta.len() > PEM_MAX_BYTES {
        return Err(format!(
            "{flag} {} is {} bytes: a PEM certificate or key file is a few KiB (at most {PEM_MAX_BYTES} bytes)",
            path.display(),
            meta.len()
        ));
    }
    Ok(())
}
