//! A pod's network counters per interface, read from `/proc/net/dev` inside
//! the pod's pinned network namespace.
//!
//! `/proc/net/dev` shows the namespace of the thread that reads it, and the
//! pod's namespace may hold no process at all (its containers exited), so
//! the reader has to enter it. setns() changes the calling thread for good,
//! and the daemon's threads are tokio's, shared by every request. So one
//! thread of its own, spawned per ListPodSandboxMetrics call, enters each
//! pod's namespace in turn, reads `/proc/thread-self/net/dev` there, and
//! ends with the call; no other code ever runs on it. Nothing forks, and no
//! thread the daemon keeps changes namespace. (Reading `/proc/<pid>/net/dev`
//! of a process in the pod would avoid setns but misses pods whose
//! containers have all exited; a netlink socket opened in the namespace
//! would need the same thread to open it.)

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};

/// The counters of one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// One pod's interfaces and when they were read.
#[derive(Debug, Clone)]
pub struct Reading {
    pub timestamp: i64,
    pub interfaces: Vec<Interface>,
}

/// Parses `/proc/net/dev`: two header lines, then per interface
/// `name: rx bytes packets errs drop fifo frame compressed multicast
/// tx bytes packets errs drop fifo colls carrier compressed`. Loopback is
/// left out, as cAdvisor leaves it out.
pub fn parse(text: &str) -> Vec<Interface> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let n: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if n.len() < 16 || name == "lo" {
                return None;
            }
            Some(Interface {
                name: name.to_owned(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect()
}

/// Reads the interfaces in each namespace of `pods` (pod id, pinned netns),
/// in order, on the calling thread, which it moves into those namespaces:
/// call it only on a thread spawned for it. A namespace that cannot be
/// entered (the pod was stopped meanwhile) gives `None`, and nothing is
/// read for it: the thread is still in the previous pod's namespace.
pub fn read_in_namespaces(pods: &[(String, PathBuf)]) -> Vec<Option<Reading>> {
    pods.iter()
        .map(|(pod_id, netns)| {
            let entered = File::open(netns)
                .map_err(|e| e.to_string())
                .and_then(|ns| setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string()));
            if let Err(error) = entered {
                tracing::debug!(pod_id, netns = %netns.display(), %error, "network namespace not entered; no network metrics");
                return None;
            }
            let timestamp = crate::time::now_ns();
            match std::fs::read_to_string("/proc/thread-self/net/dev") {
                Ok(text) => Some(Reading {
                    timestamp,
                    interfaces: parse(&text),
                }),
                Err(error) => {
                    tracing::debug!(pod_id, %error, "read /proc/net/dev in the pod's namespace");
                    None
                }
            }
        })
        .collect()
}
