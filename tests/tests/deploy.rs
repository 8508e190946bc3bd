//! `deploy/`, followed as far as this machine allows: the systemd unit passes
//! `systemd-analyze verify` and its `ExecStart` starts a node from `deploy/shoal.toml`
//! that stops cleanly on the unit's `KillSignal`; the DaemonSet's init container writes
//! containerd's hosts.toml files and its main container serves the readiness probe's
//! path, each run with the command and config the manifest holds. (No cluster runs
//! here; the manifest's shape is checked, not scheduled.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use shoal_tests::free_port;
use shoal_tests::image::http_get;
use shoal_tests::node::shoal_binary;
use shoal_tests::process::{run, wait_until};

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

/// `deploy/shoal.toml` (or the DaemonSet's copy) with its host paths and address moved
/// to the test's: data under `dir`, the mirror on `listen`, `registry.internal:5000`
/// reached at `origin`. Docker Hub stays the default upstream; nothing here pulls
/// from it.
fn localise(config: &str, dir: &Path, listen: &str, origin: &str) -> String {
    config
        .replace("/var/lib/shoal", &dir.join("data").display().to_string())
        .replace("127.0.0.1:5050", listen)
        .replace("https://registry.internal:5000", origin)
}

/// A running process, killed if the test ends early.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `argv` (output to `log`) and waits until `GET http://listen/v2/` answers 200.
fn start_and_probe(argv: &[String], log: &Path, listen: &str) -> anyhow::Result<Child> {
    let log_file = std::fs::File::create(log)?;
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .spawn()
        .with_context(|| format!("cannot start {argv:?}"))?;
    let child = Child(child);
    wait_until("the node to answer /v2/", Duration::from_secs(60), || {
        Ok(http_get(&format!("http://{listen}/v2/"), &[]).is_ok_and(|r| r.status == 200))
    })
    .with_context(|| std::fs::read_to_string(log).unwrap_or_default())?;
    Ok(child)
}

#[test]
fn the_systemd_unit_verifies_and_its_command_runs_a_node_that_stops_on_sigterm()
-> anyhow::Result<()> {
    shoal_tests::require_root()?;
    let dir = tempfile::Builder::new().prefix("shoal-test-").tempdir()?;
    let registry = shoal_tests::Registry::start(dir.path())?;
    let listen = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("shoal.toml");
    std::fs::write(
        &config,
        localise(
            &std::fs::read_to_string(deploy("shoal.toml"))?,
            dir.path(),
            &listen,
            &registry.url(),
        ),
    )?;
    let unit_text = std::fs::read_to_string(deploy("shoal.service"))?
        .replace(
            "/usr/local/bin/shoal",
            &shoal_binary()?.display().to_string(),
        )
        .replace("/etc/shoal/shoal.toml", &config.display().to_string());
    let unit = dir.path().join("shoal.service");
    std::fs::write(&unit, &unit_text)?;
    let verify = run(
        Command::new("systemd-analyze").arg("verify").arg(&unit),
        Duration::from_secs(60),
    )?;
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !complaints.contains("shoal.service"),
        "systemd-analyze verify: {complaints}"
    );

    // The node's mounts must be the host's: nothing that gives the service its own
    // mount namespace.
    for option in [
        "PrivateTmp",
        "ProtectHome",
        "ProtectSystem",
        "PrivateMounts",
        "MountFlags",
    ] {
        assert!(
            !unit_text
                .lines()
                .any(|l| l.starts_with(&format!("{option}="))),
            "the unit sets {option}, which hides shoal mount's overlays from the host"
        );
    }

    let exec = unit_text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .context("the unit has an ExecStart")?;
    let argv: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    let mut node = start_and_probe(&argv, &dir.path().join("node.log"), &listen)?;
    assert!(
        dir.path().join("data/store").exists(),
        "data_dir from the config"
    );

    // KillSignal=SIGTERM, TimeoutStopSec=30: the node must be gone, cleanly, by then.
    assert!(unit_text.contains("KillSignal=SIGTERM"));
    run(
        Command::new("kill").args(["-TERM", &node.0.id().to_string()]),
        Duration::from_secs(10),
    )?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = node.0.try_wait()? {
            break status;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the node did not stop within TimeoutStopSec"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the node exited with {status}");
    Ok(())
}

/// The DaemonSet's documents, as JSON (PyYAML does the parsing).
fn daemonset_documents() -> anyhow::Result<Vec<serde_json::Value>> {
    let out = run(
        Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            ])
            .arg(deploy("daemonset.yaml")),
        Duration::from_secs(30),
    )?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn the_daemonset_configures_containerd_and_runs_a_node_its_probe_finds() -> anyhow::Result<()> {
    shoal_tests::require_root()?;
    let docs = daemonset_documents()?;
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Namespace", "ConfigMap", "DaemonSet"]);
    let (config_map, daemonset) = (&docs[1], &docs[2]);
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostNetwork"], true,
        "containerd reaches the node on loopback"
    );
    let init = &pod["initContainers"][0];
    let main = &pod["containers"][0];

    // The volumes the containers mount are the host paths the commands use.
    let host_path = |volume: &str| -> Option<String> {
        pod["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == volume)?["hostPath"]["path"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(host_path("data").as_deref(), Some("/var/lib/shoal"));
    assert_eq!(
        host_path("containerd-certs").as_deref(),
        Some("/etc/containerd/certs.d")
    );

    let dir = tempfile::Builder::new().prefix("shoal-test-").tempdir()?;
    let registry = shoal_tests::Registry::start(dir.path())?;
    let listen = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("shoal.toml");
    let text = config_map["data"]["shoal.toml"]
        .as_str()
        .context("the ConfigMap holds shoal.toml")?;
    std::fs::write(
        &config,
        localise(text, dir.path(), &listen, &registry.url()),
    )?;
    let certs = dir.path().join("certs.d");
    let argv = |container: &serde_json::Value| -> Vec<String> {
        container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .map(|a| match a {
                "/usr/local/bin/shoal" => shoal_binary()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                "/etc/shoal/shoal.toml" => config.display().to_string(),
                "/host/etc/containerd/certs.d" => certs.display().to_string(),
                other => other.to_owned(),
            })
            .collect()
    };

    // The init container: one hosts.toml per registry, naming the node.
    let init_argv = argv(init);
    run(
        Command::new(&init_argv[0]).args(&init_argv[1..]),
        Duration::from_secs(30),
    )?;
    for registry_name in ["docker.io", "registry.internal:5000"] {
        let hosts = std::fs::read_to_string(certs.join(registry_name).join("hosts.toml"))
            .with_context(|| format!("no hosts.toml for {registry_name}"))?;
        assert!(
            hosts.contains(&format!("[host.\"http://{listen}\"]")),
            "{hosts}"
        );
    }

    // The node container: the readiness probe's path and port answer.
    let probe = &main["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/v2/");
    assert_eq!(probe["port"], 5050);
    assert_eq!(main["ports"][0]["containerPort"], 5050);
    let _node = start_and_probe(&argv(main), &dir.path().join("node.log"), &listen)?;
    Ok(())
}
