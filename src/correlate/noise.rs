//! The runtime-noise rule: native sites set aside — the Ruby runtime's own blocks, the runtime's
//! blocks lost only at exit, sites that did not grow or are reachable only through another
//! leaked block, and unowned sites past the ones shown — counted in one finding so that nothing
//! leaked goes unmentioned.
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
    let mut at_exit = (0usize, 0u64, 0u64);
    let mut still = (0usize, 0u64, 0u64);
    let mut minor = (0usize, 0u64, 0u64);
    let mut runtime_growth = 0i64;
    for (s, (status, _)) in sites.iter().zip(statuses) {
        let bucket = match status {
            SiteStatus::Runtime if !s.is_runtime() => &mut at_exit,
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
    let total = [at_exit, still, minor].iter().fold(runtime, |t, b| {
        (t.0 + b.0, t.1.saturating_add(b.1), t.2.saturating_add(b.2))
    });
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
    if at_exit.0 > 0 {
        evidence.push(EvidenceItem::new(
            Source::Native,
            format!(
                "{} in the Ruby runtime that grew only in the report taken at exit, not in the checks before: {} blocks, {} bytes — memory of objects that lived until the end (an FFI call or an extension may have asked for it), which the runtime does not free as it exits",
                quantity(at_exit.0, "site"),
                count(at_exit.1),
                count(at_exit.2),
            ),
        ));
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

#[cfg(test)]
mod tests {
    use crate::correlate::{FindingKind, Options, SiteStatus, correlate};
    use crate::evidence::{Evidence, NativeSnapshot, Origin};
    use std::path::Path;

    /// A valgrind check while the program runs: nothing lost but a block of the runtime's own.
    const MID_RUN: &[u8] = b"\
==41== 8 (+8) bytes in 1 (+1) blocks are definitely lost in loss record 131 of 8,811
==41==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==41==    by 0x4934483: ??? (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==41==    by 0x48E0D99: ruby_init (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==41== 
==41== LEAK SUMMARY:
==41==    definitely lost: 8 (+8) bytes in 1 (+1) blocks
==41== 
";

    /// The same check at exit: the data blocks of the FFI pointers ffi_c.so made through
    /// rb_data_object_zalloc, which lived until the end (seed B under valgrind).
    const AT_EXIT: &[u8] = b"\
==41== 8 bytes in 1 blocks are definitely lost in loss record 131 of 8,811
==41==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==41==    by 0x4934483: ??? (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==41==    by 0x48E0D99: ruby_init (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==41== 
==41== 2,400 bytes in 50 blocks are definitely lost in loss record 7,002 of 8,811
==41==    at 0x4846A73: calloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==41==    by 0x4932C1E: ??? (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==41==    by 0x4936F52: rb_data_object_zalloc (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==41==    by 0x9E1F0A3: ??? (in /usr/lib/x86_64-linux-gnu/rubygems-integration/3.1.0/extensions/x86_64-linux/3.1.0/ffi-1.15.5/ffi_c.so)
==41==    by 0x4A6C9B0: rb_class_new_instance (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==41== 
==41== LEAK SUMMARY:
==41==    definitely lost: 2,408 bytes in 51 blocks
==41== 
";

    /// Checks while running and the one at exit, last (`exit_known`: whether it says so).
    fn evidence(reports: &[&[u8]], exit_known: bool) -> Evidence {
        let mut ev = Evidence::empty(Origin::Bundle("bundle".into()));
        let last = reports.len() - 1;
        for (i, bytes) in reports.iter().enumerate() {
            let kind = crate::detect::detect_bytes(bytes).expect("a valgrind report");
            let report = crate::native::parse_bytes(Path::new("vg.txt"), kind, bytes)
                .unwrap()
                .pop()
                .unwrap();
            ev.native.push(NativeSnapshot {
                t: Some(i as f64),
                snapshot: Some(i as u32 + 1),
                at_exit: exit_known && i == last,
                report,
            });
        }
        ev
    }

    /// Another exit report: the same runtime allocator's site, its largest block a buffer
    /// ffi_c.so asked `ruby_xmalloc` for.
    const AT_EXIT_XMALLOC: &[u8] = b"\
==41== 8 bytes in 1 blocks are definitely lost in loss record 131 of 8,811
==41==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==41==    by 0x4934483: ??? (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==41==    by 0x48E0D99: ruby_init (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==41== 
==41== 4,096 bytes in 1 blocks are definitely lost in loss record 7,003 of 8,811
==41==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==41==    by 0x4934483: ??? (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==41==    by 0x4934F00: ruby_xmalloc (in /usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1.2)
==41==    by 0x9E1F0A3: ??? (in /usr/lib/x86_64-linux-gnu/rubygems-integration/3.1.0/extensions/x86_64-linux/3.1.0/ffi-1.15.5/ffi_c.so)
==41== 
==41== LEAK SUMMARY:
==41==    definitely lost: 4,104 bytes in 2 blocks
==41== 
";

    fn site_with<'a>(
        a: &'a crate::correlate::Analysis,
        function: &str,
    ) -> &'a crate::correlate::NativeSiteRow {
        a.native_sites
            .iter()
            .find(|r| r.stack.iter().any(|f| f.contains(function)))
            .unwrap_or_else(|| panic!("no site through {function}: {:#?}", a.native_sites))
    }

    #[test]
    fn runtime_blocks_lost_only_at_exit_are_noise_whoever_asked_for_them() {
        // The first has a site of its own; the second shares the site of the block lost
        // before exit (one allocator function of the runtime), which then grew at exit.
        for (exit, through, blocks, bytes, total) in [
            (AT_EXIT, "rb_data_object_zalloc", 50, 2400, (51, 2408)),
            (AT_EXIT_XMALLOC, "ruby_xmalloc", 2, 4104, (2, 4104)),
        ] {
            let a = correlate(
                &evidence(&[MID_RUN, MID_RUN, exit], true),
                &Options::default(),
            );
            let leaks: Vec<_> = a.leak_findings().map(|f| &f.title).collect();
            assert!(leaks.is_empty(), "{leaks:?}");
            assert_eq!(a.findings.len(), 1);
            let noise = &a.findings[0];
            assert_eq!(noise.kind, FindingKind::RuntimeNoise);
            assert_eq!((noise.count, noise.bytes), total);
            let text: Vec<&str> = noise.evidence.iter().map(|e| e.text.as_str()).collect();
            let expected = format!(
                "1 site in the Ruby runtime that grew only in the report taken at exit, not in the checks before: {blocks} blocks, {} bytes",
                crate::format::count(bytes as u64)
            );
            assert!(text.iter().any(|t| t.starts_with(&expected)), "{text:#?}");
            assert_eq!(site_with(&a, through).status, SiteStatus::Runtime);
        }
    }

    /// The same blocks lost while the program runs, in a last report not known to be taken at
    /// exit, or in the one report there is, are judged as any other site: the rule leans on
    /// checks before exit that did not have them.
    #[test]
    fn runtime_blocks_lost_before_exit_are_judged_as_a_leak() {
        for (reports, exit_known) in [
            (&[MID_RUN, AT_EXIT, AT_EXIT][..], true),
            (&[MID_RUN, MID_RUN, AT_EXIT][..], false),
            (&[AT_EXIT][..], true),
        ] {
            let a = correlate(&evidence(reports, exit_known), &Options::default());
            let kinds: Vec<FindingKind> = a.leak_findings().map(|f| f.kind).collect();
            assert_eq!(kinds, [FindingKind::NativeLeak], "{:#?}", a.findings);
            assert_ne!(
                site_with(&a, "rb_data_object_zalloc").status,
                SiteStatus::Runtime
            );
        }
    }
}
