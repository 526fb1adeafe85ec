//! The oracle of native exec: the same probe runs in the same container
//! twice through its monitor, once forced through `runc exec` and once
//! started by the monitor itself, and everything the probe can observe
//! about itself must be equal: ids and groups, the five capability sets,
//! no_new_privs, seccomp mode and filter count, signal mask and ignored
//! signals, namespaces, cgroups, LSM label, limits, OOM score, umask, cwd,
//! the environment (order included), the session keyring, its stdio, its
//! view of /proc/1 and of the mounts, and the verdicts of probing syscalls.
//! Each probe runs a second time on a pty (a streaming tty exec, as
//! `kubectl exec -it` makes), adding its terminal's name pattern, owner,
//! mode, window size and settings, and its session and controlling
//! terminal; and the exit codes of `exit 3`, of Ctrl-C on the terminal
//! and of a binary that does not exist must come back the same.
//! Each container of the matrix must also be served natively (the monitor
//! logs a fallback), or the native path is not what was compared.
//!
//! One thing differs by design and is compared only in kind: the parent.
//! Where the parent is visible at all (host PID), it is `runc` for one and
//! `pier-monitor` for the other, with pids that differ between any two
//! execs anyway.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::*;
use pier_proto::attach;
use pier_proto::client::Client;
use pier_proto::monitor::Exec;
use pier_tests::workload::*;

/// What the probe prints, one fact a line. `$$` is the exec'd process
/// itself (busybox runs most applets inside the shell, so /proc/self
/// would often be the shell too; $$ says so plainly). The fds are listed
/// first and without a command substitution: while the shell forks one,
/// it briefly holds both ends of its pipe, and a listing from the child
/// may or may not see the write end.
const PROBE: &str = r#"
echo "fds:"; ls /proc/$$/fd
grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters|SigBlk|SigIgn|Speculation_Store_Bypass):' /proc/$$/status
if [ "$PPID" = 0 ]; then echo "parent outside the PID namespace"; else echo "parent visible"; fi
awk -v p=$$ '{print "session", ($5 == p ? "pgrp=pid" : "pgrp=" $5), ($6 == p ? "sid=pid" : "sid=" $6), "tty_nr major", int($7 / 256) % 4096, ($8 == p ? "tpgid=pid" : "tpgid=" $8)}' /proc/$$/stat
for n in cgroup ipc mnt net pid pid_for_children time user uts; do echo "ns $n $(readlink /proc/$$/ns/$n)"; done
echo "cgroup:"; cat /proc/$$/cgroup
echo "attr: $(cat /proc/$$/attr/current 2>&1)"
cat /proc/$$/limits
echo "oom_score_adj $(cat /proc/$$/oom_score_adj)"
echo "umask $(umask)"
echo "cwd $(pwd)"
echo "environ:"; tr '\0' '\n' < /proc/$$/environ
for fd in 0 1 2; do echo "fd $fd $(readlink /proc/$$/fd/$fd | cut -c1-5)"; done
echo "stdio owner $(stat -L -c '%u:%g' /proc/$$/fd/0) $(stat -L -c '%u:%g' /proc/$$/fd/1) $(stat -L -c '%u:%g' /proc/$$/fd/2)"
echo "keyring $(awk '/_ses.@ID@/ {print $1, $2, $6, $7, $8, $9}' /proc/keys 2>&1)"
echo "id $(id)"
echo "init $(tr '\0' ' ' < /proc/1/cmdline)"
echo "mountinfo:"; cat /proc/$$/mountinfo
probe() { out=$("$@" 2>&1); echo "probe $*: $? $out"; }
probe chmod 666 /dev/null
probe mount -t tmpfs none /nonexistent-probe
probe swapoff /nonexistent-probe
probe chroot /nonexistent-probe true
probe unshare -u true
probe ionice -c 1 -n 0 true
probe /bin/true
probe touch /probe-file
probe touch /tmp/probe-file
probe cat /etc/hostname
"#;

