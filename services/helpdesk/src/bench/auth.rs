//! `helpdesk bench auth`: user-service's routes on the running platform.
//!
//! 1. `POST /auth/signup` by the clients for the measured time (each signup hashes a password);
//! 2. `POST /auth/login` over the accounts signed up;
//! 3. `GET /auth/me` from 8 clients while the clients flood logins;
//! 4. `POST /auth/reset-password` (64 resets, 8 clients) with 10 and with 10 000 other
//!    outstanding reset tokens, seeded into user-service's `password_reset_tokens` (stored by
//!    SHA-256, as the service stores them) and removed afterwards.
//!
//! The platform's login rate limits must be off (`USER_LOGIN_RATE_PER_IP=0`,
//! `USER_LOGIN_RATE_PER_ACCOUNT=0`), or logins are refused with 429.

use std::sync::{Arc, Mutex, PoisonError};

use serde_json::json;
use uuid::Uuid;

use helpdesk_kit::contract::Service;

use super::Settings;
use super::api::{self, Account, PASSWORD, Target, by_accounts, each_turn, send_json};
use super::db::{Database, ServiceDb, with_seeded};
use super::load::{self, Failure, Plan, Summary};

const ME_CLIENTS: usize = 8;
const RESETS: usize = 64;
const RESET_CLIENTS: usize = 8;
const OUTSTANDING: [u64; 2] = [10, 10_000];

/// Runs the auth scenario and prints its report.
pub async fn run(target: &Target, settings: &Settings, db: &Database) -> anyhow::Result<()> {
    let users = db
        .service(Service::User, &["users", "password_reset_tokens"])
        .await?;
    println!(
        "helpdesk bench auth: {} clients, {:?} per phase, against {}",
        settings.clients, settings.measured, target.base
    );
    let plan = Plan::timed(settings.clients, settings.warmup, settings.measured);
    let mut summary = Summary::new();

    let (signups, accounts) = sign_up(target, plan, &api::run_id()).await;
    summary.report(&signups);
    anyhow::ensure!(
        accounts.len() >= 2,
        "only {} signups succeeded: the logins and resets need at least 2",
        accounts.len()
    );
    let accounts = Arc::new(accounts);

    let login = |target: &Target, account: &Account, _| {
        let body = json!({"email": account.email, "password": PASSWORD});
        target.http.post(target.url("/auth/login")).json(&body)
    };
    let logins = by_accounts(target, &accounts, 200, login);
    let logins = load::closed_loop("POST /auth/login", plan, logins).await;
    summary.report(&logins);

    let me = {
        let (http, url) = (target.http.clone(), target.url("/auth/me"));
        let token = accounts[0].token.clone();
        each_turn(move |_| http.get(&url).bearer_auth(&token), 200)
    };
    let me_plan = Plan {
        clients: ME_CLIENTS,
        ..plan
    };
    let (me, flood) = tokio::join!(
        load::closed_loop("GET /auth/me during a login flood", me_plan, me),
        load::closed_loop(
            "  (the flood: POST /auth/login)",
            plan,
            by_accounts(target, &accounts, 200, login)
        ),
    );
    summary.report(&me);
    summary.report(&flood);

    // The first account holds the other outstanding tokens; the next 64 reset their passwords.
    let (holder, resetters) = (&accounts[0], &accounts[1..accounts.len().min(RESETS + 1)]);
    let ids: Vec<Uuid> = accounts.iter().map(|a| a.id).collect();
    for outstanding in OUTSTANDING {
        let resets = with_seeded(
            &format!("{outstanding} outstanding reset tokens"),
            seed_tokens(&users, holder, resetters, outstanding),
            async |tokens: &Arc<Vec<String>>| {
                let plan = Plan::count(RESET_CLIENTS, tokens.len() as u64);
                let route = format!("POST /auth/reset-password ({outstanding} outst.)");
                let (http, url, tokens) = (
                    target.http.clone(),
                    target.url("/auth/reset-password"),
                    tokens.clone(),
                );
                let reset = each_turn(
                    move |turn| {
                        let token = &tokens[turn.seq as usize % tokens.len()];
                        http.post(&url)
                            .json(&json!({"token": token, "newPassword": PASSWORD}))
                    },
                    200,
                );
                Ok(load::closed_loop(&route, plan, reset).await)
            },
            // Every reset token of the bench's accounts is one it seeded.
            async |_| {
                users
                    .delete_any("password_reset_tokens", "user_id", &ids)
                    .await
            },
        )
        .await?;
        summary.report(&resets);
    }
    summary.print();
    users.pool.close().await;
    Ok(())
}

/// Signs up accounts for the plan's time; the report and the accounts made.
async fn sign_up(target: &Target, plan: Plan, run: &str) -> (load::Report, Vec<Account>) {
    let made = Arc::new(Mutex::new(Vec::new()));
    let report = load::closed_loop("POST /auth/signup", plan, {
        let (target, made, run) = (target.clone(), made.clone(), run.to_string());
        move |turn| {
            let email = format!("bench-{run}-{}@bench.test", turn.seq);
            let (req, made) = (target.signup_request(&email), made.clone());
            async move {
                let answer = send_json(req, 201).await?;
                let account = Account::signed_up(&email, &answer)
                    .ok_or_else(|| Failure("unexpected body".into()))?;
                made.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(account);
                Ok(())
            }
        }
    })
    .await;
    let accounts = std::mem::take(&mut *made.lock().unwrap_or_else(PoisonError::into_inner));
    (report, accounts)
}

/// In one transaction: `outstanding` tokens of `holder` nobody uses, and one known token for each
/// of `resetters` (returned). Stored as the service stores them: the SHA-256 of the token.
async fn seed_tokens(
    users: &ServiceDb,
    holder: &Account,
    resetters: &[Account],
    outstanding: u64,
) -> anyhow::Result<Arc<Vec<String>>> {
    let table = users.table("password_reset_tokens");
    let run = api::run_id();
    let tokens: Vec<String> = (0..resetters.len())
        .map(|i| format!("bench-{run}-{i}-{}", Uuid::new_v4().simple()))
        .collect();
    let mut tx = users.pool.begin().await?;
    // Table names are configuration (see `db`); the values are bound.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (id, user_id, token_hash, expires_at) \
         SELECT gen_random_uuid(), $1, sha256(convert_to($2 || g, 'UTF8')), now() + interval '1 hour' \
         FROM generate_series(1, $3::bigint) AS g"
    )))
    .bind(holder.id)
    .bind(format!("bench-{run}-outstanding-"))
    .bind(outstanding as i64)
    .execute(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = resetters.iter().map(|a| a.id).collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (id, user_id, token_hash, expires_at) \
         SELECT gen_random_uuid(), u, sha256(convert_to(t, 'UTF8')), now() + interval '1 hour' \
         FROM unnest($1::uuid[], $2::text[]) AS x(u, t)"
    )))
    .bind(&ids)
    .bind(&tokens)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Arc::new(tokens))
}
