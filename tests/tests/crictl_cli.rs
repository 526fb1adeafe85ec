//! The released crictl (cri-tools v1.26.1, not an imitation) against a
//! private pierd, through every command a node operator uses, each checked
//! on what it prints: version and info; pull, images, inspecti, rmi; runp,
//! pods, inspectp, stopp, rmp; create, start, ps, inspect, stop, rm; logs
//! (all, `--tail`, `-f`); exec `--sync` and `-it`; attach; port-forward;
//! stats and statsp. crictl 1.26 sends the socket path as the HTTP/2
//! `:authority`, so every command here also shows that pierd accepts it.
//!
//! Skipped, with a message saying so, when crictl has not been built.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pier_tests::cgroups::CgroupParent;
use pier_tests::cri_tools::{self, Crictl, cell, has_row, row};
use pier_tests::{ImageSpec, Pierd, PierdOptions, PushedImage, Registry, TestNetwork, free_port};
use serde_json::json;

const POD: &str = "crictl-pod";
const NAMESPACE: &str = "pier-tests";
const WAIT: Duration = Duration::from_secs(30);
const PAGE: &str = "served through crictl port-forward";

/// A private pierd with the busybox image in its registry, and what every
/// step works with: crictl, the pushed image, the pod network, the directory
/// holding the JSON configs and the pod's logs. Fields drop in order: crictl,
/// the work dir, pierd (which removes what a failed test left), the cgroup
/// parent, then the registry.
struct Operator {
    crictl: Crictl,
    image: PushedImage,
    network: TestNetwork,
    work: tempfile::TempDir,
    pod_config: PathBuf,
    pierd: Pierd,
    cgroup_parent: CgroupParent,
    _registry: Registry,
}

impl Operator {
    /// `None`, after saying so, when crictl has not been built.
    async fn setup() -> Option<Self> {
        let binary = match cri_tools::crictl() {
            Ok(binary) => binary,
            Err(why) => {
                eprintln!("skipping: {why}");
                return None;
            }
        };
        let registry = Registry::start();
        let image = ImageSpec::default()
            .push(&registry, "tests/busybox:1")
            .await;
        let network = TestNetwork::new();
        let pierd = Pierd::start_with(PierdOptions {
            network: Some(network.clone()),
            args: vec!["--insecure-registry".into(), registry.host()],
            ..Default::default()
        })
        .await;
        let work = tempfile::tempdir().expect("tempdir");
        Some(Self {
            crictl: Crictl::new(binary, pierd.socket()),
            image,
            network,
            pod_config: work.path().join("pod.json"),
            work,
            pierd,
            cgroup_parent: CgroupParent::new("crictl"),
            _registry: registry,
        })
    }
}

/// The 13 characters crictl prints of an id.
fn short(id: &str) -> &str {
    &id[..13]
}

fn is_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_takes_an_image_and_a_pod_through_every_command() {
    let started = Instant::now();
    let Some(operator) = Operator::setup().await else {
        return;
    };
    tokio::task::block_in_place(|| {
        operator.version_and_info();
        operator.pull_list_and_inspect_the_image();
        let pod = operator.run_pod(Some(&operator.cgroup_parent.0));
        let counter = operator.run_counter(&pod);
        operator.logs(&counter);
        operator.follow_logs(&pod);
        operator.exec_sync(&counter);
        operator.exec_on_a_terminal(&counter);
        operator.attach(&pod);
        operator.port_forward(&pod);
        operator.stats(&pod, &counter);
        operator.stop_and_remove(&pod, &counter);
        operator.remove_the_image();
    });
    eprintln!(
        "crictl_cli: every command checked in {:?}",
        started.elapsed()
    );
}

/// A pod run the way crictl's documentation writes pod configs, without a
/// cgroup parent, gets no pod-level CPU and memory from pierd's
/// ListPodSandboxStats (only its containers' stats), and crictl's `statsp`
/// leaves a pod with neither out of its table: the pod is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn crictl_statsp_lists_a_pod_run_without_a_cgroup_parent() {
    let Some(operator) = Operator::setup().await else {
        return;
    };
    tokio::task::block_in_place(|| {
        operator.crictl.ok(&["pull", &operator.image.reference]);
        let pod = operator.run_pod(None);
        operator.run(&pod, "sleeper", &["sleep", "100000"], false);
        let rows = operator.crictl.table(&["statsp"]);
        assert_eq!(cell(row(&rows, "POD ID", short(&pod)), "POD"), POD);
    });
}

