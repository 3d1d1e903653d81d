//! Traces exported over OTLP/HTTP to a collector, joined to the caller's trace. Its own test
//! binary: it installs the process-wide tracing subscriber.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::{get, post};
use sqlx::PgConnection;

use helpdesk_kit::bus::{EventHandler, HandlerError, IdempotentConsumer, MessageHandler, Received};
use helpdesk_kit::config::Env;
use helpdesk_kit::events::{Envelope, EventMetadata, UserDeleted};
use helpdesk_kit::http::{self, HttpConfig};
use helpdesk_kit::peer::PeerClient;
use helpdesk_kit::trace::TraceParent;
use helpdesk_testkit::serve;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_the_collector_in_the_callers_trace() {
    // A collector: keeps every OTLP/HTTP export it receives.
    let received: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let keep = received.clone();
    let collector = serve(axum::Router::new().route(
        "/v1/traces",
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let keep = keep.clone();
            async move {
                let kind = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                keep.lock().unwrap().push((kind, body));
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        }),
    ))
    .await;
    let env = Env::from_map([(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://{collector}/"),
    )]);
    let telemetry = helpdesk_kit::telemetry::init(
        "trace-test-service",
        &env,
        &tokio::runtime::Handle::current(),
    )
    .unwrap();

    let cfg = HttpConfig::from_env(&Env::from_map([("BIND_ADDR", "127.0.0.1:0")])).unwrap();
    let peer = serve(http::finish(
        axum::Router::new().route(
            "/echo",
            get(|headers: axum::http::HeaderMap| async move {
                axum::Json(
                    headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                )
            }),
        ),
        "peer",
        &cfg,
    ))
    .await;
    let client = Arc::new(PeerClient::new(
        "peer",
        &format!("http://{peer}"),
        None,
        Duration::from_secs(5),
        0,
    ));
    let service = serve(http::finish(
        axum::Router::new().route(
            "/hello",
            get(move || {
                let client = client.clone();
                async move {
                    let seen: serde_json::Value = client
                        .call::<(), _>(axum::http::Method::GET, "/echo", None, None, true)
                        .await
                        .unwrap_or_default();
                    axum::Json(seen)
                }
            }),
        ),
        "service",
        &cfg,
    ))
    .await;

    let incoming =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let res = reqwest::Client::new()
        .get(format!("http://{service}/hello"))
        .header("traceparent", incoming.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let called_with: String = res.json().await.unwrap();
    let called_with = TraceParent::parse(&called_with).expect("the peer got a traceparent");
    assert_eq!(called_with.trace_id, incoming.trace_id);

    // A batch a handler applies at once still gives each event a span in the trace of whoever
    // published it.
    helpdesk_testkit::require_postgres().await;
    let schema = helpdesk_testkit::unique("t_otel_");
    let pool = helpdesk_kit::db::connect(&helpdesk_kit::db::DbConfig {
        url: helpdesk_testkit::database_url(),
        schema: schema.clone(),
        max_connections: 2,
        application_name: "helpdesk-test",
    })
    .await
    .unwrap();
    static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;
    helpdesk_kit::db::migrate(&pool, &NO_MIGRATIONS)
        .await
        .unwrap();
    let consumer = IdempotentConsumer::new("otel", pool, Arc::new(AllAtOnce));
    let published = [
        TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap(),
        TraceParent::parse("00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01").unwrap(),
    ];
    let bodies: Vec<Vec<u8>> = (0..2)
        .map(|_| {
            let event = Envelope::wrap(
                &UserDeleted {
                    id: uuid::Uuid::new_v4(),
                    email: "gone@example.com".into(),
                },
                EventMetadata::default(),
            );
            serde_json::to_vec(&event).unwrap()
        })
        .collect();
    let traceparents: Vec<String> = published.iter().map(|t| t.to_string()).collect();
    let batch: Vec<Received<'_>> = bodies
        .iter()
        .zip(&traceparents)
        .map(|(body, trace)| Received {
            body,
            traceparent: Some(trace),
        })
        .collect();
    let outcomes = consumer.handle_batch(&batch).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    helpdesk_testkit::drop_schema(&schema).await;

    // Shutting down flushes what the batch processor holds.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();
    let exports = received.lock().unwrap().clone();
    assert!(!exports.is_empty(), "the collector received no export");
    let all: Vec<u8> = exports.iter().flat_map(|(_, b)| b.to_vec()).collect();
    assert!(
        exports
            .iter()
            .all(|(kind, _)| kind == "application/x-protobuf"),
        "OTLP/HTTP protobuf"
    );
    assert!(contains(&all, b"trace-test-service"), "the service name");
    assert!(
        contains(&all, &incoming.trace_id.to_be_bytes()),
        "spans in the caller's trace"
    );
    assert!(
        contains(&all, &incoming.parent_id.to_be_bytes()),
        "the caller's span is the parent of the request span"
    );
    assert!(
        contains(&all, &called_with.parent_id.to_be_bytes()),
        "the id passed on to the peer is an exported span's id"
    );
    for t in published {
        assert!(
            contains(&all, &t.trace_id.to_be_bytes()) && contains(&all, &t.parent_id.to_be_bytes()),
            "each event of a batch has its span under the publisher's"
        );
    }
}

/// A handler that takes a batch at once (and does nothing with it).
struct AllAtOnce;

#[async_trait::async_trait]
impl EventHandler for AllAtOnce {
    async fn handle(&self, _tx: &mut PgConnection, _event: &Envelope) -> Result<(), HandlerError> {
        Ok(())
    }

    fn batches(&self) -> bool {
        true
    }
}
