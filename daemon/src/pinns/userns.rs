//! A pod's own user namespace (KEP-127), made before its other namespaces
//! so that it owns them: the kernel lets a container's root mount `/sys` and
//! `/proc`, set the hostname or change sysctls only in namespaces its user
//! namespace owns.
//!
//! Two processes do it, because no single one can. A process cannot write
//! its own mappings beyond one id, and once inside the new user namespace it
//! can no longer bind-mount in the node's mount namespace. So the helper
//! runs a second copy of itself (`--inside-userns`), which unshares the user
//! namespace and waits; the helper, still privileged on the node, writes its
//! `uid_map` and `gid_map`; the inner process becomes root of the new
//! namespace, unshares and configures the others (and starts `pier-infra`
//! for a PID namespace) and reports; the helper bind-mounts them all from
//! `/proc/<inner>/ns/` and lets the inner process go. They talk over the
//! inner process's stdin and stdout, a line at a time.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use nix::sched::{CloneFlags, unshare};
use nix::unistd::{Gid, Pid, Uid};

use super::{PinError, PinRequest, Pinned, bind_all, create, kill};

/// The inner process's first report: the user namespace exists, unmapped.
const UNSHARED: &str = "unshared";
/// The helper's answer: the mappings are written.
const MAPPED: &str = "mapped";
/// The inner process's last report, `ready` or `ready <infra pid>`.
const READY: &str = "ready";

fn failed(what: impl std::fmt::Display) -> PinError {
    PinError::Userns(what.to_string())
}

/// The helper's side: runs the inner process, maps its user namespace, and
/// pins what it made. On failure nothing stays pinned or running.
pub fn pin(request: &PinRequest) -> Result<Pinned, PinError> {
    let (Some(uids), Some(gids)) = (&request.uid_map, &request.gid_map) else {
        return Err(failed("--user needs --uid-map and --gid-map"));
    };
    let exe = std::env::current_exe().map_err(|e| failed(format!("find own binary: {e}")))?;
    let inner_request = PinRequest {
        inside_userns: true,
        ..request.clone()
    };
    let mut inner = Command::new(exe)
        .args(inner_request.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("start the process for the user namespace: {e}")))?;
    let pid = inner.id();
    let (Some(mut to_inner), Some(from_inner)) = (inner.stdin.take(), inner.stdout.take()) else {
        kill(inner);
        return Err(failed("no pipes to the inner process"));
    };
    let mut from_inner = BufReader::new(from_inner);
    let mut infra = None;
    let done = (|| {
        expect_line(&mut from_inner, UNSHARED)?;
        for (file, map) in [("uid_map", uids), ("gid_map", gids)] {
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, map.proc_text())
                .map_err(|e| failed(format!("write {path}: {e}")))?;
        }
        writeln!(to_inner, "{MAPPED}").map_err(|e| failed(format!("tell it is mapped: {e}")))?;
        let ready = expect_line(&mut from_inner, READY)?;
        infra = ready.trim().parse::<u32>().ok();
        if request.pid.is_some() && infra.is_none() {
            return Err(failed("the inner process did not report pier-infra's pid"));
        }
        bind_all(request, Path::new(&format!("/proc/{pid}/ns")), infra)
    })();
    match done {
        Ok(()) => {
            // Its stdin closing tells the inner process to exit.
            drop(to_inner);
            let _ = inner.wait();
            Ok(Pinned { infra_pid: infra })
        }
        Err(e) => {
            if let Some(infra) = infra {
                let _ = nix::sys::signal::kill(
                    Pid::from_raw(infra as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            drop(to_inner);
            Err(with_inner_stderr(e, inner))
        }
    }
}

/// Reads one line from the inner process; it must start with `word`.
/// Returns the rest of the line.
fn expect_line(from: &mut BufReader<ChildStdout>, word: &str) -> Result<String, PinError> {
    let mut line = String::new();
    from.read_line(&mut line)
        .map_err(|e| failed(format!("read from the inner process: {e}")))?;
    match line.trim_end().strip_prefix(word) {
        Some(rest) => Ok(rest.to_owned()),
        None => Err(failed(format!(
            "the inner process said {:?}, not {word:?}",
            line.trim_end()
        ))),
    }
}

/// The inner process's own reason, when it gave one, is the better message.
fn with_inner_stderr(error: PinError, mut inner: Child) -> PinError {
    let mut message = String::new();
    if let Some(mut stderr) = inner.stderr.take() {
        let _ = inner.kill();
        let _ = stderr.read_to_string(&mut message);
    }
    let _ = inner.wait();
    let message = message.trim().trim_start_matches("pierd: ");
    if message.is_empty() {
        error
    } else {
        failed(message)
    }
}

/// The inner process's side: unshares the user namespace, waits to be
/// mapped, becomes its root, then makes the pod's other namespaces inside
/// it and stays until the helper has pinned them (its stdin closes).
pub fn inside(request: &PinRequest) -> Result<(), PinError> {
    unshare(CloneFlags::CLONE_NEWUSER).map_err(PinError::Unshare)?;
    let mut stdout = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock<'_>, text: &str| {
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(|e| failed(format!("report to the helper: {e}")))
    };
    say(&mut stdout, UNSHARED)?;
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .map_err(|e| failed(format!("wait for the mappings: {e}")))?;
    if line.trim_end() != MAPPED {
        return Err(failed("the helper did not map the user namespace"));
    }
    become_root()?;
    let infra = create(request)?;
    let report = match &infra {
        Some(child) => format!("{READY} {}", child.id()),
        None => READY.to_owned(),
    };
    if let Err(e) = say(&mut stdout, &report) {
        if let Some(child) = infra {
            kill(child);
        }
        return Err(e);
    }
    // Held until the helper has bind-mounted the namespaces.
    let mut rest = Vec::new();
    let _ = stdin.read_to_end(&mut rest);
    Ok(())
}

/// Takes uid and gid 0 of the new namespace, with no groups from the node:
/// a process that keeps an unmapped uid loses its capabilities when it
/// executes `pier-infra`.
fn become_root() -> Result<(), PinError> {
    nix::unistd::setgroups(&[]).map_err(|e| failed(format!("setgroups: {e}")))?;
    let root_gid = Gid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(|e| failed(format!("setresgid 0: {e}")))?;
    let root = Uid::from_raw(0);
    nix::unistd::setresuid(root, root, root).map_err(|e| failed(format!("setresuid 0: {e}")))
}
