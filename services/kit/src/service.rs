//! What every service is made of, as plain code: the configuration section they all read the
//! same way ([`CommonConfig`]), the handlers' state ([`AppState`]), and [`Wiring`], which puts a
//! service's routes, readiness, docs, outbox relay, consumers and background jobs together.
//!
//! A service's `build` reads as its whole wiring:
//!
//! ```ignore
//! let mut wiring = Wiring::new(SERVICE, &config.common, &pool, &bus, &shutdown);
//! wiring.relay(Some(config.outbox_poll_interval));
//! wiring.consume(&topology::TICKET_USERS, user_events::UserEvents).await;
//! Ok(wiring.finish(api_router(state), ApiDoc::openapi()))
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::JwtKeys;
use crate::bus::consumer::{EventHandler, IdempotentConsumer};
use crate::bus::topology::Queue;
use crate::bus::{self, Bus, MessageHandler};
use crate::config::{ConfigError, Env};
use crate::db::DbConfig;
use crate::http::{self, HttpConfig, Readiness};
use crate::outbox::OutboxRelay;
use crate::runtime::{Service, Worker};
use helpdesk_contract::var;

/// The settings every service reads from the same variables.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub http: HttpConfig,
    /// `DATABASE_URL` (or the service's own), its schema and pool size.
    pub db: DbConfig,
    /// `AMQP_URL`: required by `serve` in a service binary, absent on the in-process bus.
    pub amqp_url: Option<String>,
    /// `BUS_PREFIX`: prefix of the exchanges and queues.
    pub bus_prefix: String,
    /// The keys tokens are verified with (and, in user-service, signed with).
    pub keys: Arc<JwtKeys>,
    /// `EVENT_MAX_ATTEMPTS`, `EVENT_RETRY_BASE_DELAY`: how consumed events are retried.
    pub event_retries: EventRetries,
}

/// How often a failing event is tried before it is dead-lettered, and the first retry's delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetries {
    pub max_attempts: u32,
    pub base_delay: Duration,
}

impl EventRetries {
    /// A consumer's subscription to `queue` with these retries.
    pub fn subscription(&self, queue: &Queue) -> bus::Subscription {
        queue.subscription(self.max_attempts, self.base_delay)
    }
}

impl CommonConfig {
    /// Reads the common section of `service`'s configuration. Only user-service signs tokens, so
    /// only it needs the private key.
    pub fn from_env(env: &Env, service: helpdesk_contract::Service) -> Result<Self, ConfigError> {
        let (max_attempts, base_delay) = bus::retry_settings(env)?;
        let signs = service == helpdesk_contract::Service::User;
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            db: DbConfig::for_service(env, service)?,
            amqp_url: env.raw(var::AMQP_URL),
            bus_prefix: env.string_or(var::BUS_PREFIX, ""),
            keys: Arc::new(JwtKeys::from_env(env, signs)?),
            event_retries: EventRetries {
                max_attempts,
                base_delay,
            },
        })
    }

    /// A consumer's subscription to `queue` with the configured retries.
    pub fn subscription(&self, queue: &Queue) -> bus::Subscription {
        self.event_retries.subscription(queue)
    }
}

/// A service's configuration: its own settings around the common section.
pub trait ServiceConfig {
    fn common(&self) -> &CommonConfig;
}

/// Handler state: the keys tokens are verified with (what the auth extractors take from it) and
/// a service's own `Inner` struct, which it dereferences to. Cheap to clone.
pub struct AppState<I> {
    keys: Arc<JwtKeys>,
    inner: Arc<I>,
}

impl<I> AppState<I> {
    pub fn new(keys: Arc<JwtKeys>, inner: I) -> Self {
        Self {
            keys,
            inner: Arc::new(inner),
        }
    }

    /// The service's keys (user-service also signs with them).
    pub fn keys(&self) -> &Arc<JwtKeys> {
        &self.keys
    }
}

