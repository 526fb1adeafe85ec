//! The real CRI clients, `crictl` and `critest` from kubernetes-sigs/cri-tools
//! v1.26.1 (built by `../shared/cri-tools/build.sh`), and what a test needs to
//! drive them: a crictl config of its own, commands bounded in time, commands
//! running in the background that are killed on drop, and crictl's tables
//! read by column.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long an ordinary crictl command may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Environment variables crictl would prefer to its config file.
const ENDPOINT_VARS: [&str; 3] = [
    "CRI_CONFIG_FILE",
    "CONTAINER_RUNTIME_ENDPOINT",
    "IMAGE_SERVICE_ENDPOINT",
];

/// The workspace root, from this crate's manifest dir.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent")
        .to_owned()
}

/// The folder `$var` names, else `default`.
pub(crate) fn dir_from_env(var: &str, default: impl FnOnce() -> PathBuf) -> PathBuf {
    std::env::var_os(var).map_or_else(default, PathBuf::from)
}

/// `dir/name` if that file exists, else why not and `hint` on how to fix it
/// (a test skips with that message).
pub(crate) fn existing(dir: &Path, name: &str, hint: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{name} not found at {}; {hint}", path.display()))
    }
}

/// Where the cri-tools binaries are: `$PIER_CRI_TOOLS`, else
/// `<workspace>/target/cri-tools`.
pub fn dir() -> PathBuf {
    dir_from_env("PIER_CRI_TOOLS", || workspace().join("target/cri-tools"))
}

fn locate(name: &str) -> Result<PathBuf, String> {
    existing(
        &dir(),
        name,
        "contrib/test.sh builds it from ../shared/cri-tools",
    )
}

/// The crictl binary, or why there is none (a test skips with that message).
pub fn crictl() -> Result<PathBuf, String> {
    locate("crictl")
}

/// The critest binary, or why there is none (a test skips with that message).
pub fn critest() -> Result<PathBuf, String> {
    locate("critest")
}

/// crictl pointed at one CRI socket through a config file of its own, so
/// neither `/etc/crictl.yaml` nor the `CONTAINER_RUNTIME_ENDPOINT` family of
/// environment variables has a say.
pub struct Crictl {
    binary: PathBuf,
    config: PathBuf,
    _dir: TempDir,
}

impl Crictl {
    pub fn new(binary: PathBuf, socket: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("crictl.yaml");
        let endpoint = format!("unix://{}", socket.display());
        let yaml = format!(
            "runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\ntimeout: 30\ndebug: false\n\
             pull-image-on-create: false\n"
        );
        std::fs::write(&config, yaml).expect("write crictl.yaml");
        Self {
            binary,
            config,
            _dir: dir,
        }
    }

    /// The whole command line of `crictl <args>`, binary and config included.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            self.binary.display().to_string(),
            "--config".into(),
            self.config.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }

    /// `crictl <args>`, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let argv = self.argv(args);
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        for var in ENDPOINT_VARS {
            command.env_remove(var);
        }
        command
    }

    /// Runs `crictl <args>` to its end, within [`DEADLINE`].
    pub fn run(&self, args: &[&str]) -> Output {
        run_within(self.command(args), DEADLINE)
    }

    /// Runs `crictl <args>`, which must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "crictl {} failed with {}\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `crictl <args>`, which must succeed and print one JSON document.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("crictl {} printed no JSON ({e}):\n{out}", args.join(" ")))
    }

    /// Runs `crictl <args>`, which must succeed and print a table.
    pub fn table(&self, args: &[&str]) -> Vec<Row> {
        table(&self.ok(args))
    }

    /// Starts `crictl <args>` in the background with piped stdio.
    pub fn spawn(&self, args: &[&str]) -> Background {
        Background::spawn(self.command(args), &format!("crictl {}", args.join(" ")))
    }

    /// Starts `crictl <args>` on a terminal of its own (util-linux `script`
    /// runs it on a pty whose input is script's piped stdin), `rows` by
    /// `cols` characters large.
    pub fn spawn_on_terminal(&self, args: &[&str], (rows, cols): (u16, u16)) -> Background {
        let line = self
            .argv(args)
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        let line = format!("stty rows {rows} cols {cols} && {line}");
        let mut command = Command::new("script");
        command.args(["-qfec", &line, "/dev/null"]);
        for var in ENDPOINT_VARS {
            command.env_remove(var);
        }
        Background::spawn(command, &format!("script -c 'crictl {}'", args.join(" ")))
    }
}

