//! pier-monitor against real runc and busybox containers, no daemon.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Container, Opts, parse_log, reassemble};
use pier_proto::{attach, files};

const EXIT_WAIT: Duration = Duration::from_secs(30);
/// Debug build; the release build is measured by contrib/bench/monitor.
const RSS_LIMIT_KB: u64 = 8 * 1024;

fn assert_small(c: &Container) {
    let rss = c.monitor_rss_kb();
    assert!(rss > 0 && rss < RSS_LIMIT_KB, "monitor RSS {rss} kB");
}

#[test]
fn log_is_cri_format_byte_for_byte() {
    let mut o = Opts::sh(
        "echo hello; echo oops >&2; printf '0123456789abcdef\\n'; echo; printf 'no newline'",
    );
    o.max_line = Some(8);
    let c = Container::create("log", o);
    assert_small(&c);
    c.start();
    let st = c.wait_exit(EXIT_WAIT);
    assert_eq!((st.exit_code, st.oom_killed), (0, false));
    let recs = parse_log(&c.log());
    assert_eq!(
        reassemble(&recs, "stdout"),
        b"hello\n0123456789abcdef\n\nno newline"
    );
    assert_eq!(reassemble(&recs, "stderr"), b"oops\n");
    assert!(
        recs.iter().all(|r| r.3.len() <= 8),
        "a record exceeds the max line size"
    );
    let out: Vec<_> = recs.iter().filter(|r| r.1 == "stdout").collect();
    assert_eq!((out[0].2, out[0].3.as_slice()), (b'F', &b"hello"[..]));
    assert_eq!((out[1].2, out[1].3.as_slice()), (b'P', &b"01234567"[..]));
    assert_eq!((out[2].2, out[2].3.as_slice()), (b'F', &b"89abcdef"[..]));
    assert_eq!((out[3].2, out[3].3.as_slice()), (b'F', &b""[..]));
    // Unterminated output at exit is a P record, and the file still ends
    // with the record's own newline.
    assert_eq!(out.last().map(|r| r.2), Some(b'P'));
    // Timestamps never go backwards within a stream.
    assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
}

#[test]
fn flood_without_newlines_and_invalid_utf8_pass_through() {
    let c = Container::create(
        "flood",
        Opts::sh("printf '\\377\\376bad\\n'; head -c 300000 /dev/zero | tr '\\0' a"),
    );
    c.start();
    assert_eq!(c.wait_exit(EXIT_WAIT).exit_code, 0);
    let recs = parse_log(&c.log());
    let mut want = b"\xff\xfebad\n".to_vec();
    want.extend(std::iter::repeat_n(b'a', 300_000));
    assert_eq!(reassemble(&recs, "stdout"), want);
    assert!(recs.iter().skip(1).all(|r| r.2 == b'P'));
}

#[test]
fn exit_codes_zero_three_and_sigkill() {
    let ok = Container::create("exit0", Opts::sh("exit 0"));
    let three = Container::create("exit3", Opts::sh("exit 3"));
    let killed = Container::create("exit137", Opts::sh("sleep 1000"));
    ok.start();
    three.start();
    killed.start();
    assert_eq!(ok.wait_exit(EXIT_WAIT).exit_code, 0);
    assert_eq!(three.wait_exit(EXIT_WAIT).exit_code, 3);
    assert_small(&killed);
    killed.kill("KILL");
    let st = killed.wait_exit(EXIT_WAIT);
    assert_eq!((st.exit_code, st.oom_killed), (137, false));
    assert!(st.finished_ns > 1_700_000_000_000_000_000);
}

#[test]
fn oom_kill_is_detected() {
    let mut o = Opts::sh("tail /dev/zero");
    o.memory_limit = Some(8 << 20);
    let c = Container::create("oom", o);
    c.start();
    let st = c.wait_exit(EXIT_WAIT);
    assert_eq!((st.exit_code, st.oom_killed), (137, true));
}

