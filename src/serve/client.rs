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
