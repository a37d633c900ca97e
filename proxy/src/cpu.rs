//! How the process uses its CPUs: which threads may preempt which, and what memory behaviour
//! would stall a worker. Every such decision lives here.
//!
//! - Proxy workers run at the normal policy. The cache's own threads (foyer's runtime and its
//!   disk reads) run under `SCHED_BATCH`, so a woken disk read waits for a worker to yield
//!   instead of preempting it ([`run_as_batch`]).
//! - So that disk reads are not starved while memory hits keep a worker busy, a hit
//!   yields when they have waited too long ([`DiskReads::starving`], [`yield_to_disk_reads`]).
//! - Transparent huge pages are off ([`avoid_huge_page_stalls`]).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Turns transparent huge pages off for the process, unless `MIMALLOC_ALLOW_THP` says
/// otherwise (mimalloc asks for them by default). Each first touch of a huge page zeroes 2 MiB
/// on the worker that touched it: while the memory tier grows (after a restart, during a fill)
/// those stalls held every connection of the worker and set p99 to 4–6 ms, against 1.4 ms
/// without them (`benches/HISTORY.md`).
pub fn avoid_huge_page_stalls() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: a plain prctl on this process with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        eprintln!("mcp-edge: could not turn transparent huge pages off: {}", std::io::Error::last_os_error());
    }
}

/// How long disk reads may go unanswered while some wait, before workers yield to them.
const DISK_STARVED_AFTER: Duration = Duration::from_micros(100);

#[derive(Default)]
pub struct DiskReads {
    pending: AtomicUsize,
    /// Nanoseconds since [`CLOCK_ORIGIN`] of the latest answer, or start when none was pending.
    progress_ns: AtomicU64,
}

static CLOCK_ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

fn clock_ns() -> u64 {
    CLOCK_ORIGIN.elapsed().as_nanos() as u64
}

impl DiskReads {
    pub fn starving(&self) -> bool {
        self.pending.load(Ordering::Relaxed) > 0
            && clock_ns().saturating_sub(self.progress_ns.load(Ordering::Relaxed))
                > DISK_STARVED_AFTER.as_nanos() as u64
    }
}

/// Counts one disk read in [`DiskReads`] while it lives.
pub struct DiskRead<'a>(&'a DiskReads);

impl<'a> DiskRead<'a> {
    pub fn start(reads: &'a DiskReads) -> DiskRead<'a> {
        if reads.pending.fetch_add(1, Ordering::Relaxed) == 0 {
            reads.progress_ns.store(clock_ns(), Ordering::Relaxed);
        }
        DiskRead(reads)
    }
}

impl Drop for DiskRead<'_> {
    fn drop(&mut self) {
        self.0.progress_ns.store(clock_ns(), Ordering::Relaxed);
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn disk_threads() -> usize {
    std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).max(4))
}

/// Runs the cache's threads (disk reads on the blocking pool among them) under `SCHED_BATCH`:
/// a woken disk read then waits for a proxy worker to yield instead of preempting it, and one
/// wake-up drains every read queued meanwhile, where each read used to cost two thread
/// switches of its own.
pub fn run_as_batch() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid parameter block.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "SCHED_BATCH refused for a cache thread");
    }
}

/// Lets the cache's threads run when disk reads starve for them: they run under
/// `SCHED_BATCH` and do not preempt the worker calling this. While memory hits keep a worker
/// busy, every disk hit would otherwise wait out its time slice (p99 5 ms in the first seconds
/// after a restart, while most hits come from memory).
pub fn yield_to_disk_reads(reads: &DiskReads) {
    if reads.starving() {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_reads_starve_when_none_is_answered_for_a_while() {
        let reads = DiskReads::default();
        assert!(!reads.starving(), "nothing waits");
        let first = DiskRead::start(&reads);
        assert!(!reads.starving(), "a read that just began is not starving");
        std::thread::sleep(DISK_STARVED_AFTER * 3);
        assert!(reads.starving());
        let second = DiskRead::start(&reads);
        assert!(reads.starving(), "a second read does not hide that the first waits");
        drop(first);
        assert!(!reads.starving(), "an answer is progress");
        drop(second);
        std::thread::sleep(DISK_STARVED_AFTER * 3);
        assert!(!reads.starving(), "nothing waits any more");
    }
}
