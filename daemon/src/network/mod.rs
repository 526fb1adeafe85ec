//! Pod networking through CNI.

pub mod cni;
pub mod conflist;
