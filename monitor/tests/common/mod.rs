//! Test fixtures: a busybox bundle, a private runc root, and a harness that
//! launches pier-monitor the way the daemon does (sync fd, start gate) and
//! cleans everything up on drop, even when the test fails.
#![allow(dead_code, unsafe_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pier_proto::client::Client;
use pier_proto::exit_file::{self, ExitStatus};
use pier_proto::framing::read_message;
use pier_proto::monitor::{SyncResult, sync_result::Result as SyncKind};
use serde_json::json;

pub const RUNC: &str = "/usr/sbin/runc";
const SYNC_FD: i32 = 8;
const GATE_FD: i32 = 9;

pub struct Opts {
    pub args: Vec<String>,
    pub terminal: bool,
    pub stdin: bool,
    pub memory_limit: Option<u64>,
    pub max_line: Option<usize>,
    pub extra: Vec<String>,
    /// Launch through a throwaway "daemon" process group that the test can
    /// SIGKILL; the monitor's stderr is a pipe owned by that group.
    pub via_fake_daemon: bool,
    /// Write an exec profile beside config.json, as pierd does, so the
    /// monitor starts exec'd processes itself.
    pub native_exec: bool,
    /// Changes to `runc spec`'s config, made before the exec profile.
    pub spec: Option<fn(&mut serde_json::Value)>,
}

impl Opts {
    pub fn sh(script: &str) -> Self {
        Self {
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            terminal: false,
            stdin: false,
            memory_limit: None,
            max_line: None,
            extra: Vec::new(),
            via_fake_daemon: false,
            native_exec: false,
            spec: None,
        }
    }
}

pub struct Container {
    pub dir: tempfile::TempDir,
    pub id: String,
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub run_dir: PathBuf,
    pub durable_dir: PathBuf,
    pub log_path: PathBuf,
    pub sync: Option<SyncResult>,
    pub monitor_pid: i32,
    pub fake_daemon: Option<std::process::Child>,
}

fn unique_id(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "pmt-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A rootfs with busybox and its applets, and a config.json from `runc
/// spec` edited for the test.
pub fn make_bundle(dir: &Path, id: &str, o: &Opts) -> PathBuf {
    let bundle = dir.join("bundle");
    let bin = bundle.join("rootfs/bin");
    fs::create_dir_all(&bin).expect("mkdir rootfs");
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(bundle.join("rootfs").join(d)).expect("mkdir");
    }
    fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    let st = Command::new(RUNC)
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .expect("runc spec");
    assert!(st.success());
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("read spec")).expect("parse spec");
    spec["process"]["args"] = json!(o.args);
    spec["process"]["terminal"] = json!(o.terminal);
    spec["root"]["readonly"] = json!(false);
    spec["linux"]["cgroupsPath"] = json!(format!("/pier-monitor-tests/{id}"));
    if let Some(limit) = o.memory_limit {
        spec["linux"]["resources"]["memory"] = json!({ "limit": limit, "swap": limit });
    }
    if let Some(edit) = o.spec {
        edit(&mut spec);
    }
    fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json")).expect("write spec");
    if o.native_exec {
        write_exec_profile(&bundle, &spec);
    }
    bundle
}

/// The exec profile of `runc spec`'s process, as pierd computes it.
fn write_exec_profile(bundle: &Path, spec: &serde_json::Value) {
    use prost::Message;
    let p = &spec["process"];
    let names = |set: &str| -> Vec<String> {
        p["capabilities"][set]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    // runc spec's only rlimit is RLIMIT_NOFILE (7).
    let rlimits = p["rlimits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            assert_eq!(r["type"], "RLIMIT_NOFILE");
            pier_proto::monitor::Rlimit {
                resource: 7,
                soft: r["soft"].as_u64().expect("soft"),
                hard: r["hard"].as_u64().expect("hard"),
            }
        })
        .collect();
    let profile = pier_proto::monitor::ExecProfile {
        uid: p["user"]["uid"].as_u64().expect("uid") as u32,
        gid: p["user"]["gid"].as_u64().expect("gid") as u32,
        cap_bounding: names("bounding"),
        cap_effective: names("effective"),
        cap_permitted: names("permitted"),
        cap_inheritable: names("inheritable"),
        cap_ambient: names("ambient"),
        no_new_privileges: p["noNewPrivileges"].as_bool().unwrap_or(false),
        rlimits,
        env: strings(&p["env"]),
        cwd: p["cwd"].as_str().unwrap_or("/").into(),
        umask: p["user"]["umask"].as_u64().map(|u| u as u32),
        ..Default::default()
    };
    fs::write(
        bundle.join(pier_proto::files::EXEC_PROFILE),
        profile.encode_length_delimited_to_vec(),
    )
    .expect("write exec profile");
}

impl Container {
    /// Create the container through pier-monitor (not started yet).
    pub fn create(tag: &str, o: Opts) -> Self {
        let c = Self::prepare(tag, &o);
        c.launch(o)
    }

