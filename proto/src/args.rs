//! The monitor's command line: what the daemon writes ([`MonitorArgs::to_args`])
//! and what `pier-monitor` reads ([`MonitorArgs::parse`]), one struct for
//! both so the two sides cannot drift apart. Parsed by hand: clap would
//! double the monitor's binary for a dozen flags only the daemon ever writes.
//!
//! ```text
//! pier-monitor --id ID --bundle DIR --runtime PATH [--runtime-arg ARG]...
//!              --log-path FILE --exit-dir DIR [--exit-dir DIR]...
//!              --runtime-dir DIR [--terminal] [--stdin]
//!              [--sync-fd N] [--start-gate-fd N]
//!              [--log-max-line BYTES] [--log-max-size BYTES]
//! ```

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

pub const USAGE: &str = "usage: pier-monitor --id ID --bundle DIR --runtime PATH \
[--runtime-arg ARG]... --log-path FILE --exit-dir DIR [--exit-dir DIR]... \
--runtime-dir DIR [--terminal] [--stdin] [--sync-fd N] [--start-gate-fd N] \
[--log-max-line BYTES] [--log-max-size BYTES]";

/// Default bound of one log record's content; longer lines become `P`
/// pieces. Matches the pipe-sized reads so a record never spans two reads
/// unless the line itself is longer.
pub const DEFAULT_LOG_MAX_LINE: u64 = 16 * 1024;

/// Everything the monitor is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorArgs {
    /// The container id; only letters, digits, `-`, `_` and `.`, not
    /// starting with `.`.
    pub id: String,
    /// The OCI bundle (holds `config.json`).
    pub bundle: PathBuf,
    /// The OCI runtime binary.
    pub runtime: PathBuf,
    /// Global runtime options placed before the subcommand, e.g. the
    /// runtime root: `["--root", "/run/pier/runtime/runc"]`. The monitor
    /// passes them through without knowing any runtime's flags.
    pub runtime_args: Vec<OsString>,
    /// The CRI log file.
    pub log_path: PathBuf,
    /// Every dir gets a copy of the exit file (tmpfs run dir, durable dir).
    pub exit_dirs: Vec<PathBuf>,
    /// Holds the monitor's files ([`crate::files`]).
    pub runtime_dir: PathBuf,
    /// Run the container on a pty.
    pub terminal: bool,
    /// Keep the container's stdin open for attachers.
    pub stdin: bool,
    /// Where the monitor writes its one `SyncResult`.
    pub sync_fd: Option<i32>,
    /// The monitor waits for one byte on this fd before it forks.
    pub start_gate_fd: Option<i32>,
    /// Bound of one log record's content.
    pub log_max_line: u64,
    /// Bound of the log file; 0: no limit (kubelet rotates).
    pub log_max_size: u64,
}

