//! pierd's Prometheus endpoint, scraped by a real Prometheus: what the
//! series say after a pod, a container that writes a known log, one that
//! the OOM killer ends, a pull that works and one that fails, an ExecSync,
//! and a pierd restart that picks its monitor up again.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::prometheus::{Prometheus, scrape};
use pier_tests::workload::*;
use pier_tests::{ImageSpec as TestImage, Pierd, PierdOptions, Registry, TestNetwork};

const WITHIN: Duration = Duration::from_secs(30);

fn equals(want: f64) -> impl Fn(f64) -> bool {
    move |got| got == want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_what_happened() {
    let registry = Registry::start();
    let pushed = TestImage::default()
        .push(&registry, "tests/busybox:1")
        .await;
    let metrics = SocketAddr::from(([127, 0, 0, 1], pier_tests::free_port()));
    let mut pierd = Pierd::start_with(PierdOptions {
        network: Some(TestNetwork::new()),
        args: vec![
            "--insecure-registry".into(),
            registry.host(),
            "--metrics-address".into(),
            metrics.to_string(),
        ],
        ..Default::default()
    })
    .await;
    let prometheus = Prometheus::start(metrics);

    let image = try_pull(&pierd, &pushed.reference)
        .await
        .expect("PullImage");
    let missing = format!("{}/tests/missing:1", registry.host());
    let refused = try_pull(&pierd, &missing).await.expect_err("missing image");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let image_size = pierd
        .cri()
        .await
        .images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("image")
        .size;

    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("metrics", logs.path())).await;
    // One short line, one longer than the default 16 KiB line limit (cut
    // into partial records once), then quiet.
    let writer = container(
        "writer",
        &pushed.reference,
        "echo hello; head -c 20000 /dev/zero | tr '\\0' a; echo; exec sleep 1000",
    );
    let log = logs.path().join(&writer.log_path);
    let writer = run(&mut cri, &pod_id, &pod, writer).await;
    let mut hog = container(
        "hog",
        &pushed.reference,
        "x=aaaaaaaa; while true; do x=$x$x; done",
    );
    if let Some(linux) = hog.linux.as_mut() {
        linux.resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        });
    }
    let hog = run(&mut cri, &pod_id, &pod, hog).await;
    assert_eq!(
        wait_exited(&mut cri, &hog, WITHIN).await.reason,
        "OOMKilled"
    );
    let (code, out) = exec_out(&mut cri, &writer, "echo probe").await;
    assert_eq!((code, out.as_str()), (0, "probe\n"));
    wait_for_log_line(&log, "stdout", |t| t.ends_with('a'), WITHIN).await;

    // Prometheus parsed every scrape.
    prometheus
        .wait_for("up{job=\"pierd\"}", equals(1.0), WITHIN)
        .await;
    for (query, want) in [
        (
            "pier_cri_requests_total{method=\"RunPodSandbox\",code=\"OK\"}",
            1.0,
        ),
        (
            "pier_cri_requests_total{method=\"CreateContainer\",code=\"OK\"}",
            2.0,
        ),
        (
            "pier_cri_requests_total{method=\"PullImage\",code=\"OK\"}",
            1.0,
        ),
        (
            "pier_cri_requests_total{method=\"PullImage\",code=\"NotFound\"}",
            1.0,
        ),
        (
            "pier_cri_request_duration_seconds_count{method=\"ExecSync\"}",
            1.0,
        ),
        ("pier_image_pulls_total{result=\"success\"}", 1.0),
        ("pier_image_pulls_total{result=\"failure\"}", 1.0),
        ("pier_image_pull_duration_seconds_count", 2.0),
        ("pier_image_pull_bytes_total", image_size as f64),
        ("pier_exec_sync_duration_seconds_count", 1.0),
        ("pier_containers{state=\"running\"}", 1.0),
        ("pier_containers{state=\"exited\"}", 1.0),
        ("pier_pod_sandboxes{state=\"ready\"}", 1.0),
        ("pier_monitors", 1.0),
        ("pier_container_oom_total", 1.0),
        ("pier_container_log_split_lines_total", 1.0),
        ("pier_container_log_dropped_bytes_total", 0.0),
        ("pier_monitor_reattached_total", 0.0),
    ] {
        prometheus.wait_for(query, equals(want), WITHIN).await;
    }
    let written = std::fs::metadata(&log).expect("log").len() as f64;
    prometheus
        .wait_for(
            "pier_container_log_written_bytes_total",
            equals(written),
            WITHIN,
        )
        .await;
    prometheus
        .wait_for("process_open_fds", |n| n > 3.0, WITHIN)
        .await;
    prometheus
        .wait_for("process_resident_memory_bytes", |n| n > 1e6, WITHIN)
        .await;
    prometheus
        .wait_for("process_cpu_seconds_total", |n| n > 0.0, WITHIN)
        .await;

    // A restart finds the writer's monitor alive; counters start again.
    pierd.terminate();
    pierd.restart().await;
    prometheus
        .wait_for("pier_monitor_reattached_total", equals(1.0), WITHIN)
        .await;
    prometheus
        .wait_for("pier_monitors", equals(1.0), WITHIN)
        .await;
    let mut cri = pierd.cri().await.runtime;
    remove_pod(&mut cri, &pod_id).await;
    prometheus
        .wait_for("pier_containers{state=\"running\"}", equals(0.0), WITHIN)
        .await;
    prometheus
        .wait_for("pier_monitors", equals(0.0), WITHIN)
        .await;
    // Removing the containers keeps their log bytes in the node's total.
    prometheus
        .wait_for(
            "pier_container_log_written_bytes_total",
            equals(written),
            WITHIN,
        )
        .await;
}

