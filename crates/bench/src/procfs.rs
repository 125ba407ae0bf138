//! What the runner reads from `/proc` (Linux only): CPU time and memory of the proxy under
//! test, the open-file limit, CPU affinity, and the machine's description and load.

use std::fs;
use std::path::Path;
use std::process::Command;

/// CPU time (user + system) a process has used, in clock ticks, threads (also exited ones)
/// included. `None` once the process is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// `utime` and `stime` are fields 14 and 15 of `/proc/PID/stat`; the command name (field 2)
/// may hold spaces and parentheses, so counting starts after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`USER_HZ`); 100 on every common Linux build.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Busy clock ticks of one CPU since boot (user, nice, system, irq, softirq, steal), from
/// `/proc/stat`: with the proxy's own ticks, it shows what else ran on the proxy's core.
pub fn cpu_busy_ticks(cpu: usize) -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_busy(&stat, cpu)
}

fn parse_cpu_busy(stat: &str, cpu: usize) -> Option<u64> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal …
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM` …), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Resets a process's peak RSS (`VmHWM`) to its current RSS, so a scenario's peak is its own.
/// Returns false where the kernel refuses (not our process, or an old kernel).
pub fn reset_peak(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The direct children of a process (nginx's workers under its master).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// How many files a process has open (to see a proxy's connections close).
pub fn open_fds(pid: u32) -> Option<usize> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// The soft and hard limits on open files of this process.
pub fn open_files_limit() -> Option<(u64, u64)> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    Some((nums.next()?, nums.next()?))
}

/// The CPUs this process may run on, as the kernel lists them (`0-1`, `0`).
pub fn allowed_cpus() -> String {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// The 1-, 5- and 15-minute load averages, as written in `/proc/loadavg`.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Whether this process runs as root (nginx then needs `user root;` to keep its workers
/// able to use the runner's temporary directory).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// One line describing the machine: CPU model, cores, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|v| v.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let all_cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_status_kib(&m, "MemTotal"))
        .map_or(0.0, |k| k as f64 / 1024.0 / 1024.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {all_cores} CPUs, {mem_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}

/// Whether a program is on `PATH` (or is a path that exists).
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_odd_command_names() {
        // Field 2 may contain spaces and `)`; utime=7 and stime=5 follow at fixed positions.
        let stat = "42 (tok (io) x) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn busy_ticks_of_one_cpu() {
        let stat =
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 10 1 5 1000 7 2 3 4 0 0\ncpu1 1 0 1 50 0 0 0 0 0 0\n";
        assert_eq!(parse_cpu_busy(stat, 0), Some(10 + 1 + 5 + 2 + 3 + 4));
        assert_eq!(parse_cpu_busy(stat, 1), Some(2));
        assert_eq!(parse_cpu_busy(stat, 2), None);
    }

    #[test]
    fn status_fields_in_kib() {
        let status = "Name:\ttollgate\nVmHWM:\t   12345 kB\nVmRSS:\t    9876 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(9876));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(12345));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(status_kib(me, "VmRSS").is_some_and(|k| k > 0));
        assert!(open_files_limit().is_some());
    }
}
