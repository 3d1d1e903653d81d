//! The resident memory of the platform's process (`--pid`), from `/proc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A process's memory from `/proc/<pid>/status` in MiB: `VmRSS` (now) or `VmHWM` (peak since it
/// started).
pub fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Samples a process's resident memory every 100 ms while a bench runs.
pub struct RssWatch {
    pid: u32,
    at_start: Option<f64>,
    peak_kib: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    pub fn start(pid: u32) -> Self {
        let (peak_kib, stop) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
        let task = tokio::spawn({
            let (peak_kib, stop) = (peak_kib.clone(), stop.clone());
            async move {
                while !stop.is_cancelled() {
                    if let Some(mib) = memory_mib(pid, "VmRSS") {
                        peak_kib.fetch_max((mib * 1024.0) as u64, Ordering::Relaxed);
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        });
        Self {
            pid,
            at_start: memory_mib(pid, "VmRSS"),
            peak_kib,
            stop,
            task,
        }
    }

    /// Stops sampling and prints the process's memory at the start, its peak during the bench
    /// and its peak since it started.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
        let pid = self.pid;
        let peak = self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0;
        match (self.at_start, memory_mib(pid, "VmHWM")) {
            // The kernel updates VmHWM lazily: a sample may exceed it.
            (Some(start), Some(hwm)) => println!(
                "RSS of pid {pid}: {start:.1} MiB at the start, {peak:.1} MiB peak during the bench ({:.1} MiB peak since it started)",
                hwm.max(peak)
            ),
            _ => println!("RSS of pid {pid}: unavailable (no /proc/{pid}/status)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_of_this_process() {
        let rss = memory_mib(std::process::id(), "VmRSS").expect("/proc");
        let hwm = memory_mib(std::process::id(), "VmHWM").expect("/proc");
        assert!(rss > 0.0 && hwm >= rss);
        assert!(memory_mib(std::process::id(), "VmNone").is_none());
    }
}