/// What a tty exec adds to the probe: its terminal (the pty number differs
/// between any two execs, its pattern must not), the slave's owner and
/// mode, the window size set after start, and the terminal settings.
const TTY_PROBE: &str = r#"
echo "tty $(tty | sed 's/[0-9]*$/N/')"
echo "tty owner $(stat -c '%u:%g %a' "$(tty)")"
echo "stty size $(stty size)"
echo "stty $(stty -g)"
"#;

/// Denies chmod (and the calls glibc makes for it), allows the rest.
const BLOCK_CHMOD: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmodat","fchmodat2"],"action":"SCMP_ACT_ERRNO"}]}"#;

/// The container's monitor socket and log.
fn runtime_dir(node: &Node, id: &str) -> PathBuf {
    node.pierd.runroot().join("containers").join(id)
}

/// Runs the probe through the monitor, natively or through runc. Only
/// the container's own session keyring is shown: a privileged container
/// sees every keyring of the node, and other containers come and go.
fn probe(dir: &Path, id: &str, via_runtime: bool) -> String {
    let mut client = Client::connect(&dir.join("monitor.sock")).expect("connect monitor");
    let result = client
        .exec_request(Exec {
            argv: vec!["sh".into(), "-c".into(), PROBE.replace("@ID@", id)],
            timeout_ms: 30_000,
            via_runtime,
            ..Default::default()
        })
        .expect("exec");
    assert_eq!(
        result.exit_code,
        0,
        "probe failed (via runtime: {via_runtime}): {}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        result.stderr.is_empty(),
        "probe stderr (via runtime: {via_runtime}): {}",
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8_lossy(&result.stdout).into_owned()
}

/// A streaming tty exec through the monitor, read as a terminal user
/// would: output with the pty's line endings made plain.
struct TtyExec {
    id: u64,
    stream: UnixStream,
    out: String,
}

impl TtyExec {
    fn start(dir: &Path, argv: &[&str], via_runtime: bool) -> Self {
        let client = Client::connect(&dir.join("monitor.sock")).expect("connect monitor");
        let (id, stream) = client
            .exec_stream_request(Exec {
                argv: argv.iter().map(|a| a.to_string()).collect(),
                stream: true,
                tty: true,
                stdin: true,
                via_runtime,
                ..Default::default()
            })
            .expect("tty exec");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        Self {
            id,
            stream,
            out: String::new(),
        }
    }

    fn resize(&self, dir: &Path, rows: u32, cols: u32) {
        let mut client = Client::connect(&dir.join("monitor.sock")).expect("connect monitor");
        client
            .resize_exec(self.id, rows, cols)
            .expect("resize exec");
    }

    fn send(&mut self, data: &[u8]) {
        attach::write_frame(&mut self.stream, attach::STDIN, data).expect("stdin");
    }

    /// The next output frame; the exit code once the EXIT frame came;
    /// `Err` when nothing came within the stream's read timeout.
    fn read(&mut self) -> Result<Option<i32>, String> {
        let frame = match attach::read_frame(&mut self.stream) {
            Ok(frame) => frame,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("nothing within the timeout; so far: {}", self.out));
            }
            Err(e) => panic!("read exec stream: {e}"),
        };
        let (kind, data) =
            frame.unwrap_or_else(|| panic!("exec stream ended without EXIT: {}", self.out));
        match kind {
            attach::EXIT => Ok(Some(i32::from_be_bytes(
                data[..4].try_into().expect("exit frame"),
            ))),
            attach::STDOUT | attach::STDERR => {
                self.out
                    .push_str(&String::from_utf8_lossy(&data).replace("\r\n", "\n"));
                Ok(None)
            }
            other => panic!("unexpected frame kind {other}"),
        }
    }

    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.out.contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in {}", self.out);
            match self.read() {
                Ok(None) => {}
                Ok(Some(code)) => panic!("exited ({code}) before {needle:?}: {}", self.out),
                Err(e) => panic!("waiting for {needle:?}: {e}"),
            }
        }
    }

    /// The output and the exit code, or why there is none (the process
    /// is killed when the stream drops).
    fn finish(mut self) -> (String, Result<i32, String>) {
        loop {
            match self.read() {
                Ok(None) => {}
                Ok(Some(code)) => {
                    let mut rest = Vec::new();
                    let _ = self.stream.read_to_end(&mut rest);
                    return (self.out, Ok(code));
                }
                Err(e) => return (self.out, Err(e)),
            }
        }
    }
}

