//! The CRI validation suite itself: the released critest v1.26.1 against a
//! private pierd that pulls through a local mirror of every image critest
//! uses. Only `public image with digest should be pulled and removed` is
//! skipped: its upstream digest cannot be rebuilt offline. containerd 1.6
//! passes the same 79 specs on the same mirror.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pier_tests::cri_tools;
use pier_tests::critest_mirror::CritestMirror;
use pier_tests::{Pierd, PierdOptions, TestNetwork};

/// critest v1.26.1 runs 79 of its 85 specs on Linux without AppArmor and
/// SELinux once the digest spec is skipped.
const EXPECTED_SPECS: u32 = 79;
const DEADLINE: Duration = Duration::from_secs(20 * 60);

/// "SUCCESS! -- 79 Passed | 0 Failed | 0 Pending | 6 Skipped" → (79, 0).
fn tally(output: &str) -> Option<(u32, u32)> {
    let line = output.lines().rev().find(|l| l.contains(" Passed | "))?;
    let count = |word: &str| -> Option<u32> {
        let before = line.split(word).next()?;
        before.split_whitespace().last()?.parse().ok()
    };
    Some((count(" Passed")?, count(" Failed")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_critest_passes_every_spec_it_can_run_offline() {
    let critest = match cri_tools::critest() {
        Ok(path) => path,
        Err(why) => {
            eprintln!("skipping critest: {why}");
            return;
        }
    };
    let mirror = match CritestMirror::start() {
        Ok(mirror) => mirror,
        Err(why) => {
            eprintln!("skipping critest: {why}");
            return;
        }
    };
    let pierd = Pierd::start_with(PierdOptions {
        network: Some(TestNetwork::new()),
        args: mirror.pierd_args(),
        ..Default::default()
    })
    .await;
    let endpoint = format!("unix://{}", pierd.socket().display());
    let report = tempfile::NamedTempFile::new().expect("report file");
    // One open file description for both streams: two `reopen`s would each
    // keep their own offset, and stderr would overwrite stdout mid-character.
    let stdout = report.reopen().expect("reopen report");
    let stderr = stdout.try_clone().expect("share report");
    let mut child = Command::new(&critest)
        .arg(format!("--runtime-endpoint={endpoint}"))
        .arg(format!("--image-endpoint={endpoint}"))
        .arg("--ginkgo.skip=public image with digest")
        .arg("--ginkgo.no-color")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start critest");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait critest") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("critest still running after {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // critest echoes what containers wrote when a spec fails, and that need
    // not be UTF-8: read bytes so such a failure is shown, not hidden.
    let mut raw = Vec::new();
    report
        .reopen()
        .expect("reopen report")
        .read_to_end(&mut raw)
        .expect("read report");
    let output = String::from_utf8_lossy(&raw);
    let summary = tally(&output);
    eprintln!(
        "critest {}: {:?} (passed, failed) in {:.0?}",
        critest.display(),
        summary,
        started.elapsed()
    );
    assert!(
        status.success(),
        "critest failed ({status}):\n{output}\n---- pierd log ----\n{}",
        pierd.log()
    );
    let (passed, failed) =
        summary.unwrap_or_else(|| panic!("no critest summary in its output:\n{output}"));
    assert_eq!(failed, 0, "{output}");
    assert!(
        passed >= EXPECTED_SPECS,
        "critest ran only {passed} specs, {EXPECTED_SPECS} expected:\n{output}"
    );
    drop(pierd);
    drop(mirror);
}

#[test]
fn the_summary_line_is_read() {
    let out = "Ran 79 of 85 Specs in 67.074 seconds\n\
               SUCCESS! -- 79 Passed | 0 Failed | 0 Pending | 6 Skipped\nPASS\n";
    assert_eq!(tally(out), Some((79, 0)));
    let out = "FAIL! -- 70 Passed | 9 Failed | 0 Pending | 6 Skipped\n";
    assert_eq!(tally(out), Some((70, 9)));
    assert_eq!(tally("nothing"), None);
}
