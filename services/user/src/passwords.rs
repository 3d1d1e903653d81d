//! Password hashing with argon2id, off the async runtime on a few dedicated threads, so a login
//! flood queues for hashing capacity instead of starving every other request. Dedicated threads
//! (rather than the runtime's blocking pool, which grows to hundreds of threads) also keep memory
//! flat: each hash needs ~7 MiB of working memory, which each thread allocates once and reuses
//! while it keeps hashing, and frees after [`HashingConfig::release_after`] without work (see
//! [`Hasher`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};

use helpdesk_kit::config::{ConfigError, Env};

/// argon2id parameters. Defaults are one of OWASP's equivalent recommendations: m = 7 MiB, t = 5,
/// p = 1. It is as strong as m = 19 MiB, t = 2 or m = 12 MiB, t = 3, and the cheapest of them in
/// CPU here: its block array stays in the cache, also with several hashes at once (per hash, on
/// the 2-core development machine: 11.0 ms alone and 12.0 ms of CPU with four at once, against
/// 11.8 and 14.1 ms for m = 12 MiB, t = 3). Stored hashes carry their own parameters, so changing
/// these never locks anyone out.
#[derive(Debug, Clone)]
pub struct HashingConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once (default: three times the number of CPUs). More threads than
    /// cores give the hashing a larger share of a saturated machine, so a login rarely waits for
    /// a free hashing thread (with the priority gap of `kit::priority`, login's p95 in the mixed
    /// benchmark: 66–72 ms with 6 threads on 2 cores, 89–148 ms with 4, 130–160 ms with 4 and no
    /// gap). The price is paid in a login flood: `GET /auth/me` beside 32 flooding clients kept
    /// ~1 000 req/s at a p95 of 21 ms, against ~4 000 at 7 ms with 4 threads and no gap.
    pub max_concurrent: usize,
    /// How long a hashing thread keeps its working memory without work (2 s).
    pub release_after: Duration,
}

impl HashingConfig {
    /// `USER_ARGON2_MEMORY_KIB`, `USER_ARGON2_ITERATIONS`, `USER_ARGON2_PARALLELISM`,
    /// `USER_HASHING_CONCURRENCY`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let cfg = Self {
            memory_kib: env.parse_or("USER_ARGON2_MEMORY_KIB", 7_168)?,
            iterations: env.parse_or("USER_ARGON2_ITERATIONS", 5)?,
            parallelism: env.parse_or("USER_ARGON2_PARALLELISM", 1)?,
            max_concurrent: env.parse_or("USER_HASHING_CONCURRENCY", 3 * cpus)?,
            release_after: Duration::from_secs(2),
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

type Job = Box<dyn FnOnce(&mut Hasher) + Send>;

/// One hashing thread's argon2id: the configured parameters for new hashes, and the working memory
/// (`m` KiB) every hash and verification of the thread reuses until it is released. Allocating it
/// per hash, as `argon2`'s `hash_password` does, made each login allocate, zero and free it (then
/// 12 MiB); under load the allocator kept several such blocks resident at once, and `helpdesk
/// up`'s peak RSS in the mixed benchmark on RabbitMQ was ~40 MiB above the same load without
/// logins.
struct Hasher {
    argon: Argon2<'static>,
    blocks: Vec<Block>,
    /// The working memory all hashing threads hold, in bytes.
    held: Arc<AtomicUsize>,
}

impl Hasher {
    fn new(argon: Argon2<'static>, held: Arc<AtomicUsize>) -> Self {
        Self {
            argon,
            blocks: Vec::new(),
            held,
        }
    }

    fn holds_memory(&self) -> bool {
        !self.blocks.is_empty()
    }

    /// Frees the working memory (a thread without work for a while).
    fn release(&mut self) {
        self.held
            .fetch_sub(std::mem::size_of_val(&self.blocks[..]), Ordering::Relaxed);
        self.blocks = Vec::new();
    }

