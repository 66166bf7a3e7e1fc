//! A thin client for the server's public REST API, as the load tool uses it.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::target::Target;

/// Longest a single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts for a set-up request answered 429 or 503.
const SETUP_ATTEMPTS: u32 = 6;

/// A response: status and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// HTTP client bound to one server.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(target: &Target) -> anyhow::Result<Api> {
        Api::with_idle(target, 1024)
    }

    /// A client that keeps at most `idle` idle connections to the server (it opens more when
    /// more requests are in flight at once: bound those to bound its connections).
    pub fn with_idle(target: &Target, idle: usize) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .pool_max_idle_per_host(idle)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            http,
            base: target.base.clone(),
        })
    }

    /// One request; transport errors are errors, any HTTP status is a reply.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    /// A set-up request that must answer `expected`; retried (bounded) on 429 and 503.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        expected: &[u16],
    ) -> anyhow::Result<Reply> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reply = self
                .call(method.clone(), path, token, body)
                .await
                .with_context(|| format!("{method} {path}"))?;
            if expected.contains(&reply.status) {
                return Ok(reply);
            }
            if matches!(reply.status, 429 | 503) && attempt < SETUP_ATTEMPTS {
                let wait = reply
                    .body
                    .pointer("/error/details/retry_after")
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
                    .min(5);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            if reply.status == 429 {
                bail!(
                    "{method} {path}: 429 rate limited — start the server with raised limits \
                     (see BENCHMARKS.md): {}",
                    reply.body
                );
            }
            bail!("{method} {path}: HTTP {} {}", reply.status, reply.body);
        }
    }

    /// `POST /api/batch` with up to the server's maximum of operations; one reply each.
    pub async fn batch(&self, token: &str, operations: Vec<Value>) -> anyhow::Result<Vec<Reply>> {
        let n = operations.len();
        let reply = self
            .expect(
                Method::POST,
                "/api/batch",
                Some(token),
                Some(&json!({ "operations": operations })),
                &[200],
            )
            .await?;
        let results = reply.body["results"]
            .as_array()
            .context("batch reply without results")?;
        if results.len() != n {
            bail!(
                "batch answered {} results for {n} operations",
                results.len()
            );
        }
        Ok(results
            .iter()
            .map(|r| Reply {
                status: r["status"].as_u64().unwrap_or(0) as u16,
                body: r["body"].clone(),
            })
            .collect())
    }
}
