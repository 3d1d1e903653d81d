//! The load engine every scenario drives: closed-loop clients (no think time) for a duration or
//! for a number of requests, latencies and failures per route, percentiles, the summary table.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// When a load stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// After `warmup` (not counted), for `measured`: only requests that start and finish inside
    /// the measured window count.
    Elapsed {
        warmup: Duration,
        measured: Duration,
    },
    /// After this many requests in all, every one counted.
    Count(u64),
}

/// `clients` closed-loop clients until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub clients: usize,
    pub until: Until,
}

impl Plan {
    pub fn timed(clients: usize, warmup: Duration, measured: Duration) -> Self {
        Self {
            clients,
            until: Until::Elapsed { warmup, measured },
        }
    }

    pub fn count(clients: usize, requests: u64) -> Self {
        Self {
            clients,
            until: Until::Count(requests),
        }
    }
}

/// Why a request did not count as a success: a short label (`429`, `timeout`, ...) that the
/// summary counts per route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Self {
        let label = if e.is_timeout() {
            "timeout"
        } else if e.is_decode() {
            "unreadable body"
        } else {
            "connection error"
        };
        Failure(label.into())
    }
}

/// A request's result as the engine records it.
pub type Outcome<T = ()> = Result<T, Failure>;

/// Nearest-rank percentile `p` (0..=1) of sorted latencies, in milliseconds (NaN when empty).
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// The successes' latencies (sorted) and the failures of one route.
#[derive(Debug, Default, Clone)]
pub struct RouteStats {
    latencies: Vec<Duration>,
    failures: BTreeMap<String, u64>,
}

impl RouteStats {
    pub fn from_latencies(mut latencies: Vec<Duration>) -> Self {
        latencies.sort();
        Self {
            latencies,
            failures: BTreeMap::new(),
        }
    }

    pub fn count(&self) -> usize {
        self.latencies.len()
    }

    pub fn errors(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies, p)
    }

    /// Successes per second over `window`.
    pub fn rate(&self, window: Duration) -> f64 {
        self.count() as f64 / window.as_secs_f64().max(f64::EPSILON)
    }

    pub fn merge(&mut self, other: &RouteStats) {
        self.latencies.extend_from_slice(&other.latencies);
        self.latencies.sort();
        for (label, n) in &other.failures {
            *self.failures.entry(label.clone()).or_default() += n;
        }
    }
}

/// What one load measured, per route.
#[derive(Debug, Default)]
pub struct Report {
    routes: BTreeMap<String, RouteStats>,
    /// The measured window (for a count: from the first request until the last answer).
    pub window: Duration,
}

impl Report {
    #[cfg(test)]
    fn route(&self, name: &str) -> RouteStats {
        self.routes.get(name).cloned().unwrap_or_default()
    }

    /// Every route's requests as one.
    pub fn all(&self) -> RouteStats {
        let mut all = RouteStats::default();
        for stats in self.routes.values() {
            all.merge(stats);
        }
        all
    }
}

struct Shared {
    until: Until,
    measured_from: Instant,
    ends: Option<Instant>,
    issued: AtomicU64,
    routes: Mutex<BTreeMap<String, RouteStats>>,
}

/// One client's handle on a running load: the next turn, and timing of its requests.
pub struct Client {
    pub index: usize,
    shared: Arc<Shared>,
}

impl Client {
    /// The next request's sequence number (0, 1, ... across all clients), or `None` once the load
    /// is over.
    pub fn next(&self) -> Option<u64> {
        let seq = self.shared.issued.fetch_add(1, Ordering::Relaxed);
        let more = match (self.shared.until, self.shared.ends) {
            (Until::Count(n), _) => seq < n,
            (Until::Elapsed { .. }, Some(ends)) => Instant::now() < ends,
            (Until::Elapsed { .. }, None) => false,
        };
        more.then_some(seq)
    }

    /// Sends one request of `route` and records its latency (success) or its failure, when it
    /// falls inside the measured window. Returns what the request returned on success.
    pub async fn time<T>(
        &self,
        route: &str,
        request: impl Future<Output = Outcome<T>>,
    ) -> Option<T> {
        let began = Instant::now();
        let outcome = request.await;
        let done = Instant::now();
        let s = &self.shared;
        if began >= s.measured_from && s.ends.is_none_or(|ends| done <= ends) {
            let mut routes = s.routes.lock().unwrap_or_else(PoisonError::into_inner);
            let stats = match routes.get_mut(route) {
                Some(stats) => stats,
                None => routes.entry(route.to_string()).or_default(),
            };
            match &outcome {
                Ok(_) => stats.latencies.push(done - began),
                Err(Failure(label)) => *stats.failures.entry(label.clone()).or_default() += 1,
            }
        }
        outcome.ok()
    }
}

