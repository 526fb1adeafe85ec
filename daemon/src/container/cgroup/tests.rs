//! Finding cgroups and reading their files, against fixture trees laid out
//! as the kernel lays out v1 and v2 hierarchies.

use std::path::Path;

use super::*;

fn write(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write fixture");
    }
}

const V1_MEMORY_STAT: &str = "cache 4096\nrss 8192\nmapped_file 0\npgfault 11\npgmajfault 1\n\
inactive_file 4096\ntotal_cache 1052672\ntotal_rss 2101248\ntotal_mapped_file 12288\n\
total_swap 0\ntotal_pgfault 1200\ntotal_pgmajfault 3\ntotal_inactive_file 524288\n";

const V2_MEMORY_STAT: &str = "anon 2101248\nfile 1052672\nkernel 65536\nfile_mapped 12288\n\
inactive_file 524288\nactive_file 528384\npgfault 1200\npgmajfault 3\n";

fn v1_fixture(root: &Path) -> Cgroup {
    let cpuacct = root.join("cpuacct/pier/c1");
    let cpu = root.join("cpu/pier/c1");
    let memory = root.join("memory/pier/c1");
    let pids = root.join("pids/pier/c1");
    write(
        &cpuacct,
        &[
            ("cpuacct.usage", "2500000000\n"),
            ("cpuacct.stat", "user 180\nsystem 65\n"),
        ],
    );
    write(
        &cpu,
        &[(
            "cpu.stat",
            "nr_periods 40\nnr_throttled 7\nthrottled_time 350000000\n",
        )],
    );
    write(
        &memory,
        &[
            ("memory.usage_in_bytes", "3153920\n"),
            ("memory.max_usage_in_bytes", "9000000\n"),
            ("memory.failcnt", "12\n"),
            ("memory.stat", V1_MEMORY_STAT),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
            ("cgroup.procs", "101\n102\n103\n"),
        ],
    );
    write(&pids, &[("pids.current", "5\n")]);
    Cgroup::V1 {
        cpuacct,
        cpu: Some(cpu),
        memory,
        pids: Some(pids),
    }
}

fn v2_fixture(dir: &Path) -> Cgroup {
    write(
        dir,
        &[
            (
                "cpu.stat",
                "usage_usec 2500000\nuser_usec 1800000\nsystem_usec 700000\n\
                 nr_periods 40\nnr_throttled 7\nthrottled_usec 350000\n",
            ),
            ("memory.current", "3153920\n"),
            ("memory.peak", "9000000\n"),
            ("memory.swap.current", "4096\n"),
            ("memory.stat", V2_MEMORY_STAT),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n",
            ),
            ("cgroup.procs", "101\n102\n103\n"),
            ("pids.current", "5\n"),
        ],
    );
    Cgroup::V2(dir.to_owned())
}

#[test]
fn v1_reading_takes_every_figure_from_its_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let sample = v1_fixture(root.path()).read(Detail::Full);
    assert_ne!(sample.timestamp, 0);
    assert_eq!(
        sample.cpu,
        Cpu {
            usage_ns: Some(2_500_000_000),
            user_ns: Some(1_800_000_000),
            system_ns: Some(650_000_000),
            periods: Some(40),
            throttled_periods: Some(7),
            throttled_ns: Some(350_000_000),
        }
    );
    assert_eq!(
        sample.memory,
        Memory {
            usage: Some(3_153_920),
            max_usage: Some(9_000_000),
            inactive_file: Some(524_288),
            rss: Some(2_101_248),
            cache: Some(1_052_672),
            mapped_file: Some(12_288),
            swap: Some(0),
            failcnt: Some(12),
            pgfault: Some(11),
            pgfault_hierarchy: Some(1200),
            pgmajfault: Some(1),
            pgmajfault_hierarchy: Some(3),
            oom_kills: Some(2),
        }
    );
    assert_eq!(sample.memory.working_set(), Some(3_153_920 - 524_288));
    assert_eq!((sample.processes, sample.threads), (Some(3), Some(5)));
}

#[test]
fn v2_reading_takes_every_figure_from_its_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let sample = v2_fixture(&root.path().join("pier/c1")).read(Detail::Full);
    assert_eq!(
        sample.cpu,
        Cpu {
            usage_ns: Some(2_500_000_000),
            user_ns: Some(1_800_000_000),
            system_ns: Some(700_000_000),
            periods: Some(40),
            throttled_periods: Some(7),
            throttled_ns: Some(350_000_000),
        }
    );
    assert_eq!(
        sample.memory,
        Memory {
            usage: Some(3_153_920),
            max_usage: Some(9_000_000),
            inactive_file: Some(524_288),
            rss: Some(2_101_248),
            cache: Some(1_052_672),
            mapped_file: Some(12_288),
            swap: Some(4096),
            failcnt: Some(12),
            pgfault: Some(1200),
            pgfault_hierarchy: Some(1200),
            pgmajfault: Some(3),
            pgmajfault_hierarchy: Some(3),
            oom_kills: Some(2),
        }
    );
    assert_eq!((sample.processes, sample.threads), (Some(3), Some(5)));
}

#[test]
fn a_usage_reading_leaves_out_what_container_stats_does_not_need() {
    let root = tempfile::tempdir().expect("tempdir");
    for cgroup in [
        v1_fixture(&root.path().join("v1")),
        v2_fixture(&root.path().join("v2")),
    ] {
        let sample = cgroup.read(Detail::Usage);
        assert_eq!(sample.cpu.usage_ns, Some(2_500_000_000), "{cgroup:?}");
        assert_eq!(sample.memory.usage, Some(3_153_920));
        assert_eq!(sample.memory.rss, Some(2_101_248));
        assert_eq!(sample.memory.max_usage, None);
        assert_eq!(sample.memory.oom_kills, None);
        assert_eq!(sample.processes, None);
    }
}

