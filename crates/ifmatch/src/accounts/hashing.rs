//! Password hashes: argon2id for new ones, bcrypt and older argon2 still
//! verified, and the bounded pool of threads that computes them.
//!
//! ## The hashing pool
//!
//! An OWASP argon2id hash takes 19 MiB of memory and tens of milliseconds of
//! CPU. Run without a bound (as on tokio's blocking pool, up to 512 threads),
//! a burst of logins takes gigabytes and starves the storage I/O that shares
//! that pool (the file store and tenant databases). So every hash and every
//! verification runs on a [`HashPool`]: a fixed number of dedicated threads
//! (by default one per CPU, at most [`MAX_DEFAULT_WORKERS`]) behind a short queue (by default eight jobs per
//! thread). A job that finds the queue full is refused at once with
//! [`AccountsError::Busy`] (an HTTP server answers 429 with `Retry-After`):
//! memory stays at `workers x m` however many requests arrive, and a job
//! waits at most `queue / workers` hash times. A job whose caller has gone
//! away (a dropped request) is skipped when its turn comes. The threads run
//! at a lower priority (nice 10 on Linux), so that with every core busy
//! hashing, work that needs no hash still gets the CPU first; and each keeps
//! its argon2 working memory between hashes (see [`MEMORY`]).

use std::cell::RefCell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::{Output, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, PasswordHasher};

use super::AccountsError;

/// The password behind the dummy hashes; no account can have it, since a
/// dummy hash is never compared with a result that lets anyone in.
const DUMMY_PASSWORD: &[u8] = b"ifmatch-accounts-dummy-password";
/// The fixed salt of the dummy hashes.
const DUMMY_SALT: &[u8] = b"ifmatch-dummy-16";
/// The dummy hash for [`HashParams::OWASP`]: `DUMMY_PASSWORD` under `DUMMY_SALT`.
const DUMMY_HASH_OWASP: &str = "$argon2id$v=19$m=19456,t=2,p=1$aWZtYXRjaC1kdW1teS0xNg$54jZt7Z4k6TNhsCkeDerghmliEfUMvDyiwFgK/QP8bk";

/// The argon2id cost parameters used for new hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashParams {
    /// Memory in KiB (`m`); at least 8 per lane.
    pub memory_kib: u32,
    /// Passes over the memory (`t`); at least 1.
    pub iterations: u32,
    /// Lanes (`p`); at least 1.
    pub parallelism: u32,
}

impl HashParams {
    /// OWASP's recommendation for argon2id: m=19456 KiB, t=2, p=1. The default.
    pub const OWASP: HashParams = HashParams::new(19456, 2, 1);

    /// Parameters `m` (KiB), `t` and `p`; checked by [`Accounts::new`].
    ///
    /// Anything cheaper than [`HashParams::OWASP`] is for tests only.
    pub const fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Self {
        HashParams {
            memory_kib,
            iterations,
            parallelism,
        }
    }

    fn to_argon2(self) -> Result<argon2::Params, AccountsError> {
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None).map_err(|e| {
            AccountsError::InvalidHashParams(format!(
                "m={}, t={}, p={}: {e}",
                self.memory_kib, self.iterations, self.parallelism
            ))
        })
    }
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams::OWASP
    }
}

/// The hashing side of [`Accounts`]: new hashes, verification, upgrade checks.
#[derive(Clone)]
pub(crate) struct Hasher {
    argon2: Argon2<'static>,
    params: HashParams,
    pub(crate) dummy: String,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// The kinds of stored hash this module can verify.
#[derive(Debug, PartialEq, Eq)]
enum Scheme {
    Argon2,
    Bcrypt,
    Unknown,
}

fn scheme(hash: &str) -> Scheme {
    if hash.starts_with("$argon2") {
        Scheme::Argon2
    } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        Scheme::Bcrypt
    } else {
        Scheme::Unknown
    }
}

impl Hasher {
    pub(crate) fn new(params: HashParams) -> Result<Hasher, AccountsError> {
        let argon2 = Argon2::new(
            Algorithm::Argon2id,
            argon2::Version::V0x13,
            params.to_argon2()?,
        );
        let dummy = if params == HashParams::OWASP {
            DUMMY_HASH_OWASP.to_string()
        } else {
            argon2
                .hash_password_with_salt(DUMMY_PASSWORD, DUMMY_SALT)
                .map_err(|e| AccountsError::Hashing(e.to_string()))?
                .to_string()
        };
        Ok(Hasher {
            argon2,
            params,
            dummy,
        })
    }

