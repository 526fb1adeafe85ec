//! Pod networking through CNI.

pub mod conflist;