impl Default for MonitorArgs {
    fn default() -> Self {
        Self {
            id: String::new(),
            bundle: PathBuf::new(),
            runtime: PathBuf::new(),
            runtime_args: Vec::new(),
            log_path: PathBuf::new(),
            exit_dirs: Vec::new(),
            runtime_dir: PathBuf::new(),
            terminal: false,
            stdin: false,
            sync_fd: None,
            start_gate_fd: None,
            log_max_line: DEFAULT_LOG_MAX_LINE,
            log_max_size: 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    /// `--help` or `-h`: not a failure, the caller prints [`USAGE`].
    #[error("{USAGE}")]
    Help,
    /// `--version`: not a failure, the caller prints its version.
    #[error("version requested")]
    Version,
    #[error("unknown argument {0:?}\n{USAGE}")]
    Unknown(String),
    #[error("{0} needs a value\n{USAGE}")]
    MissingValue(&'static str),
    #[error("{0} is required\n{USAGE}")]
    Required(&'static str),
    #[error("{flag}: invalid number {value:?}")]
    BadNumber { flag: &'static str, value: String },
    #[error("--id {0:?}: only letters, digits, '-', '_' and '.' are allowed")]
    BadId(String),
}

/// The flags that take a value, as the parser names them in errors.
const VALUE_FLAGS: [&str; 11] = [
    "--id",
    "--bundle",
    "--runtime",
    "--runtime-arg",
    "--log-path",
    "--exit-dir",
    "--runtime-dir",
    "--sync-fd",
    "--start-gate-fd",
    "--log-max-line",
    "--log-max-size",
];

impl MonitorArgs {
    /// The command line, without the program name.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        let mut push = |flag: &str, value: &OsStr| {
            args.push(OsString::from(flag));
            args.push(value.to_owned());
        };
        push("--id", self.id.as_ref());
        push("--bundle", self.bundle.as_ref());
        push("--runtime", self.runtime.as_ref());
        for arg in &self.runtime_args {
            push("--runtime-arg", arg);
        }
        push("--log-path", self.log_path.as_ref());
        for dir in &self.exit_dirs {
            push("--exit-dir", dir.as_ref());
        }
        push("--runtime-dir", self.runtime_dir.as_ref());
        if let Some(fd) = self.sync_fd {
            push("--sync-fd", fd.to_string().as_ref());
        }
        if let Some(fd) = self.start_gate_fd {
            push("--start-gate-fd", fd.to_string().as_ref());
        }
        push("--log-max-line", self.log_max_line.to_string().as_ref());
        push("--log-max-size", self.log_max_size.to_string().as_ref());
        if self.terminal {
            args.push("--terminal".into());
        }
        if self.stdin {
            args.push("--stdin".into());
        }
        args
    }

    /// Parses a command line without the program name. A flag given twice
    /// takes its last value (`--runtime-arg` and `--exit-dir` accumulate).
    pub fn parse(args: impl Iterator<Item = OsString>) -> Result<Self, ArgsError> {
        let mut args = args;
        let (mut id, mut bundle, mut runtime, mut log_path, mut runtime_dir) =
            (None, None, None, None, None);
        let mut parsed = Self::default();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.to_str() else {
                return Err(ArgsError::Unknown(arg.to_string_lossy().into_owned()));
            };
            match flag {
                "--help" | "-h" => return Err(ArgsError::Help),
                "--version" => return Err(ArgsError::Version),
                "--terminal" => {
                    parsed.terminal = true;
                    continue;
                }
                "--stdin" => {
                    parsed.stdin = true;
                    continue;
                }
                _ => {}
            }
            let Some(&flag) = VALUE_FLAGS.iter().find(|f| **f == flag) else {
                return Err(ArgsError::Unknown(flag.to_owned()));
            };
            let value = args.next().ok_or(ArgsError::MissingValue(flag))?;
            match flag {
                "--id" => id = Some(value),
                "--bundle" => bundle = Some(PathBuf::from(value)),
                "--runtime" => runtime = Some(PathBuf::from(value)),
                "--runtime-arg" => parsed.runtime_args.push(value),
                "--log-path" => log_path = Some(PathBuf::from(value)),
                "--exit-dir" => parsed.exit_dirs.push(PathBuf::from(value)),
                "--runtime-dir" => runtime_dir = Some(PathBuf::from(value)),
                "--sync-fd" => parsed.sync_fd = Some(fd(flag, &value)?),
                "--start-gate-fd" => parsed.start_gate_fd = Some(fd(flag, &value)?),
                "--log-max-line" => parsed.log_max_line = number(flag, &value)?,
                _ => parsed.log_max_size = number(flag, &value)?,
            }
        }
        let id = id
            .ok_or(ArgsError::Required("--id"))?
            .into_string()
            .map_err(|s| ArgsError::BadId(s.to_string_lossy().into()))?;
        if !is_valid_id(&id) {
            return Err(ArgsError::BadId(id));
        }
        parsed.id = id;
        parsed.bundle = bundle.ok_or(ArgsError::Required("--bundle"))?;
        parsed.runtime = runtime.ok_or(ArgsError::Required("--runtime"))?;
        parsed.log_path = log_path.ok_or(ArgsError::Required("--log-path"))?;
        parsed.runtime_dir = runtime_dir.ok_or(ArgsError::Required("--runtime-dir"))?;
        if parsed.exit_dirs.is_empty() {
            return Err(ArgsError::Required("--exit-dir"));
        }
        Ok(parsed)
    }
}

/// An id the monitor accepts: it becomes part of file names and runtime
/// state paths, so nothing that could climb out of a directory.
fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn number<T: std::str::FromStr>(flag: &'static str, value: &OsStr) -> Result<T, ArgsError> {
    value
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ArgsError::BadNumber {
            flag,
            value: value.to_string_lossy().into_owned(),
        })
}

/// A file descriptor number: not negative.
fn fd(flag: &'static str, value: &OsStr) -> Result<i32, ArgsError> {
    number::<u32>(flag, value)?
        .try_into()
        .map_err(|_| ArgsError::BadNumber {
            flag,
            value: value.to_string_lossy().into_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> impl Iterator<Item = OsString> {
        s.split(' ')
            .map(OsString::from)
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn full() -> MonitorArgs {
        MonitorArgs {
            id: "c1.a_b-2".into(),
            bundle: "/var/lib/pier/containers/c1/bundle".into(),
            runtime: "/usr/sbin/runc".into(),
            runtime_args: vec!["--root".into(), "/run/pier/runtime/runc".into()],
            log_path: "/var/log/pods/ns_p_u/c/0.log".into(),
            exit_dirs: vec!["/run/pier/containers/c1".into(), "/var/lib/x/exit".into()],
            runtime_dir: "/run/pier/containers/c1".into(),
            terminal: true,
            stdin: true,
            sync_fd: Some(3),
            start_gate_fd: Some(4),
            log_max_line: 10,
            log_max_size: 99,
        }
    }

    #[test]
    fn every_field_round_trips_through_the_command_line() {
        let all = full();
        assert_eq!(MonitorArgs::parse(all.to_args().into_iter()), Ok(all));
        let least = MonitorArgs {
            terminal: false,
            stdin: false,
            sync_fd: None,
            start_gate_fd: None,
            runtime_args: Vec::new(),
            exit_dirs: vec!["/e".into()],
            ..full()
        };
        assert_eq!(MonitorArgs::parse(least.to_args().into_iter()), Ok(least));
    }

    #[test]
    fn paths_that_are_not_utf8_round_trip() {
        use std::os::unix::ffi::OsStringExt;
        let odd = PathBuf::from(OsString::from_vec(b"/tmp/\xff\xfe log".to_vec()));
        let args = MonitorArgs {
            bundle: odd.clone(),
            log_path: odd.join("0.log"),
            runtime_args: vec![odd.clone().into_os_string()],
            ..full()
        };
        assert_eq!(MonitorArgs::parse(args.to_args().into_iter()), Ok(args));
    }

    #[test]
    fn parses_a_hand_written_command_line() {
        let parsed = MonitorArgs::parse(args(
            "--id c1 --bundle /b --runtime /usr/sbin/runc --runtime-arg --root \
             --runtime-arg /r --log-path /l --exit-dir /e1 --exit-dir /e2 --runtime-dir /d \
             --terminal --stdin --sync-fd 3 --start-gate-fd 4 --log-max-line 10 --log-max-size 99",
        ));
        let Ok(parsed) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(
            parsed.runtime_args,
            vec![OsString::from("--root"), OsString::from("/r")]
        );
        assert_eq!(parsed.exit_dirs.len(), 2);
        assert!(parsed.terminal && parsed.stdin);
        assert_eq!(
            (
                parsed.sync_fd,
                parsed.start_gate_fd,
                parsed.log_max_line,
                parsed.log_max_size
            ),
            (Some(3), Some(4), 10, 99)
        );
    }

    #[test]
    fn defaults_and_last_value_wins() {
        let parsed = MonitorArgs::parse(args(
            "--id a --bundle b --runtime r --log-path l --exit-dir e --runtime-dir d \
             --runtime /other",
        ));
        let Ok(parsed) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(parsed.runtime, PathBuf::from("/other"));
        assert_eq!(
            (parsed.log_max_line, parsed.log_max_size, parsed.sync_fd),
            (DEFAULT_LOG_MAX_LINE, 0, None)
        );
    }

    #[test]
    fn rejects_missing_and_bad_values() {
        let parse = |s| MonitorArgs::parse(args(s)).err();
        assert_eq!(parse("--id"), Some(ArgsError::MissingValue("--id")));
        assert_eq!(
            parse("--id ../x --bundle b --runtime r --log-path l --exit-dir e --runtime-dir d"),
            Some(ArgsError::BadId("../x".into()))
        );
        assert_eq!(
            parse("--id .x --bundle b --runtime r --log-path l --exit-dir e --runtime-dir d"),
            Some(ArgsError::BadId(".x".into()))
        );
        assert!(matches!(
            parse("--sync-fd x"),
            Some(ArgsError::BadNumber { .. })
        ));
        assert!(matches!(
            parse("--sync-fd -1"),
            Some(ArgsError::BadNumber { .. })
        ));
        assert!(matches!(
            parse("--start-gate-fd 2147483648"),
            Some(ArgsError::BadNumber { .. })
        ));
        assert_eq!(
            parse("--id a --bundle b --runtime r --log-path l --runtime-dir d"),
            Some(ArgsError::Required("--exit-dir"))
        );
        assert!(matches!(parse("--bogus"), Some(ArgsError::Unknown(_))));
        assert_eq!(parse("--id a --help"), Some(ArgsError::Help));
        assert_eq!(parse("--version"), Some(ArgsError::Version));
    }
}
