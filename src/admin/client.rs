//! The CLI's side of the admin API: finds the daemon from the config's `admin.listen` and
//! `admin.token`, sends one request, returns the JSON answer or a clear error.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::config::{Admin, Secret};

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `admin.listen: off`.
    #[error(
        "the admin API is off in this config (admin.listen: off); enable it to use this command"
    )]
    Off,
    /// Nothing answered.
    #[error("cannot reach the pollhook daemon at http://{addr} (is it running with this config?)")]
    Unreachable {
        /// Address tried.
        addr: SocketAddr,
        /// Transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The daemon answered with an error.
    #[error("the daemon answered HTTP {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Its error message.
        message: String,
    },
}

/// A client for one daemon.
pub struct AdminClient {
    addr: SocketAddr,
    token: Option<Secret>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the daemon that `admin` describes (an unspecified listen address such as
    /// 0.0.0.0 is reached on loopback).
    pub fn new(admin: &Admin) -> Result<AdminClient, ClientError> {
        let mut addr = admin.listen.ok_or(ClientError::Off)?;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        crate::http::install_crypto();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| ClientError::Unreachable { addr, source })?;
        Ok(AdminClient {
            addr,
            token: admin.token.clone(),
            http,
        })
    }

    /// Sends `method path` and returns the JSON body.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> Result<Value, ClientError> {
        self.send(method, path, None).await
    }

    /// Sends `method path` with an optional JSON body and returns the JSON answer.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.addr));
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.expose());
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                addr: self.addr,
                source,
            })?;
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = match &body["errors"] {
            Value::Array(list) => list
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; "),
            _ => body["error"].as_str().unwrap_or("no details").to_owned(),
        };
        Err(ClientError::Status {
            status: status.as_u16(),
            message,
        })
    }
}
