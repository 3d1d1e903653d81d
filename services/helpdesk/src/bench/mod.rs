//! `helpdesk bench [SCENARIO]`: the platform's benchmarks, each a load against a running platform
//! (`helpdesk up`, or a cluster behind its ingress) at `--base-url`, driven by one engine
//! ([`load`]):
//!
//! - `mix` (the default): a realistic mix of requests from many signed-in clients ([`mix`]);
//! - `baseline` (or `--baseline`): the hot routes as fractions of the database's own limits
//!   ([`baseline`]);
//! - `auth`: signup, login, `/auth/me` during a login flood, reset-password ([`auth`]);
//! - `tickets`: create, own-ticket lists, event lag, audit search ([`tickets`]);
//! - `notifications`: emails per second through the platform's mail transport
//!   ([`notifications`]);
//! - `dashboard`: the admin dashboard over many tickets ([`dashboard`]).
//!
//! The scenarios that seed rows or read a service's tables reach the platform's database through
//! DATABASE_URL or the private PostgreSQL of `--data-dir` ([`db`]), and remove what they seeded.
//! With `--pid`, every scenario reports the platform process's resident memory.

mod api;
mod auth;
mod baseline;
mod dashboard;
mod db;
mod load;
mod mix;
mod notifications;
mod rss;
mod tickets;

use std::path::PathBuf;
use std::time::Duration;

use api::Target;
use db::Database;
use rss::RssWatch;

/// What a bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A realistic mix of requests (see --mix) from many signed-in clients.
    Mix,
    /// GET and POST /tickets as fractions of the raw database limits of their SQL.
    Baseline,
    /// Signup, login, /auth/me during a login flood, reset-password with 10 and 10 000
    /// outstanding reset tokens.
    Auth,
    /// Ticket creation, own-ticket lists with 50 and 5 000 tickets, event lag, audit search over
    /// --audit-rows entries.
    Tickets,
    /// Emails per second through the platform's mail transport (--emails of them).
    Notifications,
    /// The admin dashboard's statistics over --tickets tickets.
    Dashboard,
}

impl Scenario {
    /// Default clients and measured seconds (per phase).
    fn defaults(self) -> (usize, u64) {
        match self {
            Scenario::Mix => (64, 30),
            Scenario::Baseline => (32, 20),
            Scenario::Auth | Scenario::Tickets => (32, 10),
            Scenario::Notifications => (8, 10),
            // As the former admin-service bench: one client, requests in sequence.
            Scenario::Dashboard => (1, 10),
        }
    }
}

/// `helpdesk bench`'s command line.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to measure [default: mix].
    #[arg(value_enum)]
    scenario: Option<Scenario>,
    /// The `baseline` scenario (the older spelling, kept).
    #[arg(long)]
    baseline: bool,
    /// Base URL of the platform.
    #[arg(long, default_value = "http://localhost:8080")]
    base_url: String,
    /// Concurrent clients (default: mix 64, baseline/auth/tickets 32, notifications 8,
    /// dashboard 1).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Measured seconds (default: mix 30; per phase: baseline 20, auth/tickets/dashboard 10).
    #[arg(long)]
    seconds: Option<u64>,
    /// Warm-up seconds before each measured phase (default: baseline 5, others 0).
    #[arg(long)]
    warmup: Option<u64>,
    /// The platform's process id, for its resident memory (RSS).
    #[arg(long)]
    pid: Option<u32>,
    /// Admin account (default: the one `helpdesk up` stored in --data-dir).
    #[arg(long)]
    admin_email: Option<String>,
    #[arg(long)]
    admin_password: Option<String>,
    /// mix: relative weights of the request kinds (login, list, view, create, comment, status,
    /// dashboard).
    #[arg(long, default_value = mix::Mix::DEFAULT)]
    mix: mix::Mix,
    /// tickets: audit entries to seed for the audit search.
    #[arg(long, default_value_t = 1_000_000)]
    audit_rows: u64,
    /// dashboard: tickets to seed into the dashboard's read model.
    #[arg(long, default_value_t = 100_000)]
    tickets: u64,
    /// notifications: emails to send.
    #[arg(long, default_value_t = 2_000)]
    emails: u64,
    /// The data folder of `helpdesk up`: its admin credentials and (without DATABASE_URL) its
    /// PostgreSQL.
    #[arg(long, default_value = ".helpdesk")]
    data_dir: PathBuf,
}

/// The settings every scenario reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub clients: usize,
    pub warmup: Duration,
    /// Measured time (per phase, in the scenarios with phases).
    pub measured: Duration,
}

impl BenchArgs {
    /// The scenario, `--baseline` included.
    pub fn scenario(&self) -> anyhow::Result<Scenario> {
        match (self.baseline, self.scenario) {
            (false, scenario) => Ok(scenario.unwrap_or(Scenario::Mix)),
            (true, None | Some(Scenario::Baseline)) => Ok(Scenario::Baseline),
            (true, Some(other)) => anyhow::bail!(
                "--baseline is the `baseline` scenario: it cannot be combined with `{}`",
                clap::ValueEnum::to_possible_value(&other)
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            ),
        }
    }

    pub fn settings(&self, scenario: Scenario) -> Settings {
        let (clients, seconds) = scenario.defaults();
        let warmup = if scenario == Scenario::Baseline { 5 } else { 0 };
        Settings {
            clients: self.concurrency.unwrap_or(clients).max(1),
            warmup: Duration::from_secs(self.warmup.unwrap_or(warmup)),
            measured: Duration::from_secs(self.seconds.unwrap_or(seconds).max(1)),
        }
    }

