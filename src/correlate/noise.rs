//! The runtime-noise rule: native sites set aside — the Ruby runtime's own blocks, sites that
//! did not grow or are reachable only through another leaked block, and unowned sites past the
//! ones shown — counted in one finding so that nothing leaked goes unmentioned.
//!
//! Stage: correlator (one rule), run after the native-leak rule gave every site its status.

use super::analysis::SiteStatus;
use super::finding::{Confidence, EvidenceItem, Finding, FindingKind, Source};
use super::native::MAX_NATIVE_FINDINGS;
use super::sites::SiteSeries;
use crate::evidence::Evidence;
use crate::format::{count, quantity};
use crate::num::saturating_i64;

/// Why the runtime's own blocks show up as leaks, as far as the Ruby version tells.
fn runtime_noise_reason(ev: &Evidence) -> &'static str {
    let version = ev
        .latest_sidecar()
        .map(|s| s.ruby.version.as_str())
        .filter(|v| !v.is_empty());
    let at_least_3_4 = version.is_some_and(|v| {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (3, 4)
    });
    if at_least_3_4 {
        "memory the runtime keeps where the native tool does not look for pointers"
    } else {
        "Ruby before 3.4 does not free its own memory at exit"
    }
}

pub fn finding(
    ev: &Evidence,
    sites: &[SiteSeries],
    statuses: &[(SiteStatus, Option<String>)],
    over_time: bool,
) -> Option<Finding> {
    let mut runtime = (0usize, 0u64, 0u64);
    let mut still = (0usize, 0u64, 0u64);
    let mut minor = (0usize, 0u64, 0u64);
    let mut runtime_growth = 0i64;
    for (s, (status, _)) in sites.iter().zip(statuses) {
        let bucket = match status {
            SiteStatus::Runtime => {
                runtime_growth = runtime_growth.saturating_add(s.delta_bytes().max(0));
                &mut runtime
            }
            SiteStatus::Static | SiteStatus::Secondary => &mut still,
            SiteStatus::Minor => &mut minor,
            _ => continue,
        };
        bucket.0 += 1;
        bucket.1 = bucket.1.saturating_add(s.last_blocks());
        bucket.2 = bucket.2.saturating_add(s.last_bytes());
    }
    let total = (
        runtime.0 + still.0 + minor.0,
        runtime.1.saturating_add(still.1).saturating_add(minor.1),
        runtime.2.saturating_add(still.2).saturating_add(minor.2),
    );
    if total.0 == 0 {
        return None;
    }
    let mut evidence = Vec::new();
    if runtime.0 > 0 {
        let mut text = format!(
            "{} in the Ruby runtime (libruby, the ruby binary) with no FFI call on the stack: {} blocks, {} bytes — {}",
            quantity(runtime.0, "site"),
            count(runtime.1),
            count(runtime.2),
            runtime_noise_reason(ev)
        );
        if runtime_growth > 0 {
            text.push_str(&format!(
                "; they grew by {} bytes, which Ruby-level growth (the class table) explains",
                count(runtime_growth)
            ));
        }
        evidence.push(EvidenceItem::new(Source::Native, text));
    }
    if still.0 > 0 {
        evidence.push(EvidenceItem::new(
            Source::Native,
            format!(
                "{} that {}: {} blocks, {} bytes",
                quantity(still.0, "site"),
                if over_time {
                    "did not grow between snapshots, or are reachable only through another leaked block"
                } else {
                    "are reachable only through another leaked block"
                },
                count(still.1),
                count(still.2)
            ),
        ));
    }
    if minor.0 > 0 {
        evidence.push(EvidenceItem::new(
            Source::Native,
            format!(
                "{} past the {MAX_NATIVE_FINDINGS} shown: {} blocks, {} bytes (see the native sites table)",
                quantity(minor.0, "smaller unowned site"),
                count(minor.1),
                count(minor.2)
            ),
        ));
    }
    let mut f = Finding::new(
        FindingKind::RuntimeNoise,
        Confidence::High,
        format!(
            "{} set aside as noise: {} blocks, {} bytes",
            quantity(total.0, "native site"),
            count(total.1),
            count(total.2)
        ),
    )
    .headline("native sites set aside as noise")
    .identify(&["runtime"]);
    f.bytes = saturating_i64(total.2);
    f.count = saturating_i64(total.1);
    f.evidence = evidence;
    Some(f)
}
