//! The end-to-end harness: real shoal nodes, the Debian `docker-registry` as origin,
//! real engines as clients, each a process this harness starts, bounds in time and
//! cleans up when dropped (also when a test fails).
//!
//! Tests live in `tests/tests/`; `shoal-bench` uses the same harness for its figures.

#![forbid(unsafe_code)]

pub mod containerd;
pub mod dockerd;
pub mod engines;
pub mod fixture;
pub mod flat;
pub mod fleet;
pub mod image;
pub mod node;
pub mod process;
pub mod proxy;
pub mod readme;
pub mod registry;
pub mod tls;
pub mod token_server;

pub use node::Node;
pub use process::{free_port, require_root, run, which};
pub use registry::Registry;
