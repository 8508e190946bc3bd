//! `shoal`: peer-to-peer distribution of container images. This binary runs a node
//! (`shoal node`) and talks to one (`shoal stats`), and prints engine configuration
//! (`shoal configure`). See ARCHITECTURE.md for the map of the code.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = shoal_node::cli::Cli::parse();
    match shoal_node::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
