//! The Tokio runtime `serve` and `run` serve on, and how many worker threads it has.
//!
//! By default half the cores, at least one. A proxy's cost per byte and per connection is
//! mostly the kernel's network processing, done in its system calls and softirqs on whichever
//! cores are free, and under `run` (and often under `serve`) the clients and origins share the
//! machine. A worker per core then only adds cross-thread wake-ups and time-slicing: on a
//! 2-core machine, with benchmark clients and the origin on it, one worker instead of two cut
//! the proxy's CPU per forwarded request by a quarter (15 against 20 µs), its keep-alive p99
//! from 2.9 to 1.2 ms, and every CPU-per-operation figure, at the same throughput (see the
//! README's performance section). `--threads N` sets the number.
//!
//! One worker stays on the multi-threaded scheduler. Tokio's current-thread scheduler was
//! measured in its place: less CPU per operation (27.0 against 30.6 µs per keep-alive
//! request), but new connections ran 3–9 % slower in all three comparisons, in one of them
//! behind Codex's proxy (`integration/results/floor-2026-12-03-current-thread.txt`,
//! `…/bench-2026-12-03-121116.txt`).

use std::num::NonZeroUsize;

use clap::Args;

/// `--threads`, shared by `serve` and `run`.
#[derive(Debug, Args, Clone, Default)]
pub struct RuntimeArgs {
    /// Worker threads for the proxy (default: half the cores, at least 1).
    #[arg(long = "threads", value_name = "N")]
    threads: Option<NonZeroUsize>,
}

impl RuntimeArgs {
    /// The multi-threaded runtime with the chosen number of workers; the error is one line.
    pub fn build(&self) -> Result<tokio::runtime::Runtime, String> {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let workers = self
            .threads
            .map_or_else(|| default_workers(cores), NonZeroUsize::get);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .map_err(|err| format!("cannot start the runtime: {err}"))
    }
}

fn default_workers(cores: usize) -> usize {
    (cores / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_cores_at_least_one() {
        for (cores, workers) in [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (64, 32)] {
            assert_eq!(default_workers(cores), workers, "{cores} cores");
        }
    }
}