#[test]
fn terminal_mode_logs_pty_output_and_resizes() {
    let mut o = Opts::sh("tty; sleep 1; stty size; echo done");
    o.terminal = true;
    let c = Container::create("pty", o);
    c.client().resize(40, 120).expect("resize");
    c.start();
    assert_eq!(c.wait_exit(EXIT_WAIT).exit_code, 0);
    let recs = parse_log(&c.log());
    assert!(recs.iter().all(|r| r.1 == "stdout"), "a pty has one stream");
    let text = String::from_utf8_lossy(&reassemble(&recs, "stdout")).into_owned();
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("40 120\r"), "{text}");
    assert!(text.contains("done\r"), "{text}");
}

#[test]
fn resize_without_terminal_is_a_clear_error() {
    let c = Container::create("noresize", Opts::sh("sleep 1000"));
    let err = c
        .client()
        .resize(1, 1)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("no terminal"), "{err}");
}

#[test]
fn stdin_reaches_the_container_and_close_ends_it() {
    let mut o = Opts::sh("while read line; do echo got:$line; done; echo eof");
    o.stdin = true;
    let c = Container::create("stdin", o);
    let mut s = c.client().attach(true, true, true).expect("attach");
    c.start();
    attach::write_frame(&mut s, attach::STDIN, b"abc\ndef\n").expect("stdin");
    attach::write_frame(&mut s, attach::STDIN_CLOSE, b"").expect("close");
    assert_eq!(c.wait_exit(EXIT_WAIT).exit_code, 0);
    let recs = parse_log(&c.log());
    assert_eq!(reassemble(&recs, "stdout"), b"got:abc\ngot:def\neof\n");
}

#[test]
fn two_attachers_both_get_output_and_the_exit_code() {
    let c = Container::create(
        "attach",
        Opts::sh("sleep 0.5; echo one; echo two >&2; exit 7"),
    );
    let a = c.client().attach(false, true, true).expect("attach a");
    let b = c.client().attach(false, true, false).expect("attach b");
    c.start();
    let read_all = |mut s: std::os::unix::net::UnixStream| {
        let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
        while let Ok(Some((kind, data))) = attach::read_frame(&mut s) {
            match kind {
                attach::STDOUT => out.extend(data),
                attach::STDERR => err.extend(data),
                attach::EXIT => {
                    code = Some(i32::from_be_bytes(data[..4].try_into().unwrap_or([0; 4])))
                }
                _ => panic!("unexpected frame kind {kind}"),
            }
        }
        (out, err, code)
    };
    let ta = std::thread::spawn(move || read_all(a));
    let tb = std::thread::spawn(move || read_all(b));
    assert_eq!(c.wait_exit(EXIT_WAIT).exit_code, 7);
    assert_eq!(
        ta.join().ok(),
        Some((b"one\n".to_vec(), b"two\n".to_vec(), Some(7)))
    );
    assert_eq!(
        tb.join().ok(),
        Some((b"one\n".to_vec(), Vec::new(), Some(7)))
    );
}

#[test]
fn attacher_that_never_reads_is_dropped_without_blocking_the_log() {
    let c = Container::create(
        "slow",
        Opts::sh("head -c 20000000 /dev/zero | tr '\\0' x; echo; echo end"),
    );
    let stuck = c.client().attach(false, true, true).expect("attach");
    c.start();
    c.wait_exit(EXIT_WAIT);
    let recs = parse_log(&c.log());
    assert_eq!(reassemble(&recs, "stdout").len(), 20_000_000 + 1 + 4);
    assert!(
        c.monitor_err().contains("not reading"),
        "{}",
        c.monitor_err()
    );
    drop(stuck);
}

#[test]
fn reopen_after_rename_loses_and_repeats_no_line() {
    let c = Container::create(
        "reopen",
        Opts::sh("i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); usleep 2000; done"),
    );
    c.start();
    c.wait_for_log("line 100\n", EXIT_WAIT);
    let rotated = c.log_path.with_extension("log.1");
    std::fs::rename(&c.log_path, &rotated).expect("rename");
    c.client().reopen_log().expect("reopen");
    assert_eq!(c.wait_exit(EXIT_WAIT).exit_code, 0);
    let mut all = std::fs::read(&rotated).expect("rotated");
    all.extend(c.log());
    let text = String::from_utf8_lossy(&reassemble(&parse_log(&all), "stdout")).into_owned();
    let want: String = (0..400).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text, want);
    assert!(!c.log().is_empty(), "nothing was written after the reopen");
}

