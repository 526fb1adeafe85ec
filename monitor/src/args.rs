//! Command line of pier-monitor, parsed by hand: clap would double the
//! binary for a dozen flags only the daemon ever writes.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "usage: pier-monitor --id ID --bundle DIR --runtime PATH \
[--runtime-arg ARG]... --log-path FILE --exit-dir DIR [--exit-dir DIR]... \
--runtime-dir DIR [--terminal] [--stdin] [--sync-fd N] [--start-gate-fd N] \
[--log-max-line BYTES] [--log-max-size BYTES]";

/// Default bound of one log record's content; longer lines become `P`
/// pieces. Matches the pipe-sized reads so a record never spans two reads
/// unless the line itself is longer.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: PathBuf,
    /// Global runtime options placed before the subcommand (`--root DIR`).
    pub runtime_args: Vec<OsString>,
    pub log_path: PathBuf,
    /// Every dir gets a copy of the exit file (tmpfs run dir, durable dir).
    pub exit_dirs: Vec<PathBuf>,
    /// Holds monitor.sock, the pid files and the console socket.
    pub runtime_dir: PathBuf,
    pub terminal: bool,
    pub stdin: bool,
    pub sync_fd: Option<i32>,
    pub start_gate_fd: Option<i32>,
    pub max_line: usize,
    /// 0: no limit (kubelet rotates).
    pub max_size: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
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

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, ArgsError> {
    let mut it = args.into_iter().skip(1);
    let (mut id, mut bundle, mut runtime, mut log_path, mut runtime_dir) =
        (None, None, None, None, None);
    let mut cfg = Config {
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
        max_line: DEFAULT_MAX_LINE,
        max_size: 0,
    };
    while let Some(arg) = it.next() {
        let Some(flag) = arg.to_str() else {
            return Err(ArgsError::Unknown(arg.to_string_lossy().into_owned()));
        };
        let flag: &'static str = match flag {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" => return Ok(Command::Version),
            "--terminal" => {
                cfg.terminal = true;
                continue;
            }
            "--stdin" => {
                cfg.stdin = true;
                continue;
            }
            "--id" => "--id",
            "--bundle" => "--bundle",
            "--runtime" => "--runtime",
            "--runtime-arg" => "--runtime-arg",
            "--log-path" => "--log-path",
            "--exit-dir" => "--exit-dir",
            "--runtime-dir" => "--runtime-dir",
            "--sync-fd" => "--sync-fd",
            "--start-gate-fd" => "--start-gate-fd",
            "--log-max-line" => "--log-max-line",
            "--log-max-size" => "--log-max-size",
            other => return Err(ArgsError::Unknown(other.to_owned())),
        };
        let value = it.next().ok_or(ArgsError::MissingValue(flag))?;
        let num = |v: &OsString| -> Result<u64, ArgsError> {
            v.to_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ArgsError::BadNumber {
                    flag,
                    value: v.to_string_lossy().into_owned(),
                })
        };
        match flag {
            "--id" => id = Some(value),
            "--bundle" => bundle = Some(PathBuf::from(value)),
            "--runtime" => runtime = Some(PathBuf::from(value)),
            "--runtime-arg" => cfg.runtime_args.push(value),
            "--log-path" => log_path = Some(PathBuf::from(value)),
            "--exit-dir" => cfg.exit_dirs.push(PathBuf::from(value)),
            "--runtime-dir" => runtime_dir = Some(PathBuf::from(value)),
            "--sync-fd" => cfg.sync_fd = Some(fd_num(flag, &value, num(&value)?)?),
            "--start-gate-fd" => cfg.start_gate_fd = Some(fd_num(flag, &value, num(&value)?)?),
            "--log-max-line" => {
                let n = num(&value)?;
                // A record needs room for at least one byte of content.
                cfg.max_line = usize::try_from(n.max(1)).unwrap_or(usize::MAX);
            }
            _ => cfg.max_size = num(&value)?,
        }
    }
    let id = id.ok_or(ArgsError::Required("--id"))?;
    let id = id
        .into_string()
        .map_err(|s| ArgsError::BadId(s.to_string_lossy().into()))?;
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || id.starts_with('.')
    {
        return Err(ArgsError::BadId(id));
    }
    cfg.id = id;
    cfg.bundle = bundle.ok_or(ArgsError::Required("--bundle"))?;
    cfg.runtime = runtime.ok_or(ArgsError::Required("--runtime"))?;
    cfg.log_path = log_path.ok_or(ArgsError::Required("--log-path"))?;
    cfg.runtime_dir = runtime_dir.ok_or(ArgsError::Required("--runtime-dir"))?;
    if cfg.exit_dirs.is_empty() {
        return Err(ArgsError::Required("--exit-dir"));
    }
    Ok(Command::Run(Box::new(cfg)))
}

fn fd_num(flag: &'static str, value: &OsString, n: u64) -> Result<i32, ArgsError> {
    i32::try_from(n).map_err(|_| ArgsError::BadNumber {
        flag,
        value: value.to_string_lossy().into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        std::iter::once("pier-monitor")
            .chain(s.split(' '))
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn parses_full_command_line() {
        let cmd = parse(args(
            "--id c1 --bundle /b --runtime /usr/sbin/runc --runtime-arg --root \
             --runtime-arg /r --log-path /l --exit-dir /e1 --exit-dir /e2 --runtime-dir /d \
             --terminal --stdin --sync-fd 3 --start-gate-fd 4 --log-max-line 10 --log-max-size 99",
        ));
        let Ok(Command::Run(cfg)) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(
            cfg.runtime_args,
            vec![OsString::from("--root"), OsString::from("/r")]
        );
        assert_eq!(cfg.exit_dirs.len(), 2);
        assert!(cfg.terminal && cfg.stdin);
        assert_eq!(
            (cfg.sync_fd, cfg.start_gate_fd, cfg.max_line, cfg.max_size),
            (Some(3), Some(4), 10, 99)
        );
    }

    #[test]
    fn rejects_missing_and_bad_values() {
        assert_eq!(
            parse(args("--id")).err(),
            Some(ArgsError::MissingValue("--id"))
        );
        assert_eq!(
            parse(args(
                "--id ../x --bundle b --runtime r --log-path l --exit-dir e --runtime-dir d"
            ))
            .err(),
            Some(ArgsError::BadId("../x".into()))
        );
        assert!(matches!(
            parse(args("--sync-fd x")),
            Err(ArgsError::BadNumber { .. })
        ));
        assert_eq!(
            parse(args(
                "--id a --bundle b --runtime r --log-path l --runtime-dir d"
            ))
            .err(),
            Some(ArgsError::Required("--exit-dir"))
        );
        assert!(matches!(parse(args("--bogus")), Err(ArgsError::Unknown(_))));
    }
}
