//! Waiting on a word in shared memory without burning a core: a short spin,
//! then a Linux futex (the shared, not `_PRIVATE`, kind, so the waker may be
//! another process mapping the same segment).
//!
//! Invariants of the unsafe code here: the `AtomicU32` passed in lives in a
//! `MAP_SHARED` mapping (or ordinary memory) that stays mapped for the whole
//! call; the kernel only reads the word.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Nanoseconds on CLOCK_MONOTONIC: one clock for both processes, so a
/// timestamp written by the executive can be compared with the parent's.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleep until `word` is woken or no longer holds `expected`, at most `timeout`.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word` and the timespec;
    // both outlive the call. EAGAIN/ETIMEDOUT/EINTR are all "look again".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wake every waiter sleeping on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// A wake-up channel in shared memory: a sequence word bumped on every
/// event and a count of sleepers (so an event with no sleeper costs no
/// system call).
#[repr(C)]
pub struct Doorbell {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

/// How long to spin before sleeping. A hop between two busy processes lands
/// within this window and never pays for a futex wake-up.
pub const SPIN: Duration = Duration::from_micros(50);
/// Longest single sleep: waits re-check their deadline (and the caller its
/// peer's health) at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(50);

impl Doorbell {
    /// Announce an event (after the state it announces is stored).
    pub fn ring(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            futex_wake(&self.seq);
        }
    }

    /// Wait until `ready()` holds or `timeout` passes; returns the last `ready()`.
    pub fn wait_until(&self, timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        let spin_end = SPIN.min(timeout);
        loop {
            if ready() {
                return true;
            }
            if start.elapsed() >= spin_end {
                break;
            }
            std::hint::spin_loop();
        }
        loop {
            let seen = self.seq.load(Ordering::SeqCst);
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            if ready() {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return true;
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return false;
            }
            futex_wait(&self.seq, seen, left.min(MAX_SLEEP));
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_sleeper_is_woken_by_another_thread() {
        let bell = Arc::new(Doorbell {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        });
        let flag = Arc::new(AtomicBool::new(false));
        let (b, f) = (bell.clone(), flag.clone());
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            f.store(true, Ordering::SeqCst);
            b.ring();
        });
        let t0 = Instant::now();
        assert!(bell.wait_until(Duration::from_secs(5), || flag.load(Ordering::SeqCst)));
        assert!(t0.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
        // And a wait that nobody ends times out with false.
        let quiet = Doorbell {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        };
        assert!(!quiet.wait_until(Duration::from_millis(30), || false));
    }

    #[test]
    fn mono_clock_moves_forward() {
        let a = mono_ns();
        std::thread::sleep(Duration::from_millis(2));
        assert!(mono_ns() >= a + 1_000_000);
    }
}
