//! pierd's own CPU, memory and file descriptors, under the names every
//! Prometheus client library gives them (`process_*`), so the dashboards
//! written for other daemons work for pierd too.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug)]
pub struct ProcessCollector;

/// What /proc says of this process, read once per scrape: three small files
/// and one directory, whatever the node holds.
struct Reading {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    start_time_seconds: i64,
    open_fds: i64,
    max_fds: i64,
}

fn read() -> Option<Reading> {
    use nix::unistd::{SysconfVar, sysconf};
    use pier_proto::proc_stat::parse_u64;

    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks = sysconf(SysconfVar::CLK_TCK).ok()??.max(1) as f64;
    let page = sysconf(SysconfVar::PAGE_SIZE).ok()??.max(1);
    let cpu = parse_u64(&stat, 14)? + parse_u64(&stat, 15)?;
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    })?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
    let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map_or(-1, |(soft, _)| i64::try_from(soft).unwrap_or(i64::MAX));
    Some(Reading {
        cpu_seconds: cpu as f64 / ticks,
        resident_bytes: (parse_u64(&stat, 24)? as i64).saturating_mul(page),
        virtual_bytes: i64::try_from(parse_u64(&stat, 23)?).unwrap_or(i64::MAX),
        start_time_seconds: (boot + (parse_u64(&stat, 22)? as f64 / ticks) as u64) as i64,
        open_fds,
        max_fds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(r) = read() else {
            // Without /proc there is nothing to say; the other metrics stand.
            return Ok(());
        };
        let cpu = encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent by pierd, in seconds",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(r.cpu_seconds).encode(cpu)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory of pierd, in bytes",
                r.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory of pierd, in bytes",
                r.virtual_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of pierd since the Unix epoch, in seconds",
                r.start_time_seconds,
            ),
            (
                "process_open_fds",
                "File descriptors pierd holds open",
                r.open_fds,
            ),
            (
                "process_max_fds",
                "pierd's limit on open file descriptors",
                r.max_fds,
            ),
        ] {
            let gauge = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(gauge)?;
        }
        Ok(())
    }
}