/// `arg` in single quotes for `sh -c`.
pub fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs `command` with no stdin until it exits; kills it and fails the test
/// when it runs longer than `within`.
pub fn run_within(command: Command, within: Duration) -> Output {
    let what = format!("{command:?}");
    let mut background = Background::spawn(command, &what);
    background.close_stdin();
    let status = background.wait(within);
    background.drain(Duration::from_secs(5));
    Output {
        status,
        stdout: background.stdout.lock().expect("stdout").clone(),
        stderr: background.stderr.lock().expect("stderr").clone(),
    }
}

/// A process running in the background whose stdout and stderr are
/// collected as they come. Dropping it kills it and everything it started.
pub struct Background {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().expect("output").extend_from_slice(&buf[..n]);
        }
    })
}

impl Background {
    pub fn spawn(mut command: Command, what: &str) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), Arc::clone(&stdout)),
            collect(child.stderr.take().expect("stderr"), Arc::clone(&stderr)),
        ];
        Self {
            what: what.to_owned(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// Writes to the process's stdin.
    pub fn write(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write to {}: {e}\n{}", self.what, self.report()));
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("stdout")).into_owned()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr")).into_owned()
    }

    fn report(&self) -> String {
        format!("stdout: {}\nstderr: {}", self.stdout(), self.stderr())
    }

    /// Waits until its stdout satisfies `done`; returns that stdout. Fails
    /// the test after `within`, or when the process exits first.
    pub fn wait_for(
        &mut self,
        what: &str,
        done: impl Fn(&str) -> bool,
        within: Duration,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let stdout = self.stdout();
            if done(&stdout) {
                return stdout;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.drain(Duration::from_secs(2));
                let stdout = self.stdout();
                if done(&stdout) {
                    return stdout;
                }
                panic!(
                    "{} exited ({status}) before {what}\n{}",
                    self.what,
                    self.report()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {within:?}\n{}",
                self.what,
                self.report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stdout contains `needle`.
    pub fn wait_for_text(&mut self, needle: &str, within: Duration) -> String {
        self.wait_for(
            &format!("{needle:?} on stdout"),
            |out| out.contains(needle),
            within,
        )
    }

    /// Waits for the process to exit; kills it and fails the test after `within`.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "{} still running after {within:?}, killed\n{}",
                    self.what,
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets the output readers reach the end of the pipes (bounded: a
    /// grandchild may hold them open).
    fn drain(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process and every process it started, and reaps it.
    pub fn kill(&mut self) {
        self.stdin = None;
        if self.child.try_wait().ok().flatten().is_none() {
            for pid in descendants(self.child.id()) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.drain(Duration::from_secs(2));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every process below `root` (children, grandchildren...), from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in parents.get(&pid).into_iter().flatten() {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

/// One row of a crictl table, by column header.
pub type Row = BTreeMap<String, String>;

/// Reads a table as crictl prints it (tabwriter columns at least three
/// spaces apart, the header first, after the screen-clearing escapes of
/// `stats`); a row lacks the trailing columns it left empty.
pub fn table(text: &str) -> Vec<Row> {
    let cells = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    // `stats` and `statsp` clear the screen first.
    let text = text.replace("\x1b[2J", "").replace("\x1b[H", "");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let header = cells(header);
    lines
        .map(|line| header.iter().cloned().zip(cells(line)).collect())
        .collect()
}

/// The row of `rows` whose `column` is `value`, failing the test without one.
pub fn row<'a>(rows: &'a [Row], column: &str, value: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.get(column).map(String::as_str) == Some(value))
        .unwrap_or_else(|| panic!("no row with {column} {value:?} in {rows:#?}"))
}

/// Whether a row of `rows` has `value` in `column`.
pub fn has_row(rows: &[Row], column: &str, value: &str) -> bool {
    rows.iter()
        .any(|r| r.get(column).map(String::as_str) == Some(value))
}

/// The `column` of `row`, failing the test without one.
pub fn cell<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {column} in {row:?}"))
}
