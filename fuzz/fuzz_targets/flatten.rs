#![no_main]
// The core's files carry what the node's other modules use too (the report's JSON
// form, the link files, the objects' paths); unused here.
#![allow(dead_code)]
//! Layer tars flattened into a fresh tree (`shoal_node::flatten::flatten`): no panic,
//! a tree or an error the layers can cause, nothing written outside the tree nor left
//! beside it, no whiteout in a tree. The input format and the checks are the harness in
//! `node/src/flatten/fuzzing.rs`.
//!
//! The flattening core uses nothing of the node outside its own files (see
//! `node/src/flatten/run.rs`), so they are compiled here as modules of this target
//! rather than through a dependency on `shoal-node`, which would build RocksDB's
//! bindings, libp2p and the HTTP stack with the fuzzing instrumentation for nothing.
//! Needs root, like flattening itself (owners, devices, `security.*` xattrs).

use libfuzzer_sys::fuzz_target;

// The same modules, under the same names, as in `node/src/flatten/mod.rs`.
#[path = "../../node/src/flatten/apply.rs"]
mod apply;
#[path = "../../node/src/flatten/error.rs"]
mod error;
#[path = "../../node/src/flatten/fuzzing.rs"]
mod fuzzing;
#[path = "../../node/src/flatten/links.rs"]
mod links;
#[path = "../../node/src/flatten/meta.rs"]
mod meta;
#[path = "../../node/src/flatten/objects.rs"]
mod objects;
#[path = "../../node/src/flatten/path.rs"]
mod path;
#[path = "../../node/src/flatten/run.rs"]
mod run;
#[path = "../../node/src/flatten/stream.rs"]
mod stream;
#[path = "../../node/src/flatten/tree.rs"]
mod tree;
#[path = "../../node/src/flatten/wire.rs"]
mod wire;

use error::FlattenError;
use objects::Objects;
use run::{FlattenLimits, FlattenReport, flatten};

fuzz_target!(|data: &[u8]| {
    fuzzing::check(data);
});
