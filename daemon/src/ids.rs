//! Object ids: 64 hex digits, as kubelet and crictl expect; lookups accept a
//! unique prefix, as crictl users type them.

use std::io::Read;

/// A new random id.
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` has the form of an id pier makes (64 lowercase hex digits),
/// as opposed to a prefix a user typed.
pub fn is_full(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The one candidate equal to `wanted`, or else the one it is a prefix of.
/// `None` when nothing or more than one candidate matches.
pub fn resolve<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if wanted.is_empty() {
        return None;
    }
    let mut found = None;
    let mut ambiguous = false;
    for candidate in candidates {
        if candidate == wanted {
            return Some(candidate);
        }
        if candidate.starts_with(wanted) {
            ambiguous |= found.is_some();
            found = Some(candidate);
        }
    }
    if ambiguous { None } else { found }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let (a, b) = (new_id().expect("id"), new_id().expect("id"));
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(is_full(&a));
        assert!(!is_full(&a[..63]), "a prefix");
        assert!(!is_full(&a.to_uppercase()), "pier's ids are lowercase");
    }

    #[test]
    fn prefixes_resolve_only_when_unique() {
        let ids = ["abc123", "abd456", "ab"];
        assert_eq!(resolve("abc", ids), Some("abc123"));
        assert_eq!(
            resolve("ab", ids),
            Some("ab"),
            "an exact match wins over prefixes"
        );
        assert_eq!(resolve("a", ids), None, "ambiguous");
        assert_eq!(resolve("zz", ids), None);
        assert_eq!(resolve("", ids), None);
    }
}