    /// Runs `argon` over this thread's memory, allocated on first use and kept. A stored hash that
    /// needs more memory than the configured parameters (they were lowered since) gets a buffer of
    /// its own for that one computation, so the thread does not keep the larger size.
    fn compute(
        &mut self,
        argon: Option<&Argon2<'_>>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let argon = argon.unwrap_or(&self.argon);
        let needed = argon.params().block_count();
        if needed > self.argon.params().block_count() {
            let mut once = vec![Block::default(); needed];
            return argon.hash_password_into_with_memory(password, salt, out, &mut once[..]);
        }
        if self.blocks.len() < needed {
            let grown = (needed - self.blocks.len()) * std::mem::size_of::<Block>();
            self.blocks.resize(needed, Block::default());
            self.held.fetch_add(grown, Ordering::Relaxed);
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut self.blocks[..needed])
    }

    /// A PHC-format hash of `password` with a new random salt and the configured parameters.
    fn hash(&mut self, password: &[u8]) -> Result<String, argon2::password_hash::Error> {
        let salt = argon2::password_hash::try_generate_salt()
            .map_err(|_| argon2::password_hash::Error::Crypto)?;
        let params = self.argon.params().clone();
        let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = &mut out[..len];
        self.compute(None, password, &salt, out)?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params)?,
            salt: Some(Salt::new(&salt)?),
            hash: Some(Output::new(out)?),
        };
        Ok(hash.to_string())
    }

    /// Whether `password` matches the PHC-format `stored` hash, computed with the algorithm,
    /// version and parameters it names. Outputs are compared in constant time ([`Output`]'s `==`).
    fn verify(&mut self, password: &[u8], stored: &str) -> bool {
        self.check(password, stored) != Check::Mismatch
    }

    /// [`Self::verify`], telling a match against a hash of the configured algorithm, version and
    /// parameters from one against an older kind.
    fn check(&mut self, password: &[u8], stored: &str) -> Check {
        let Ok(stored) = PasswordHash::new(stored) else {
            return Check::Mismatch;
        };
        let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
            return Check::Mismatch;
        };
        let Ok(algorithm) = Algorithm::try_from(stored.algorithm.as_str()) else {
            return Check::Mismatch;
        };
        let Ok(version) = Version::try_from(stored.version.unwrap_or(Version::V0x13.into())) else {
            return Check::Mismatch;
        };
        let Ok(params) = Params::try_from(&stored) else {
            return Check::Mismatch;
        };
        let configured = self.argon.params();
        let current = algorithm == Algorithm::Argon2id
            && version == Version::V0x13
            && params.m_cost() == configured.m_cost()
            && params.t_cost() == configured.t_cost()
            && params.p_cost() == configured.p_cost()
            && expected.len()
                == configured
                    .output_len()
                    .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let argon = Argon2::new(algorithm, version, params);
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = &mut out[..expected.len()];
        let matches = self
            .compute(Some(&argon), password, salt.as_ref(), out)
            .is_ok()
            && Output::new(out).is_ok_and(|computed| computed == *expected);
        match (matches, current) {
            (false, _) => Check::Mismatch,
            (true, true) => Check::Match,
            (true, false) => Check::Outdated,
        }
    }
}

/// What checking a password against a stored hash found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Mismatch,
    /// It matches a hash of the configured algorithm, version and parameters.
    Match,
    /// It matches a hash of other ones (an earlier default).
    Outdated,
}

/// A password checked against an account's stored hash.
#[derive(Debug)]
pub enum Verified {
    Wrong,
    Right,
    /// Right, against a hash of other parameters than the configured ones (an earlier default):
    /// here is the password hashed with the configured ones, to store in its place.
    RightRehashed(String),
}

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Passwords {
    jobs: crossbeam_channel::Sender<Job>,
    /// The working memory the hashing threads hold, in bytes.
    held: Arc<AtomicUsize>,
    /// Verified against when the account does not exist, so both failures take similar time.
    dummy_hash: Arc<String>,
}

