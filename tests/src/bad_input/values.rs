//! Values from the shapes that break parsers and paths: empty, huge, `..`,
//! NUL, newlines, random Unicode, the edges of the integer types.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1::*;
use proptest::prelude::*;

/// A string from the shapes that break parsers and paths.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9][a-z0-9-]{0,20}",
        1 => Just(String::new()),
        2 => prop::sample::select(vec![
            "..", "../..", "a/b", "/", ".", "a\0b", "\0", "line\nbreak", "é", " ",
            "a b", "-", "*", "%00", "=", "a=b", "\u{202e}rtl",
        ])
        .prop_map(String::from),
        1 => prop::sample::select(vec![64usize, 254, 4097, 70_000]).prop_map(|n| "x".repeat(n)),
        1 => any::<String>(),
    ]
}

/// A host path: inside the test's area (plain, missing, through a symlink,
/// escaping with `..`), relative, with a NUL, or one of the node's files.
pub fn host_path(area: &Path) -> impl Strategy<Value = String> + use<> {
    let area = area.display().to_string();
    prop_oneof![
        Just(format!("{area}/dir")),
        Just(format!("{area}/missing/deeper")),
        Just(format!("{area}/link")),
        Just(format!("{area}/link/inside")),
        Just(format!("{area}/dir/../../escape")),
        Just(format!("{area}/nul\0byte")),
        Just("relative/dir".to_owned()),
        Just("../../escape".to_owned()),
        Just("/dev/null".to_owned()),
        Just(String::new()),
        text(),
    ]
}

/// A path as a container would see it.
pub fn container_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/data".to_owned()),
        Just("/data/../../etc".to_owned()),
        Just("relative".to_owned()),
        Just("/proc/self".to_owned()),
        Just("/a\0b".to_owned()),
        Just(String::new()),
        text().prop_map(|t| format!("/{t}")),
    ]
}

/// A number from the edges of its type and the values near zero.
pub fn int64() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![
            i64::MIN,
            i64::MIN + 1,
            -1_000_000_007,
            -2,
            -1,
            0,
            1,
            2,
            1023,
            1024,
            4096,
            1 << 31,
            u32::MAX as i64,
            1 << 40,
            i64::MAX - 1,
            i64::MAX,
        ]),
        any::<i64>(),
    ]
}

pub fn int32() -> impl Strategy<Value = i32> {
    prop_oneof![
        prop::sample::select(vec![i32::MIN, -1, 0, 1, 2, 3, 4, 65535, 65536, i32::MAX]),
        any::<i32>(),
    ]
}

pub fn labels() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(text(), text(), 0..4)
}

pub fn resources() -> impl Strategy<Value = LinuxContainerResources> {
    (
        (int64(), int64(), int64(), int64(), int64(), int64()),
        (text(), text()),
        prop::collection::vec((text(), any::<u64>()), 0..2),
        prop::collection::hash_map(text(), text(), 0..2),
    )
        .prop_map(
            |((period, quota, shares, memory, oom, swap), (cpus, mems), huge, unified)| {
                LinuxContainerResources {
                    cpu_period: period,
                    cpu_quota: quota,
                    cpu_shares: shares,
                    memory_limit_in_bytes: memory,
                    oom_score_adj: oom,
                    memory_swap_limit_in_bytes: swap,
                    cpuset_cpus: cpus,
                    cpuset_mems: mems,
                    hugepage_limits: huge
                        .into_iter()
                        .map(|(page_size, limit)| HugepageLimit { page_size, limit })
                        .collect(),
                    unified,
                }
            },
        )
}

pub fn argv() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            2 => Just("sleep".to_owned()),
            1 => Just("/bin/sleep".to_owned()),
            1 => Just("3600".to_owned()),
            1 => Just("/no/such/binary".to_owned()),
            2 => text(),
        ],
        0..4,
    )
}