#[test]
fn launcher_killed_mid_run_loses_nothing() {
    let mut o = Opts::sh(
        "i=0; while [ $i -lt 300 ]; do echo tick $i; i=$((i+1)); usleep 5000; done; exit 4",
    );
    o.via_fake_daemon = true;
    let mut c = Container::create("daemonkill", o);
    c.start();
    c.wait_for_log("tick 20\n", EXIT_WAIT);
    let fake = c.fake_daemon.take().expect("fake daemon");
    common::unsafe_kill_group(fake.id() as i32);
    let mut fake = fake;
    let _ = fake.wait();
    // The monitor's stderr now leads nowhere: make it write there.
    let mut raw = std::os::unix::net::UnixStream::connect(c.run_dir.join(files::CONTROL_SOCKET))
        .expect("connect");
    let _ = raw.write_all(&[0xff; 12]);
    drop(raw);
    let before = c.log().len();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        c.log().len() > before,
        "log stopped growing after the launcher died"
    );
    // A restarted daemon reconnects and recognises both processes by
    // (pid, start time) from its own records (here: the pid files).
    let st = c.client().status().expect("status after the launcher died");
    assert!(st.running);
    assert_eq!(st.pid, c.created_pid());
    let recorded =
        std::fs::read_to_string(c.run_dir.join(files::MONITOR_PID)).expect("monitor.pid");
    assert_eq!(
        recorded,
        format!("{} {}\n", st.monitor_pid, st.monitor_start_time)
    );
    assert!(c.monitor_alive());
    assert_eq!(c.wait_exit(EXIT_WAIT).exit_code, 4);
    let text = String::from_utf8_lossy(&reassemble(&parse_log(&c.log()), "stdout")).into_owned();
    assert_eq!(
        text,
        (0..300).map(|i| format!("tick {i}\n")).collect::<String>()
    );
}

#[test]
fn garbage_and_half_messages_close_only_that_client() {
    let c = Container::create("garbage", Opts::sh("sleep 1000"));
    let sock = c.run_dir.join(files::CONTROL_SOCKET);
    for junk in [
        &[0xffu8; 16][..],
        &[0x05, 0x0a][..],
        &[0x03, 0xff, 0xff, 0xff][..],
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
        let _ = s.write_all(junk);
    }
    let st = c.client().status().expect("status after garbage");
    assert!(st.running);
    assert_eq!(st.pid, c.created_pid());
    assert!(st.start_time > 0 && st.monitor_start_time > 0);
    assert_small(&c);
    assert!(c.monitor_err().contains("closing it") || c.monitor_err().contains("mid-message"));
}

