//! Password hashing with argon2id, off the async runtime on a few dedicated threads, so a login
//! flood queues for hashing capacity instead of starving every other request. Dedicated threads
//! (rather than the runtime's blocking pool, which grows to hundreds of threads) also keep memory
//! flat: each hash needs ~12 MiB, and every new thread would keep its own allocator arena.

use std::sync::{Arc, Mutex, mpsc};

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};

use helpdesk_kit::config::{ConfigError, Env};

/// argon2id parameters. Defaults are one of OWASP's equivalent recommendations: m = 12 MiB, t = 3,
/// p = 1. It is as strong as m = 19 MiB, t = 2 and measured ~20 % cheaper in CPU on our machines
/// (a smaller block array stays in cache). Stored hashes carry their own parameters, so changing
/// these never locks anyone out.
#[derive(Debug, Clone)]
pub struct HashingConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once (default: the number of CPUs).
    pub max_concurrent: usize,
}

impl HashingConfig {
    /// `USER_ARGON2_MEMORY_KIB`, `USER_ARGON2_ITERATIONS`, `USER_ARGON2_PARALLELISM`,
    /// `USER_HASHING_CONCURRENCY`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let cfg = Self {
            memory_kib: env.parse_or("USER_ARGON2_MEMORY_KIB", 12_288)?,
            iterations: env.parse_or("USER_ARGON2_ITERATIONS", 3)?,
            parallelism: env.parse_or("USER_ARGON2_PARALLELISM", 1)?,
            max_concurrent: env.parse_or("USER_HASHING_CONCURRENCY", cpus)?,
        };
        cfg.params().map_err(|e| {
            ConfigError::new(
                "USER_ARGON2_MEMORY_KIB",
                format!("invalid argon2 parameters: {e}"),
            )
        })?;
        if cfg.max_concurrent == 0 {
            return Err(ConfigError::new(
                "USER_HASHING_CONCURRENCY",
                "must be at least 1",
            ));
        }
        Ok(cfg)
    }

    fn params(&self) -> Result<Params, argon2::Error> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
    }
}

type Job = Box<dyn FnOnce(&Argon2<'static>) + Send>;

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Passwords {
    jobs: mpsc::Sender<Job>,
    /// Verified against when the account does not exist, so both failures take similar time.
    dummy_hash: Arc<String>,
}

impl Passwords {
    pub fn new(cfg: &HashingConfig) -> anyhow::Result<Self> {
        let params = cfg
            .params()
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = argon
            .hash_password(b"not-a-real-password")
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..cfg.max_concurrent {
            let (queue, argon) = (queue.clone(), argon.clone());
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        // Ends when every sender (every clone of `Passwords`) is gone.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&argon),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self {
            jobs,
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |argon| {
                let _ = tx.send(f(argon));
            }))
            .map_err(|_| anyhow::anyhow!("password hashing threads stopped"))?;
        Ok(rx.await?)
    }

    /// A PHC-format argon2id hash of `password`.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        self.blocking(move |a| a.hash_password(password.as_bytes()).map(|h| h.to_string()))
            .await?
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
    }

    /// Whether `password` matches `hash`; with `None` a dummy hash is checked (and `false` returned).
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        let ok = self
            .blocking(move |a| {
                a.verify_password(password.as_bytes(), hash.as_str())
                    .is_ok()
            })
            .await?;
        Ok(ok && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let p = Passwords::new(&HashingConfig {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 2,
        })
        .unwrap();
        let h = p.hash("secret123".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(p.verify("secret123".into(), Some(h.clone())).await.unwrap());
        assert!(!p.verify("wrong".into(), Some(h)).await.unwrap());
        assert!(!p.verify("not-a-real-password".into(), None).await.unwrap());
    }
}