impl<I> Clone for AppState<I> {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<I> std::ops::Deref for AppState<I> {
    type Target = I;
    fn deref(&self) -> &I {
        &self.inner
    }
}

impl<I> FromRef<AppState<I>> for Arc<JwtKeys> {
    fn from_ref(state: &AppState<I>) -> Self {
        state.keys.clone()
    }
}

/// Puts a service together: operational routes (`/health`, `/ready` on its database and bus,
/// `/metrics`), its API docs, the shared HTTP stack, and its background workers.
pub struct Wiring {
    name: &'static str,
    http: HttpConfig,
    schema: String,
    retries: EventRetries,
    pool: PgPool,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
    workers: Vec<Worker>,
}

impl Wiring {
    pub fn new(
        service: helpdesk_contract::Service,
        common: &CommonConfig,
        pool: &PgPool,
        bus: &Arc<dyn Bus>,
        shutdown: &CancellationToken,
    ) -> Self {
        Self {
            name: service.binary(),
            http: common.http.clone(),
            schema: common.db.schema.clone(),
            retries: common.event_retries,
            pool: pool.clone(),
            bus: bus.clone(),
            shutdown: shutdown.clone(),
            workers: Vec::new(),
        }
    }

    /// Runs the outbox relay: publishes what the service's transactions wrote to its outbox.
    /// `poll_interval` overrides how often it looks when no notification arrives.
    pub fn relay(&mut self, poll_interval: Option<Duration>) -> &mut Self {
        let mut relay = OutboxRelay::new(self.pool.clone(), self.bus.clone(), &self.schema);
        if let Some(every) = poll_interval {
            relay = relay.with_poll_interval(every);
        }
        self.workers
            .push(Box::pin(relay.run(self.shutdown.clone())));
        self
    }

    /// Consumes `queue` with `handler`: each event once (remembered under the queue's name),
    /// in the same transaction as its effect.
    pub async fn consume<H: EventHandler>(&mut self, queue: &Queue, handler: H) -> &mut Self {
        self.consume_as(queue.name, queue, handler, 1).await
    }

    /// [`Self::consume`] with `parallel` consumers and the name handled events are remembered
    /// under (a service that named its consumer differently keeps that name, so an upgrade does
    /// not forget which events it handled).
    pub async fn consume_as<H: EventHandler>(
        &mut self,
        name: &str,
        queue: &Queue,
        handler: H,
        parallel: usize,
    ) -> &mut Self {
        let subscription = self.retries.subscription(queue);
        bus::declare_early(self.bus.as_ref(), &subscription).await;
        let consumer: Arc<dyn MessageHandler> = Arc::new(IdempotentConsumer::new(
            name,
            self.pool.clone(),
            Arc::new(handler),
        ));
        for _ in 0..parallel.max(1) {
            let (bus, consumer, shutdown) =
                (self.bus.clone(), consumer.clone(), self.shutdown.clone());
            let subscription = subscription.clone();
            self.workers.push(Box::pin(async move {
                bus.consume(subscription, consumer, shutdown).await
            }));
        }
        self
    }

    /// Keeps `remembered` (callers remembered between requests) following the announcements of
    /// this service's read model of users, on `<schema>_users`.
    pub fn remembered<V: Clone + Send + 'static>(
        &mut self,
        remembered: &Arc<crate::remembered::Remembered<V>>,
    ) -> &mut Self {
        let channel = crate::remembered::channel(&self.schema);
        self.worker(
            remembered
                .clone()
                .follow(self.pool.clone(), channel, self.shutdown.clone()),
        )
    }

    /// Runs a background job until shutdown (it must end when the shutdown token is cancelled).
    pub fn worker(&mut self, job: impl Future<Output = ()> + Send + 'static) -> &mut Self {
        self.workers.push(Box::pin(job));
        self
    }

    /// The finished service: `api` (with its state) plus the operational and docs routes, in the
    /// shared HTTP stack, and every worker added.
    pub fn finish(self, api: Router, docs: utoipa::openapi::OpenApi) -> Service {
        let readiness = Readiness {
            service: self.name,
            pool: self.pool,
            bus: Some(self.bus),
        };
        let router = api
            .merge(http::operational_routes(readiness))
            .merge(http::docs_routes(docs));
        Service {
            name: self.name,
            router: http::finish(router, self.name, &self.http),
            workers: self.workers,
        }
    }
}
