//! Native memory no Ruby object accounts for, under `--backend none`: malloc's bytes in use
//! right after each round's full GC (the agent's glibc `malloc_info`, [`crate::native::malloc_info`])
//! minus what the heap dump's objects say they hold (`memsize`, without the object slots, which
//! live in Ruby's own mmapped pages: each object's `slot_size` on 3.2+, 40 bytes before). What
//! is left is held by C code: a C extension's own buffers, a library's, Ruby's internal tables.
//!
//! The rule: when a class's unreleased instances and that unaccounted memory rise together, in
//! at least [`GROWING_ROUNDS`] round intervals, by a steady number of bytes per instance, the
//! memory is what the dropped instances held — a missing release measured without a native
//! backend. Growth no class explains is only a note: Ruby's own mallocs move too.
//!
//! Stage: correlator (rule input). Input: the sidecars' malloc measures and the heap summaries.

use crate::evidence::Evidence;
use crate::native::malloc_info;

/// Round intervals in which the two must rise together.
pub const GROWING_ROUNDS: usize = 2;

/// Below this many bytes per dropped instance, the "growth" is malloc's noise (one 16-byte
/// chunk is the smallest glibc hands out).
const MIN_BYTES_PER_INSTANCE: f64 = 16.0;

/// Per-interval bytes per instance may vary by this factor (highest over lowest) and still
/// count as steady.
const STEADY_FACTOR: f64 = 2.0;

/// Growth below this over the judged rounds is lost in what Ruby itself mallocs and frees.
pub const MIN_GROWTH: i64 = 64 * 1024;

/// An interval that gained fewer instances than the largest gain over this is too short to size
/// one (the exit snapshot a moment after the last round: 30 instances against 9,000): malloc's
/// noise would be most of its bytes per instance, so it is left out of the judgement.
const SHORT_INTERVAL_SHARE: u64 = 10;

/// The slot Ruby's dump counts into every object's `memsize` when the dump does not say each
/// object's `slot_size` (RVALUE on 64-bit Ruby up to 3.1; 3.2+ dumps give the size, 40 to 640
/// bytes, and [`HeapSummary::slot_bytes`](crate::heap::HeapSummary) sums it).
const SLOT_BYTES: i64 = 40;

/// What the objects of a heap summary hold outside their slots: Σ `memsize` − Σ slot sizes,
/// the slots summed from the dump (3.2+) or [`SLOT_BYTES`] per object (≤ 3.1). Never negative.
pub fn ruby_part(summary: &crate::heap::HeapSummary) -> i64 {
    let rows = &summary.histogram.rows;
    let memsize = rows.iter().fold(0i64, |a, r| a.saturating_add(r.bytes));
    let slots = match summary.slot_bytes {
        Some(bytes) => i64::try_from(bytes).unwrap_or(i64::MAX),
        None => rows
            .iter()
            .fold(0i64, |a, r| a.saturating_add(r.count))
            .saturating_mul(SLOT_BYTES),
    };
    memsize.saturating_sub(slots).max(0)
}

/// Malloc's bytes in use (`totals`, read from `m`'s XML) but leakhunt's own: the held round's
/// buffer and objspace's allocation records.
fn program_in_use(m: &crate::bundle::MallocMeasure, totals: &malloc_info::MallocTotals) -> u64 {
    totals
        .in_use_without(m.held_buffer)
        .saturating_sub(m.records.saturating_mul(m.record_bytes))
}

/// One round's measure.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// The snapshot number (sidecar and heap dump).
    pub snapshot: u32,
    /// Seconds since the agent started.
    pub t: f64,
    /// Malloc's bytes in use after the round's full GC.
    pub in_use: u64,
    /// What the dump's objects hold outside their slots.
    pub ruby: i64,
}

impl Round {
    /// Native bytes no Ruby object accounts for.
    pub fn unaccounted(&self) -> i64 {
        i64::try_from(self.in_use)
            .unwrap_or(i64::MAX)
            .saturating_sub(self.ruby)
    }
}

