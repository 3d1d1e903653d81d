//! The retention job: removes entries older than the configured number of days, in small batches
//! so it never holds long locks on a large table.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 10_000;

/// Removes every entry older than `days`; returns how many were removed.
pub async fn run_once(pool: &PgPool, days: u32) -> sqlx::Result<u64> {
    let mut removed = 0;
    loop {
        let n = sqlx::query!(
            "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events \
             WHERE created_at < now() - make_interval(days => $1) LIMIT $2)",
            i32::try_from(days).unwrap_or(i32::MAX),
            BATCH,
        )
        .execute(pool)
        .await?
        .rows_affected();
        removed += n;
        if n < BATCH as u64 {
            return Ok(removed);
        }
    }
}

/// Runs the job every `every` until `shutdown`.
pub async fn run(pool: PgPool, days: u32, every: Duration, shutdown: CancellationToken) {
    loop {
        match run_once(&pool, days).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(removed = n, days, "audit retention removed old entries");
                metrics::counter!("helpdesk_audit_entries_expired_total").increment(n);
            }
            Err(e) => tracing::warn!(error = %e, "audit retention failed; will retry"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
