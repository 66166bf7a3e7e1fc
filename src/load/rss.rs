//! Resident memory of a process, from `/proc/<pid>/status` (Linux).

/// `VmRSS` of `pid` in KiB, or `None` when unreadable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    read_status_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// CPU time (user + system) `pid` has used, in microseconds, from `/proc/<pid>/stat`.
pub fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // /proc reports these in USER_HZ clock ticks, 100 per second on Linux.
    Some(ticks * 10_000)
}

/// CPU time (user + system) of `pid` and every process below it (e.g. PostgreSQL's postmaster
/// and its backends), in microseconds; processes that already exited are not counted.
pub fn tree_cpu_micros(pid: u32) -> Option<u64> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // The parent's pid is the second field after the command name.
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|f| f.parse().ok())
        {
            parents.push((p, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    let own = cpu_micros(pid)?;
    Some(own + tree[1..].iter().filter_map(|p| cpu_micros(*p)).sum::<u64>())
}

/// `VmRSS` of this process in KiB.
pub fn own_rss_kib() -> Option<u64> {
    read_status_kib("/proc/self/status", "VmRSS:")
}

fn read_status_kib(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    parse_field_kib(&status, field)
}

fn parse_field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_vmrss() {
        let s = "Name:\tx\nVmHWM:\t  900 kB\nVmRSS:\t  812 kB\n";
        assert_eq!(super::parse_field_kib(s, "VmRSS:"), Some(812));
        assert_eq!(super::parse_field_kib(s, "VmSwap:"), None);
        assert!(super::own_rss_kib().is_some());
        assert!(super::cpu_micros(std::process::id()).is_some());
        assert!(super::tree_cpu_micros(std::process::id()).is_some());
        assert!(super::tree_cpu_micros(u32::MAX).is_none());
    }
}