impl Passwords {
    pub fn new(cfg: &HashingConfig) -> anyhow::Result<Self> {
        let params = cfg
            .params()
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let held = Arc::new(AtomicUsize::new(0));
        let dummy_hash = Hasher::new(argon.clone(), Arc::new(AtomicUsize::new(0)))
            .hash(b"not-a-real-password")
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..cfg.max_concurrent {
            let (queue, argon, held) = (queue.clone(), argon.clone(), held.clone());
            let release_after = cfg.release_after;
            // At the process's own priority: its other threads may run lower (kit::priority).
            helpdesk_kit::priority::spawn_at_base(format!("argon2-{n}"), move || {
                let mut hasher = Hasher::new(argon, held);
                // Ends when every sender (every clone of `Passwords`) is gone.
                loop {
                    let job = if hasher.holds_memory() {
                        match queue.recv_timeout(release_after) {
                            Ok(job) => job,
                            Err(RecvTimeoutError::Timeout) => {
                                hasher.release();
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    } else {
                        match queue.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    };
                    job(&mut hasher);
                }
            })?;
        }
        Ok(Self {
            jobs,
            dummy_hash: Arc::new(dummy_hash),
            held,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Hasher) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |argon| {
                let _ = tx.send(f(argon));
            }))
            .map_err(|_| anyhow::anyhow!("password hashing threads stopped"))?;
        Ok(rx.await?)
    }

    /// The working memory the hashing threads hold now, in bytes: `m` KiB per thread that hashed
    /// within the last [`HashingConfig::release_after`].
    pub fn working_memory(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// A PHC-format argon2id hash of `password`.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        self.blocking(move |h| h.hash(password.as_bytes()))
            .await?
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
    }

    /// Whether `password` matches `hash`; with `None` a dummy hash is checked (and `false` returned).
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let (known, hash) = self.stored_or_dummy(hash);
        let ok = self
            .blocking(move |h| h.verify(password.as_bytes(), &hash))
            .await?;
        Ok(ok && known)
    }

    /// Whether there is an account's hash, and the hash to check: the account's, or for an
    /// unknown account the dummy hash, so the answer takes as long either way.
    fn stored_or_dummy(&self, hash: Option<String>) -> (bool, String) {
        match hash {
            Some(hash) => (true, hash),
            None => (false, self.dummy_hash.as_ref().clone()),
        }
    }