/// The judged rounds whose sidecar measured malloc and whose heap dump was read, oldest first,
/// with how they were measured. Documents that cannot be read are skipped and said in `notes`.
pub fn rounds(ev: &Evidence, notes: &mut Vec<String>) -> (Vec<Round>, Option<String>) {
    let mut out = Vec::new();
    let mut how = None;
    let judged = ev.judged_heap();
    for sc in &ev.sidecars {
        let Some(m) = &sc.malloc else { continue };
        let Some(heap) = judged.iter().find(|h| h.snapshot == Some(sc.snapshot)) else {
            continue;
        };
        let totals = match malloc_info::parse(m.xml.as_bytes()) {
            Ok(t) => t,
            Err(e) => {
                notes.push(format!(
                    "the malloc measure of snapshot {} was not understood: {e}",
                    sc.snapshot
                ));
                continue;
            }
        };
        out.push(Round {
            snapshot: sc.snapshot,
            t: sc.t,
            in_use: program_in_use(m, &totals),
            ruby: ruby_part(&heap.summary),
        });
        how.get_or_insert_with(|| m.how.clone());
    }
    (out, how)
}

/// Native growth that the dropped instances of a class explain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Explained {
    /// Unaccounted native growth over the intervals in which the class's unreleased
    /// instances grew.
    pub bytes: i64,
    /// Unreleased instances gained over those intervals.
    pub instances: u64,
    /// How many intervals.
    pub intervals: usize,
}

impl Explained {
    pub fn per_instance(&self) -> f64 {
        self.bytes as f64 / self.instances.max(1) as f64
    }
}

/// Whether the unaccounted native memory (`native`, per round) rose with the class's
/// unreleased instances (`unreleased`, the same rounds): in every interval in which the
/// instances grew (but one too short to size them, [`SHORT_INTERVAL_SHARE`]), and at least
/// [`GROWING_ROUNDS`] of them, the memory grew too, by at least [`MIN_BYTES_PER_INSTANCE`] per
/// instance, the same within [`STEADY_FACTOR`], and [`MIN_GROWTH`] in all.
pub fn explains(native: &[i64], unreleased: &[u64]) -> Option<Explained> {
    if native.len() != unreleased.len() {
        return None;
    }
    let most = unreleased
        .windows(2)
        .map(|u| u[1].saturating_sub(u[0]))
        .max()
        .unwrap_or(0);
    let mut bytes = 0i64;
    let mut instances = 0u64;
    let mut intervals = 0;
    let (mut lowest, mut highest) = (f64::INFINITY, 0f64);
    for (n, u) in native.windows(2).zip(unreleased.windows(2)) {
        let gained = u[1].saturating_sub(u[0]);
        if gained == 0 || gained.saturating_mul(SHORT_INTERVAL_SHARE) < most {
            continue;
        }
        let grown = n[1].saturating_sub(n[0]);
        let per = grown as f64 / gained as f64;
        if per < MIN_BYTES_PER_INSTANCE {
            return None;
        }
        lowest = lowest.min(per);
        highest = highest.max(per);
        bytes = bytes.saturating_add(grown);
        instances = instances.saturating_add(gained);
        intervals += 1;
    }
    let steady = highest <= lowest * STEADY_FACTOR;
    (intervals >= GROWING_ROUNDS && steady && bytes >= MIN_GROWTH).then_some(Explained {
        bytes,
        instances,
        intervals,
    })
}

/// Rates (bytes a second) of a steady growth may vary by this factor from interval to interval.
const STEADY_RATE_FACTOR: f64 = 3.0;

