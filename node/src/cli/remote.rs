//! Talking to a running node: its URL, an HTTP client, error answers turned into
//! messages, and jobs ([`crate::jobs`]) read line by line.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::jobs::JobLine;

/// `--node`'s default: the mirror's default address.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:5050";

/// Flags every command that talks to a node shares.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Print JSON for scripts (progress, if any, still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// The node's mirror URL.
    #[arg(long, default_value = DEFAULT_NODE)]
    pub node: String,
}

/// The URL of `path` on `node`, with `query` pairs.
pub fn url(node: &str, path: &str, query: &[(&str, &str)]) -> anyhow::Result<url::Url> {
    let mut url = url::Url::parse(&format!("{}{path}", node.trim_end_matches('/')))
        .with_context(|| format!("--node {node:?} is not a URL"))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// A client for short requests (a minute at most).
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// A client for jobs: no overall limit (a job takes as long as it takes), but a job
/// sends a line at least every few seconds, so a silent minute means the node is gone.
fn job_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()?)
}

fn unreachable(node: &str) -> String {
    format!("cannot reach the node at {node} (is `shoal node` running? use --node URL)")
}

/// Fails with the node's own message unless `response` succeeded.
async fn check(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = response.url().clone();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let message = body["errors"][0]["message"].as_str().unwrap_or("");
    bail!("the node answered {status} for {}: {message}", url.path())
}

/// Sends `request` and decodes its JSON answer.
pub async fn json<T: DeserializeOwned>(
    node: &str,
    request: reqwest::RequestBuilder,
) -> anyhow::Result<T> {
    let response = check(request.send().await.with_context(|| unreachable(node))?).await?;
    let url = response.url().clone();
    response
        .json()
        .await
        .with_context(|| format!("{url} did not answer as this shoal expects"))
}

/// Starts the job at `url` (a POST) and reads its lines, calling `on_progress` with
/// each progress line, until its report.
pub async fn job<P: DeserializeOwned, R: DeserializeOwned>(
    node: &str,
    url: url::Url,
    mut on_progress: impl FnMut(&P),
) -> anyhow::Result<R> {
    let response = job_client()?
        .post(url.clone())
        .send()
        .await
        .with_context(|| unreachable(node))?;
    let mut body = check(response).await?.bytes_stream();
    let mut buf = Vec::new();
    while let Some(part) = body.next().await {
        let part = part.with_context(|| format!("the node at {node} stopped answering"))?;
        buf.extend_from_slice(&part);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line: JobLine<P, R> = serde_json::from_slice(&line).with_context(|| {
                format!("{} sent a line this shoal does not understand", url.path())
            })?;
            match line {
                JobLine::Progress(p) => on_progress(&p),
                JobLine::Report(r) => return Ok(*r),
                JobLine::Error(e) => bail!("{e}"),
            }
        }
    }
    bail!("the node at {node} ended its answer before the job finished (see its log)")
}

/// `bytes` as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}
