//! User namespaces for pods that ask for their own (`hostUsers: false`,
//! KEP-127): the pod's id mappings.

mod mappings;

pub use mappings::{IdMap, IdRange, MappingError, Mappings, OVERFLOW_ID};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A pod's own user namespace: pinned at `path`, with these mappings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodUserns {
    pub path: PathBuf,
    pub mappings: Mappings,
}