#[test]
fn missing_bundle_is_reported_on_the_sync_fd() {
    let o = Opts::sh("true");
    let mut c = Container::prepare("nobundle", &o);
    std::fs::remove_file(c.bundle.join("config.json")).expect("rm");
    c = c.launch(o);
    let err = c.sync_error().expect("an error");
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn runtime_that_is_not_executable_is_reported() {
    let mut o = Opts::sh("true");
    o.extra = vec!["--runtime".into(), "/etc/hostname".into()];
    let c = Container::create("noexec", o);
    let err = c.sync_error().expect("an error");
    assert!(err.contains("/etc/hostname"), "{err}");
}

#[test]
fn runtime_error_text_reaches_the_daemon_and_nothing_is_left() {
    let o = Opts::sh("true");
    let c = Container::prepare("badspec", &o);
    std::fs::write(c.bundle.join("config.json"), b"{\"ociVersion\": 1}").expect("write");
    let c = c.launch(o);
    let err = c.sync_error().expect("an error");
    assert!(err.contains("runtime create failed"), "{err}");
    let out = c.runc(&["state", &c.id]);
    assert!(!out.status.success(), "container left behind");
}

#[test]
fn log_dir_that_cannot_be_created_is_reported() {
    let o = Opts::sh("true");
    let mut c = Container::prepare("nolog", &o);
    std::fs::write(c.dir.path().join("file"), b"").expect("write");
    c.log_path = c.dir.path().join("file/sub/0.log");
    let c = c.launch(o);
    let err = c.sync_error().expect("an error");
    assert!(err.contains("log file"), "{err}");
}

#[test]
fn container_starts_with_default_signal_state() {
    // Nothing the monitor blocks or ignores may leak into the container:
    // a blocked SIGPIPE once kept `yes | head` spinning forever.
    let mut o = Opts::sh("");
    o.args = ["/bin/grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]
        .map(String::from)
        .to_vec();
    let c = Container::create("sigs", o);
    c.start();
    assert_eq!(c.wait_exit(EXIT_WAIT).exit_code, 0);
    let text = String::from_utf8_lossy(&reassemble(&parse_log(&c.log()), "stdout")).into_owned();
    assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
    // What the monitor itself ignores or blocks must not be ignored in the
    // container. Other bits depend on the test runner's own environment
    // and on the runtime.
    let ign = text
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .unwrap_or("");
    let ign = u64::from_str_radix(ign.trim(), 16).unwrap_or(u64::MAX);
    for sig in [libc::SIGPIPE, libc::SIGHUP, libc::SIGCHLD] {
        assert_eq!(ign & (1 << (sig - 1)), 0, "signal {sig} ignored: {text}");
    }
}

/// Lazily unmounts a test mount, even when the test fails.
struct Umount(std::path::PathBuf);

impl Drop for Umount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn full_disk_drops_log_output_but_keeps_the_exit_status() {
    let o = Opts::sh("head -c 2000000 /dev/zero | tr '\\0' x; echo; echo bye; exit 5");
    // Declared first, dropped last: the container (and its monitor) go,
    // then the mount, then the dir it was on.
    let mnt = tempfile::Builder::new()
        .prefix("pmfull")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(mnt.path())
        .status()
        .expect("mount");
    assert!(st.success());
    let _umount = Umount(mnt.path().to_path_buf());
    let mut c = Container::prepare("diskfull", &o);
    c.log_path = mnt.path().join("0.log");
    let c = c.launch(o);
    c.start();
    let st = c.wait_exit(EXIT_WAIT);
    assert_eq!(st.exit_code, 5);
    assert!(
        c.monitor_err().contains("write failed"),
        "{}",
        c.monitor_err()
    );
    assert!(c.log().len() <= 256 * 1024);
}

/// The kB value of a `smaps` line that starts with `field`.
fn kb_field(line: &str, field: &str) -> Option<u64> {
    line.strip_prefix(field)?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn private_dirty_kb(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| kb_field(l, "Private_Dirty:"))
        .unwrap_or(u64::MAX)
}

#[test]
fn buffers_are_given_back_after_a_burst() {
    let c = Container::create(
        "idle",
        Opts::sh("head -c 20000000 /dev/zero | tr '\\0' x; echo; echo burst-done; sleep 1000"),
    );
    let idle = private_dirty_kb(c.monitor_pid);
    c.start();
    c.wait_for_log("burst-done", EXIT_WAIT);
    // The read and batch buffers (512 KiB together, all touched by the
    // burst) go back after two quiet seconds; allow for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut after = private_dirty_kb(c.monitor_pid);
    while after >= idle + 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        after = private_dirty_kb(c.monitor_pid);
    }
    assert!(
        after < idle + 200,
        "private dirty {idle} kB before, {after} kB after the burst"
    );
    assert_small(&c);
}

/// Private dirty kB of the heap mapping (`[heap]`) of `pid`.
fn heap_dirty_kb(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_heap = false;
    for line in text.lines() {
        if line.contains('-') && line.split_whitespace().count() >= 5 {
            in_heap = line.ends_with("[heap]");
        } else if in_heap && line.starts_with("Private_Dirty:") {
            return kb_field(line, "Private_Dirty:").unwrap_or(u64::MAX);
        }
    }
    0
}

#[test]
fn an_idle_monitor_gives_back_the_heap_its_requests_used() {
    let c = Container::create("trim", Opts::sh("echo up; sleep 1000"));
    c.start();
    c.wait_for_log("up", EXIT_WAIT);
    let mut client = c.client();
    for _ in 0..3 {
        let out = client.exec(vec!["/bin/true".into()], vec![], Duration::ZERO);
        assert_eq!(out.map(|r| r.exit_code).ok(), Some(0));
        assert!(client.status().is_ok_and(|s| s.running));
    }
    drop(client);
    // Creating the container and serving requests (spawning runc, reading
    // its output) leaves freed heap behind: 44 kB here, 60-70 kB under
    // pierd. An idle monitor returns it; what stays is its live state.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut heap = heap_dirty_kb(c.monitor_pid);
    while heap > 32 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        heap = heap_dirty_kb(c.monitor_pid);
    }
    assert!(heap <= 32, "{heap} kB of dirty heap in an idle monitor");
    assert_small(&c);
}