/// The value of the one line of `body` that starts with `series`.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series:?} in:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_counts_calls_and_scrapes_run_beside_them() {
    let metrics = SocketAddr::from(([127, 0, 0, 1], pier_tests::free_port()));
    let pierd = Pierd::start_with(PierdOptions {
        args: vec!["--metrics-address".into(), metrics.to_string()],
        ..Default::default()
    })
    .await;
    let body = scrape(metrics).await.expect("scrape");
    assert!(body.ends_with("# EOF\n"), "not OpenMetrics text: {body}");
    for series in [
        "pier_cri_request_duration_seconds",
        "pier_containers{state=\"running\"} 0",
    ] {
        assert!(body.contains(series), "{series} missing from:\n{body}");
    }
    // Every CRI method is one series per code, however many calls.
    const VERSION_CALLS: &str = "pier_cri_requests_total{method=\"Version\",code=\"OK\"} ";
    let before = sample(&body, VERSION_CALLS);
    let mut cri = pierd.cri().await;
    for _ in 0..50 {
        cri.runtime
            .version(VersionRequest::default())
            .await
            .expect("Version");
    }
    let body = scrape(metrics).await.expect("scrape");
    assert_eq!(sample(&body, VERSION_CALLS), before + 50.0, "{body}");
    // Scrapes in a tight loop beside CRI calls: every call still answers.
    let scraping = tokio::spawn(async move {
        for _ in 0..200 {
            scrape(metrics).await.expect("scrape");
        }
    });
    for _ in 0..200 {
        cri.runtime
            .list_containers(ListContainersRequest::default())
            .await
            .expect("ListContainers");
    }
    scraping.await.expect("scrapes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metrics_and_tracing_settings_stop_pierd_at_startup() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let options = PierdOptions {
        args: vec!["--metrics-address".into(), address.clone()],
        ..Default::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (status, log) = Pierd::run_refused(&options, &dir.path().join("a.sock"));
    assert!(!status.success());
    assert!(
        log.contains("metrics endpoint") && log.contains(&address),
        "{log}"
    );
    for (config, names) in [
        ("[tracing]\nprotocol = \"zipkin\"\n", ["tracing", "zipkin"]),
        (
            "[tracing]\nsampling_rate = 1.5\n",
            ["tracing.sampling_rate", "1.5"],
        ),
        (
            "[tracing]\nendpoint = \"localhost:4317\"\n",
            ["tracing.endpoint", "localhost:4317"],
        ),
        ("[metrics]\naddress = \"nowhere\"\n", ["metrics", "nowhere"]),
    ] {
        let options = PierdOptions {
            config: config.into(),
            ..Default::default()
        };
        let (status, log) = Pierd::run_refused(&options, &dir.path().join("b.sock"));
        assert!(!status.success(), "{config}");
        for name in names {
            assert!(log.contains(name), "{config}: {name} not named in {log}");
        }
    }
}
