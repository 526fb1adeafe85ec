//! Exec cost, measured rather than guessed (ignored by default; run with
//! `cargo test --release -p pier-monitor --test exec_latency -- --ignored --nocapture`).
//! Compares an exec served by the running monitor with the same `runc exec`
//! run directly, and with the bare cost of spawning a short-lived monitor
//! process, which a per-exec monitor mode would add to every probe.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Container, Opts, RUNC};

const N: usize = 30;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

#[test]
#[ignore]
fn exec_latency_report() {
    let c = Container::create("execlat", Opts::sh("sleep 1000"));
    c.start();
    let mut cl = c.client();
    let argv = vec!["/bin/true".to_string()];
    let direct: Vec<Duration> = (0..N)
        .map(|_| {
            let t = Instant::now();
            let st = Command::new(RUNC)
                .arg("--root")
                .arg(&c.root)
                .args(["exec", &c.id, "/bin/true"])
                .stdout(Stdio::null())
                .status()
                .expect("runc exec");
            assert!(st.success());
            t.elapsed()
        })
        .collect();
    let cpu0 = cpu_ticks(c.monitor_pid);
    let via_monitor: Vec<Duration> = (0..N)
        .map(|_| {
            let t = Instant::now();
            let r = cl
                .exec(argv.clone(), vec![], Duration::from_secs(10))
                .expect("exec");
            assert_eq!(r.exit_code, 0);
            t.elapsed()
        })
        .collect();
    let monitor_ticks = cpu_ticks(c.monitor_pid) - cpu0;
    let direct_after: Vec<Duration> = (0..N)
        .map(|_| {
            let t = Instant::now();
            let st = Command::new(RUNC)
                .arg("--root")
                .arg(&c.root)
                .args(["exec", &c.id, "/bin/true"])
                .stdout(Stdio::null())
                .status()
                .expect("runc exec");
            assert!(st.success());
            t.elapsed()
        })
        .collect();
    let spawn = |bin: &str| -> Vec<Duration> {
        (0..N)
            .map(|_| {
                let t = Instant::now();
                let _ = Command::new(bin)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .status();
                t.elapsed()
            })
            .collect()
    };
    let spawn_monitor = spawn(env!("CARGO_BIN_EXE_pier-monitor"));
    let spawn_conmon = spawn("/usr/bin/conmon");
    println!("exec of /bin/true, median of {N}:");
    println!(
        "  through the running monitor:        {:?}",
        median(via_monitor)
    );
    println!("  runc exec run directly (before):    {:?}", median(direct));
    println!(
        "  runc exec run directly (after):     {:?}",
        median(direct_after)
    );
    println!(
        "  spawn+exit of pier-monitor alone:   {:?}",
        median(spawn_monitor)
    );
    println!(
        "  spawn+exit of conmon alone:         {:?}",
        median(spawn_conmon)
    );
    println!(
        "  monitor CPU per exec: {} ms",
        monitor_ticks * 10 / N as u64
    );
    println!("  monitor RSS after: {} kB", c.monitor_rss_kb());
}

/// User plus system CPU of `pid` and of its reaped children, in ticks.
fn cpu_ticks_with_children(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    (11..=14)
        .filter_map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// A streaming tty exec (kubectl exec -it) of /bin/true, through runc exec
/// and natively (and, for scale, a native one without a tty), in
/// alternating blocks of N so that load drifts hit all: time to the EXIT
/// frame, and the CPU of the monitor and everything it started (runc exec,
/// runc init, the process) per exec.
#[test]
#[ignore]
fn tty_exec_latency_report() {
    let c = Container::create(
        "ttylat",
        Opts {
            native_exec: true,
            ..Opts::sh("sleep 1000")
        },
    );
    c.start();
    let block = |via_runtime: bool, tty: bool| -> (Duration, u64) {
        let cpu0 = cpu_ticks_with_children(c.monitor_pid);
        let times = (0..N)
            .map(|_| {
                let t = Instant::now();
                let (_, mut s) = c
                    .client()
                    .exec_stream_request(pier_proto::monitor::Exec {
                        argv: vec!["/bin/true".into()],
                        stream: true,
                        tty,
                        via_runtime,
                        ..Default::default()
                    })
                    .expect("tty exec");
                let mut code = None;
                while let Ok(Some((kind, data))) = pier_proto::attach::read_frame(&mut s) {
                    if kind == pier_proto::attach::EXIT {
                        code = data
                            .get(..4)
                            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    }
                }
                assert_eq!(code, Some(0));
                t.elapsed()
            })
            .collect();
        let ticks = cpu_ticks_with_children(c.monitor_pid) - cpu0;
        (median(times), ticks)
    };
    println!("streaming exec of /bin/true, median of {N} per block, CPU per exec:");
    for round in 1..=2 {
        let paths = [
            ("tty, runc exec", true, true),
            ("tty, native   ", false, true),
            ("no tty, native", false, false),
        ];
        for (name, via_runtime, tty) in paths {
            let (m, ticks) = block(via_runtime, tty);
            // 100 ticks a second: 10 ms each.
            let cpu_ms = ticks as f64 * 10.0 / N as f64;
            println!("  round {round} {name}: {m:?}, {cpu_ms:.1} ms CPU");
        }
    }
    assert!(
        !c.monitor_err().contains("exec runs through the runtime"),
        "{}",
        c.monitor_err()
    );
}
