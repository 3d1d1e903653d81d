//! Callers remembered between requests, forgotten the moment the database says they changed.
//!
//! Most routes start by reading who is calling from a read model of users: one round trip per
//! request for an answer that changes only when a `user.*` event is handled. [`Remembered`] keeps
//! each user's answer and drops it when the database announces a change: the kit's migration
//! `0002_user_change_notify.sql` defines `notify_user_change`, each service's migrations put it as
//! a trigger on its read-model tables, and every write, whichever replica or path made it,
//! notifies `<schema>_users` ([`channel`]) with the user's id. Every replica listens ([`Remembered::follow`]).
//!
//! Nothing is served unless the listener is connected: before it is, and from the moment it is
//! lost until it is back (when everything is forgotten, since announcements may have been missed),
//! every request reads the database as before. An answer is remembered only if no change was
//! announced while it was being read (the epoch), so a read that raced a change cannot put the old
//! answer back after the change was forgotten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// More remembered users than this and the cache starts over (a bound, not a working-set size:
/// an entry is at most a few hundred bytes).
const CAPACITY: usize = 50_000;
/// Between attempts to (re)connect the listener.
const RECONNECT: Duration = Duration::from_secs(1);

/// The channel the read model's trigger notifies for `schema`.
pub fn channel(schema: &str) -> String {
    format!("{schema}_users")
}

/// What the read model said about each remembered user (see the module documentation).
pub struct Remembered<V> {
    entries: Mutex<HashMap<Uuid, V>>,
    /// Counts announced changes; bumped under the `entries` lock.
    epoch: AtomicU64,
    /// The listener is connected and listening.
    live: AtomicBool,
}

impl<V> Default for Remembered<V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
        }
    }
}

impl<V: Clone> Remembered<V> {
    fn entries(&self) -> MutexGuard<'_, HashMap<Uuid, V>> {
        // A panic while holding the lock cannot leave the map half-written (every change is one
        // call on it), so a poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current epoch: read it before looking a user up, pass it to [`Self::remember`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// What the read model said about `id`, if remembered and the listener is live.
    pub fn get(&self, id: Uuid) -> Option<V> {
        if !self.live.load(Ordering::SeqCst) {
            return None;
        }
        self.entries().get(&id).cloned()
    }

    /// Remembers `found` for `id` unless a change was announced since `seen` (see [`Self::epoch`]).
    pub fn remember(&self, id: Uuid, found: &V, seen: u64) {
        if !self.live.load(Ordering::SeqCst) {
            return;
        }
        let mut entries = self.entries();
        if self.epoch.load(Ordering::SeqCst) != seen {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(id, found.clone());
    }

    /// A change to `id` was announced.
    fn forget(&self, id: Uuid) {
        let mut entries = self.entries();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.remove(&id);
    }

    /// Changes may have been missed (or one could not be read): forget everyone.
    fn forget_all(&self) {
        let mut entries = self.entries();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }

    /// How many users are remembered.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether no user is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Listens on `channel` (see [`channel`]) until `shutdown`, reconnecting when the connection
    /// is lost; answers are served only while this is listening.
    pub async fn follow(
        self: Arc<Self>,
        pool: PgPool,
        channel: String,
        shutdown: CancellationToken,
    ) {
        loop {
            if let Some(mut listener) = listen(&pool, &channel).await {
                self.forget_all();
                self.live.store(true, Ordering::SeqCst);
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        next = listener.try_recv() => next,
                    };
                    match next {
                        Ok(Some(n)) => match n.payload().parse::<Uuid>() {
                            Ok(id) => self.forget(id),
                            Err(_) => self.forget_all(),
                        },
                        // The connection was lost (what was announced meanwhile is not known), or
                        // it failed: start over with a new listener.
                        Ok(None) | Err(_) => break,
                    }
                }
                self.live.store(false, Ordering::SeqCst);
                self.forget_all();
                tracing::debug!(%channel, "remembered callers: stopped listening");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT) => {}
            }
        }
    }
}

async fn listen(pool: &PgPool, channel: &str) -> Option<PgListener> {
    let mut listener = crate::db::listener(pool).await.ok()?;
    listener.listen(channel).await.ok()?;
    Some(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Remembered<String> {
        let cache = Remembered::default();
        cache.live.store(true, Ordering::SeqCst);
        cache
    }

    #[test]
    fn nothing_is_served_or_kept_unless_the_listener_is_live() {
        let cache = Remembered::<String>::default();
        let id = Uuid::new_v4();
        cache.remember(id, &"AGENT".to_string(), cache.epoch());
        assert!(cache.is_empty());
        assert!(cache.get(id).is_none());
    }

    #[test]
    fn an_announced_change_forgets_the_user() {
        let cache = live();
        let id = Uuid::new_v4();
        cache.remember(id, &"ADMIN".to_string(), cache.epoch());
        assert_eq!(cache.get(id).as_deref(), Some("ADMIN"));
        cache.forget(id);
        assert!(cache.get(id).is_none());
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_remembered() {
        let cache = live();
        let id = Uuid::new_v4();
        let seen = cache.epoch();
        // The change is announced (and forgotten) while the old answer is being read...
        cache.forget(id);
        // ...so the old answer must not be put back.
        cache.remember(id, &"ADMIN".to_string(), seen);
        assert!(cache.get(id).is_none());
        // A read that started after the change is remembered.
        cache.remember(id, &"USER".to_string(), cache.epoch());
        assert_eq!(cache.get(id).as_deref(), Some("USER"));
    }

    #[test]
    fn losing_the_listener_forgets_everyone() {
        let cache = live();
        let id = Uuid::new_v4();
        cache.remember(id, &"ADMIN".to_string(), cache.epoch());
        cache.live.store(false, Ordering::SeqCst);
        cache.forget_all();
        assert!(cache.is_empty());
        assert!(cache.get(id).is_none());
    }
}