    /// A new argon2id hash of `password` with a random salt, in PHC format.
    pub(crate) fn hash(&self, password: &[u8]) -> Result<String, AccountsError> {
        let failed = |e: &dyn fmt::Display| AccountsError::Hashing(e.to_string());
        let salt = argon2::password_hash::try_generate_salt()
            .map_err(|e| AccountsError::Hashing(format!("no random salt: {e}")))?;
        let params = self.argon2.params().clone();
        let mut out = [0u8; argon2::Params::DEFAULT_OUTPUT_LEN];
        with_thread_memory(|memory| {
            compute(&self.argon2, &params, password, &salt, &mut out, memory)
        })
        .map_err(|e| failed(&e))?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(argon2::Version::V0x13.into()),
            params: (&params).try_into().map_err(|e| failed(&e))?,
            salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
            hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches `hash`; an error if the hash is unusable.
    pub(crate) fn verify(
        &self,
        key: &str,
        hash: &str,
        password: &[u8],
    ) -> Result<bool, AccountsError> {
        let corrupt = |reason: String| AccountsError::CorruptRecord {
            key: key.to_string(),
            reason,
        };
        match scheme(hash) {
            Scheme::Argon2 => {
                let unusable = |e: &dyn fmt::Display| corrupt(format!("unusable argon2 hash: {e}"));
                let parsed = PasswordHash::new(hash)
                    .map_err(|e| corrupt(format!("unparseable argon2 hash: {e}")))?;
                let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
                    return Err(corrupt("an argon2 hash without salt or output".into()));
                };
                let algorithm =
                    Algorithm::try_from(parsed.algorithm.as_str()).map_err(|e| unusable(&e))?;
                let version = match parsed.version {
                    Some(v) => argon2::Version::try_from(v).map_err(|e| unusable(&e))?,
                    None => argon2::Version::default(),
                };
                let params = argon2::Params::try_from(&parsed).map_err(|e| unusable(&e))?;
                if params.m_cost() > VERIFY_MAX_MEMORY_KIB {
                    return Err(corrupt(format!(
                        "an argon2 hash asking for {} KiB of memory (at most {VERIFY_MAX_MEMORY_KIB} are spent on one)",
                        params.m_cost()
                    )));
                }
                let argon2 = Argon2::new(algorithm, version, params.clone());
                let mut out = vec![0u8; expected.len()];
                with_thread_memory(|memory| {
                    compute(&argon2, &params, password, salt, &mut out, memory)
                })
                .map_err(|e| unusable(&e))?;
                // Output's equality is constant-time.
                Ok(Output::new(&out).map_err(|e| unusable(&e))? == *expected)
            }
            Scheme::Bcrypt => bcrypt::verify(password, hash)
                .map_err(|e| corrupt(format!("unusable bcrypt hash: {e}"))),
            Scheme::Unknown => Err(corrupt("unknown password hash scheme".into())),
        }
    }

    /// Spends what verifying a current hash costs, for a login with no hash to check.
    pub(crate) fn verify_dummy(&self, password: &[u8]) {
        // The outcome is irrelevant: the caller fails the login either way.
        let _ = self.verify("(dummy)", &self.dummy, password);
    }

    /// Whether `hash` should be replaced by a fresh one with the current parameters.
    pub(crate) fn needs_upgrade(&self, hash: &str) -> bool {
        if !hash.starts_with("$argon2id$") {
            return true;
        }
        let Ok(parsed) = PasswordHash::new(hash) else {
            return true;
        };
        if parsed.version != Some(argon2::Version::V0x13.into()) {
            return true;
        }
        match argon2::Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() != self.params.memory_kib
                    || p.t_cost() != self.params.iterations
                    || p.p_cost() != self.params.parallelism
            }
            Err(_) => true,
        }
    }
}

