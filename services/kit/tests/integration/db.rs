//! Requests while the database is down or busy (reliability, item 2): a database that cannot be
//! used answers a fast 503 with `Retry-After`, a busy pool does not.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use sqlx::PgPool;

use helpdesk_kit::db::{self, DbConfig};
use helpdesk_kit::error::ApiResult;
use helpdesk_testkit::{
    self as testing, Proxy, database_url_via, eventually, postgres_addr, unique,
};

/// A route that needs the database, as every service's routes do, holding its connection for
/// `sleep` seconds.
fn app(pool: PgPool) -> Router {
    async fn query(
        State(pool): State<PgPool>,
        axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, f64>>,
    ) -> ApiResult<&'static str> {
        let sleep = q.get("sleep").copied().unwrap_or(0.0);
        sqlx::query("SELECT pg_sleep($1)")
            .bind(sleep)
            .execute(&pool)
            .await?;
        Ok("ok")
    }
    Router::new().route("/q", get(query)).with_state(pool)
}

async fn timed(http: &reqwest::Client, url: &str) -> (u16, Option<String>, String, Duration) {
    let started = Instant::now();
    let res = http.get(url).send().await.expect("the app answers");
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = res.text().await.unwrap();
    (status, retry, body, started.elapsed())
}

/// A pool of `max_connections` on a fresh schema, reaching PostgreSQL through a proxy the test
/// can cut, and the app served on it: the proxy, the schema, the pool and the app's query URL.
async fn behind_proxy(max_connections: u32) -> (Proxy, String, PgPool, String) {
    testing::require_postgres().await;
    let proxy = Proxy::start(Some(postgres_addr())).await;
    let schema = unique("t_db_");
    let pool = db::connect(&DbConfig {
        url: database_url_via(proxy.addr),
        schema: schema.clone(),
        max_connections,
        application_name: "helpdesk-test",
    })
    .await
    .expect("connect");
    let addr = testing::serve(app(pool.clone())).await;
    (proxy, schema, pool, format!("http://{addr}/q"))
}

#[tokio::test]
async fn a_database_that_is_down_answers_503_with_retry_after_within_a_second() {
    let (proxy, schema, _pool, url) = behind_proxy(5).await;
    let http = reqwest::Client::new();
    assert_eq!(timed(&http, &url).await.0, 200);

    // A stopped server (connections refused: sqlx retries them until the acquire timeout) and
    // a cut network path (connections reset at once).
    for stopped in [true, false] {
        if stopped {
            proxy.stop();
        } else {
            proxy.set(None);
        }
        for _ in 0..3 {
            let (status, retry, body, took) = timed(&http, &url).await;
            assert_eq!(status, 503, "stopped: {stopped}: {body}");
            assert_eq!(retry.as_deref(), Some("1"), "Retry-After");
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["statusCode"], 503);
            assert_eq!(body["error"], "Service Unavailable");
            assert!(body["message"].is_string());
            assert!(
                took < Duration::from_millis(1500),
                "stopped: {stopped}: the 503 took {took:?}"
            );
        }
        // Back by itself once the database is.
        proxy.set(Some(postgres_addr()));
        eventually(Duration::from_secs(10), "the database back", || {
            let (http, url) = (http.clone(), url.clone());
            async move { (timed(&http, &url).await.0 == 200).then_some(()) }
        })
        .await;
    }
    testing::drop_schema(&schema).await;
}

/// Pool saturation under load is not an outage: 64 clients on a pool of 10 (the default), each
/// query holding its connection for 20 ms, all answered.
#[tokio::test]
async fn a_busy_pool_does_not_answer_503() {
    testing::require_postgres().await;
    let schema = unique("t_db_");
    let pool = test_pool(&schema, 10).await;
    let addr = testing::serve(app(pool)).await;
    let url = format!("http://{addr}/q?sleep=0.02");
    let http = reqwest::Client::new();
    let clients = (0..64).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..10 {
                statuses.push(timed(&http, &url).await.0);
            }
            statuses
        })
    });
    let statuses: Vec<u16> = futures_util::future::join_all(clients)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    assert_eq!(statuses.len(), 640);
    let failed: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of 640 failed: {failed:?}",
        failed.len()
    );
    testing::drop_schema(&schema).await;
}

