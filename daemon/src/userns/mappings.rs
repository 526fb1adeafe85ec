//! A pod's uid and gid mappings, as kubelet sends them in
//! `NamespaceOption.userns_options` (KEP-127), checked once when the pod is
//! run and stored with the sandbox.

use k8s_cri::v1::IdMapping;
use serde::{Deserialize, Serialize};

/// The most lines a `uid_map` or `gid_map` takes (`man 7 user_namespaces`:
/// 340 since Linux 4.15).
const MAX_RANGES: usize = 340;

/// The id the kernel shows for one that has no mapping (`overflowuid`).
pub const OVERFLOW_ID: u32 = 65534;

/// One line of a `uid_map`: `length` ids from `container` up, which are
/// `host` and up on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub length: u32,
}

/// Why a set of mappings cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("no mapping given")]
    Empty,
    #[error("{count} ranges; the kernel takes at most {MAX_RANGES}")]
    TooMany { count: usize },
    #[error("range {index} has length 0")]
    ZeroLength { index: usize },
    #[error("range {index} runs past the largest 32-bit id")]
    Overflow { index: usize },
    #[error("ranges {first} and {second} overlap on the {side} side")]
    Overlap {
        first: usize,
        second: usize,
        side: &'static str,
    },
    #[error("id 0 inside the pod is not mapped; runc needs a root in the user namespace")]
    NoRoot,
    #[error("range {index} maps the node's root (host id 0) into the pod")]
    HostRoot { index: usize },
}

/// The ranges of one kind (uids or gids), checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap(Vec<IdRange>);

impl IdMap {
    /// Checks kubelet's ranges: something mapped, no more lines than the
    /// kernel takes, no range empty, wrapping or overlapping another on
    /// either side, the pod's root mapped, and the node's root not.
    pub fn from_cri(ranges: &[IdMapping]) -> Result<Self, MappingError> {
        if ranges.is_empty() {
            return Err(MappingError::Empty);
        }
        if ranges.len() > MAX_RANGES {
            return Err(MappingError::TooMany {
                count: ranges.len(),
            });
        }
        let mut out = Vec::with_capacity(ranges.len());
        for (index, r) in ranges.iter().enumerate() {
            if r.length == 0 {
                return Err(MappingError::ZeroLength { index });
            }
            let end = |start: u32| u64::from(start) + u64::from(r.length);
            if end(r.container_id) > 1 << 32 || end(r.host_id) > 1 << 32 {
                return Err(MappingError::Overflow { index });
            }
            if r.host_id == 0 {
                return Err(MappingError::HostRoot { index });
            }
            out.push(IdRange {
                container: r.container_id,
                host: r.host_id,
                length: r.length,
            });
        }
        for (first, a) in out.iter().enumerate() {
            for (second, b) in out.iter().enumerate().skip(first + 1) {
                for (side, x, y) in [
                    ("container", a.container, b.container),
                    ("host", a.host, b.host),
                ] {
                    let (xe, ye) = (
                        u64::from(x) + u64::from(a.length),
                        u64::from(y) + u64::from(b.length),
                    );
                    if u64::from(x) < ye && u64::from(y) < xe {
                        return Err(MappingError::Overlap {
                            first,
                            second,
                            side,
                        });
                    }
                }
            }
        }
        let map = Self(out);
        if map.to_host(0).is_none() {
            return Err(MappingError::NoRoot);
        }
        Ok(map)
    }

    pub fn ranges(&self) -> &[IdRange] {
        &self.0
    }

