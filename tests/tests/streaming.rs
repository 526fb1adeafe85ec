//! Exec, Attach and PortForward through pierd's streaming server, against
//! real containers, over SPDY/3.1 (Go's spdystream, the library kubectl's
//! SPDY descends from) and WebSocket (tungstenite). These follow cri-tools'
//! "Streaming" specs, plus the server's own rules: single-use, expiring
//! tokens, protocol negotiation, limits.

use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::streams::{http_request, read_channels, send, spdy, websocket};
use pier_tests::workload::*;
use pier_tests::{Registry, free_port};
use tonic::Code;

async fn exec_url(cri: &mut Runtime, request: ExecRequest) -> String {
    cri.exec(request).await.expect("Exec").into_inner().url
}

fn exec_request(id: &str, script: &str, tty: bool, stdin: bool) -> ExecRequest {
    ExecRequest {
        container_id: id.into(),
        cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

/// A pod with one container that sleeps; returns (pod id, container id).
async fn sleeper(
    cri: &mut Runtime,
    image: &str,
    name: &str,
    logs: &std::path::Path,
) -> (String, String) {
    let (pod_id, pod) = running_pod(cri, pod(name, logs)).await;
    let id = run(cri, &pod_id, &pod, container(name, image, "sleep 100000")).await;
    (pod_id, id)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_without_tty_separates_output_and_reports_the_exit_code() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (_, id) = sleeper(&mut cri, &image, "exec", logs.path()).await;
    let script = "echo out; echo err >&2; exit 3";

    // SPDY, v4: the exit code travels in the status.
    let url = exec_url(&mut cri, exec_request(&id, script, false, false)).await;
    assert!(url.contains("/exec/"), "{url}");
    let out = spdy(&["exec", &url, "-stdout", "-stderr"], b"").await;
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("protocol: v4.channel.k8s.io"));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // SPDY, v2: no JSON status, the failure is text.
    let url = exec_url(&mut cri, exec_request(&id, script, false, false)).await;
    let out = spdy(
        &[
            "exec",
            &url,
            "-stdout",
            "-stderr",
            "-protocols",
            "v2.channel.k8s.io",
        ],
        b"",
    )
    .await;
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).contains("non-zero exit code"),
        "{}",
        text(&out.stderr)
    );

    // A zero exit is Success.
    let url = exec_url(&mut cri, exec_request(&id, "echo fine", false, false)).await;
    let out = spdy(&["exec", &url, "-stdout", "-stderr"], b"").await;
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("fine\n", Some(0))
    );

    // WebSocket v5 (what kubectl offers first), and v4.
    for protocol in ["v5.channel.k8s.io", "v4.channel.k8s.io"] {
        let url = exec_url(&mut cri, exec_request(&id, script, false, false)).await;
        let (mut ws, chosen) = websocket(&url, &format!("{protocol}, v4.channel.k8s.io")).await;
        assert_eq!(chosen.as_deref(), Some(protocol));
        let got = read_channels(&mut ws, |_| false).await;
        assert!(got.closed_cleanly, "no close frame");
        assert_eq!(got.text(1), "out\n");
        assert_eq!(got.text(2), "err\n");
        let status = got.status();
        assert_eq!(status["status"], "Failure", "{status}");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_tty_and_stdin_echoes_through_a_shell_and_resizes() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (_, id) = sleeper(&mut cri, &image, "tty", logs.path()).await;
    let script = "read x; stty size; echo got:$x";

    let url = exec_url(&mut cri, exec_request(&id, script, true, true)).await;
    let out = spdy(
        &[
            "exec", &url, "-stdin", "-stdout", "-tty", "-resize", "100x40",
        ],
        b"hello\n",
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("40 100"),
        "stty size not resized: {stdout:?}"
    );
    assert!(stdout.contains("got:hello"), "{stdout:?}");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let url = exec_url(&mut cri, exec_request(&id, script, true, true)).await;
    let (mut ws, _) = websocket(&url, "v5.channel.k8s.io").await;
    send(&mut ws, 4, br#"{"Width":120,"Height":33}"#).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&mut ws, 0, b"again\n").await;
    let got = read_channels(&mut ws, |_| false).await;
    let stdout = got.text(1);
    assert!(
        stdout.contains("33 120"),
        "stty size not resized: {stdout:?}"
    );
    assert!(stdout.contains("got:again"), "{stdout:?}");
    assert_eq!(got.status()["status"], "Success");

    // v5 closes stdin with [255, 0]: `cat` sees EOF and the exec ends.
    let mut request = exec_request(&id, "cat; echo done", false, true);
    request.stderr = true;
    let url = exec_url(&mut cri, request).await;
    let (mut ws, _) = websocket(&url, "v5.channel.k8s.io").await;
    send(&mut ws, 0, b"piped\n").await;
    send(&mut ws, 255, &[0]).await;
    let got = read_channels(&mut ws, |_| false).await;
    assert_eq!(got.text(1), "piped\ndone\n");
    assert_eq!(got.status()["status"], "Success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_reads_output_and_writes_stdin_once() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("attach", logs.path())).await;
    let script = "while read line; do echo \"got $line\"; done; echo bye";
    let mut attached = Vec::new();
    for name in ["spdy", "ws"] {
        let mut config = container(name, &image, script);
        config.stdin = true;
        config.stdin_once = true;
        attached.push(run(&mut cri, &pod_id, &pod, config).await);
    }
    let attach = |id: &str| AttachRequest {
        container_id: id.into(),
        stdin: true,
        tty: false,
        stdout: true,
        stderr: true,
    };

    // SPDY: the client's stdin EOF closes the container's stdin (stdinOnce),
    // the container exits, and the attach ends with it.
    let url = cri
        .attach(attach(&attached[0]))
        .await
        .expect("Attach")
        .into_inner()
        .url;
    assert!(url.contains("/attach/"), "{url}");
    let out = spdy(&["exec", &url, "-stdin", "-stdout", "-stderr"], b"hi\n").await;
    assert_eq!(text(&out.stdout), "got hi\nbye\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    let status = wait_exited(&mut cri, &attached[0], Duration::from_secs(10)).await;
    assert_eq!(status.exit_code, 0);

    // WebSocket: output flows while stdin stays open; closing stdin (v5)
    // ends the container.
    let url = cri
        .attach(attach(&attached[1]))
        .await
        .expect("Attach")
        .into_inner()
        .url;
    let (mut ws, _) = websocket(&url, "v5.channel.k8s.io").await;
    send(&mut ws, 0, b"one\n").await;
    let got = read_channels(&mut ws, |c| c.text(1).contains("got one")).await;
    assert!(got.text(1).contains("got one"));
    send(&mut ws, 0, b"two\n").await;
    send(&mut ws, 255, &[0]).await;
    let got = read_channels(&mut ws, |_| false).await;
    assert_eq!(got.text(1), "got two\nbye\n");
    assert_eq!(got.status()["status"], "Success");
    wait_exited(&mut cri, &attached[1], Duration::from_secs(10)).await;
}

/// A container serving `hello-from-pod` over HTTP on `port`, and the pod.
async fn web_server(
    cri: &mut Runtime,
    image: &str,
    mut pod_config: PodSandboxConfig,
    port: u16,
) -> (String, String) {
    pod_config.port_mappings = Vec::new();
    let (pod_id, pod) = running_pod(cri, pod_config).await;
    let script = format!(
        "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p {port} -h /www"
    );
    let id = run(cri, &pod_id, &pod, container("web", image, &script)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let probe = format!("wget -q -O - http://127.0.0.1:{port}/index.html");
    while exec_out(cri, &id, &probe).await.1.trim() != "hello-from-pod" {
        assert!(Instant::now() < deadline, "httpd never answered in the pod");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (pod_id, id)
}

async fn forward_url(cri: &mut Runtime, pod_id: &str, port: u16) -> String {
    cri.port_forward(PortForwardRequest {
        pod_sandbox_id: pod_id.into(),
        port: vec![i32::from(port)],
    })
    .await
    .expect("PortForward")
    .into_inner()
    .url
}

const GET: &[u8] = b"GET /index.html HTTP/1.0\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portforward_reaches_a_server_in_the_pod_network_namespace() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, _) = web_server(&mut cri, &image, pod("pf", logs.path()), 8080).await;

    // SPDY: request out, answer back, clean close both ways.
    let url = forward_url(&mut cri, &pod_id, 8080).await;
    assert!(url.contains("/portforward/"), "{url}");
    let out = spdy(&["portforward", &url, "8080"], GET).await;
    assert!(
        text(&out.stdout).contains("hello-from-pod"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Nothing listens on 8081: the error stream says so.
    let url = forward_url(&mut cri, &pod_id, 8081).await;
    let out = spdy(&["portforward", &url, "8081"], b"").await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("8081") && stderr.contains("refused"),
        "{stderr}"
    );

    // WebSocket: the port, little endian, heads each channel.
    let url = forward_url(&mut cri, &pod_id, 8080).await;
    let (mut ws, chosen) = websocket(&format!("{url}?port=8080"), "v4.channel.k8s.io").await;
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    let first = read_channels(&mut ws, |c| c.messages.len() >= 2).await;
    assert_eq!(
        first.messages,
        vec![
            (0, 8080u16.to_le_bytes().to_vec()),
            (1, 8080u16.to_le_bytes().to_vec())
        ]
    );
    send(&mut ws, 0, GET).await;
    let got = read_channels(&mut ws, |_| false).await;
    assert!(got.text(0).contains("hello-from-pod"), "{:?}", got.text(0));
    assert!(got.closed_cleanly);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portforward_in_a_host_network_pod_uses_the_host() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let mut config = pod("hostpf", logs.path());
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let port = free_port();
    let (pod_id, _) = web_server(&mut cri, &image, config, port).await;
    let url = forward_url(&mut cri, &pod_id, port).await;
    let out = spdy(&["portforward", &url, &port.to_string()], GET).await;
    assert!(
        text(&out.stdout).contains("hello-from-pod"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_work_once_and_bad_requests_are_refused() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (sleeper_pod, id) = sleeper(&mut cri, &image, "tokens", logs.path()).await;
    let spdy_headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ];

    let url = exec_url(&mut cri, exec_request(&id, "echo once", false, false)).await;
    let out = spdy(&["exec", &url, "-stdout", "-stderr"], b"").await;
    assert_eq!(text(&out.stdout), "once\n");
    let (code, _) = http_request(&url, &spdy_headers).await;
    assert_eq!(code, 404, "a token works once");
    let base = url
        .rsplit_once("/exec/")
        .map(|(b, _)| b)
        .unwrap_or_default();
    let (code, _) = http_request(
        &format!("{base}/exec/00112233445566778899aabbccddeeff"),
        &spdy_headers,
    )
    .await;
    assert_eq!(code, 404, "unknown token");
    let url = exec_url(&mut cri, exec_request(&id, "true", false, false)).await;
    let (code, _) = http_request(&url.replace("/exec/", "/attach/"), &spdy_headers).await;
    assert_eq!(code, 404, "token of another kind");

    // Protocol negotiation: nothing in common is 403 naming what is spoken.
    let url = exec_url(&mut cri, exec_request(&id, "true", false, false)).await;
    let (code, response) = http_request(
        &url,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v9.nope"),
        ],
    )
    .await;
    assert_eq!(code, 403, "{response}");
    assert!(
        response
            .to_lowercase()
            .contains("x-accepted-stream-protocol-versions: v5.channel.k8s.io"),
        "{response}"
    );
    let url = exec_url(&mut cri, exec_request(&id, "true", false, false)).await;
    let (code, _) = http_request(&url, &[]).await;
    assert_eq!(code, 400, "no upgrade asked for");
    let url = exec_url(&mut cri, exec_request(&id, "true", false, false)).await;
    let (code, response) = http_request(
        &url,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", "bogus.k8s.io"),
        ],
    )
    .await;
    assert_eq!(code, 403, "{response}");
    let url = forward_url(&mut cri, &sleeper_pod, 80).await;
    let (code, response) = http_request(
        &url,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await;
    assert_eq!(
        code, 400,
        "websocket port forward without ?port=: {response}"
    );

    // The RPCs check their requests.
    let refused =
        |r: Result<tonic::Response<ExecResponse>, tonic::Status>| r.err().map(|s| s.code());
    let mut bad = exec_request("nope", "true", false, false);
    assert_eq!(refused(cri.exec(bad.clone()).await), Some(Code::NotFound));
    bad.container_id = id.clone();
    bad.cmd.clear();
    assert_eq!(refused(cri.exec(bad).await), Some(Code::InvalidArgument));
    let mut bad = exec_request(&id, "true", false, false);
    (bad.stdout, bad.stderr) = (false, false);
    assert_eq!(refused(cri.exec(bad).await), Some(Code::InvalidArgument));
    let mut bad = exec_request(&id, "true", true, false);
    bad.stderr = true;
    assert_eq!(refused(cri.exec(bad).await), Some(Code::InvalidArgument));
    let attach = cri
        .attach(AttachRequest {
            container_id: "nope".into(),
            stdout: true,
            ..Default::default()
        })
        .await;
    assert_eq!(attach.err().map(|s| s.code()), Some(Code::NotFound));
    let forward = cri
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "nope".into(),
            port: vec![80],
        })
        .await;
    assert_eq!(forward.err().map(|s| s.code()), Some(Code::NotFound));
    // A created container is not running yet.
    let (pod_id, pod) = running_pod(&mut cri, pod("created", logs.path())).await;
    let created = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id,
            config: Some(container("idle", &image, "sleep 1")),
            sandbox_config: Some(pod),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    let not_running = cri.exec(exec_request(&created, "true", false, false)).await;
    assert_eq!(refused(not_running), Some(Code::FailedPrecondition));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_sessions_are_capped_and_a_departed_client_kills_its_exec() {
    let registry = Registry::start();
    let config = "[streaming]\ntoken_ttl_seconds = 1\nmax_sessions = 1\n".to_string();
    let (pierd, image) = setup_with(&registry, config).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (_, id) = sleeper(&mut cri, &image, "limits", logs.path()).await;

    let url = exec_url(&mut cri, exec_request(&id, "true", false, false)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = spdy(&["exec", &url, "-stdout", "-stderr"], b"").await;
    assert_eq!(
        out.status.code(),
        Some(104),
        "an expired token is 404: {}",
        text(&out.stderr)
    );

    // One session open: the next connection is refused, not queued.
    let url = exec_url(&mut cri, exec_request(&id, "sleep 777", false, false)).await;
    let (mut ws, _) = websocket(&url, "v4.channel.k8s.io").await;
    let hello = read_channels(&mut ws, |c| !c.messages.is_empty()).await;
    assert_eq!(
        hello.messages.first(),
        Some(&(1, Vec::new())),
        "ready message on stdout"
    );
    let second = exec_url(&mut cri, exec_request(&id, "true", false, false)).await;
    let out = spdy(&["exec", &second, "-stdout", "-stderr"], b"").await;
    assert_eq!(
        out.status.code(),
        Some(105),
        "503 expected: {}",
        text(&out.stderr)
    );

    let running = "ps | grep -c '[s]leep 777$'";
    assert_eq!(exec_out(&mut cri, &id, running).await.1.trim(), "1");
    // The client goes away without a word: its process is killed.
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    while exec_out(&mut cri, &id, running).await.1.trim() != "0" {
        assert!(Instant::now() < deadline, "exec outlived its client");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And its session slot is free again (the monitor may take a moment
    // to notice; each refused try spends its token, so ask for a new one).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = exec_url(&mut cri, exec_request(&id, "echo free", false, false)).await;
        let out = spdy(&["exec", &url, "-stdout", "-stderr"], b"").await;
        if out.status.code() == Some(0) {
            assert_eq!(text(&out.stdout), "free\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session slot never freed: {}",
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