    pub fn prepare(tag: &str, o: &Opts) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pm")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let id = unique_id(tag);
        let bundle = make_bundle(dir.path(), &id, o);
        Self {
            root: dir.path().join("runc"),
            run_dir: dir.path().join("run"),
            durable_dir: dir.path().join("state"),
            log_path: dir.path().join("logs/0.log"),
            bundle,
            id,
            sync: None,
            monitor_pid: 0,
            fake_daemon: None,
            dir,
        }
    }

    pub fn monitor_args(&self, o: &Opts) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--id".into(),
            self.id.clone(),
            "--bundle".into(),
            self.bundle.display().to_string(),
            "--runtime".into(),
            RUNC.into(),
            "--runtime-arg".into(),
            "--root".into(),
            "--runtime-arg".into(),
            self.root.display().to_string(),
            "--log-path".into(),
            self.log_path.display().to_string(),
            "--exit-dir".into(),
            self.run_dir.display().to_string(),
            "--exit-dir".into(),
            self.durable_dir.display().to_string(),
            "--runtime-dir".into(),
            self.run_dir.display().to_string(),
            "--sync-fd".into(),
            SYNC_FD.to_string(),
            "--start-gate-fd".into(),
            GATE_FD.to_string(),
        ];
        if o.terminal {
            a.push("--terminal".into());
        }
        if o.stdin {
            a.push("--stdin".into());
        }
        if let Some(n) = o.max_line {
            a.extend(["--log-max-line".into(), n.to_string()]);
        }
        a.extend(o.extra.iter().cloned());
        a
    }

    pub fn launch(mut self, o: Opts) -> Self {
        let (sync_r, sync_w) = std::io::pipe().expect("pipe");
        let (gate_r, gate_w) = std::io::pipe().expect("pipe");
        let args = self.monitor_args(&o);
        let mut cmd = if o.via_fake_daemon {
            // sh stands in for pierd: it owns the monitor's stderr pipe.
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg("\"$@\" 2>&1 | cat >/dev/null 8>&- 9>&- & exec 8>&- 9>&-; wait; sleep 1000")
                .arg("fake-pierd")
                .arg(env!("CARGO_BIN_EXE_pier-monitor"))
                .args(&args)
                .process_group(0);
            c
        } else {
            let mut c = Command::new(env!("CARGO_BIN_EXE_pier-monitor"));
            c.args(&args);
            let err = File::create(self.dir.path().join("monitor.err")).expect("stderr file");
            c.stderr(err);
            c
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        // Move both ends above the target numbers first, so that dup2 onto 8
        // cannot clobber the other one sitting at 8 or 9.
        let high = |fd: &OwnedFd| {
            // SAFETY: F_DUPFD_CLOEXEC returns a new fd, closed after spawn.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) }
        };
        let (sync_w, gate_r) = (OwnedFd::from(sync_w), OwnedFd::from(gate_r));
        let (sw, gr) = (high(&sync_w), high(&gate_r));
        assert!(sw >= 100 && gr >= 100);
        // SAFETY: only async-signal-safe dup2 between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(sw, SYNC_FD) < 0 || libc::dup2(gr, GATE_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn monitor");
        drop(sync_w);
        drop(gate_r);
        // SAFETY: closing the two high copies made above, owned by nobody.
        unsafe {
            libc::close(sw);
            libc::close(gr);
        }
        // The "daemon" would move the monitor into its own cgroup here.
        File::from(OwnedFd::from(gate_w))
            .write_all(b"x")
            .expect("start gate");
        if o.via_fake_daemon {
            self.fake_daemon = Some(child);
        } else {
            let st = child.wait().expect("wait first stage");
            assert!(st.success(), "first stage exited with {st}");
        }
        let mut r = File::from(OwnedFd::from(sync_r));
        let sync: SyncResult = read_message(&mut r, 1 << 20).expect("sync message");
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        assert!(rest.is_empty(), "more than one message on the sync fd");
        if let Some(SyncKind::Created(c)) = &sync.result {
            self.monitor_pid = c.monitor_pid;
        }
        self.sync = Some(sync);
        self
    }

    pub fn created_pid(&self) -> i32 {
        match self.sync.as_ref().and_then(|s| s.result.clone()) {
            Some(SyncKind::Created(c)) => c.pid,
            other => panic!(
                "container not created: {other:?}; monitor said: {}",
                self.monitor_err()
            ),
        }
    }

    pub fn sync_error(&self) -> Option<String> {
        match self.sync.as_ref().and_then(|s| s.result.clone()) {
            Some(SyncKind::Error(e)) => Some(e),
            _ => None,
        }
    }

    pub fn monitor_err(&self) -> String {
        fs::read_to_string(self.dir.path().join("monitor.err")).unwrap_or_default()
    }

    pub fn runc(&self, args: &[&str]) -> std::process::Output {
        Command::new(RUNC)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .expect("runc")
    }

    pub fn start(&self) {
        self.created_pid();
        let out = self.runc(&["start", &self.id]);
        assert!(
            out.status.success(),
            "runc start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn kill(&self, sig: &str) {
        let _ = self.runc(&["kill", &self.id, sig]);
    }

    pub fn client(&self) -> Client {
        let c = Client::connect(&self.run_dir.join(pier_proto::CONTROL_SOCKET)).expect("connect");
        c.set_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        c
    }

    /// Wait for the exit file in both dirs, and for the monitor to go.
    pub fn wait_exit(&self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            let a = exit_file::read(&self.run_dir).expect("read exit file");
            let b = exit_file::read(&self.durable_dir).expect("read durable exit file");
            if let (Some(a), Some(b)) = (a, b) {
                assert_eq!(a, b);
                while self.monitor_alive() {
                    assert!(
                        Instant::now() < deadline,
                        "monitor still running after exit file"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "no exit file after {limit:?}; monitor said: {}",
                self.monitor_err()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn monitor_alive(&self) -> bool {
        self.monitor_pid > 0
            && fs::read_to_string(format!("/proc/{}/stat", self.monitor_pid))
                .is_ok_and(|s| !s.contains(") Z "))
    }

    /// VmRSS of the monitor in kB.
    pub fn monitor_rss_kb(&self) -> u64 {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.monitor_pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn log(&self) -> Vec<u8> {
        fs::read(&self.log_path).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !String::from_utf8_lossy(&self.log()).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never contained {needle:?}: {}",
                String::from_utf8_lossy(&self.log())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("monitor {} stderr:\n{}", self.id, self.monitor_err());
        }
        let _ = self.runc(&["kill", &self.id, "KILL"]);
        let _ = self.runc(&["delete", "--force", &self.id]);
        // Give it the chance to finish its exit sequence before the temp
        // dir goes, or it recreates files in a half-removed tree.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.monitor_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.monitor_alive() {
            let _ = nix_kill(self.monitor_pid);
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(mut d) = self.fake_daemon.take() {
            unsafe_kill_group(d.id() as i32);
            let _ = d.wait();
        }
        for ctl in [
            "memory", "cpu", "cpuacct", "pids", "blkio", "devices", "freezer", "cpuset", "systemd",
            "unified",
        ] {
            let _ = fs::remove_dir(format!(
                "/sys/fs/cgroup/{ctl}/pier-monitor-tests/{}",
                self.id
            ));
        }
    }
}

fn nix_kill(pid: i32) -> i32 {
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(pid, libc::SIGKILL) }
}

/// SIGKILL a whole process group (the fake daemon and its pipe reader).
pub fn unsafe_kill_group(pgid: i32) {
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Split a CRI log into (timestamp, stream, tag, content) records, checking
/// the format of every line byte for byte.
pub fn parse_log(raw: &[u8]) -> Vec<(String, String, u8, Vec<u8>)> {
    assert!(
        raw.is_empty() || raw.ends_with(b"\n"),
        "log does not end with a newline"
    );
    let mut out = Vec::new();
    for line in raw.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        assert!(
            line.len() >= 40,
            "short record {:?}",
            String::from_utf8_lossy(line)
        );
        let ts = std::str::from_utf8(&line[..30]).expect("ascii timestamp");
        check_rfc3339_nano(ts);
        assert_eq!(line[30], b' ');
        let stream = std::str::from_utf8(&line[31..37]).expect("stream");
        assert!(stream == "stdout" || stream == "stderr", "stream {stream}");
        assert_eq!(line[37], b' ');
        let tag = line[38];
        assert!(tag == b'F' || tag == b'P', "tag {}", tag as char);
        assert_eq!(line[39], b' ');
        out.push((ts.to_owned(), stream.to_owned(), tag, line[40..].to_vec()));
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, with plausible field values.
pub fn check_rfc3339_nano(ts: &str) {
    let b = ts.as_bytes();
    assert_eq!(b.len(), 30, "{ts}");
    for (i, &c) in b.iter().enumerate() {
        let want = match i {
            4 | 7 => Some(b'-'),
            10 => Some(b'T'),
            13 | 16 => Some(b':'),
            19 => Some(b'.'),
            29 => Some(b'Z'),
            _ => None,
        };
        match want {
            Some(w) => assert_eq!(c, w, "{ts}"),
            None => assert!(c.is_ascii_digit(), "{ts}"),
        }
    }
    let num = |r: std::ops::Range<usize>| ts[r].parse::<u32>().expect("digits");
    assert!(
        (1..=12).contains(&num(5..7)) && (1..=31).contains(&num(8..10)),
        "{ts}"
    );
    assert!(
        num(11..13) < 24 && num(14..16) < 60 && num(17..19) < 61,
        "{ts}"
    );
    assert!(ts.starts_with("20"), "{ts}");
}

/// Join the content of records of `stream` back into the container's bytes
/// (P pieces have no newline of their own, F pieces end a line).
pub fn reassemble(records: &[(String, String, u8, Vec<u8>)], stream: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, s, tag, content) in records {
        if s == stream {
            out.extend_from_slice(content);
            if *tag == b'F' {
                out.push(b'\n');
            }
        }
    }
    out
}