    /// The admin account: as given, else as `helpdesk up` stored it in the data folder.
    fn admin(&self) -> anyhow::Result<(String, String)> {
        let path = self.data_dir.join("admin-credentials");
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        let (email, password) = match stored.trim().split_once('\n') {
            Some((e, p)) => (Some(e.trim().to_string()), Some(p.trim().to_string())),
            None => (None, None),
        };
        match (
            self.admin_email.clone().or(email),
            self.admin_password.clone().or(password),
        ) {
            (Some(email), Some(password)) => Ok((email, password)),
            _ => anyhow::bail!(
                "no admin account: pass --admin-email and --admin-password, or the --data-dir of \
                 `helpdesk up` (there is no {})",
                path.display()
            ),
        }
    }
}

/// Runs the chosen scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let scenario = args.scenario()?;
    let settings = args.settings(scenario);
    let (email, password) = args.admin()?;
    let target = Target::connect(&args.base_url, settings.clients, &email, &password).await?;
    let rss = args.pid.map(RssWatch::start);
    let result = match scenario {
        Scenario::Mix => {
            // The platform's tables, when this machine can read them, show whether every
            // consumer keeps up (not only the audit trail the API shows).
            let db = Database::open(&args.data_dir).await.ok();
            let consumers = match &db {
                Some(db) => api::Consumers::open(db).await.ok(),
                None => None,
            };
            let result = mix::run(&target, &settings, &args.mix, consumers).await;
            if let Some(db) = db {
                db.close();
            }
            result
        }
        Scenario::Baseline => {
            with_database(&args, async |db| {
                baseline::run(&target, &settings, db, args.pid).await
            })
            .await
        }
        Scenario::Auth => {
            with_database(&args, async |db| auth::run(&target, &settings, db).await).await
        }
        Scenario::Tickets => {
            with_database(&args, async |db| {
                tickets::run(&target, &settings, db, args.audit_rows).await
            })
            .await
        }
        Scenario::Notifications => {
            with_database(&args, async |db| {
                notifications::run(&target, &settings, db, args.emails).await
            })
            .await
        }
        Scenario::Dashboard => {
            with_database(&args, async |db| {
                dashboard::run(&target, &settings, db, args.tickets).await
            })
            .await
        }
    };
    if let Some(rss) = rss {
        rss.finish().await;
    }
    result
}

async fn with_database(
    args: &BenchArgs,
    scenario: impl AsyncFnOnce(&Database) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let db = Database::open(&args.data_dir).await?;
    let result = scenario(&db).await;
    db.close();
    result
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<(Scenario, Settings)> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        let scenario = cli.bench.scenario()?;
        Ok((scenario, cli.bench.settings(scenario)))
    }

    #[test]
    fn scenarios_by_name_with_their_defaults() {
        let (s, settings) = parse(&[]).unwrap();
        assert_eq!(s, Scenario::Mix);
        assert_eq!((settings.clients, settings.measured.as_secs()), (64, 30));
        for (name, scenario) in [
            ("mix", Scenario::Mix),
            ("baseline", Scenario::Baseline),
            ("auth", Scenario::Auth),
            ("tickets", Scenario::Tickets),
            ("notifications", Scenario::Notifications),
            ("dashboard", Scenario::Dashboard),
        ] {
            assert_eq!(parse(&[name]).unwrap().0, scenario, "{name}");
        }
        let (_, s) = parse(&["dashboard", "--concurrency", "4", "--seconds", "2"]).unwrap();
        assert_eq!(
            (s.clients, s.measured, s.warmup),
            (4, Duration::from_secs(2), Duration::ZERO)
        );
        assert!(parse(&["load"]).is_err());
        assert!(parse(&["--mix", "logon=1"]).is_err());
    }

    #[test]
    fn baseline_flag_is_the_baseline_scenario() {
        let (s, settings) = parse(&["--baseline", "--pid", "1"]).unwrap();
        assert_eq!(s, Scenario::Baseline);
        assert_eq!(settings.clients, 32);
        assert_eq!(settings.warmup, Duration::from_secs(5));
        assert_eq!(
            parse(&["baseline", "--baseline"]).unwrap().0,
            Scenario::Baseline
        );
        let err = parse(&["auth", "--baseline"]).unwrap_err().to_string();
        assert!(err.contains("cannot be combined with `auth`"), "{err}");
        assert!(parse(&["mix", "--baseline"]).is_err());
    }

    #[test]
    fn admin_credentials_come_from_the_data_dir_unless_given() {
        let dir = std::env::temp_dir().join(format!("bench-args-{}", api::run_id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("admin-credentials"), "root@x.test\nsecret\n").unwrap();
        let d = dir.to_string_lossy().to_string();
        let cli = Cli::try_parse_from(["bench", "--data-dir", &d]).unwrap();
        assert_eq!(
            cli.bench.admin().unwrap(),
            ("root@x.test".into(), "secret".into())
        );
        let cli =
            Cli::try_parse_from(["bench", "--data-dir", &d, "--admin-password", "other"]).unwrap();
        assert_eq!(
            cli.bench.admin().unwrap(),
            ("root@x.test".into(), "other".into())
        );
        let _ = std::fs::remove_dir_all(&dir);
        let cli = Cli::try_parse_from(["bench", "--data-dir", &d]).unwrap();
        let err = cli.bench.admin().unwrap_err().to_string();
        assert!(err.contains("no admin account"), "{err}");
        let cli = Cli::try_parse_from([
            "bench",
            "--data-dir",
            &d,
            "--admin-email",
            "a@x.test",
            "--admin-password",
            "p",
        ])
        .unwrap();
        assert_eq!(cli.bench.admin().unwrap(), ("a@x.test".into(), "p".into()));
    }
}