/// The probe on a pty (with [`TTY_PROBE`]), after a resize: it waits for
/// a line on its stdin, sent once the window size is set, so the size it
/// sees does not depend on timing.
fn tty_probe(dir: &Path, id: &str, via_runtime: bool) -> String {
    let script = format!("read go; {}{TTY_PROBE}", PROBE.replace("@ID@", id));
    let mut exec = TtyExec::start(dir, &["sh", "-c", &script], via_runtime);
    exec.resize(dir, 33, 77);
    exec.send(b"go\n");
    let (out, code) = exec.finish();
    assert_eq!(
        code,
        Ok(0),
        "tty probe failed (via runtime: {via_runtime}): {out}"
    );
    out
}

/// The exit codes of a tty exec that exits 3, of one interrupted by
/// Ctrl-C on its terminal (where it ends at all), and of one whose binary
/// does not exist.
type TtyCodes = (
    Result<i32, String>,
    Result<i32, String>,
    Result<i32, String>,
);

fn tty_exit_codes(dir: &Path, via_runtime: bool) -> TtyCodes {
    let exit = TtyExec::start(dir, &["sh", "-c", "exit 3"], via_runtime).finish();
    let mut sleeper = TtyExec::start(
        dir,
        &["sh", "-c", "echo ready; exec sleep 1000"],
        via_runtime,
    );
    sleeper.wait_for("ready");
    sleeper.send(b"\x03");
    let missing = TtyExec::start(dir, &["/no/such/binary"], via_runtime).finish();
    (exit.1, sleeper.finish().1, missing.1)
}

/// The lines that differ, each as `runc | native`.
fn differences(runc: &str, native: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (runc.lines().collect(), native.lines().collect());
    let mut out = Vec::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied(), b.get(i).copied());
        if x != y {
            out.push(format!("{:?} | {:?}", x.unwrap_or("-"), y.unwrap_or("-")));
        }
    }
    out
}

/// A container case of the matrix: how its pod and container are made.
struct Case {
    name: &'static str,
    /// Lines the probe must print in this container, so a probe that
    /// prints nothing useful cannot pass.
    expect: &'static [&'static str],
    pod: fn(&mut PodSandboxConfig),
    container: fn(&mut ContainerConfig, &Path),
}

fn no_pod(_: &mut PodSandboxConfig) {}

fn namespaces(pod: &mut PodSandboxConfig, options: NamespaceOption) {
    pod_security(pod).namespace_options = Some(options);
}

fn same_namespaces(pod: &PodSandboxConfig, config: &mut ContainerConfig) {
    let options = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|c| c.namespace_options.clone());
    security(config).namespace_options = options;
}