/// The most memory one verification may take (256 MiB): a stored hash
/// asking for more is refused as unusable rather than allocated.
const VERIFY_MAX_MEMORY_KIB: u32 = 256 * 1024;

thread_local! {
    /// The argon2 working memory of this thread, kept between hashes. A
    /// hashing thread allocates it once (19 MiB for OWASP's parameters) and
    /// reuses it: allocating it afresh for every hash, as the argon2 crate
    /// does, made glibc's allocator keep a new 19 MiB region for each of the
    /// first dozen hashes (its dynamic mmap threshold), 250 MB for two threads.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's argon2 working memory.
fn with_thread_memory<T>(f: impl FnOnce(&mut Vec<Block>) -> T) -> T {
    MEMORY.with_borrow_mut(f)
}

/// Computes the argon2 output of `password` and `salt` into `out` in
/// `memory`, grown to the blocks `params` needs and wiped afterwards.
fn compute(
    argon2: &Argon2<'_>,
    params: &argon2::Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let result = argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks]);
    // Nothing derived from a password stays behind between two hashes.
    memory[..blocks].fill(Block::new());
    result
}

/// A unit of work for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of dedicated hashing threads behind a bounded queue (see the module docs).
///
/// The threads stop when the last handle to the pool is dropped.
pub(crate) struct HashPool {
    tx: SyncSender<Job>,
    workers: usize,
    queue: usize,
}

impl fmt::Debug for HashPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashPool")
            .field("workers", &self.workers)
            .field("queue", &self.queue)
            .finish()
    }
}

/// How long a caller refused by a full queue is asked to wait.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

impl HashPool {
    /// Starts `workers` threads (at least 1) behind a queue of `queue` jobs.
    pub(crate) fn start(workers: usize, queue: usize) -> Result<HashPool, AccountsError> {
        let workers = workers.max(1);
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("ifmatch-hash-{i}"))
                .spawn(move || work(&rx))
                .map_err(|e| {
                    AccountsError::Hashing(format!("cannot start a hashing thread: {e}"))
                })?;
        }
        Ok(HashPool { tx, workers, queue })
    }

    /// Runs `f` on a hashing thread and waits for its result;
    /// [`AccountsError::Busy`] at once if the queue is full.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, AccountsError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, AccountsError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller went away while the job waited: skip the work.
            if tx.is_closed() {
                return;
            }
            if let Ok(result) = catch_unwind(AssertUnwindSafe(f)) {
                let _ = tx.send(result);
            }
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("ifmatch_password_hash_refused_total").increment(1);
                return Err(AccountsError::Busy {
                    workers: self.workers,
                    queue: self.queue,
                    retry_after: BUSY_RETRY_AFTER,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(AccountsError::Hashing("the hashing threads stopped".into()));
            }
        }
        metrics::counter!("ifmatch_password_hashes_total").increment(1);
        rx.await
            .map_err(|_| AccountsError::Hashing("a hashing job failed (panicked)".into()))?
    }
}

