//! The baseline: the same hosts on the same links, each pulling straight from the
//! origin as an engine with no mirror does. The client here speaks the registry pull
//! API from inside the host's namespace: the manifest by tag (checked against the
//! digest pushed), then the config and layers the host does not hold yet, four at a
//! time, each checked against its sha256. It stores nothing, which if anything favours
//! the baseline: shoal writes every piece to its store.
//!
//! A host "killed" in the churn scenario has its connections cut, and starts its pull
//! over from nothing once it is "restarted", as an engine that was killed does.

use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest as _, Sha256};

use super::hosts::Lives;
use super::http;
use super::images::{REPO, Version};
use super::net::{Net, connect};
use super::order::Fetched;
use super::progress::Progress;

/// Blobs fetched at once per host, like shoal's own pull.
const PARALLEL: usize = 4;

/// The hosts as plain clients of the origin.
pub struct Clients<'a> {
    net: &'a Net,
    origin: SocketAddrV4,
    /// Which hosts run, and restarts (churn).
    pub lives: Lives,
    /// Each host's open connections, to cut when it is killed.
    open: Vec<Mutex<Vec<TcpStream>>>,
    /// Payload bytes each host received from the origin (all attempts).
    received: Vec<AtomicU64>,
}

impl<'a> Clients<'a> {
    /// Every node host of `net`, pulling from `origin`.
    pub fn new(net: &'a Net, origin: SocketAddrV4) -> Clients<'a> {
        let n = net.nodes.len();
        Clients {
            net,
            origin,
            lives: Lives::new(n),
            open: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
            received: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Bytes host `i` received from the origin, over all its attempts.
    pub fn received(&self, i: usize) -> u64 {
        self.received[i].load(Ordering::Relaxed)
    }

    /// Kills host `i`'s pull: every connection it has open is cut.
    pub fn kill(&self, i: usize) {
        self.lives.down(i);
        for s in self.open[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Host `i` may pull again.
    pub fn restart(&self, i: usize) {
        self.lives.up(i);
    }

    /// Every host pulls `version` now, skipping the blobs of `had`; per host, when it
    /// held every blob.
    pub fn pull_everywhere(
        &self,
        version: &Version,
        had: Option<&Version>,
        progress: &Arc<Progress>,
        start: Instant,
    ) -> anyhow::Result<Vec<Fetched>> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.net.nodes.len())
                .map(|i| scope.spawn(move || self.pull_one(i, version, had, progress, start)))
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(i, h)| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("the client thread of host {i} panicked"))?
                })
                .collect()
        })
    }

    fn pull_one(
        &self,
        i: usize,
        version: &Version,
        had: Option<&Version>,
        progress: &Progress,
        start: Instant,
    ) -> anyhow::Result<Fetched> {
        let mut attempts = 0;
        loop {
            let (generation, down) = self.lives.get(i);
            if down {
                self.lives
                    .wait_restarted(i, generation, Duration::from_secs(180))?;
                continue;
            }
            attempts += 1;
            match self.pull_once(i, version, had, progress) {
                Ok(bytes) => {
                    progress.finish(i);
                    return Ok(Fetched {
                        seconds: start.elapsed().as_secs_f64(),
                        attempts,
                        bytes,
                    });
                }
                Err(e) => {
                    let (now_generation, now_down) = self.lives.get(i);
                    if now_down || now_generation != generation {
                        self.lives
                            .wait_restarted(i, generation, Duration::from_secs(180))?;
                        continue;
                    }
                    return Err(e).with_context(|| format!("host {i} pulling from the origin"));
                }
            }
        }
    }

    /// One attempt: manifest, then the blobs; returns the blob bytes fetched.
    fn pull_once(
        &self,
        i: usize,
        version: &Version,
        had: Option<&Version>,
        progress: &Progress,
    ) -> anyhow::Result<u64> {
        let (manifest, digest, _) = self.get(
            i,
            &format!("/v2/{REPO}/manifests/{}", version.tag),
            &[(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            )],
            None,
        )?;
        if digest != version.manifest {
            bail!(
                "the origin's manifest for {} is {digest}, not {}",
                version.tag,
                version.manifest
            );
        }
        let parsed: serde_json::Value = serde_json::from_slice(&manifest)?;
        let mut wanted: Vec<(String, u64)> = std::iter::once(&parsed["config"])
            .chain(parsed["layers"].as_array().into_iter().flatten())
            .filter_map(|d| Some((d["digest"].as_str()?.to_owned(), d["size"].as_u64()?)))
            .collect();
        if let Some(had) = had {
            wanted.retain(|(d, _)| !had.blobs.iter().any(|h| &h.0 == d));
        }
        let total: u64 = wanted.iter().map(|w| w.1).sum();
        let done = AtomicU64::new(0);
        progress.set(i, 0, total);
        let queue = Mutex::new(wanted);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..PARALLEL)
                .map(|_| {
                    scope.spawn(|| -> anyhow::Result<()> {
                        loop {
                            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                            let Some((digest, size)) = next else {
                                return Ok(());
                            };
                            let count = |n| {
                                let d = done.fetch_add(n, Ordering::Relaxed) + n;
                                progress.set(i, d, total);
                            };
                            let (_, got, len) = self.get(
                                i,
                                &format!("/v2/{REPO}/blobs/{digest}"),
                                &[],
                                Some(&count),
                            )?;
                            if got != digest || len != size {
                                bail!(
                                    "blob {digest} from the origin: {len} bytes hashing to {got}"
                                );
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a blob thread panicked"))??;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(total)
    }

    /// GET `path` from the origin inside host `i`'s namespace. Returns the body if no
    /// `on_bytes` counter is given (a manifest), else nothing: a blob is only hashed and
    /// its bytes counted as they arrive. Also returns the body's digest and length.
    fn get(
        &self,
        i: usize,
        path: &str,
        headers: &[(&str, &str)],
        on_bytes: Option<&dyn Fn(u64)>,
    ) -> anyhow::Result<(Vec<u8>, String, u64)> {
        let stream = connect(
            &self.net.nodes[i].ns,
            SocketAddr::V4(self.origin),
            Duration::from_secs(10),
        )?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        self.open[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stream.try_clone()?);
        if self.lives.get(i).1 {
            bail!("host {i} is down");
        }
        let host = self.origin.to_string();
        let mut resp = http::request(stream, "GET", &host, path, headers)?;
        if resp.status != 200 {
            bail!("GET {path} from the origin: HTTP {}", resp.status);
        }
        let (mut body, mut hasher, mut len) = (Vec::new(), Sha256::new(), 0u64);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = resp.body().read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
            self.received[i].fetch_add(n as u64, Ordering::Relaxed);
            match on_bytes {
                Some(f) => f(n as u64),
                None => body.extend_from_slice(&buf[..n]),
            }
        }
        if let Some(want) = resp
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok())
            && len != want
        {
            bail!("GET {path}: {len} bytes of {want}");
        }
        Ok((body, format!("sha256:{}", hex(&hasher.finalize())), len))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