impl Operator {
    fn version_and_info(&self) {
        let out = self.crictl.ok(&["version"]);
        let fields: HashMap<&str, &str> = out
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        assert_eq!(fields.get("RuntimeName"), Some(&"pier"), "{out}");
        assert_eq!(fields.get("RuntimeApiVersion"), Some(&"v1"), "{out}");
        assert!(
            fields.get("RuntimeVersion").is_some_and(|v| !v.is_empty()),
            "{out}"
        );

        let info = self.crictl.json(&["info"]);
        let conditions = info["status"]["conditions"]
            .as_array()
            .unwrap_or_else(|| panic!("no status.conditions: {info:#}"));
        for condition in ["RuntimeReady", "NetworkReady"] {
            assert!(
                conditions
                    .iter()
                    .any(|c| c["type"] == condition && c["status"] == true),
                "{condition} is not true: {info:#}"
            );
        }
        assert!(info["config"].is_object(), "no config in {info:#}");
    }

    fn pull_list_and_inspect_the_image(&self) {
        let image = &self.image;
        let out = self.crictl.ok(&["pull", &image.reference]);
        assert_eq!(
            out.trim(),
            format!("Image is up to date for {}", image.id),
            "crictl pull"
        );

        let rows = self.crictl.table(&["images"]);
        let listed = row(&rows, "IMAGE", image.repository());
        assert_eq!(cell(listed, "TAG"), "1", "{rows:#?}");
        assert_eq!(
            cell(listed, "IMAGE ID"),
            short(image.id.trim_start_matches("sha256:")),
            "{rows:#?}"
        );
        assert!(!cell(listed, "SIZE").is_empty(), "{rows:#?}");

        let doc = self.crictl.json(&["inspecti", &image.reference]);
        let status = &doc["status"];
        assert_eq!(status["id"], image.id.as_str(), "{doc:#}");
        assert_eq!(status["repoTags"], json!([image.reference]), "{doc:#}");
        let digest = format!("{}@{}", image.repository(), image.manifest_digest);
        assert_eq!(status["repoDigests"], json!([digest]), "{doc:#}");
    }

    /// `crictl runp`, then the pod as `pods` and `inspectp` show it.
    fn run_pod(&self, cgroup_parent: Option<&str>) -> String {
        let linux = match cgroup_parent {
            Some(parent) => json!({"cgroup_parent": parent}),
            None => json!({}),
        };
        let config = json!({
            "metadata": {"name": POD, "namespace": NAMESPACE, "uid": "uid-crictl-pod", "attempt": 0},
            "log_directory": self.work.path().join("logs").display().to_string(),
            "linux": linux,
        });
        std::fs::write(&self.pod_config, config.to_string()).expect("write pod.json");
        let pod = self
            .crictl
            .ok(&["runp", &self.pod_config.display().to_string()]);
        let pod = pod.trim().to_owned();
        assert!(is_id(&pod), "crictl runp printed {pod:?}");

        let rows = self.crictl.table(&["pods"]);
        let listed = row(&rows, "POD ID", short(&pod));
        assert_eq!(cell(listed, "STATE"), "Ready", "{rows:#?}");
        assert_eq!(cell(listed, "NAME"), POD, "{rows:#?}");
        assert_eq!(cell(listed, "NAMESPACE"), NAMESPACE, "{rows:#?}");
        assert_eq!(cell(listed, "ATTEMPT"), "0", "{rows:#?}");

        let doc = self.crictl.json(&["inspectp", &pod]);
        let status = &doc["status"];
        assert_eq!(status["id"], pod.as_str(), "{doc:#}");
        assert_eq!(status["state"], "SANDBOX_READY", "{doc:#}");
        assert_eq!(status["metadata"]["name"], POD, "{doc:#}");
        assert_eq!(status["metadata"]["namespace"], NAMESPACE, "{doc:#}");
        let ip = status["network"]["ip"].as_str().unwrap_or_default();
        let ip: Ipv4Addr = ip
            .parse()
            .unwrap_or_else(|e| panic!("status.network.ip {ip:?}: {e}\n{doc:#}"));
        assert!(
            ip.to_string()
                .starts_with(&format!("{}.", self.network.subnet_prefix)),
            "pod address {ip} is not on the test network {}.0/24",
            self.network.subnet_prefix
        );
        pod
    }

