//! `helpdesk bench mix` (the default scenario): a realistic load on the whole platform.
//!
//! Each client signs up its own account, then loops over a weighted mix (login, list, view,
//! create, comment, status change, dashboard; see [`Mix`]). A sampler measures the event lag:
//! ticket created → its `ticket.created` entry visible in the ticket's audit trail. Prints
//! throughput, p50/p95/p99 per route, errors, and the lag.

use std::sync::Arc;

use rand::Rng;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Settings;
use super::api::{self, Account, Target, print_event_lag, sample_event_lag, send_json};
use super::load::{self, Client, Plan, Summary};

/// The kinds of request a client makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Login,
    List,
    View,
    Create,
    Comment,
    Status,
    Dashboard,
}

impl Op {
    const ALL: [(Op, &'static str); 7] = [
        (Op::Login, "login"),
        (Op::List, "list"),
        (Op::View, "view"),
        (Op::Create, "create"),
        (Op::Comment, "comment"),
        (Op::Status, "status"),
        (Op::Dashboard, "dashboard"),
    ];
}

/// Relative weights of each [`Op`], e.g. `login=2,list=30,view=20,create=10,comment=15,status=10,dashboard=13`
/// (the default: a read-mostly helpdesk where each signed-in session makes ~50 requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(Vec<(Op, u32)>);

impl Mix {
    pub const DEFAULT: &'static str =
        "login=2,list=30,view=20,create=10,comment=15,status=10,dashboard=13";

    fn pick(&self, roll: u32) -> Op {
        let mut left = roll;
        for (op, w) in &self.0 {
            if left < *w {
                return *op;
            }
            left -= w;
        }
        self.0.last().map(|(op, _)| *op).unwrap_or(Op::List)
    }

