//! Schemas made before the kit's tables were migrations (the services and the bus created them
//! at start-up) upgrade in place and keep their rows.

use sqlx::PgPool;

use helpdesk_kit::bus::postgres::PgBus;
use helpdesk_kit::db::{DbConfig, connect, migrate};
use helpdesk_testkit::{database_url, drop_schema, require_postgres, unique};

/// What every service ran at start-up before `migrations/kit`.
const START_UP_KIT_TABLES: &str = r#"
    CREATE TABLE IF NOT EXISTS outbox (
        id BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL UNIQUE, exchange TEXT NOT NULL,
        routing_key TEXT NOT NULL, aggregate_id TEXT NOT NULL, body TEXT NOT NULL,
        headers JSONB NOT NULL DEFAULT '{}', created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        attempts INT NOT NULL DEFAULT 0, last_error TEXT);
    CREATE TABLE IF NOT EXISTS processed_events (
        consumer TEXT NOT NULL, event_id UUID NOT NULL,
        processed_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (consumer, event_id));
    CREATE INDEX IF NOT EXISTS processed_events_at ON processed_events (processed_at);
    INSERT INTO outbox (event_id, exchange, routing_key, aggregate_id, body)
        VALUES (gen_random_uuid(), 'ticket.events', 'ticket.created', 't1', '{}');
"#;

/// What the in-process bus ran at start-up in its first version (before `traceparent`).
const START_UP_BUS_TABLES: &str = r#"
    CREATE TABLE IF NOT EXISTS bus_bindings (
        queue TEXT NOT NULL, exchange TEXT NOT NULL, pattern TEXT NOT NULL,
        PRIMARY KEY (queue, exchange, pattern));
    CREATE TABLE IF NOT EXISTS bus_messages (
        id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL, routing_key TEXT NOT NULL,
        message_id TEXT NOT NULL, body BYTEA NOT NULL, attempts INT NOT NULL DEFAULT 0,
        available_at TIMESTAMPTZ NOT NULL DEFAULT now(), dead_at TIMESTAMPTZ, last_error TEXT);
    CREATE INDEX IF NOT EXISTS bus_messages_ready ON bus_messages (queue, id) WHERE dead_at IS NULL;
    INSERT INTO bus_messages (queue, routing_key, message_id, body, dead_at, last_error)
        VALUES ('q', 'ticket.created', 'm1', 'x', now(), 'refused');
"#;

async fn pool_on(schema: &str) -> PgPool {
    connect(&DbConfig {
        url: database_url(),
        schema: schema.to_string(),
        max_connections: 2,
        application_name: "helpdesk-test",
    })
    .await
    .expect("connect")
}

#[tokio::test]
async fn a_service_schema_from_before_the_kit_migrations_upgrades_and_keeps_its_outbox() {
    require_postgres().await;
    static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;
    let schema = unique("t_kitup_");
    let pool = pool_on(&schema).await;
    sqlx::raw_sql(START_UP_KIT_TABLES)
        .execute(&pool)
        .await
        .expect("the start-up tables");
    let first = migrate(&pool, &NO_MIGRATIONS).await;
    let again = migrate(&pool, &NO_MIGRATIONS).await;
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_kit_migrations WHERE success")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
    let unsent: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .ok();
    pool.close().await;
    drop_schema(&schema).await;
    first.expect("the upgrade");
    again.expect("a second run has nothing to do");
    assert_eq!(versions, [1, 2, 3], "the kit's migrations are recorded");
    assert_eq!(unsent, Some(1), "the unsent event is still there");
}

#[tokio::test]
async fn a_bus_schema_from_before_the_bus_migrations_upgrades_and_keeps_its_dead_letters() {
    require_postgres().await;
    let schema = unique("t_busup_");
    let pool = pool_on(&schema).await;
    sqlx::raw_sql(START_UP_BUS_TABLES)
        .execute(&pool)
        .await
        .expect("the start-up tables");
    let bus = PgBus::new(pool.clone()).await;
    let dead = match &bus {
        Ok(bus) => bus.dead_letters("q").await.ok(),
        Err(_) => None,
    };
    let traceparent: Option<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = 'bus_messages' AND column_name = 'traceparent'",
    )
    .bind(&schema)
    .fetch_one(&pool)
    .await
    .ok();
    pool.close().await;
    drop_schema(&schema).await;
    bus.expect("the upgrade");
    assert_eq!(traceparent, Some(1), "the trace column was added");
    assert_eq!(
        dead,
        Some(vec![(b"x".to_vec(), Some("refused".to_string()))]),
        "the dead letter is still there"
    );
}
