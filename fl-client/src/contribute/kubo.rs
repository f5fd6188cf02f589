//! Publishing a CAR to an IPFS node through the Kubo RPC API (`POST /api/v0/dag/import`).

use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::ContributeError;

/// Largest answer read from the node.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A Kubo node's RPC API over plain HTTP (`http://127.0.0.1:5001`, its default; no TLS: the
/// RPC API is an admin interface, kept on loopback or a private network).
#[derive(Debug, Clone)]
pub struct Kubo {
    api: String,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Kubo {
    /// The node whose RPC API is at `api`, calls bounded by 60 s.
    pub fn new(api: &str) -> Self {
        Kubo {
            api: api.trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(60),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn error(&self, reason: impl Into<String>) -> ContributeError {
        ContributeError::Kubo {
            api: self.api.clone(),
            reason: reason.into(),
        }
    }

    /// Imports `car` (`ipfs dag import`, roots pinned) and returns the roots the node pinned.
    /// A node that refuses it, or fails to pin a root, is an error with its message.
    pub async fn dag_import(&self, car: &[u8]) -> Result<Vec<Cid>, ContributeError> {
        let mut boundary = String::from("daofl-car-0");
        let mut n = 0;
        while car
            .windows(boundary.len())
            .any(|w| w == boundary.as_bytes())
        {
            n += 1;
            boundary = format!("daofl-car-{n}");
        }
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"batch.car\"\r\nContent-Type: application/vnd.ipld.car\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(car);
        body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
        let request =
            hyper::Request::post(format!("{}/api/v0/dag/import?pin-roots=true", self.api))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| self.error(e.to_string()))?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| self.error(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| self.error(e.to_string()))?;
        let status = response.status();
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| self.error(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| v.get("Message")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
            return Err(self.error(format!("{status}: {message}")));
        }
        // One JSON object per line: `{"Root":{"Cid":{"/":"..."},"PinErrorMsg":""}}`, and
        // possibly `{"Stats":...}`.
        let mut roots = Vec::new();
        for line in answer.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let value: serde_json::Value = serde_json::from_slice(line)
                .map_err(|e| self.error(format!("malformed answer line: {e}")))?;
            let Some(root) = value.get("Root") else {
                continue;
            };
            let pin_error = root
                .get("PinErrorMsg")
                .and_then(|m| m.as_str())
                .unwrap_or("");
            let cid = root
                .pointer("/Cid/~1")
                .and_then(|c| c.as_str())
                .ok_or_else(|| self.error("an answer's root has no CID"))?;
            if !pin_error.is_empty() {
                return Err(self.error(format!("pinning {cid}: {pin_error}")));
            }
            roots.push(
                cid.parse()
                    .map_err(|e| self.error(format!("root {cid}: {e}")))?,
            );
        }
        Ok(roots)
    }
}
