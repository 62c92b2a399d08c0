//! The allocation bound: a global allocator that counts the bytes leakhunt holds and aborts
//! the process when one input makes it hold more than [`LIMIT`].
//!
//! libFuzzer's own `-malloc_limit_mb` needs a sanitizer's malloc hooks, which a build without
//! AddressSanitizer (stable Rust) does not have; `-rss_limit_mb` is checked only once a second.
//! Counting here catches every oversized allocation at once, and the abort makes libFuzzer save
//! the input as a crash.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most heap one fuzz input may make leakhunt hold: twice what a gzip input may inflate to
/// (`source::MAX_INFLATED`, 64 MiB), which a 64 KiB input of compressed text can reach by
/// design. Inputs are at most a few hundred KiB (FUZZING.md: `-max_len`), so anything beyond is
/// an allocation sized by a number read from the input, not by the input.
pub const LIMIT: usize = 2 * leakhunt::source::MAX_INFLATED as usize;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

pub struct Bounded;

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

/// Bytes held now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes held since the last [`start_input`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts measuring the peak for a new input.
pub fn start_input() {
    PEAK.store(live(), Ordering::Relaxed);
}

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
    if now > LIMIT {
        over_limit(now);
    }
}

fn shrank(by: usize) {
    LIVE.fetch_sub(by, Ordering::Relaxed);
}

/// Says why and aborts, without allocating (the allocator is the caller).
#[cold]
fn over_limit(now: usize) -> ! {
    let mut digits = [b'0'; 20];
    let mut n = now;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let first = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len() - 1);
    let parts: [&[u8]; 3] = [
        b"leakhunt-fuzz: one input made leakhunt hold more heap than the bound (alloc::LIMIT): ",
        &digits[first..],
        b" bytes\n",
    ];
    for part in parts {
        // SAFETY: writes a buffer we own to fd 2; the result does not matter, we abort next.
        unsafe {
            libc::write(2, part.as_ptr().cast(), part.len());
        }
    }
    std::process::abort();
}

// SAFETY: every call goes to the system allocator with the caller's layout; the counters only
// observe sizes and never affect what is returned.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: `ptr` was returned by this allocator (hence by System) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grew(new_size - layout.size());
        } else {
            shrank(layout.size() - new_size);
        }
        // SAFETY: as for `dealloc`; `new_size` comes from the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