/// Runs `plan.clients` clients, each the future `client` makes from its handle (a loop over
/// [`Client::next`] timing requests with [`Client::time`]), and collects what they measured.
pub async fn run<F, Fut>(plan: Plan, client: F) -> Report
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let (measured_from, ends) = match plan.until {
        Until::Elapsed { warmup, measured } => {
            (started + warmup, Some(started + warmup + measured))
        }
        Until::Count(_) => (started, None),
    };
    let shared = Arc::new(Shared {
        until: plan.until,
        measured_from,
        ends,
        issued: AtomicU64::new(0),
        routes: Mutex::new(BTreeMap::new()),
    });
    let tasks: Vec<_> = (0..plan.clients.max(1))
        .map(|index| {
            tokio::spawn(client(Client {
                index,
                shared: shared.clone(),
            }))
        })
        .collect();
    for task in tasks {
        // A client that panicked has already said so on stderr; the others' figures stand.
        let _ = task.await;
    }
    let window = match ends {
        Some(ends) => ends - measured_from,
        None => started.elapsed(),
    };
    let mut routes =
        std::mem::take(&mut *shared.routes.lock().unwrap_or_else(PoisonError::into_inner));
    for stats in routes.values_mut() {
        stats.latencies.sort();
    }
    Report { routes, window }
}

/// Which client sends which request of a [`closed_loop`].
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    pub client: usize,
    pub seq: u64,
}

/// The simplest load: every client sends `request(turn)` for each turn, all under `route`.
pub async fn closed_loop<F, Fut, T>(route: &str, plan: Plan, request: F) -> Report
where
    F: Fn(Turn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome<T>> + Send,
{
    let request = Arc::new(request);
    let route: Arc<str> = route.into();
    run(plan, move |c| {
        let (request, route) = (request.clone(), route.clone());
        async move {
            while let Some(seq) = c.next() {
                let turn = Turn {
                    client: c.index,
                    seq,
                };
                c.time(&route, request(turn)).await;
            }
        }
    })
    .await
}

/// The table every scenario prints at its end: a row per measured route, then what failed and
/// how often.
#[derive(Default)]
pub struct Summary {
    rows: Vec<String>,
    failures: Vec<String>,
}

impl Summary {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn row(&mut self, name: &str, stats: &RouteStats, window: Duration) {
        self.rows.push(format_row(name, stats, window));
        for (label, n) in &stats.failures {
            self.failures
                .push(format!("  error: {name} → {label} ×{n}"));
        }
    }

    /// A row for each route of `report`.
    pub fn report(&mut self, report: &Report) {
        for (route, stats) in &report.routes {
            self.row(route, stats, report.window);
        }
    }

    /// Prints the table, then the failures.
    pub fn print(self) {
        println!(
            "{:<48} {:>7} {:>9} {:>8} {:>8} {:>8} {:>7}",
            "route", "count", "per s", "p50 ms", "p95 ms", "p99 ms", "errors"
        );
        for line in self.rows.iter().chain(&self.failures) {
            println!("{line}");
        }
    }
}

fn format_row(name: &str, stats: &RouteStats, window: Duration) -> String {
    format!(
        "{name:<48} {:>7} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>7}",
        stats.count(),
        stats.rate(window),
        stats.ms(0.50),
        stats.ms(0.95),
        stats.ms(0.99),
        stats.errors()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.95), 95.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&sorted, 0.0), 1.0);
        assert_eq!(percentile_ms(&[ms(7)], 0.99), 7.0);
        assert!(percentile_ms(&[], 0.5).is_nan());
    }

    #[test]
    fn stats_sort_merge_and_summarise() {
        let mut a = RouteStats::from_latencies(vec![ms(30), ms(10), ms(20)]);
        a.failures.insert("429".into(), 2);
        let mut b = RouteStats::from_latencies(vec![ms(40)]);
        b.failures.insert("429".into(), 1);
        b.failures.insert("timeout".into(), 1);
        let report = Report {
            routes: [("a".to_string(), a), ("b".to_string(), b)].into(),
            window: Duration::from_secs(2),
        };
        let all = report.all();
        assert_eq!(all.count(), 4);
        assert_eq!(all.errors(), 4);
        assert_eq!(all.ms(0.5), 20.0);
        assert_eq!(all.rate(report.window), 2.0);
        assert_eq!(report.route("missing").count(), 0);
        let row = format_row("GET /x", &report.route("a"), report.window);
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["GET", "/x", "3", "1.5", "20.0", "30.0", "30.0", "2"]
        );
    }

    #[tokio::test]
    async fn a_counted_load_sends_exactly_its_requests() {
        let report = closed_loop("op", Plan::count(4, 10), |turn| async move {
            if turn.seq % 5 == 0 {
                Err(Failure("boom".into()))
            } else {
                Ok(())
            }
        })
        .await;
        let op = report.route("op");
        assert_eq!((op.count(), op.errors()), (8, 2));
        assert_eq!(op.failures.get("boom"), Some(&2));
    }

    #[tokio::test]
    async fn a_timed_load_counts_only_its_measured_window() {
        let plan = Plan::timed(2, ms(50), ms(100));
        let report = closed_loop("op", plan, |_| async {
            tokio::time::sleep(ms(10)).await;
            Ok(())
        })
        .await;
        assert_eq!(report.window, ms(100));
        // Two clients, 10 ms a request, 100 ms measured: at most 20 (none from the warm-up).
        let n = report.route("op").count();
        assert!((1..=20).contains(&n), "{n}");
    }
}
