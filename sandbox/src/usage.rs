//! What a pod's server process uses, read from `/proc`, and how the
//! metrics API writes it: the figures behind `metrics.k8s.io` PodMetrics.
//!
//! Owns reading one process's CPU time, age and resident memory, and the
//! Kubernetes quantity format (`12345n` nanocores, `123456Ki`). CPU is the
//! average since the process started (CPU seconds over its age), so the
//! reported `window` is the process's age: no background sampling, and two
//! reads of an idle server give about the same figure. Which pods are
//! reported is the API's business ([`crate::api`]).

use std::time::Duration;

/// One process's usage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// Average CPU over `window`, in nanocores (1e9 = one core busy).
    pub nanocores: u64,
    /// Resident set size (`VmRSS`), in KiB.
    pub rss_kib: u64,
    /// How long the figures were averaged over: the process's age.
    pub window: Duration,
}

/// Reads `pid`'s usage from `/proc`; `None` when the process is gone.
pub fn of_process(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let uptime: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let (cpu_ticks, start_ticks) = cpu_and_start_ticks(&stat)?;
    let hz = clock_ticks_per_second();
    let age = (uptime - start_ticks as f64 / hz).max(0.001);
    let cpu_seconds = cpu_ticks as f64 / hz;
    Some(Usage {
        nanocores: (cpu_seconds / age * 1e9).round() as u64,
        rss_kib: rss_kib(&status)?,
        window: Duration::from_secs_f64(age),
    })
}

/// `utime + stime` and `starttime` (fields 14, 15 and 22 of
/// `/proc/PID/stat`, in clock ticks). The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn cpu_and_start_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(22)?))
}

/// `VmRSS` of `/proc/PID/status`, in KiB.
fn rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let n = words.next()?.parse().ok()?;
    (words.next()? == "kB").then_some(n)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the running kernel; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// CPU as metrics-server writes it: nanocores with the `n` suffix.
pub fn cpu_quantity(nanocores: u64) -> String {
    format!("{nanocores}n")
}

/// Memory as metrics-server writes it: KiB with the `Ki` suffix.
pub fn memory_quantity(kib: u64) -> String {
    format!("{kib}Ki")
}

/// A window as a Go duration (`12.345s`), what `metav1.Duration` parses.
pub fn window(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_written_the_way_metrics_server_writes_them() {
        assert_eq!(cpu_quantity(0), "0n");
        assert_eq!(cpu_quantity(12_345), "12345n");
        assert_eq!(memory_quantity(123_456), "123456Ki");
        assert_eq!(window(Duration::from_millis(12_345)), "12.345s");
        assert_eq!(window(Duration::from_secs(3)), "3.000s");
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as `comm` may hold.
        let stat = "4242 (bao (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 9000 1000 200";
        assert_eq!(cpu_and_start_ticks(stat), Some((300, 9000)));
        assert_eq!(cpu_and_start_ticks("garbage"), None);
    }

    #[test]
    fn rss_is_read_in_kib() {
        let status = "Name:\tbao\nVmPeak:\t  900 kB\nVmRSS:\t   51234 kB\nThreads:\t12\n";
        assert_eq!(rss_kib(status), Some(51_234));
        assert_eq!(rss_kib("Name:\tbao\n"), None);
    }

    #[test]
    fn this_process_uses_memory_and_some_cpu() {
        // Busy until the kernel has counted a few ticks of CPU for this
        // process: wall time alone is not CPU time on a loaded machine.
        let stat = || std::fs::read_to_string(format!("/proc/{}/stat", std::process::id()));
        let ticks = || cpu_and_start_ticks(&stat().unwrap()).unwrap().0;
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while ticks() < 3 && spin.elapsed() < Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(
            ticks() >= 3,
            "no CPU time counted after {:?}",
            spin.elapsed()
        );
        let u = of_process(std::process::id()).expect("this process");
        assert!(u.rss_kib > 0, "{u:?}");
        assert!(u.nanocores > 0, "{u:?}");
        assert!(u.window > Duration::ZERO);
        assert_eq!(of_process(u32::MAX), None);
    }
}
