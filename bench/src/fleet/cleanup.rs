//! Everything a fleet run makes outside its own memory, so that it all goes however the
//! run ends: on success and on error (the owners' `Drop`), on a panic (unwinding runs
//! the same `Drop`s), on SIGINT, SIGTERM or SIGHUP (a handler thread undoes it all and
//! exits), and after a SIGKILL (the next run sweeps what a dead run left).
//!
//! Every name a run gives a namespace or a directory starts with [`PREFIX`] and its
//! process id, so a sweep removes only what runs that are no longer alive left behind,
//! never a run going on beside it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// How every namespace and work directory of a fleet run starts; the run's process id
/// follows, then `-`.
pub const PREFIX: &str = "shoal-bf-";

/// What this run made and has not removed yet.
struct Made {
    pids: BTreeSet<u32>,
    namespaces: Vec<String>,
    dirs: Vec<PathBuf>,
}

// One lock around three short lists; held only to add, remove or take, never across a
// command, so the signal thread cannot wait long on it.
static MADE: Mutex<Made> = Mutex::new(Made {
    pids: BTreeSet::new(),
    namespaces: Vec::new(),
    dirs: Vec::new(),
});

fn made() -> std::sync::MutexGuard<'static, Made> {
    MADE.lock().unwrap_or_else(|e| e.into_inner())
}

/// `PREFIX` and this process's id: the start of every name this run gives.
pub fn run_prefix() -> String {
    format!("{PREFIX}{}-", std::process::id())
}

/// Records a process this run started (killed by [`undo_all`] if still tracked).
pub fn track_pid(pid: u32) {
    made().pids.insert(pid);
}

/// Forgets a process once it has been killed and reaped.
pub fn untrack_pid(pid: u32) {
    made().pids.remove(&pid);
}

/// Records a namespace before it is created.
pub fn track_netns(name: &str) {
    made().namespaces.push(name.to_owned());
}

/// Forgets a namespace once deleted.
pub fn untrack_netns(name: &str) {
    made().namespaces.retain(|n| n != name);
}

/// Records a directory to remove.
pub fn track_dir(dir: &Path) {
    made().dirs.push(dir.to_owned());
}

/// Kills every tracked process, deletes every tracked namespace and directory. Safe to
/// call more than once and from any thread.
pub fn undo_all() {
    let (pids, namespaces, dirs) = {
        let mut m = made();
        (
            std::mem::take(&mut m.pids),
            std::mem::take(&mut m.namespaces),
            std::mem::take(&mut m.dirs),
        )
    };
    for pid in pids {
        kill(pid);
    }
    for ns in namespaces.iter().rev() {
        delete_netns(ns);
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// SIGKILL to one process this run started, by its id.
pub fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Deletes a namespace after killing whatever still runs in it (processes keep a
/// namespace alive past `ip netns del`).
pub fn delete_netns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse() {
                kill(pid);
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP: it undoes everything and exits
/// with 128 + the signal's number.
pub fn install_signal_handler() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Signals must be registered before this returns, so that none is missed between
    // here and the thread's first poll.
    let (mut int, mut term, mut hup) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    std::thread::spawn(move || {
        let code = runtime.block_on(async {
            tokio::select! {
                _ = int.recv() => 2,
                _ = term.recv() => 15,
                _ = hup.recv() => 1,
            }
        });
        eprintln!(
            "\nshoal-bench fleet: interrupted; removing the fleet's namespaces, links, processes and files..."
        );
        undo_all();
        std::process::exit(128 + code);
    });
    Ok(())
}

/// Removes what earlier runs that are no longer alive left behind: their namespaces
/// (with the processes in them) and work directories under `work_root`.
pub fn sweep_leftovers(work_root: &Path) {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return false;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            return false;
        };
        pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
    };
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // `NAME` or `NAME (id: N)`.
            let name = line.split_whitespace().next().unwrap_or_default();
            if dead(name) {
                eprintln!("removing namespace {name}, left by a run that died");
                delete_netns(name);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(work_root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                eprintln!(
                    "removing {}, left by a run that died",
                    entry.path().display()
                );
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    // Give the kernel a moment to release the veths of deleted namespaces.
    std::thread::sleep(Duration::from_millis(50));
}
