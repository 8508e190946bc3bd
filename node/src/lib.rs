//! The shoal node: content store, origin client, OCI pull-through mirror and CLI. The
//! `shoal` binary is a thin `main` over [`cli`]; everything lives here so that unit
//! tests and the module map in ARCHITECTURE.md see one crate.

#![forbid(unsafe_code)]

pub mod access;
pub mod blobs;
pub mod cli;
pub mod config;
pub mod flatten;
pub mod fsck;
pub mod gc;
pub mod ingest;
pub mod inspect;
pub mod jobs;
pub mod manifests;
pub mod metrics;
pub mod mirror;
pub mod node;
pub mod origin;
pub mod p2p;
pub mod packs;
pub mod pull;
pub mod seed;
pub mod stats;
pub mod store;