    /// Writes a container config as crictl reads it; returns its path.
    fn container_config(&self, name: &str, argv: &[&str], stdin: bool) -> String {
        let config = json!({
            "metadata": {"name": name},
            "image": {"image": self.image.reference},
            "command": argv,
            "log_path": format!("{name}.log"),
            "stdin": stdin,
            "linux": {},
        });
        let path = self.work.path().join(format!("{name}.json"));
        std::fs::write(&path, config.to_string()).expect("write container json");
        path.display().to_string()
    }

    /// `crictl create` then `crictl start`; returns the container id.
    fn create(&self, pod: &str, name: &str, argv: &[&str], stdin: bool) -> String {
        let config = self.container_config(name, argv, stdin);
        let pod_config = self.pod_config.display().to_string();
        let id = self.crictl.ok(&["create", pod, &config, &pod_config]);
        let id = id.trim().to_owned();
        assert!(is_id(&id), "crictl create printed {id:?}");
        id
    }

    fn start(&self, id: &str) {
        let out = self.crictl.ok(&["start", id]);
        assert_eq!(out.trim(), id, "crictl start");
    }

    fn run(&self, pod: &str, name: &str, argv: &[&str], stdin: bool) -> String {
        let id = self.create(pod, name, argv, stdin);
        self.start(&id);
        id
    }