#[test]
fn size_limit_keeps_the_newest_records() {
    let mut o = Opts::sh("i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done");
    o.extra = vec!["--log-max-size".into(), "8192".into()];
    let c = Container::create("maxsize", o);
    c.start();
    assert_eq!(c.wait_exit(EXIT_WAIT).exit_code, 0);
    let raw = c.log();
    assert!(raw.len() <= 8192, "log is {} bytes", raw.len());
    let text = String::from_utf8_lossy(&reassemble(&parse_log(&raw), "stdout")).into_owned();
    assert!(text.ends_with("line 2999\n"), "{text}");
    // Whole, consecutive lines up to the end.
    let nums: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
        .collect();
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{text}");
}

#[test]
fn terminal_stdin_reaches_the_container() {
    let mut o = Opts::sh("read x; echo got:$x");
    o.terminal = true;
    o.stdin = true;
    let c = Container::create("ptystdin", o);
    let mut s = c.client().attach(true, true, false).expect("attach");
    c.start();
    attach::write_frame(&mut s, attach::STDIN, b"hello\r").expect("stdin");
    assert_eq!(c.wait_exit(EXIT_WAIT).exit_code, 0);
    let mut seen = Vec::new();
    while let Ok(Some((kind, data))) = attach::read_frame(&mut s) {
        if kind == attach::STDOUT {
            seen.extend(data);
        }
    }
    let text = String::from_utf8_lossy(&reassemble(&parse_log(&c.log()), "stdout")).into_owned();
    assert!(text.contains("got:hello\r"), "{text}");
    assert!(
        String::from_utf8_lossy(&seen).contains("got:hello"),
        "attacher saw {seen:?}"
    );
}

/// What the monitor's 1 MiB request for the container's pipes yields on this
/// node: `fs.pipe-max-size` binds a process without CAP_SYS_RESOURCE.
fn expected_pipe_size() -> usize {
    const WANT: usize = 1 << 20;
    let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(WANT);
    let cap_sys_resource = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    if cap_sys_resource {
        WANT
    } else {
        WANT.min(max)
    }
}

#[test]
fn container_output_pipes_are_grown() {
    let c = Container::create("pipesize", Opts::sh("sleep 1000"));
    let pid = c.created_pid();
    for fd in [1, 2] {
        // Opened as a second writer, so nothing the container writes is
        // taken from the monitor.
        let pipe = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/fd/{fd}"))
            .expect("container output pipe");
        let size = nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_GETPIPE_SZ).expect("size");
        assert_eq!(size as usize, expected_pipe_size(), "fd {fd}");
    }
    assert!(
        !c.monitor_err().contains("pipe"),
        "monitor complained: {}",
        c.monitor_err()
    );
}
