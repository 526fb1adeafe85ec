//! `/proc/<pid>/stat`, read for a process's identity: a pid alone may be
//! reused, so the daemon and the monitor name a process by pid **and** start
//! time (field 22, clock ticks since boot) and compare both before trusting
//! a pid (docs/monitor.md, Identity).
//!
//! Field 2 is the command name in parentheses, and it may itself contain
//! spaces and parentheses: fields are counted after the **last** `)`.

/// Start time of `pid` in clock ticks since boot, or `None` if there is no
/// such process (or its stat is unreadable).
pub fn start_time(pid: i32) -> Option<u64> {
    parse_start_time(&read(pid)?)
}

/// Whether the process `pid` started at `start_time` still runs: it exists
/// and is not a zombie (a killed process whose parent has not reaped it yet
/// has run its course, though `/proc` still shows it).
pub fn is_running(pid: i32, start_time: u64) -> bool {
    read(pid).is_some_and(|stat| {
        parse_start_time(&stat) == Some(start_time)
            && !matches!(field(&stat, 3), Some("Z" | "X" | "x"))
    })
}

/// Parent pid of `pid`, or `None` if there is no such process.
pub fn parent_pid(pid: i32) -> Option<i32> {
    parse_parent_pid(&read(pid)?)
}

/// The process group and session of `pid` (fields 5 and 6), or `None` if
/// there is no such process.
pub fn group_and_session(pid: i32) -> Option<(i32, i32)> {
    let stat = read(pid)?;
    Some((
        field(&stat, 5)?.parse().ok()?,
        field(&stat, 6)?.parse().ok()?,
    ))
}

/// Every process's pid and command line (its arguments, NUL-separated), for
/// finding a process by what it was told rather than by a recorded pid.
/// Processes that end during the walk are skipped.
pub fn command_lines() -> impl Iterator<Item = (i32, Vec<u8>)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            Some((pid, cmdline))
        })
}

/// Field 22 of a `/proc/<pid>/stat` line.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    field(stat, 22)?.parse().ok()
}

/// Field 4 of a `/proc/<pid>/stat` line.
pub fn parse_parent_pid(stat: &str) -> Option<i32> {
    field(stat, 4)?.parse().ok()
}

/// Numeric field `n` (1-based, as proc(5) numbers them; `n` > 2) of a stat
/// line: utime is 14, stime 15, vsize 23, rss 24.
pub fn parse_u64(stat: &str, n: usize) -> Option<u64> {
    field(stat, n)?.parse().ok()
}

fn read(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// Field `n` (1-based, as proc(5) numbers them; `n` > 2) of a stat line.
fn field(stat: &str, n: usize) -> Option<&str> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    after_comm.split_ascii_whitespace().nth(n.checked_sub(3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line for `comm`, with the parent pid 77 and start time 987654.
    fn stat(comm: &str) -> String {
        format!("42 ({comm}) S 77 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2\n")
    }

    #[test]
    fn plain_command_name() {
        assert_eq!(parse_start_time(&stat("sh")), Some(987654));
        assert_eq!(parse_parent_pid(&stat("sh")), Some(77));
    }

    #[test]
    fn command_name_with_spaces_and_parentheses() {
        for comm in ["a b", "a) b", "x) S 1 2 3 (y", ") )", "((", "a)\nb"] {
            assert_eq!(parse_start_time(&stat(comm)), Some(987654), "{comm:?}");
            assert_eq!(parse_parent_pid(&stat(comm)), Some(77), "{comm:?}");
        }
    }

    #[test]
    fn numeric_fields_by_number() {
        assert_eq!(parse_u64(&stat("a) b"), 4), Some(77));
        assert_eq!(parse_u64(&stat("sh"), 23), Some(1));
        assert_eq!(parse_u64(&stat("sh"), 3), None);
        assert_eq!(parse_u64(&stat("sh"), 99), None);
    }

    #[test]
    fn truncated_or_garbled_stat_is_none() {
        assert_eq!(parse_start_time(""), None);
        assert_eq!(parse_start_time("42 (sh S 77"), None);
        assert_eq!(parse_start_time("42 (sh) S 77 42"), None);
        assert_eq!(parse_parent_pid("42 (sh) S x"), None);
    }

    #[test]
    fn own_process_has_a_start_time_and_a_parent() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some_and(|t| t > 0));
        assert_eq!(
            parent_pid(me),
            Some(std::os::unix::process::parent_id() as i32)
        );
        assert_eq!(start_time(-1), None);
        let started = start_time(me).unwrap_or_default();
        assert!(is_running(me, started));
        assert!(
            !is_running(me, started + 1),
            "another start time is another process"
        );
    }

    #[test]
    fn own_process_is_found_by_its_command_line() {
        let me = std::process::id() as i32;
        let (_, cmdline) = command_lines()
            .find(|(pid, _)| *pid == me)
            .unwrap_or_else(|| panic!("pid {me} not listed"));
        let argv0 = std::env::args().next().unwrap_or_default();
        assert!(cmdline.starts_with(argv0.as_bytes()), "{cmdline:?}");
        // Group and session may both be 0 here: a process whose session
        // leader lives outside its pid namespace (CI's container) sees 0.
        assert!(group_and_session(me).is_some());
        assert_eq!(group_and_session(-1), None);
    }

    #[test]
    fn a_child_in_its_own_group_leads_it() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("5")
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let pid = child.id() as i32;
        let found = group_and_session(pid);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.map(|(group, _)| group), Some(pid));
    }

    #[test]
    fn a_zombie_is_not_running() {
        let mut child = std::process::Command::new("/bin/true")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let pid = child.id() as i32;
        let started = start_time(pid).unwrap_or_default();
        // Unreaped, it stays a zombie with its start time until `wait`.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while read(pid).is_some_and(|stat| field(&stat, 3) != Some("Z")) {
            assert!(std::time::Instant::now() < deadline, "the child exits");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(start_time(pid), Some(started));
        assert!(!is_running(pid, started));
        let _ = child.wait();
    }
}
