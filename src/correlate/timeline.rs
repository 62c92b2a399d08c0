//! Series over time for the charts, and the leak rate: footprint, heap snapshots, the classes
//! the findings name (then the fastest growing), and the native bytes of the finding sites.
//!
//! Stage: correlator (after the rules: it charts what they found).

use super::analysis::{ClassLine, FootprintPoint, LeakRate, NativePoint, SnapshotPoint, Timeline};
use super::classes;
use super::finding::{Finding, FindingKind};
use super::sites::SiteSeries;
use crate::evidence::Evidence;

pub fn timeline(
    ev: &Evidence,
    series: &[classes::ClassSeries],
    findings: &[Finding],
    sites: &[SiteSeries],
) -> Timeline {
    let mut chosen: Vec<&classes::ClassSeries> = Vec::new();
    for f in findings {
        if let Some(c) = &f.class
            && let Some(s) = series.iter().find(|s| &s.class == c)
            && !chosen.iter().any(|x| x.class == s.class)
        {
            chosen.push(s);
        }
    }
    let mut by_growth: Vec<&classes::ClassSeries> = series.iter().collect();
    by_growth.sort_by_key(|s| std::cmp::Reverse(s.delta().abs()));
    for s in by_growth {
        if chosen.len() >= 6 {
            break;
        }
        if !chosen.iter().any(|x| x.class == s.class) {
            chosen.push(s);
        }
    }
    let finding_sites: Vec<&str> = findings
        .iter()
        .filter(|f| f.kind.is_leak())
        .filter_map(|f| f.native.as_ref().map(|n| n.function.as_str()))
        .collect();
    Timeline {
        footprint: ev
            .footprint
            .iter()
            .map(|s| FootprintPoint {
                t: s.t,
                bytes: s.bytes,
            })
            .collect(),
        heap_snapshots: ev
            .heap
            .iter()
            .enumerate()
            .map(|(i, h)| SnapshotPoint {
                index: i + 1,
                t: h.t,
            })
            .collect(),
        classes: chosen
            .into_iter()
            .map(|s| ClassLine {
                class: s.class.clone(),
                counts: s.counts.clone(),
            })
            .collect(),
        native: ev
            .native
            .iter()
            .enumerate()
            .map(|(i, n)| NativePoint {
                index: i + 1,
                t: n.t,
                leaked_bytes: n
                    .report
                    .total_bytes()
                    .max(n.report.summary.map(|s| s.bytes).unwrap_or(0)),
                finding_bytes: sites
                    .iter()
                    .filter(|s| finding_sites.contains(&s.key.function.as_str()))
                    .map(|s| s.bytes.get(i).copied().unwrap_or(0))
                    .fold(0u64, u64::saturating_add),
            })
            .collect(),
        processes: Vec::new(),
    }
}

/// Leaked bytes per second: from the growth of the native sites that are findings when the
/// snapshots have times, else the slope of the footprint timeline.
pub fn leak_rate(ev: &Evidence, findings: &[Finding], sites: &[SiteSeries]) -> Option<LeakRate> {
    let times: Vec<f64> = ev.native.iter().filter_map(|n| n.t).collect();
    if times.len() == ev.native.len() && times.len() >= 2 {
        let span = times[times.len() - 1] - times[0];
        let grown: i64 = findings
            .iter()
            .filter(|f| {
                matches!(
                    f.kind,
                    FindingKind::MissingRelease
                        | FindingKind::NativeLeak
                        | FindingKind::ExtensionLeak
                )
            })
            .filter_map(|f| f.native.as_ref())
            .filter_map(|n| sites.iter().find(|s| s.key.function == n.function))
            .map(|s| s.delta_bytes())
            .fold(0i64, i64::saturating_add);
        if span > 0.0 && grown > 0 {
            return Some(LeakRate {
                bytes_per_second: grown as f64 / span,
                source: "native growth",
            });
        }
    }
    // The footprint only tells a rate between snapshots of a settled program: before them it
    // is start-up (loading Ruby and the program's code), and one snapshot compares nothing.
    let judged = ev.judged_heap();
    if judged.len() < 2 {
        return None;
    }
    let from = judged[0].t.unwrap_or(f64::NEG_INFINITY);
    let settled: Vec<_> = ev
        .footprint
        .iter()
        .filter(|s| s.t >= from)
        .copied()
        .collect();
    footprint_slope(&settled).map(|slope| LeakRate {
        bytes_per_second: slope,
        source: "footprint slope",
    })
}

/// Least-squares slope of bytes over seconds.
pub fn footprint_slope(samples: &[crate::bundle::FootprintSample]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let mean_t = samples.iter().map(|s| s.t).sum::<f64>() / n;
    let mean_b = samples.iter().map(|s| s.bytes as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.t - mean_t) * (s.bytes as f64 - mean_b);
        den += (s.t - mean_t) * (s.t - mean_t);
    }
    (den > 0.0).then(|| num / den)
}