    /// The container most commands act on: five numbered lines, then sleep.
    fn run_counter(&self, pod: &str) -> String {
        let argv = [
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo line-$i; done; exec sleep 100000",
        ];
        let id = self.create(pod, "counter", &argv, false);
        let rows = self.crictl.table(&["ps", "-a"]);
        assert_eq!(
            cell(row(&rows, "CONTAINER", short(&id)), "STATE"),
            "Created"
        );
        self.start(&id);

        let rows = self.crictl.table(&["ps"]);
        let listed = row(&rows, "CONTAINER", short(&id));
        assert_eq!(cell(listed, "STATE"), "Running", "{rows:#?}");
        assert_eq!(cell(listed, "NAME"), "counter", "{rows:#?}");
        assert_eq!(cell(listed, "ATTEMPT"), "0", "{rows:#?}");
        assert_eq!(cell(listed, "POD ID"), short(pod), "{rows:#?}");

        let doc = self.crictl.json(&["inspect", &id]);
        assert_eq!(doc["status"]["id"], id.as_str(), "{doc:#}");
        assert_eq!(doc["status"]["state"], "CONTAINER_RUNNING", "{doc:#}");
        assert_eq!(doc["status"]["metadata"]["name"], "counter", "{doc:#}");
        assert_eq!(doc["info"]["sandboxID"], pod, "{doc:#}");
        assert_eq!(doc["info"]["runtimeSpec"]["process"]["args"], json!(argv));
        // `crictl inspect` is how an operator finds the process on the node.
        let pid = doc["info"]["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("no info.pid: {doc:#}"));
        let deadline = Instant::now() + WAIT;
        loop {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline == b"sleep\x00100000\x00" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "info.pid {pid} runs {:?}",
                String::from_utf8_lossy(&cmdline)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        id
    }

    fn logs(&self, id: &str) {
        let all: Vec<String> = (1..=5).map(|i| format!("line-{i}")).collect();
        let deadline = Instant::now() + WAIT;
        loop {
            let out = self.crictl.ok(&["logs", id]);
            if out.lines().collect::<Vec<_>>() == all {
                break;
            }
            assert!(Instant::now() < deadline, "crictl logs printed {out:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = self.crictl.ok(&["logs", "--tail", "1", id]);
        assert_eq!(out, "line-5\n", "crictl logs --tail 1");
    }

    /// `crictl logs -f` on a container that prints a line every 200 ms.
    fn follow_logs(&self, pod: &str) {
        let script = "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done";
        let ticker = self.run(pod, "ticker", &["sh", "-c", script], false);
        let last_tick = || -> u64 {
            let out = self.crictl.ok(&["logs", "--tail", "1", &ticker]);
            out.trim()
                .strip_prefix("tick-")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let deadline = Instant::now() + WAIT;
        while last_tick() == 0 {
            assert!(Instant::now() < deadline, "ticker logged nothing");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut follow = self.crictl.spawn(&["logs", "-f", &ticker]);
        // Asked after `-f` started: the next tick comes later still.
        let next = format!("tick-{}", last_tick() + 1);
        let out = follow.wait_for(
            &format!("{next} (printed after -f started)"),
            |out| out.lines().any(|l| l == next),
            WAIT,
        );
        assert!(out.starts_with("tick-1\ntick-2\n"), "logs -f: {out:?}");
        follow.kill();
    }

    fn exec_sync(&self, id: &str) {
        let out = self.crictl.ok(&[
            "exec",
            "--sync",
            id,
            "sh",
            "-c",
            "echo exec-$((6*7)); hostname",
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.first(),
            Some(&"exec-42"),
            "crictl exec --sync: {out:?}"
        );

        let failed = self
            .crictl
            .run(&["exec", "--sync", id, "sh", "-c", "exit 3"]);
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(!failed.status.success(), "exit 3 reported as success");
        assert!(
            stderr.contains("exited with 3"),
            "crictl exec --sync: {stderr}"
        );
    }

    /// `crictl exec -it`: a shell on a terminal, typed into: it gets a pty
    /// of the container's own, crictl's window size, job control (Ctrl-C
    /// interrupts what runs in the foreground, not the session), and its
    /// exit code comes back. pierd's default starts it natively.
    fn exec_on_a_terminal(&self, id: &str) {
        let mut shell = self
            .crictl
            .spawn_on_terminal(&["exec", "-it", id, "sh"], (41, 97));
        shell.wait_for_text("# ", WAIT);
        shell.write(b"echo $((6*7))\n");
        shell.wait_for(
            "42 on a line of its own",
            |out| out.lines().any(|l| l.trim() == "42"),
            WAIT,
        );
        shell.write(b"tty; ls /dev/pts\n");
        shell.wait_for(
            "a pty from tty",
            |out| out.lines().any(|l| l.trim().starts_with("/dev/pts/")),
            WAIT,
        );
        let out = shell.stdout();
        let tty = out
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("/dev/pts/"))
            .unwrap_or_default()
            .to_owned();
        shell.wait_for(
            "the pty in the container's own /dev/pts",
            |out| out.lines().any(|l| l.split_whitespace().any(|n| n == tty)),
            WAIT,
        );
        shell.write(b"stty size\n");
        shell.wait_for(
            "crictl's window size",
            |out| out.lines().any(|l| l.trim() == "41 97"),
            WAIT,
        );
        // A path, so that busybox runs it as a process of its own.
        shell.write(b"/bin/sleep 1000\n");
        // Typed once the shell runs the sleep: Ctrl-C goes to the
        // terminal's foreground process group.
        std::thread::sleep(Duration::from_millis(500));
        shell.write(b"\x03");
        std::thread::sleep(Duration::from_millis(300));
        shell.write(b"echo \"interrupted: $?\"\n");
        shell.wait_for_text("interrupted: 130", WAIT);
        shell.write(b"exit 3\n");
        let status = shell.wait(WAIT);
        // crictl reports the code (on its terminal) and fails.
        assert!(
            !status.success(),
            "crictl exec -it of exit 3 ended with {status}"
        );
        let out = shell.stdout();
        assert!(
            out.contains("command terminated with exit code 3"),
            "crictl exec -it of exit 3: {out}"
        );
        let log = std::fs::read_to_string(
            self.pierd
                .runroot()
                .join("containers")
                .join(id)
                .join("monitor.log"),
        )
        .unwrap_or_default();
        assert!(
            !log.contains("exec runs through the runtime"),
            "crictl exec -it did not take the native path: {log}"
        );
    }

    /// `crictl attach -i` to a container that echoes its stdin.
    fn attach(&self, pod: &str) {
        let script = "while read line; do echo \"echoed: $line\"; done";
        let echoer = self.run(pod, "echoer", &["sh", "-c", script], true);
        let mut attach = self.crictl.spawn(&["attach", "-i", &echoer]);
        attach.write(b"hello through attach\n");
        attach.wait_for_text("echoed: hello through attach\n", WAIT);
        attach.write(b"and a second line\n");
        attach.wait_for_text("echoed: and a second line\n", WAIT);
        attach.kill();
        // Leaving the attach session leaves the container running.
        let rows = self.crictl.table(&["ps"]);
        assert_eq!(
            cell(row(&rows, "CONTAINER", short(&echoer)), "STATE"),
            "Running"
        );
    }

    /// `crictl port-forward` to busybox httpd in the pod.
    fn port_forward(&self, pod: &str) {
        let script = format!(
            "mkdir -p /www && echo '{PAGE}' > /www/index.html && exec httpd -f -p 8080 -h /www"
        );
        self.run(pod, "web", &["sh", "-c", &script], false);
        let port = free_port();
        let mut forward = self
            .crictl
            .spawn(&["port-forward", pod, &format!("{port}:8080")]);
        forward.wait_for_text(&format!("Forwarding from 127.0.0.1:{port} -> 8080"), WAIT);
        // httpd may still be starting: ask again until it answers.
        let deadline = Instant::now() + WAIT;
        let reply = loop {
            let reply = http_get(port);
            match &reply {
                Ok(text) if text.contains(PAGE) => break text.clone(),
                _ if Instant::now() > deadline => panic!(
                    "no page through port-forward: {reply:?}\nport-forward stdout: {}\nstderr: {}",
                    forward.stdout(),
                    forward.stderr()
                ),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        forward.wait_for_text(&format!("Handling connection for {port}"), WAIT);
        forward.kill();
    }

    fn stats(&self, pod: &str, counter: &str) {
        let rows = self.crictl.table(&["stats"]);
        let listed = row(&rows, "CONTAINER", short(counter));
        assert_eq!(cell(listed, "NAME"), "counter", "{rows:#?}");
        assert!(cell(listed, "CPU %").parse::<f64>().is_ok(), "{rows:#?}");
        assert!(cell(listed, "MEM").ends_with('B'), "{rows:#?}");

        let rows = self.crictl.table(&["statsp"]);
        let listed = row(&rows, "POD ID", short(pod));
        assert_eq!(cell(listed, "POD"), POD, "{rows:#?}");
        assert!(cell(listed, "CPU %").parse::<f64>().is_ok(), "{rows:#?}");
        assert!(cell(listed, "MEM").ends_with('B'), "{rows:#?}");
    }

    /// stop, rm, stopp, rmp, and what `ps` and `pods` show after each.
    fn stop_and_remove(&self, pod: &str, counter: &str) {
        let out = self.crictl.ok(&["stop", counter]);
        assert_eq!(out.trim(), counter, "crictl stop");
        let rows = self.crictl.table(&["ps"]);
        assert!(!has_row(&rows, "CONTAINER", short(counter)), "{rows:#?}");
        let rows = self.crictl.table(&["ps", "-a"]);
        assert_eq!(
            cell(row(&rows, "CONTAINER", short(counter)), "STATE"),
            "Exited"
        );
        let doc = self.crictl.json(&["inspect", counter]);
        assert_eq!(doc["status"]["state"], "CONTAINER_EXITED", "{doc:#}");
        assert_eq!(
            doc["status"]["exitCode"], 137,
            "sleep dies of SIGKILL: {doc:#}"
        );

        let out = self.crictl.ok(&["rm", counter]);
        assert_eq!(out.trim(), counter, "crictl rm");
        let rows = self.crictl.table(&["ps", "-a"]);
        assert!(!has_row(&rows, "CONTAINER", short(counter)), "{rows:#?}");

        let out = self.crictl.ok(&["stopp", pod]);
        assert_eq!(out.trim(), format!("Stopped sandbox {pod}"), "crictl stopp");
        let rows = self.crictl.table(&["pods"]);
        assert_eq!(cell(row(&rows, "POD ID", short(pod)), "STATE"), "NotReady");
        let doc = self.crictl.json(&["inspectp", pod]);
        assert_eq!(doc["status"]["state"], "SANDBOX_NOTREADY", "{doc:#}");
        let rows = self.crictl.table(&["ps", "-a"]);
        assert_eq!(rows.len(), 3, "ticker, echoer, web: {rows:#?}");
        assert!(
            rows.iter().all(|r| cell(r, "STATE") == "Exited"),
            "{rows:#?}"
        );

        let out = self.crictl.ok(&["rmp", pod]);
        assert_eq!(out.trim(), format!("Removed sandbox {pod}"), "crictl rmp");
        let rows = self.crictl.table(&["pods"]);
        assert!(rows.is_empty(), "pods after rmp: {rows:#?}");
        let rows = self.crictl.table(&["ps", "-a"]);
        assert!(rows.is_empty(), "containers after rmp: {rows:#?}");
    }

    fn remove_the_image(&self) {
        let image = &self.image;
        let out = self.crictl.ok(&["rmi", &image.reference]);
        assert_eq!(
            out.trim(),
            format!("Deleted: {}", image.reference),
            "crictl rmi"
        );
        let rows = self.crictl.table(&["images"]);
        assert!(!has_row(&rows, "IMAGE", image.repository()), "{rows:#?}");
        let id = short(image.id.trim_start_matches("sha256:"));
        assert!(!has_row(&rows, "IMAGE ID", id), "{rows:#?}");
    }
}

/// `GET /` on 127.0.0.1:`port`, the whole reply.
fn http_get(port: u16) -> std::io::Result<String> {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}