/// Growth of the unaccounted memory that goes on at a steady pace, given as (seconds, bytes)
/// per round: up in every interval (at least [`GROWING_ROUNDS`]), at rates within
/// [`STEADY_RATE_FACTOR`] of each other, [`MIN_GROWTH`] in all. A program warming up (pools,
/// caches, malloc's arenas) grows at first and then stops: no steady pace.
pub fn keeps_growing(rounds: &[(f64, i64)]) -> Option<i64> {
    let (first, last) = (rounds.first()?, rounds.last()?);
    let grown = last.1.saturating_sub(first.1);
    let mut rates = Vec::new();
    for w in rounds.windows(2) {
        let (seconds, bytes) = (w[1].0 - w[0].0, w[1].1.saturating_sub(w[0].1));
        if seconds.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || bytes <= 0 {
            return None;
        }
        rates.push(bytes as f64 / seconds);
    }
    let lowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = rates.iter().copied().fold(0.0, f64::max);
    (rates.len() >= GROWING_ROUNDS && highest <= lowest * STEADY_RATE_FACTOR && grown >= MIN_GROWTH)
        .then_some(grown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::HeapSummary;
    use crate::heap::histogram::{ClassRow, Histogram};

    fn summary(rows: &[(&str, i64, i64)], slot_bytes: Option<u64>) -> HeapSummary {
        HeapSummary {
            path: "heap.json".into(),
            format: crate::heap::HeapFormat::Cruby,
            ruby_version: None,
            histogram: Histogram {
                rows: rows
                    .iter()
                    .map(|&(name, count, bytes)| ClassRow {
                        name: name.into(),
                        count,
                        bytes,
                    })
                    .collect(),
            },
            alloc_sites: Vec::new(),
            data_types: Vec::new(),
            objects: rows.iter().map(|r| r.1 as u64).sum(),
            slot_bytes,
            diagnostics: Default::default(),
        }
    }

    /// Lines of a Ruby 3.3.8 dump: 7 objects in slots of 40 to 640 bytes (1,120 in all),
    /// memsize 2,368. The Ruby part takes the slots the dump gives off, not 7 × 40.
    #[test]
    fn the_ruby_part_takes_off_the_slot_sizes_the_dump_gives() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/cruby/ruby3.3.8-linux-slot-sizes.json");
        let mut s = crate::heap::cruby::summarize(&path).unwrap();
        assert_eq!(s.histogram.total_bytes(), 2_368);
        assert_eq!(ruby_part(&s), 2_368 - 1_120);
        // Without the sizes (a dump from Ruby 3.1 or older): 40 bytes an object.
        s.slot_bytes = None;
        assert_eq!(ruby_part(&s), 2_368 - 7 * 40);
        // Never below zero.
        assert_eq!(ruby_part(&summary(&[("Object", 3, 100)], Some(400))), 0);
    }

    /// Ruby 3.3: each round the program drops 1,000 RingBufs (40-byte slots, a 272-byte buffer
    /// malloc'd each, which no memsize counts) and keeps 1,000 more embedded Arrays in 640-byte
    /// slots, which hold nothing outside them. Counting 40 bytes a slot, the Arrays' slots
    /// would read as 600 KB a round of Ruby mallocs and hide the RingBufs' buffers; with the
    /// dump's slot sizes the unaccounted memory grows by exactly the buffers.
    #[test]
    fn on_3_3_big_slots_no_longer_hide_a_missing_release() {
        let base_malloc = 4_000_000u64;
        let mut exact = Vec::new();
        let mut per_object = Vec::new();
        let mut unreleased = Vec::new();
        for round in 0..4i64 {
            let n = 1_000 * round;
            let rows = [
                ("RingBuf", n, n * 40),
                ("Array", 5_000 + n, (5_000 + n) * 640),
            ];
            let slots = (n * 40 + (5_000 + n) * 640) as u64;
            let in_use = base_malloc + 272 * n as u64;
            let with_sizes = Round {
                snapshot: round as u32 + 1,
                t: round as f64,
                in_use,
                ruby: ruby_part(&summary(&rows, Some(slots))),
            };
            let without = Round {
                ruby: ruby_part(&summary(&rows, None)),
                ..with_sizes.clone()
            };
            exact.push(with_sizes.unaccounted());
            per_object.push(without.unaccounted());
            unreleased.push(n as u64);
        }
        let e = explains(&exact, &unreleased).expect("explained with the dump's slot sizes");
        assert_eq!(e.bytes, 272 * 3_000);
        assert!((e.per_instance() - 272.0).abs() < f64::EPSILON, "{e:?}");
        assert_eq!(explains(&per_object, &unreleased), None, "{per_object:?}");
    }

    /// Measured on ringbuf-leak.rb (Ruby 3.1, glibc 2.36): 272 bytes per dropped RingBuf.
    #[test]
    fn steady_growth_with_the_dropped_instances_is_explained() {
        let native = [3_873_625, 4_065_505, 4_255_904, 4_446_303];
        let unreleased = [700, 1400, 2100, 2800];
        let e = explains(&native, &unreleased).unwrap();
        assert_eq!(e.intervals, 3);
        assert_eq!(e.instances, 2100);
        assert_eq!(e.bytes, 4_446_303 - 3_873_625);
        assert!((e.per_instance() - 272.7).abs() < 1.0, "{e:?}");
    }

    /// widget-late-class.rb: the exit snapshot a moment after the last round adds 30 instances
    /// to two intervals of 9,000, and a few bytes of malloc's noise; it is too short to judge.
    #[test]
    fn a_short_last_interval_is_left_out() {
        let native = [
            2_000_000, 2_000_000, 2_000_000, 5_800_000, 9_700_000, 9_700_100,
        ];
        let unreleased = [0, 0, 0, 9_060, 18_300, 18_330];
        let e = explains(&native, &unreleased).expect("sized by the two long intervals");
        assert_eq!((e.intervals, e.instances), (2, 18_300));
        assert_eq!(e.bytes, 7_700_000);
        // Judged as before, its 3 bytes per instance would void the measure.
        assert_eq!(
            explains(&native[..5], &unreleased[..5]).unwrap().intervals,
            2
        );
        assert_eq!(
            explains(
                &[0, 3_800_000, 7_700_000, 7_700_100],
                &[0, 9_000, 18_000, 18_000 + 1_800]
            ),
            None,
            "an interval of a fifth of the largest still counts"
        );
    }

    /// tidy-gc.rb's Zlib::Deflates: never released, but zlib's free function frees them —
    /// the unaccounted memory stays flat.
    #[test]
    fn flat_memory_beside_growing_unreleased_instances_is_not_explained() {
        let native = [3_689_120, 3_690_008, 3_689_885, 3_690_065];
        let unreleased = [70, 140, 210, 280];
        assert_eq!(explains(&native, &unreleased), None);
    }

    #[test]
    fn noisy_or_one_off_growth_is_not_explained() {
        // One big jump, then nothing: not steady.
        assert_eq!(
            explains(&[0, 500_000, 500_100, 500_300], &[0, 1000, 2000, 3000]),
            None
        );
        // Growing, but by 100 then 800 bytes per instance: not steady.
        assert_eq!(explains(&[0, 100_000, 900_000], &[0, 1000, 2000]), None);
        // Steady but in one interval only.
        assert_eq!(explains(&[0, 0, 300_000], &[0, 0, 1000]), None);
        // Steady and tiny: Ruby's own noise.
        assert_eq!(explains(&[0, 3_000, 6_000], &[0, 100, 200]), None);
        // Memory fell while instances were dropped.
        assert_eq!(
            explains(&[500_000, 400_000, 300_000], &[0, 1000, 2000]),
            None
        );
        // Series that do not match.
        assert_eq!(explains(&[0, 300_000], &[0, 1000, 2000]), None);
        assert_eq!(explains(&[], &[]), None);
    }

    #[test]
    fn growth_that_goes_on_is_told_from_a_flat_a_falling_or_a_warming_up_series() {
        // scanner-leak.rb's Scanner#scan under `--backend none`: (agent seconds, bytes).
        let scanner = [
            (0.5, 790_000),
            (1.3, 1_078_000),
            (2.1, 1_265_000),
            (3.5, 1_721_000),
        ];
        assert_eq!(keeps_growing(&scanner), Some(1_721_000 - 790_000));
        // The seed's fixed program: grows while ZeroMQ warms up, then not in ten seconds.
        let warming = [
            (0.5, 2_250_000),
            (1.6, 2_350_000),
            (2.7, 2_450_000),
            (13.3, 2_452_000),
        ];
        assert_eq!(keeps_growing(&warming), None);
        // tidy-gc.rb: flat.
        assert_eq!(
            keeps_growing(&[(0.5, 3_689_120), (1.2, 3_690_008), (1.9, 3_689_885)]),
            None
        );
        // Grew, then gave some back.
        assert_eq!(
            keeps_growing(&[(0.0, 0), (1.0, 400_000), (2.0, 300_000), (3.0, 700_000)]),
            None
        );
        // Steady but small, or one interval only.
        assert_eq!(keeps_growing(&[(0.0, 0), (1.0, 1_000), (2.0, 2_000)]), None);
        assert_eq!(keeps_growing(&[(0.0, 0), (1.0, 400_000)]), None);
        // Rounds out of order in time: no rate.
        assert_eq!(
            keeps_growing(&[(2.0, 0), (1.0, 400_000), (3.0, 800_000)]),
            None
        );
        assert_eq!(keeps_growing(&[]), None);
    }
}