    /// [`Self::verify`] for a sign-in: a right password whose stored hash has other parameters
    /// than the configured ones (the defaults changed since it was stored) is hashed again with
    /// them, in the same job, so each account moves to the current parameters at its next login.
    pub async fn verify_for_login(
        &self,
        password: String,
        hash: Option<String>,
    ) -> anyhow::Result<Verified> {
        let (known, hash) = self.stored_or_dummy(hash);
        let verified = self
            .blocking(move |h| match h.check(password.as_bytes(), &hash) {
                Check::Mismatch => Ok(Verified::Wrong),
                Check::Match => Ok(Verified::Right),
                Check::Outdated => h.hash(password.as_bytes()).map(Verified::RightRehashed),
            })
            .await?
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
        Ok(if known { verified } else { Verified::Wrong })
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
            release_after: Duration::from_secs(2),
        })
        .unwrap();
        let h = p.hash("secret123".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(p.verify("secret123".into(), Some(h.clone())).await.unwrap());
        assert!(!p.verify("wrong".into(), Some(h)).await.unwrap());
        assert!(!p.verify("not-a-real-password".into(), None).await.unwrap());
    }

    fn argon(memory_kib: u32, iterations: u32) -> Argon2<'static> {
        Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(memory_kib, iterations, 1, None).unwrap(),
        )
    }

    #[test]
    fn hashes_interoperate_with_the_argon2_crates_own_format() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let mut hasher = Hasher::new(argon(1024, 2), Default::default());
        // Stored by an earlier release, which hashed with the crate's own `hash_password`.
        let stored = argon(1024, 2)
            .hash_password(b"old secret")
            .unwrap()
            .to_string();
        assert!(hasher.verify(b"old secret", &stored));
        assert!(!hasher.verify(b"old secret!", &stored));
        // Hashed now, read by the crate (an earlier release after a rollback).
        let ours = hasher.hash(b"new secret").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=1024,t=2,p=1$"), "{ours}");
        assert!(
            argon(1024, 2)
                .verify_password(b"new secret", ours.as_str())
                .is_ok()
        );
        assert!(
            argon(1024, 2)
                .verify_password(b"new secret?", ours.as_str())
                .is_err()
        );
        // A new salt every time.
        assert_ne!(hasher.hash(b"new secret").unwrap(), ours);
    }

    #[test]
    fn a_stored_hash_is_checked_with_its_own_parameters() {
        use argon2::PasswordHasher as _;
        let mut hasher = Hasher::new(argon(1024, 1), Default::default());
        // Hashed with more memory and passes than this process is configured for (the
        // configuration was lowered since): verified with the stored parameters.
        let stored = argon(2048, 3).hash_password(b"pw").unwrap().to_string();
        assert!(hasher.verify(b"pw", &stored));
        assert!(!hasher.verify(b"pW", &stored));
        assert_eq!(hasher.blocks.len(), 0, "the larger memory was not kept");
        // With smaller ones too, and argon2i/argon2d hashes are read as such.
        let small = argon(512, 1).hash_password(b"pw").unwrap().to_string();
        assert!(hasher.verify(b"pw", &small));
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(512, 2, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert!(argon2i.starts_with("$argon2i$"));
        assert!(hasher.verify(b"pw", &argon2i));
        assert!(!hasher.verify(b"pw", &argon2i.replacen("$argon2i$", "$argon2id$", 1)));
    }

    #[test]
    fn malformed_stored_hashes_never_verify() {
        let mut hasher = Hasher::new(argon(1024, 1), Default::default());
        let good = hasher.hash(b"pw").unwrap();
        let no_hash = good.rsplit_once('$').unwrap().0.to_string();
        for bad in [
            "",
            "plaintext",
            "$2b$12$abcdefghijklmnopqrstuu5Z1e9n1QxYl1lQJ3Q1Yd8iYj0b1r2Wm", // bcrypt
            &no_hash,
            &good.replacen("m=1024", "m=1", 1),
            &good.replacen("$argon2id$", "$scrypt$", 1),
            &good.replacen("v=19", "v=7", 1),
        ] {
            assert!(!hasher.verify(b"pw", bad), "{bad:?} verified");
        }
        assert!(hasher.verify(b"pw", &good));
    }

    #[test]
    fn a_hashing_thread_allocates_its_working_memory_once() {
        let mut hasher = Hasher::new(argon(1024, 1), Default::default());
        assert!(
            hasher.blocks.is_empty(),
            "nothing is allocated before the first hash"
        );
        let h = hasher.hash(b"pw").unwrap();
        let memory = (hasher.blocks.as_ptr(), hasher.blocks.len());
        assert_eq!(memory.1, 1024, "one 1 KiB block per KiB of m");
        for _ in 0..3 {
            hasher.hash(b"pw").unwrap();
            assert!(hasher.verify(b"pw", &h));
        }
        assert_eq!((hasher.blocks.as_ptr(), hasher.blocks.len()), memory);
    }

    /// Under load a hashing thread keeps its working memory from one hash to the next; once no
    /// work came for `release_after`, it frees it, and takes it again with the next hash.
    #[tokio::test]
    async fn hashing_threads_free_their_working_memory_when_idle() {
        let p = Passwords::new(&HashingConfig {
            memory_kib: 4096,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 2,
            release_after: Duration::from_millis(300),
        })
        .unwrap();
        assert_eq!(p.working_memory(), 0, "nothing held before the first hash");
        let hashes = futures_util::future::join_all((0..8).map(|_| p.hash("pw".into()))).await;
        let held = p.working_memory();
        assert!(
            held == 4 << 20 || held == 8 << 20,
            "one or two threads hold 4 MiB each: {held}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while p.working_memory() != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "still held: {}",
                p.working_memory()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let h = hashes[0].as_ref().unwrap().clone();
        assert!(p.verify("pw".into(), Some(h)).await.unwrap());
        assert_eq!(p.working_memory(), 4 << 20, "taken again for the next hash");
    }
}
