//! RFC 3339 UTC timestamps with exactly nine fractional digits, the form
//! kubelet's CRI log parser expects (`2006-01-02T15:04:05.000000000Z`).
//! Formatted by hand from the real-time clock, read once per read(2).

use std::time::{SystemTime, UNIX_EPOCH};

pub const LEN: usize = 30;

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Format `ns` since the epoch as RFC 3339 UTC with nanoseconds.
pub fn format(ns: i64) -> [u8; LEN] {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    put(&mut out[0..4], y.clamp(0, 9999) as u32);
    put(&mut out[5..7], m);
    put(&mut out[8..10], d);
    put(&mut out[11..13], sod / 3600);
    put(&mut out[14..16], sod / 60 % 60);
    put(&mut out[17..19], sod % 60);
    put(&mut out[20..29], nanos);
    out
}

fn put(dst: &mut [u8], mut v: u32) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (the
/// well-known era-based algorithm: 400-year eras of 146097 days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(&format(0), b"1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            &format(951_782_400_000_000_001),
            b"2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(
            &format(1_795_426_983_123_456_789),
            b"2026-11-23T09:43:03.123456789Z"
        );
        assert_eq!(
            &format(4_102_444_799_999_999_999),
            b"2099-12-31T23:59:59.999999999Z"
        );
    }
}
