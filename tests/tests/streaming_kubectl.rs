//! kubectl (client-go's own remotecommand and portforward clients) against
//! pierd's streaming server, through a stand-in API server that answers the
//! pod lookup and forwards the upgrade to a fresh streaming URL, as the API
//! server and kubelet would.
//!
//! Runs wherever kubectl is installed (Debian's `kubernetes-client`, which
//! `contrib/setup.sh` installs where no kubectl is found, or a newer one),
//! and says that it skipped where there is none. kubectl speaks WebSocket
//! for exec from 1.29 on (`KUBECTL_REMOTE_COMMAND_WEBSOCKETS`); an older one
//! is checked over SPDY only.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::Registry;
use pier_tests::workload::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default"},
"spec":{"containers":[{"name":"c","image":"busybox"}]},"status":{"phase":"Running"}}"#;

/// Just enough discovery for kubectl to know pods and their subresources.
const API: &str = r#"{"kind":"APIVersions","versions":["v1"],
"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}"#;
const APIS: &str = r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#;
const API_V1: &str = r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[
{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},
{"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},
{"name":"pods/attach","singularName":"","namespaced":true,"kind":"PodAttachOptions","verbs":["create","get"]},
{"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#;

/// Serves the pod object, and turns each exec/attach/portforward request
/// into a CRI call whose streaming URL gets the client's upgrade request.
async fn api_server(cri: Runtime, container: String, pod: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (cri, container, pod) = (cri.clone(), container.clone(), pod.clone());
            tokio::spawn(async move { serve(client, cri, &container, &pod).await });
        }
    });
    port
}

async fn serve(mut client: TcpStream, mut cri: Runtime, container: &str, pod: &str) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let flag = |name: &str| {
        query
            .split('&')
            .any(|kv| kv == format!("{name}=true") || kv == format!("{name}=1"))
    };
    let url = if path.ends_with("/exec") {
        let cmd = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("command="))
            .map(percent_decode)
            .collect();
        let request = ExecRequest {
            container_id: container.into(),
            cmd,
            tty: flag("tty"),
            stdin: flag("stdin"),
            stdout: flag("stdout"),
            stderr: flag("stderr"),
        };
        cri.exec(request).await.expect("Exec").into_inner().url
    } else if path.ends_with("/attach") {
        let request = AttachRequest {
            container_id: container.into(),
            tty: flag("tty"),
            stdin: flag("stdin"),
            stdout: flag("stdout"),
            stderr: flag("stderr"),
        };
        cri.attach(request).await.expect("Attach").into_inner().url
    } else if path.ends_with("/portforward") {
        let request = PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: Vec::new(),
        };
        cri.port_forward(request)
            .await
            .expect("PortForward")
            .into_inner()
            .url
    } else {
        let body = match path {
            "/api" => API,
            "/apis" => APIS,
            "/api/v1" => API_V1,
            _ => POD,
        };
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = client.write_all(reply.as_bytes()).await;
        return;
    };
    let rest = url.strip_prefix("http://").unwrap_or_default();
    let (host, stream_path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut upstream = TcpStream::connect(host)
        .await
        .expect("connect streaming server");
    let stream_path = match target.split_once('?') {
        Some((_, q)) => format!("{stream_path}?{q}"),
        None => stream_path.to_owned(),
    };
    let head = head.replacen(&target, &stream_path, 1);
    upstream
        .write_all(head.as_bytes())
        .await
        .expect("forward head");
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn kubectl(port: u16, websockets: bool, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new("kubectl")
        .args([
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "-n",
            "default",
        ])
        .args(args)
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets.to_string())
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .env("KUBECONFIG", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(mut input) = child.stdin.take() {
        use std::io::Write;
        let _ = input.write_all(stdin);
    }
    child.wait_with_output().expect("kubectl")
}

/// kubectl's client minor version, or `None` where there is no kubectl.
fn kubectl_minor() -> Option<u32> {
    let out = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .env("KUBECONFIG", "/dev/null")
        .output()
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let minor = json["clientVersion"]["minor"].as_str()?;
    minor.trim_end_matches('+').parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_attach_and_port_forward() {
    let Some(minor) = kubectl_minor() else {
        eprintln!("skipping: no kubectl on PATH (Debian's kubernetes-client provides one)");
        return;
    };
    let protocols: &[bool] = if minor >= 29 {
        &[true, false]
    } else {
        &[false]
    };
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("kubectl", logs.path())).await;
    let script =
        "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www";
    let id = run(&mut cri, &pod_id, &pod, container("web", &image, script)).await;
    let port = api_server(cri.clone(), id.clone(), pod_id.clone()).await;

    for &websockets in protocols {
        let out = kubectl(
            port,
            websockets,
            &[
                "exec",
                "p",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            b"",
        );
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(stdout, "out\n", "websockets={websockets}: {stderr}");
        assert!(stderr.contains("err"), "{stderr}");
        assert_eq!(
            out.status.code(),
            Some(3),
            "websockets={websockets}: {stderr}"
        );

        let out = kubectl(
            port,
            websockets,
            &["exec", "-i", "p", "--", "cat"],
            b"piped\n",
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "piped\n",
            "websockets={websockets}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0));
        // Proof of which protocol kubectl really spoke.
        let spoken = if websockets {
            "websocket session"
        } else {
            "spdy session"
        };
        assert!(pierd.log().contains(spoken), "no {spoken} in the log");
    }

    let local = pier_tests::free_port();
    let mut forward = Command::new("kubectl")
        .args([
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "-n",
            "default",
        ])
        .args(["port-forward", "p", &format!("{local}:8080")])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .env("KUBECONFIG", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", local)).await {
            let _ = tcp.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await;
            let mut answer = String::new();
            let _ = tcp.read_to_string(&mut answer).await;
            if !answer.is_empty() {
                break answer;
            }
        }
        assert!(Instant::now() < deadline, "port-forward never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A second connection through the same SPDY session.
    let mut tcp = TcpStream::connect(("127.0.0.1", local))
        .await
        .expect("connect");
    let _ = tcp.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await;
    let mut again = String::new();
    let _ = tcp.read_to_string(&mut again).await;
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(answer.contains("hello-from-pod"), "{answer}");
    assert!(again.contains("hello-from-pod"), "{again}");
}
