//! Did the kernel OOM-kill something in the container's cgroup?
//!
//! cgroup v1: an eventfd registered on `memory.oom_control` through
//! `cgroup.event_control` fires on OOM; the `oom_kill` counter in
//! `memory.oom_control` is read again at exit in case the event raced the
//! exit. cgroup v2: the `oom_kill` counter of `memory.events`, read at exit.
//! The cgroup is found from /proc/<pid>/cgroup and /proc/self/mountinfo.
#![allow(unsafe_code)]

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

pub struct OomWatcher {
    /// File holding the `oom_kill` counter (v1 oom_control or v2 events).
    counter: PathBuf,
    baseline: u64,
    /// v1 only: readable once an OOM happened.
    event: Option<File>,
    seen: bool,
}

impl OomWatcher {
    /// Watch the memory cgroup of `pid`; `None` when it has none we can find.
    pub fn new(pid: i32) -> Option<Self> {
        let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
        if let Some(dir) = v1_memory_dir(&cgroups, &mounts) {
            let counter = dir.join("memory.oom_control");
            let event = register_v1_event(&dir).map_err(|e| {
                crate::diag!("oom: cannot register eventfd in {}: {e}", dir.display());
            });
            let baseline = read_counter(&counter).unwrap_or(0);
            return Some(Self {
                counter,
                baseline,
                event: event.ok(),
                seen: false,
            });
        }
        let dir = v2_dir(&cgroups, &mounts)?;
        let counter = dir.join("memory.events");
        let baseline = read_counter(&counter).ok()?;
        Some(Self {
            counter,
            baseline,
            event: None,
            seen: false,
        })
    }

    /// The eventfd to poll, if any.
    pub fn event_fd(&self) -> Option<i32> {
        self.event.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The eventfd fired.
    pub fn on_event(&mut self) {
        if let Some(ev) = self.event.as_mut() {
            let mut b = [0u8; 8];
            if ev.read(&mut b).is_ok() {
                self.seen = true;
            }
        }
    }

    /// An OOM event has been seen (v1 eventfd) while the container runs.
    pub fn seen(&self) -> bool {
        self.seen
    }

    /// Final answer, read when the container has exited.
    pub fn oom_killed(&mut self) -> bool {
        self.on_event_nonblocking();
        self.seen || read_counter(&self.counter).is_ok_and(|n| n > self.baseline)
    }

    fn on_event_nonblocking(&mut self) {
        if self.event.is_some() {
            let mut fds = [libc::pollfd {
                fd: self.event_fd().unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            }];
            if crate::sys::poll(&mut fds, 0).is_ok_and(|n| n > 0) {
                self.on_event();
            }
        }
    }
}

fn register_v1_event(dir: &std::path::Path) -> io::Result<File> {
    let control = File::open(dir.join("memory.oom_control"))?;
    // SAFETY: eventfd takes integer arguments and returns a new fd or -1.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: efd was just created and is owned by nobody else.
    let event = unsafe { File::from_raw_fd(efd) };
    let line = format!("{} {}", event.as_raw_fd(), control.as_raw_fd());
    fs::write(dir.join("cgroup.event_control"), line)?;
    // The registration holds its own reference; `control` may close now.
    Ok(event)
}

/// The `oom_kill N` line of a v1 `memory.oom_control` or v2 `memory.events`.
fn read_counter(path: &PathBuf) -> io::Result<u64> {
    let text = fs::read_to_string(path)?;
    Ok(parse_counter(&text).unwrap_or(0))
}

fn parse_counter(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// Mount point and mount root of a cgroup hierarchy, from mountinfo.
fn find_mount(mounts: &str, pick: impl Fn(&str, &str) -> bool) -> Option<(&str, &str)> {
    mounts.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut pre = pre.split(' ');
        let root = pre.nth(3)?;
        let point = pre.next()?;
        let mut post = post.split(' ');
        let fstype = post.next()?;
        let opts = post.nth(1)?;
        pick(fstype, opts).then_some((point, root))
    })
}

fn join(point: &str, root: &str, path: &str) -> PathBuf {
    let rel = path
        .strip_prefix(root)
        .unwrap_or(path)
        .trim_start_matches('/');
    PathBuf::from(point).join(rel)
}

fn v1_memory_dir(cgroups: &str, mounts: &str) -> Option<PathBuf> {
    let path = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls.split(',').any(|c| c == "memory").then_some(path)
    })?;
    let (point, root) = find_mount(mounts, |t, o| {
        t == "cgroup" && o.split(',').any(|x| x == "memory")
    })?;
    Some(join(point, root, path))
}

fn v2_dir(cgroups: &str, mounts: &str) -> Option<PathBuf> {
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let (point, root) = find_mount(mounts, |t, _| t == "cgroup2")?;
    Some(join(point, root, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_v1_memory_and_v2_dirs() {
        let cg = "4:memory:/pier/c1\n1:cpu:/\n0::/pier/c1\n";
        assert_eq!(
            v1_memory_dir(cg, MOUNTS),
            Some(PathBuf::from("/sys/fs/cgroup/memory/pier/c1"))
        );
        assert_eq!(
            v2_dir(cg, MOUNTS),
            Some(PathBuf::from("/sys/fs/cgroup/unified/pier/c1"))
        );
        assert_eq!(v1_memory_dir("0::/x\n", MOUNTS), None);
    }

    #[test]
    fn parses_oom_kill_counter() {
        assert_eq!(
            parse_counter("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_counter("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n"),
            Some(1)
        );
    }
}