    fn total(&self) -> u32 {
        self.0.iter().map(|(_, w)| w).sum()
    }
}

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected name=weight"))?;
            let op = Op::ALL
                .iter()
                .find(|(_, n)| *n == name.trim())
                .map(|(op, _)| *op)
                .ok_or_else(|| {
                    let names: Vec<_> = Op::ALL.iter().map(|(_, n)| *n).collect();
                    format!(
                        "unknown request kind `{name}` (one of {})",
                        names.join(", ")
                    )
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: the weight must be a whole number"))?;
            weights.push((op, weight));
        }
        let mix = Mix(weights);
        if mix.total() == 0 {
            return Err("the mix needs at least one positive weight".into());
        }
        let weight =
            |op: Op| -> u32 { mix.0.iter().filter(|(o, _)| *o == op).map(|(_, w)| w).sum() };
        // Without creates a session has no ticket to view, comment on or change: its clients
        // would spin without sending a request.
        if weight(Op::Create) == 0
            && [Op::View, Op::Comment, Op::Status]
                .iter()
                .any(|op| weight(*op) > 0)
        {
            return Err(
                "view, comment and status act on tickets the session created: the mix needs create too"
                    .into(),
            );
        }
        Ok(mix)
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(op, w)| {
                let name = Op::ALL
                    .iter()
                    .find(|(o, _)| o == op)
                    .map_or("?", |(_, n)| n);
                format!("{name}={w}")
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// One client's signed-in session and the tickets it created (the last 50).
struct Session {
    account: Account,
    tickets: Vec<String>,
}

impl Session {
    async fn step(&mut self, c: &Client, target: &Target, mix: &Mix) {
        let op = mix.pick(rand::thread_rng().gen_range(0..mix.total()));
        let http = &target.http;
        let token = self.account.token.as_str();
        match op {
            Op::Login => {
                let body = json!({"email": self.account.email, "password": api::PASSWORD});
                let req = http.post(target.url("/auth/login")).json(&body);
                if let Some(v) = c.time("POST /auth/login", send_json(req, 200)).await
                    && let Some(t) = v["token"].as_str()
                {
                    self.account.token = t.to_string();
                }
            }
            Op::List => {
                let req = http.get(target.url("/tickets?limit=20")).bearer_auth(token);
                c.time("GET /tickets", api::send_valid(req, 200)).await;
            }
            Op::View => {
                let Some(id) = self.pick() else { return };
                let req = http
                    .get(target.url(&format!("/tickets/{id}")))
                    .bearer_auth(token);
                c.time("GET /tickets/:id", api::send_valid(req, 200)).await;
            }
            Op::Create => {
                let body = json!({"title": "Printer on fire", "description": "It is on fire again. Please help."});
                let req = http
                    .post(target.url("/tickets"))
                    .bearer_auth(token)
                    .json(&body);
                if let Some(v) = c.time("POST /tickets", send_json(req, 201)).await
                    && let Some(id) = v["id"].as_str()
                {
                    self.tickets.push(id.to_string());
                    if self.tickets.len() > 50 {
                        self.tickets.remove(0);
                    }
                }
            }
            Op::Comment => {
                let Some(id) = self.pick() else { return };
                let body = json!({"body": "Have you tried turning it off and on again?"});
                let req = http
                    .post(target.url(&format!("/tickets/{id}/comments")))
                    .bearer_auth(token)
                    .json(&body);
                c.time("POST /tickets/:id/comments", api::send_valid(req, 201))
                    .await;
            }
            Op::Status => {
                let Some(id) = self.pick() else { return };
                let status = ["OPEN", "IN_PROGRESS", "DONE"][rand::thread_rng().gen_range(0..3)];
                let req = http
                    .patch(target.url(&format!("/tickets/{id}")))
                    .bearer_auth(token)
                    .json(&json!({"status": status}));
                c.time("PATCH /tickets/:id", api::send_valid(req, 200))
                    .await;
            }
            Op::Dashboard => {
                let req = http
                    .get(target.url("/admin/dashboard/statistics"))
                    .bearer_auth(&target.admin);
                c.time("GET /admin/dashboard/statistics", api::send_valid(req, 200))
                    .await;
            }
        }
    }

    fn pick(&self) -> Option<String> {
        if self.tickets.is_empty() {
            return None;
        }
        Some(self.tickets[rand::thread_rng().gen_range(0..self.tickets.len())].clone())
    }
}

/// Runs the mix and prints the report.
pub async fn run(
    target: &Target,
    settings: &Settings,
    mix: &Mix,
    consumers: Option<api::Consumers>,
) -> anyhow::Result<()> {
    let every_consumer = consumers.is_some();
    println!(
        "helpdesk bench mix: {} clients for {:?} against {}, mix {mix}",
        settings.clients, settings.measured, target.base
    );
    let accounts = Arc::new(target.accounts(&api::run_id(), settings.clients).await?);
    let stop = CancellationToken::new();
    let lag = tokio::spawn({
        let (target, stop) = (target.clone(), stop.clone());
        async move { sample_event_lag(&target, consumers.as_ref(), stop).await }
    });
    let plan = Plan::timed(settings.clients, settings.warmup, settings.measured);
    let report = load::run(plan, |c| {
        let (target, mix) = (target.clone(), mix.clone());
        let account = accounts[c.index % accounts.len()].clone();
        async move {
            let mut session = Session {
                account,
                tickets: Vec::new(),
            };
            while c.next().is_some() {
                session.step(&c, &target, &mix).await;
            }
        }
    })
    .await;
    stop.cancel();
    let lags = lag.await.unwrap_or_default();
    let mut summary = Summary::new();
    summary.report(&report);
    summary.print();
    let all = report.all();
    println!(
        "total: {} requests in {:.1} s = {:.1} req/s, {} errors",
        all.count(),
        report.window.as_secs_f64(),
        all.rate(report.window),
        all.errors()
    );
    print_event_lag("during the load", &lags, every_consumer);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let mix: Mix = Mix::DEFAULT.parse().unwrap();
        assert_eq!(mix.total(), 100);
        assert_eq!(mix.pick(0), Op::Login);
        assert_eq!(mix.pick(1), Op::Login);
        assert_eq!(mix.pick(2), Op::List);
        assert_eq!(mix.pick(99), Op::Dashboard);
        let writes: Mix = "create=1,status=3".parse().unwrap();
        assert_eq!(writes.pick(0), Op::Create);
        assert!((1..4).all(|r| writes.pick(r) == Op::Status));
        assert!(
            "comment=50,status=50"
                .parse::<Mix>()
                .unwrap_err()
                .contains("needs create")
        );
        assert!("list=1,view=0,create=0".parse::<Mix>().is_ok());
        assert!("login=0".parse::<Mix>().is_err());
        assert!(
            "logon=1"
                .parse::<Mix>()
                .unwrap_err()
                .contains("unknown request kind")
        );
        assert!("list".parse::<Mix>().is_err());
        assert!("list=x".parse::<Mix>().is_err());
        assert_eq!(mix.to_string(), Mix::DEFAULT);
    }
}
