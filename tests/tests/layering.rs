//! The crate boundaries ARCHITECTURE.md promises: the content model and the diff code
//! have no I/O crates underneath them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn protocol_and_diff_depend_on_no_runtime_network_or_database_crate() -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for krate in ["shoal-protocol", "shoal-diff"] {
        let out = shoal_tests::run(
            Command::new(&cargo).current_dir(workspace).args([
                "tree",
                "--offline",
                "-p",
                krate,
                "-e",
                "normal",
                "--prefix",
                "none",
            ]),
            Duration::from_secs(120),
        )?;
        let tree = String::from_utf8(out.stdout)?;
        assert!(
            tree.contains(krate),
            "cargo tree printed nothing useful: {tree}"
        );
        for forbidden in [
            "tokio ",
            "mio ",
            "rocksdb ",
            "librocksdb-sys ",
            "reqwest ",
            "hyper ",
            "axum ",
        ] {
            assert!(
                !tree.lines().any(|l| l.starts_with(forbidden)),
                "{krate} depends on {forbidden}:\n{tree}"
            );
        }
    }
    Ok(())
}