/// Connections go out unchecked while in use (no extra round trip per request), but one that
/// sat idle is checked first: after its server connection was lost (the database restarted, the
/// network path was cut and restored) the next request gets a working connection, not an error.
#[tokio::test]
async fn a_connection_lost_while_idle_is_replaced_before_a_request_gets_it() {
    let (proxy, schema, pool, url) = behind_proxy(3).await;
    let http = reqwest::Client::new();
    let (status, _, body, _) = timed(&http, &url).await;
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(5),
        "the connection back in the pool",
        || {
            let pool = pool.clone();
            async move { (pool.size() == 1 && pool.num_idle() == 1).then_some(()) }
        },
    )
    .await;

    // The proxy drops every live connection (new ones are forwarded again), as a restarted
    // database does. The pool's idle connection is dead and does not know it yet.
    proxy.set(Some(postgres_addr()));
    tokio::time::sleep(db::CHECK_WHEN_IDLE_FOR + Duration::from_millis(200)).await;
    for n in 0..3 {
        let (status, _, body, _) = timed(&http, &url).await;
        assert_eq!(
            status, 200,
            "request {n} after the connections were lost: {body}"
        );
    }
    testing::drop_schema(&schema).await;
}

/// A service's connections name it in `pg_stat_activity`, unless its URL names them otherwise.
#[tokio::test]
async fn connections_carry_the_service_name_unless_the_url_sets_one() {
    testing::require_postgres().await;
    let schema = unique("t_db_");
    let named = |url: String| DbConfig {
        url,
        schema: schema.clone(),
        max_connections: 1,
        application_name: "ticket-service",
    };
    let pool = db::connect(&named(testing::database_url()))
        .await
        .expect("connect");
    let name: String = sqlx::query_scalar("SELECT current_setting('application_name')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, "ticket-service");
    pool.close().await;
    let url = testing::database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let pool = db::connect(&named(format!("{url}{sep}application_name=helpdesk-east")))
        .await
        .expect("connect");
    let name: String = sqlx::query_scalar("SELECT current_setting('application_name')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, "helpdesk-east");
    pool.close().await;
    testing::drop_schema(&schema).await;
}

/// A listener (the outbox relay's, the caller cache's, the email sender's) takes no connection of
/// the service's pool: a pool of 2 still hands out 2 while one listens, and the listener hears.
#[tokio::test]
async fn a_listener_leaves_the_whole_pool_to_requests() {
    testing::require_postgres().await;
    let schema = unique("t_db_");
    let pool = test_pool(&schema, 2).await;
    let channel = unique("t_listen_");
    let mut listener = db::listener(&pool).await.expect("listener");
    listener.listen(&channel).await.expect("listen");
    let mut first = pool.acquire().await.expect("a first connection");
    let second = pool
        .acquire()
        .await
        .expect("a second connection: the listener holds none of the pool's");
    sqlx::query("SELECT pg_notify($1, 'hello')")
        .bind(&channel)
        .execute(&mut *first)
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("the notification within 5 s")
        .expect("the listener's connection");
    assert_eq!(heard.payload(), "hello");
    drop((first, second));
    pool.close().await;
    testing::drop_schema(&schema).await;
}

/// A pool of `max_connections` on the test database, in `schema`.
async fn test_pool(schema: &str, max_connections: u32) -> sqlx::PgPool {
    db::connect(&DbConfig {
        url: testing::database_url(),
        schema: schema.into(),
        max_connections,
        application_name: "helpdesk-test",
    })
    .await
    .expect("connect")
}