/// A hashing thread: runs jobs until every sender is gone.
fn work(rx: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        // Only the receive holds the lock; a poisoned lock still has a usable receiver.
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// The most hashing threads by default, however many CPUs there are: with
/// OWASP's 19 MiB each, 16 threads take about 300 MiB.
pub const MAX_DEFAULT_WORKERS: usize = 16;

/// Makes the calling thread yield the CPU to the rest of the process (a
/// nice value of 10): with every core busy hashing, requests that need no
/// hash (`/healthz`, reads, storage I/O) still get the CPU first. Linux only
/// (elsewhere a thread's priority is the process's); a failure is harmless.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread, no pointers involved.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// The default number of hashing threads: the CPUs this process may use, at
/// most [`MAX_DEFAULT_WORKERS`].
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_DEFAULT_WORKERS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_is_the_owasp_dummy() {
        let h = Hasher::new(HashParams::OWASP).unwrap();
        assert_eq!(h.dummy, DUMMY_HASH_OWASP);
        assert!(h.dummy.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        // The constant is what it claims to be.
        assert!(h.verify("k", DUMMY_HASH_OWASP, DUMMY_PASSWORD).unwrap());
        assert!(
            !h.needs_upgrade(DUMMY_HASH_OWASP),
            "the dummy costs what a current hash costs"
        );
    }

    #[test]
    fn dummy_hash_follows_custom_params() {
        let h = Hasher::new(HashParams::new(64, 1, 1)).unwrap();
        assert!(h.dummy.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(!h.needs_upgrade(&h.dummy));
        assert!(h.needs_upgrade(DUMMY_HASH_OWASP));
    }

    #[test]
    fn hashes_are_standard_phc_and_memory_is_reused() {
        use argon2::PasswordVerifier;
        let h = Hasher::new(HashParams::new(256, 1, 1)).unwrap();
        let a = h.hash(b"correct horse").unwrap();
        let b = h.hash(b"correct horse").unwrap();
        assert_ne!(a, b, "fresh salts");
        assert!(a.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{a}");
        // The argon2 crate's own verifier agrees with ours, both ways.
        let parsed = PasswordHash::new(&a).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(h.verify("k", &a, b"correct horse").unwrap());
        assert!(!h.verify("k", &a, b"correct horsf").unwrap());
        // This thread's working memory is kept, wiped, for the next hash.
        let kept = with_thread_memory(|m| {
            (
                m.len(),
                m.iter().all(|b| b.as_ref().iter().all(|w| *w == 0)),
            )
        });
        assert_eq!(kept, (256, true));
        // A stored hash may not ask for unbounded memory.
        let greedy = "$argon2id$v=19$m=4194304,t=1,p=1$aWZtYXRjaC1kdW1teS0xNg$54jZt7Z4k6TNhsCkeDerghmliEfUMvDyiwFgK/QP8bk";
        let e = h.verify("k", greedy, b"x").unwrap_err().to_string();
        assert!(e.contains("4194304 KiB"), "{e}");
    }

    #[test]
    fn bad_params_are_refused() {
        assert!(matches!(
            Hasher::new(HashParams::new(0, 1, 1)),
            Err(AccountsError::InvalidHashParams(_))
        ));
    }

    #[test]
    fn schemes() {
        assert_eq!(scheme(DUMMY_HASH_OWASP), Scheme::Argon2);
        for p in ["$2a$", "$2b$", "$2y$"] {
            assert_eq!(scheme(&format!("{p}04$abc")), Scheme::Bcrypt);
        }
        assert_eq!(scheme("$2x$04$abc"), Scheme::Unknown);
        assert_eq!(scheme("plaintext"), Scheme::Unknown);
    }

    #[test]
    fn errors_never_quote_the_hash() {
        let h = Hasher::new(HashParams::new(64, 1, 1)).unwrap();
        let broken = "$argon2id$v=19$m=64,t=1,p=1$not-base64!$secret";
        let e = h.verify("users/x", broken, b"pw").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
        let e = h
            .verify("users/x", "$2b$04$tooshort", b"pw")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("tooshort"), "{e}");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_recovers() {
        let pool = HashPool::start(1, 1).unwrap();
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started, on_start) = std::sync::mpsc::channel::<()>();
        // One job runs (until released) ...
        let mut running = Box::pin(pool.run(move || {
            started.send(()).unwrap();
            hold.recv().unwrap();
            Ok(1)
        }));
        assert!(futures::poll!(&mut running).is_pending());
        tokio::task::spawn_blocking(move || on_start.recv().unwrap())
            .await
            .unwrap();
        // ... one waits in the queue ...
        let mut queued = Box::pin(pool.run(|| Ok(2)));
        assert!(futures::poll!(&mut queued).is_pending());
        // ... and the next is refused at once.
        let refused = pool.run(|| Ok(3)).await;
        assert!(
            matches!(
                refused,
                Err(AccountsError::Busy {
                    workers: 1,
                    queue: 1,
                    ..
                })
            ),
            "{refused:?}"
        );
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap(), 1);
        assert_eq!(queued.await.unwrap(), 2);
        assert_eq!(pool.run(|| Ok(4)).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let pool = HashPool::start(1, 4).unwrap();
        let r = pool
            .run(|| -> Result<(), AccountsError> { panic!("boom") })
            .await;
        assert!(matches!(r, Err(AccountsError::Hashing(_))), "{r:?}");
        assert_eq!(pool.run(|| Ok(5)).await.unwrap(), 5, "the thread survived");
    }
}
