//! Percentiles of latency samples; a process's memory and CPU time from /proc; the machine.

/// p-th percentile (0..=100) of `v` by nearest rank; NaN for no samples.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// (p50, p90, p99).
pub fn summary(v: &[f64]) -> (f64, f64, f64) {
    (
        percentile(v, 50.0),
        percentile(v, 90.0),
        percentile(v, 99.0),
    )
}

/// This machine in one line for reports: CPU model, cores, memory (from /proc).
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cpu}, {cores} cores, {mem_gb:.0} GiB")
}

/// Resident set size of a process, bytes (from /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU seconds of a process (from /proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // The kernel's USER_HZ is 100 on every Linux architecture this runs on.
    Some((utime + stime) / 100.0)
}

/// CPU seconds of a process with nanosecond resolution (see [`thread_runs`]).
pub fn cpu_seconds_fine(pid: u32) -> Option<f64> {
    thread_runs(pid).map(|r| r.cpu_seconds)
}

/// What a process's live threads have run, summed from `/proc/PID/task/*/schedstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThreadRuns {
    /// Run time with nanosecond resolution (the clock-tick counters of `/proc/PID/stat` are
    /// 10 ms coarse, too coarse for a few seconds' window at a few hundred µs per frame).
    pub cpu_seconds: f64,
    /// Times a thread was put on a CPU: every wake-up of a sleeping thread is one (so is every
    /// return after preemption). Per frame, it counts the hand-offs between threads, which
    /// time on a shared machine measures only through noise.
    pub runs: u64,
}

impl std::ops::Add for ThreadRuns {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            cpu_seconds: self.cpu_seconds + o.cpu_seconds,
            runs: self.runs + o.runs,
        }
    }
}

pub fn thread_runs(pid: u32) -> Option<ThreadRuns> {
    thread_runs_where(pid, |_| true)
}

/// [`thread_runs`] of the threads whose name (`/proc/PID/task/TID/comm`, at most 15 bytes)
/// starts with `prefix`: one component's share of a process that hosts several.
pub fn thread_runs_named(pid: u32, prefix: &str) -> Option<ThreadRuns> {
    thread_runs_where(pid, |comm| comm.starts_with(prefix))
}

fn thread_runs_where(pid: u32, keep: impl Fn(&str) -> bool) -> Option<ThreadRuns> {
    let mut total = ThreadRuns::default();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = t.ok()?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !keep(comm.trim_end()) {
            continue;
        }
        let p = dir.join("schedstat");
        // "run ns, wait ns, timeslices"
        let Ok(line) = std::fs::read_to_string(p) else {
            continue;
        };
        let mut f = line.split_whitespace().map(|x| x.parse::<u64>().ok());
        if let (Some(Some(ns)), _, Some(Some(runs))) = (f.next(), f.next(), f.next()) {
            total.cpu_seconds += ns as f64 / 1e9;
            total.runs += runs;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_runs_count_wake_ups() {
        let me = std::process::id();
        let before = thread_runs(me).expect("own schedstat");
        // A thread that sleeps and wakes 50 times is put on a CPU at least 50 times; it is
        // counted while alive, so it is sampled before it exits.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (woke_tx, woke_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            for _ in 0..50 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            woke_tx.send(()).unwrap();
            done_rx.recv().unwrap();
        });
        woke_rx.recv().unwrap();
        let after = thread_runs(me).unwrap();
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(after.runs >= before.runs + 50, "{before:?} → {after:?}");
        assert!(after.cpu_seconds > 0.0);
    }

    #[test]
    fn thread_runs_named_counts_only_the_named_threads() {
        let me = std::process::id();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (woke_tx, woke_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("stats-probe-x".into())
            .spawn(move || {
                for _ in 0..30 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                woke_tx.send(()).unwrap();
                done_rx.recv().unwrap();
            })
            .unwrap();
        woke_rx.recv().unwrap();
        let named = thread_runs_named(me, "stats-probe").unwrap();
        let none = thread_runs_named(me, "no-such-thread-").unwrap();
        let all = thread_runs(me).unwrap();
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(named.runs >= 30, "{named:?}");
        assert_eq!(none, ThreadRuns::default());
        assert!(all.runs > named.runs, "{all:?} vs {named:?}");
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
