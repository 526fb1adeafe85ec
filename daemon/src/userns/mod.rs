//! User namespaces for pods that ask for their own (`hostUsers: false`,
//! KEP-127): the pod's id mappings.

mod mappings;
mod probe;
mod request;

pub use mappings::{IdMap, IdRange, MappingError, Mappings, OVERFLOW_ID};
pub use probe::probe;
pub use request::{check_container, check_mount_mappings, of_pod};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A pod's own user namespace: pinned at `path`, with these mappings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodUserns {
    pub path: PathBuf,
    pub mappings: Mappings,
}
