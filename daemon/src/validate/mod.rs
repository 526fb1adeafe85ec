//! Checks of CRI requests made before anything is written or started, so
//! that a request kubelet could never have meant is refused with
//! INVALID_ARGUMENT naming the field, instead of failing halfway in runc,
//! a CNI plugin or the kernel (INTERNAL, with something left behind).
//!
//! The rules follow what kubelet's API validation already guarantees for
//! the requests it sends (pkg/apis/core/validation), so no request from a
//! real kubelet is refused here; what runc, the CNI plugins or the kernel
//! would refuse anyway is refused first, with a clearer message.

mod container;
mod pod;
mod resources;

use std::path::{Component, Path};

pub use container::container_config;
pub use pod::pod_config;
pub use resources::resources;

use crate::error::Error;

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// How much of a refused value a message quotes: enough to recognise it,
/// never a whole 100 kB string echoed back in a gRPC header.
const QUOTE_MAX: usize = 128;

/// `value` for an error message, cut at [`QUOTE_MAX`] bytes.
fn quote(value: &str) -> String {
    if value.len() <= QUOTE_MAX {
        return format!("{value:?}");
    }
    let start = crate::error::head(value, QUOTE_MAX);
    format!("{start:?}... ({} bytes)", value.len())
}

/// No NUL byte: the kernel's paths, argv and environment end at one, so
/// a NUL would silently cut what the process gets.
fn no_nul(field: &'static str, value: &str) -> Result<(), Error> {
    if value.contains('\0') {
        return Err(invalid(
            field,
            format!("{} contains a NUL byte", quote(value)),
        ));
    }
    Ok(())
}

fn all_no_nul<'a>(
    field: &'static str,
    values: impl IntoIterator<Item = &'a String>,
) -> Result<(), Error> {
    values.into_iter().try_for_each(|v| no_nul(field, v))
}

/// An enum value this CRI version defines: prost keeps unknown numbers,
/// and each would otherwise quietly mean the default.
fn known<E: TryFrom<i32>>(field: &'static str, value: i32) -> Result<(), Error> {
    E::try_from(value).map(|_| ()).map_err(|_| {
        invalid(
            field,
            format!("{value} is not a value this CRI version defines"),
        )
    })
}

/// An absolute path without NUL or `..`: kubelet sends clean absolute
/// paths, and a `..` would let a path leave the directory it names.
fn absolute_clean(field: &'static str, path: &str) -> Result<(), Error> {
    no_nul(field, path)?;
    if !path.starts_with('/') {
        return Err(invalid(
            field,
            format!("{} is not an absolute path", quote(path)),
        ));
    }
    no_parent(field, path)
}

/// A relative path that stays below the directory it is joined to.
fn relative_clean(field: &'static str, path: &str) -> Result<(), Error> {
    no_nul(field, path)?;
    if path.starts_with('/') {
        return Err(invalid(
            field,
            format!("{} must be relative to its directory", quote(path)),
        ));
    }
    no_parent(field, path)
}

fn no_parent(field: &'static str, path: &str) -> Result<(), Error> {
    if Path::new(path)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(invalid(field, format!("{} contains \"..\"", quote(path))));
    }
    Ok(())
}

/// A user or group id: kubelet's validation allows 0 to 2^31-1.
fn id(field: &'static str, value: i64) -> Result<(), Error> {
    if !(0..=i64::from(i32::MAX)).contains(&value) {
        return Err(invalid(
            field,
            format!("{value} is not a valid user or group id"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