#[test]
fn a_cgroup_that_went_away_reads_as_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let gone = root.path().join("gone");
    let sample = Cgroup::V2(gone.clone()).read(Detail::Full);
    assert_eq!(
        (sample.cpu, sample.memory, sample.processes),
        Default::default()
    );
    let v1 = Cgroup::V1 {
        cpuacct: gone.clone(),
        cpu: None,
        memory: gone,
        pids: None,
    };
    assert_eq!(v1.read(Detail::Full).memory.working_set(), None);
}

#[test]
fn v2_without_peak_or_swap_files_leaves_those_figures_out() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("old-kernel");
    let cgroup = v2_fixture(&dir);
    std::fs::remove_file(dir.join("memory.peak")).expect("rm");
    std::fs::remove_file(dir.join("memory.swap.current")).expect("rm");
    let sample = cgroup.read(Detail::Full);
    assert_eq!((sample.memory.max_usage, sample.memory.swap), (None, None));
    assert_eq!(sample.memory.usage, Some(3_153_920));
}

#[test]
fn process_table_on_a_hybrid_host_uses_the_v1_controllers() {
    let table = "12:pids:/pier/pier-c1\n9:memory:/pier/pier-c1\n\
                 4:cpu,cpuacct:/pier/pier-c1\n1:name=systemd:/pier/pier-c1\n0::/pier/pier-c1\n";
    let root = Path::new("/sys/fs/cgroup");
    let combined = root.join("cpu,cpuacct/pier/pier-c1");
    assert_eq!(
        Cgroup::from_table(table, root, false),
        Some(Cgroup::V1 {
            cpuacct: combined.clone(),
            cpu: Some(combined),
            memory: root.join("memory/pier/pier-c1"),
            pids: Some(root.join("pids/pier/pier-c1")),
        })
    );
}

#[test]
fn process_table_with_separate_cpu_and_cpuacct_mounts() {
    let table = "4:memory:/k/c\n2:cpuacct:/k/c\n1:cpu:/k/c\n0::/\n";
    let root = Path::new("/sys/fs/cgroup");
    assert_eq!(
        Cgroup::from_table(table, root, false),
        Some(Cgroup::V1 {
            cpuacct: root.join("cpuacct/k/c"),
            cpu: Some(root.join("cpu/k/c")),
            memory: root.join("memory/k/c"),
            pids: None,
        })
    );
}

#[test]
fn process_table_on_a_v2_host_is_the_unified_path() {
    let root = Path::new("/sys/fs/cgroup");
    let table = "0::/system.slice/pier-c1.scope\n";
    assert_eq!(
        Cgroup::from_table(table, root, true),
        Some(Cgroup::V2(root.join("system.slice/pier-c1.scope")))
    );
    // Without v1 controllers and not on a v2-only host there is no accounting.
    assert_eq!(Cgroup::from_table(table, root, false), None);
    assert_eq!(Cgroup::from_table("garbage", root, true), None);
}

#[test]
fn systemd_slices_nest_in_their_prefixes() {
    assert_eq!(
        expand_slice("kubepods-burstable-pod1_2.slice"),
        Some(PathBuf::from(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice"
        ))
    );
    assert_eq!(
        expand_slice("system.slice"),
        Some(PathBuf::from("system.slice"))
    );
    assert_eq!(expand_slice("-.slice"), Some(PathBuf::new()));
    for bad in ["a--b.slice", "-a.slice", "a-.slice", ".slice", "a.scope"] {
        assert_eq!(expand_slice(bad), None, "{bad}");
    }
}

#[test]
fn pod_parent_is_found_for_either_driver_on_either_version() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let systemd = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice";
    std::fs::create_dir_all(root.join("memory/kubepods/besteffort/pod9")).expect("mkdir");
    std::fs::create_dir_all(root.join(systemd)).expect("mkdir");
    assert_eq!(
        Cgroup::parent_in("/kubepods/besteffort/pod9", root, false),
        Some(Cgroup::V1 {
            cpuacct: root.join("cpuacct/kubepods/besteffort/pod9"),
            cpu: Some(root.join("cpu/kubepods/besteffort/pod9")),
            memory: root.join("memory/kubepods/besteffort/pod9"),
            pids: Some(root.join("pids/kubepods/besteffort/pod9")),
        })
    );
    assert_eq!(
        Cgroup::parent_in("kubepods-besteffort-pod9.slice", root, true),
        Some(Cgroup::V2(root.join(systemd)))
    );
    assert_eq!(Cgroup::parent_in("/kubepods/missing", root, false), None);
    assert_eq!(Cgroup::parent_in("", root, true), None);
    assert_eq!(Cgroup::parent_in("-.slice", root, true), None);
}

#[test]
fn summing_adds_what_adds_up_and_drops_peaks() {
    let root = tempfile::tempdir().expect("tempdir");
    let one = v2_fixture(&root.path().join("a")).read(Detail::Full);
    let mut total = Sample::default();
    total.add(&one);
    total.add(&one);
    assert_eq!(total.cpu.usage_ns, Some(5_000_000_000));
    assert_eq!(total.memory.usage, Some(2 * 3_153_920));
    assert_eq!(total.memory.working_set(), Some(2 * (3_153_920 - 524_288)));
    assert_eq!(total.memory.oom_kills, Some(4));
    assert_eq!(total.processes, Some(6));
    assert_eq!(total.memory.max_usage, None);
}
