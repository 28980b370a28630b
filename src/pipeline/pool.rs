//! Shard B's CPU thread pool (rayon's global pool, which burn's Flex
//! backend and gemm use), sized and pinned from the settings once per
//! process.
//!
//! `shard_b.threads` / `shard_b.cpu_cores` size and pin it and the pipeline
//! thread (shard A's are the executive's: `shard_a.threads` →
//! INFERENCE_NUM_THREADS, `shard_a.cpu_cores` → sched_setaffinity before
//! OpenVINO starts its pool, and ENABLE_CPU_PINNING). A process builds
//! rayon's global pool once: the first pipeline's values hold.

use std::sync::OnceLock;

use crate::config::ShardBSettings;

static POOL: OnceLock<Result<(), PoolError>> = OnceLock::new();

/// Why shard B's CPU pool cannot be set up as the settings ask.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    #[error("shard_b.cpu_cores: {0}")]
    Cores(String),
    #[error("shard_b.threads/cpu_cores cannot apply: the CPU thread pool was started before ({0})")]
    Started(String),
}

/// Size and pin the CPU backend's thread pool (rayon's global pool, which
/// burn's Flex backend and gemm use) from `shard_b.threads` and
/// `shard_b.cpu_cores`. Call it before anything else uses rayon (a bake
/// does): the first call builds the pool for the whole process, later calls
/// return its result. The thread that runs shard B is pinned by
/// [`Pipeline::new`], not here (the caller may be a UI thread).
pub fn configure_cpu_pool(s: &ShardBSettings) -> Result<(), PoolError> {
    let cores = crate::affinity::parse_cpu_list(&s.cpu_cores)
        .map_err(|e| PoolError::Cores(e.to_string()))?;
    // Remember the process's cores before any thread is pinned.
    crate::affinity::process_cores();
    let threads = s.threads;
    POOL.get_or_init(|| {
        let n = if threads > 0 { threads } else { cores.len() };
        let c = cores.clone();
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .start_handler(move |_| {
                let _ = crate::affinity::pin_current_thread(&c);
            })
            .build_global();
        match built {
            Err(e) if threads > 0 || !cores.is_empty() => Err(PoolError::Started(e.to_string())),
            _ => Ok(()),
        }
    })
    .clone()
}