    /// The host id of an id inside the pod.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        self.0.iter().find_map(|r| {
            let offset = id.checked_sub(r.container)?;
            (offset < r.length).then(|| r.host + offset)
        })
    }

    /// The id inside the pod of a host id; the overflow id for one the pod
    /// does not map, as the kernel shows it.
    pub fn to_container(&self, host: u32) -> u32 {
        self.0
            .iter()
            .find_map(|r| {
                let offset = host.checked_sub(r.host)?;
                (offset < r.length).then(|| r.container + offset)
            })
            .unwrap_or(OVERFLOW_ID)
    }

    /// The text of `/proc/<pid>/uid_map` (or `gid_map`) for these ranges.
    pub fn proc_text(&self) -> String {
        self.0
            .iter()
            .map(|r| format!("{} {} {}\n", r.container, r.host, r.length))
            .collect()
    }

    /// `container:host:length,...`, the helper's command-line form.
    pub fn to_arg(&self) -> String {
        self.0
            .iter()
            .map(|r| format!("{}:{}:{}", r.container, r.host, r.length))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses [`to_arg`](Self::to_arg)'s form.
    pub fn parse_arg(text: &str) -> Result<Self, String> {
        let ranges = text
            .split(',')
            .map(|part| {
                let numbers: Vec<u32> = part
                    .split(':')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{part:?}: {e}"))?;
                match numbers[..] {
                    [container_id, host_id, length] => Ok(IdMapping {
                        container_id,
                        host_id,
                        length,
                    }),
                    _ => Err(format!("{part:?} is not container:host:length")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_cri(&ranges).map_err(|e| e.to_string())
    }

    /// The OCI spec's form (`linux.uidMappings`).
    pub fn to_oci(&self) -> Vec<serde_json::Value> {
        self.0
            .iter()
            .map(|r| {
                serde_json::json!({
                    "containerID": r.container, "hostID": r.host, "size": r.length,
                })
            })
            .collect()
    }

    /// Whether kubelet's ranges (a mount's own mappings) are these.
    pub fn same_as(&self, ranges: &[IdMapping]) -> bool {
        ranges.len() == self.0.len()
            && ranges.iter().zip(&self.0).all(|(a, b)| {
                a.container_id == b.container && a.host_id == b.host && a.length == b.length
            })
    }
}

/// A pod's uid and gid mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mappings {
    pub uids: IdMap,
    pub gids: IdMap,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(container_id: u32, host_id: u32, length: u32) -> IdMapping {
        IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    #[test]
    fn kubelets_usual_mapping_is_taken_and_translates_both_ways() {
        let map = IdMap::from_cri(&[range(0, 65536 * 3, 65536)]).expect("valid");
        assert_eq!(map.to_host(0), Some(196_608));
        assert_eq!(map.to_host(65535), Some(262_143));
        assert_eq!(map.to_host(65536), None);
        assert_eq!(map.to_container(196_609), 1);
        assert_eq!(map.to_container(0), OVERFLOW_ID);
        assert_eq!(map.proc_text(), "0 196608 65536\n");
        assert_eq!(IdMap::parse_arg(&map.to_arg()), Ok(map));
    }

    #[test]
    fn mappings_pier_cannot_honour_are_refused() {
        let refused = |ranges: &[IdMapping]| IdMap::from_cri(ranges).expect_err("accepted");
        assert_eq!(refused(&[]), MappingError::Empty);
        assert_eq!(
            refused(&[range(0, 100_000, 0)]),
            MappingError::ZeroLength { index: 0 }
        );
        assert_eq!(
            refused(&[range(0, u32::MAX, 2)]),
            MappingError::Overflow { index: 0 }
        );
        assert!(matches!(
            refused(&[range(0, 100_000, 1000), range(500, 200_000, 10)]),
            MappingError::Overlap {
                side: "container",
                ..
            }
        ));
        assert!(matches!(
            refused(&[range(0, 100_000, 1000), range(5000, 100_999, 10)]),
            MappingError::Overlap { side: "host", .. }
        ));
        assert_eq!(refused(&[range(1, 100_000, 10)]), MappingError::NoRoot);
        assert_eq!(
            refused(&[range(0, 0, 65536)]),
            MappingError::HostRoot { index: 0 }
        );
        let many: Vec<IdMapping> = (0..341).map(|i| range(i, 100_000 + i, 1)).collect();
        assert_eq!(refused(&many), MappingError::TooMany { count: 341 });
    }
}