fn seccomp(config: &mut ContainerConfig, kind: ProfileType, reference: &str) {
    security(config).seccomp = Some(SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: reference.into(),
    });
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "default",
            expect: &[
                "CapEff:\t00000000a80425fb",
                "Seccomp:\t0",
                "HOME=/root",
                "session pgrp=pid sid=pid tty_nr major 0 tpgid=-1",
            ],
            pod: no_pod,
            container: |_, _| {},
        },
        Case {
            name: "privileged",
            expect: &["CapEff:\t000001fffeffffff", "Seccomp:\t0"],
            pod: |p| pod_security(p).privileged = true,
            container: |c, _| security(c).privileged = true,
        },
        Case {
            name: "non-root-supplementary-groups",
            expect: &[
                "Uid:\t4321\t4321\t4321\t4321",
                "Groups:\t4322 5001 5002 ",
                "CapEff:\t0000000000000000",
                "HOME=/",
            ],
            pod: no_pod,
            container: |c, _| {
                let s = security(c);
                s.run_as_user = Some(Int64Value { value: 4321 });
                s.run_as_group = Some(Int64Value { value: 4322 });
                s.supplemental_groups = vec![5001, 5002];
            },
        },
        Case {
            // The image's user `pier` (1000) is in group `extra` (2000).
            name: "image-defined-groups",
            expect: &["Groups:\t1000 1234 2000 ", "HOME=/home/pier"],
            pod: no_pod,
            container: |c, _| {
                let s = security(c);
                s.run_as_user = Some(Int64Value { value: 1000 });
                s.supplemental_groups = vec![1234];
            },
        },
        Case {
            name: "capabilities-added-and-dropped",
            expect: &["CapBnd:\t00000000aa0435da"],
            pod: no_pod,
            container: |c, _| {
                security(c).capabilities = Some(Capability {
                    add_capabilities: vec!["NET_ADMIN".into(), "SYS_TIME".into()],
                    drop_capabilities: vec!["CHOWN".into(), "KILL".into()],
                    add_ambient_capabilities: Vec::new(),
                });
            },
        },
        Case {
            name: "no-new-privs-runtime-default",
            expect: &["NoNewPrivs:\t1", "Seccomp:\t2", "Seccomp_filters:\t1"],
            pod: no_pod,
            container: |c, _| {
                security(c).no_new_privs = true;
                seccomp(c, ProfileType::RuntimeDefault, "");
            },
        },
        Case {
            name: "runtime-default-without-no-new-privs",
            expect: &["NoNewPrivs:\t0", "Seccomp:\t2", "Seccomp_filters:\t1"],
            pod: no_pod,
            container: |c, _| seccomp(c, ProfileType::RuntimeDefault, ""),
        },
        Case {
            name: "localhost-seccomp-non-root",
            expect: &[
                "Seccomp:\t2",
                "probe chmod 666 /dev/null: 1 chmod: /dev/null: Operation not permitted",
            ],
            pod: no_pod,
            container: |c, profile| {
                seccomp(c, ProfileType::Localhost, &profile.display().to_string());
                security(c).run_as_user = Some(Int64Value { value: 1000 });
            },
        },
        Case {
            name: "readonly-rootfs",
            expect: &["probe touch /probe-file: 1 touch: /probe-file: Read-only file system"],
            pod: no_pod,
            container: |c, _| security(c).readonly_rootfs = true,
        },
        Case {
            name: "host-network",
            expect: &["Seccomp:\t0"],
            pod: |p| {
                namespaces(
                    p,
                    NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..Default::default()
                    },
                )
            },
            container: |_, _| {},
        },
        Case {
            name: "host-pid",
            expect: &["parent visible"],
            pod: |p| {
                namespaces(
                    p,
                    NamespaceOption {
                        pid: NamespaceMode::Node as i32,
                        ..Default::default()
                    },
                )
            },
            container: |_, _| {},
        },
        Case {
            name: "shared-pid",
            expect: &["parent outside the PID namespace"],
            pod: |p| {
                namespaces(
                    p,
                    NamespaceOption {
                        pid: NamespaceMode::Pod as i32,
                        ..Default::default()
                    },
                )
            },
            container: |_, _| {},
        },
        Case {
            name: "masked-and-readonly-paths",
            expect: &[
                "probe cat /etc/hostname: 0 ",
                "probe touch /tmp/probe-file: 1 touch: /tmp/probe-file: Read-only file system",
            ],
            pod: no_pod,
            container: |c, _| {
                let s = security(c);
                s.masked_paths = vec!["/proc/kcore".into(), "/etc/hostname".into()];
                s.readonly_paths = vec!["/proc/sys".into(), "/tmp".into()];
            },
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_exec_is_indistinguishable_from_runc_exec() {
    let mut node = Node::start().await;
    let profiles = tempfile::tempdir().expect("tempdir");
    let block_chmod = profiles.path().join("block-chmod.json");
    std::fs::write(&block_chmod, BLOCK_CHMOD).expect("profile");
    let mut failures = Vec::new();
    for case in cases() {
        let mut pod = node.pod(case.name);
        (case.pod)(&mut pod);
        let pod_id = node.run_pod(&pod).await;
        let mut config = node.container(case.name, &["sleep", "100000"]);
        same_namespaces(&pod, &mut config);
        (case.container)(&mut config, &block_chmod);
        let id = node.run(&pod_id, &pod, config).await;
        let dir = runtime_dir(&node, &id);
        let cid = id.clone();
        let (runc, native, tty) = tokio::task::spawn_blocking(move || {
            let runc = probe(&dir, &cid, true);
            let native = probe(&dir, &cid, false);
            let tty_runc = tty_probe(&dir, &cid, true);
            let tty_native = tty_probe(&dir, &cid, false);
            let codes_runc = tty_exit_codes(&dir, true);
            let codes_native = tty_exit_codes(&dir, false);
            let tty = (tty_runc, tty_native, codes_runc, codes_native);
            (runc, native, tty, dir)
        })
        .await
        .map(|(r, n, t, d)| {
            let log = std::fs::read_to_string(d.join("monitor.log")).unwrap_or_default();
            assert!(
                !log.contains("exec runs through the runtime"),
                "{}: the native path was not taken: {log}",
                case.name
            );
            (r, n, t)
        })
        .expect("probe task");
        let (tty_runc, tty_native, codes_runc, codes_native) = tty;
        assert!(runc.contains("mountinfo:"), "{}: {runc}", case.name);
        if std::env::var_os("PIER_SHOW_PROBE").is_some() {
            eprintln!(
                "=== {} ===\n{native}\n=== {} on a tty ===\n{tty_native}",
                case.name, case.name
            );
        }
        for line in case.expect {
            assert!(
                native.lines().any(|l| l == *line),
                "{}: no line {line:?} in\n{native}",
                case.name
            );
        }
        let diff = differences(&runc, &native);
        if !diff.is_empty() {
            failures.push(format!("{}:\n  {}", case.name, diff.join("\n  ")));
        }
        for line in [
            "tty /dev/pts/N",
            "stty size 33 77",
            "session pgrp=pid sid=pid tty_nr major 136 tpgid=pid",
        ] {
            assert!(
                tty_native.lines().any(|l| l == line),
                "{}: no line {line:?} on the tty in\n{tty_native}",
                case.name
            );
        }
        let diff = differences(&tty_runc, &tty_native);
        if !diff.is_empty() {
            failures.push(format!("{} (tty):\n  {}", case.name, diff.join("\n  ")));
        }
        assert_eq!(
            codes_runc,
            (Ok(3), Ok(130), Ok(255)),
            "{}: tty exit codes through runc",
            case.name
        );
        if codes_native != codes_runc {
            failures.push(format!(
                "{} (tty exit codes): runc {codes_runc:?}, native {codes_native:?}",
                case.name
            ));
        }
        // Through pierd too: kubelet's way in.
        let out = exec(&mut node.cri, &id, &["sh", "-c", "echo ok"], 10).await;
        assert_eq!((out.exit_code, out.stdout.as_slice()), (0, &b"ok\n"[..]));
        remove_pod(&mut node.cri, &pod_id).await;
    }
    assert!(
        failures.is_empty(),
        "native exec differs from runc exec:\n{}",
        failures.join("\n")
    );
}
