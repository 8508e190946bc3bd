//! File-aware chunking of layer tars, binary deltas between file versions, and bit-exact
//! re-creation of compressed layer blobs.
//!
//! This crate is pure: it takes bytes and readers and returns values, with no files,
//! sockets or async runtime. It is empty until layer recipes land (see the recipes
//! issue); the workspace keeps its place so that the crate boundary is settled early.

#![forbid(unsafe_code)]
