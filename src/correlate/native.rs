//! The native-leak rule: native sites that grow (or, in one report, leak) with no Ruby owner,
//! after the missing-release rule took the ones an FFI wrapper owns and the extension rule the
//! ones inside C extensions; and each site's status for the native sites table.
//!
//! Stage: correlator (one rule). Reads [`SiteSeries`] built from the evidence's native reports.

use super::analysis::{NativeSiteRow, SiteStatus};
use super::extension::{self, Ownership};
use super::finding::{Confidence, EvidenceItem, Finding, FindingKind, Source, Suggestion};
use super::release::{self, Attribution};
use super::sites::SiteSeries;
use crate::evidence::Evidence;
use crate::format::{count, quantity};

/// Native-leak findings shown one by one; further unowned sites are counted in one line.
pub const MAX_NATIVE_FINDINGS: usize = 5;

/// What each native site is, and the findings made of them.
pub fn native_findings(
    ev: &Evidence,
    sites: &[SiteSeries],
    notes: &mut Vec<String>,
) -> (Vec<Finding>, Vec<NativeSiteRow>) {
    let over_time = ev.native.len() >= 2;
    let mut statuses: Vec<(SiteStatus, Option<String>)> = Vec::with_capacity(sites.len());
    // Missing-release blames grouped by class: (blame, site indexes).
    let mut blamed: Vec<(release::Blame, Vec<usize>)> = Vec::new();
    let mut unowned: Vec<(usize, Vec<EvidenceItem>, Confidence)> = Vec::new();
    // Leaks inside C extensions, grouped by extension and method: (leak, site indexes).
    let mut in_extensions: Vec<(extension::OwnLeak, Vec<usize>)> = Vec::new();
    let mut finalized: Vec<(String, String, usize)> = Vec::new();
    // A leaked cycle has no direct block: the tools report each of its blocks as indirect. An
    // extension whose indirect sites grow while none of its direct ones does leaks such a
    // cycle (its objects pointing at each other), not blocks hanging from another leak.
    let with_direct: Vec<&str> = sites
        .iter()
        .filter(|s| !s.is_runtime() && !s.is_runtime_at_exit())
        .filter(|s| s.kinds.iter().any(|k| k.is_primary()))
        .filter(|s| !over_time || s.is_growing())
        .filter_map(|s| extension::entered_path(ev, s))
        .collect();
    let cycle_in_extension = |site: &SiteSeries| {
        over_time && extension::entered_path(ev, site).is_some_and(|p| !with_direct.contains(&p))
    };
    for (i, site) in sites.iter().enumerate() {
        let status = if site.is_runtime() || site.is_runtime_at_exit() {
            SiteStatus::Runtime
        } else if over_time && !site.is_growing() {
            SiteStatus::Static
        } else if site.kinds.iter().all(|k| !k.is_primary()) && !cycle_in_extension(site) {
            SiteStatus::Secondary
        } else {
            let attribution = match release::attribute(ev, site) {
                Attribution::Unowned => match extension::attribute(ev, site) {
                    Some(Ownership::Release(b)) => Attribution::Wrapper(b),
                    Some(Ownership::OnItsOwn(leak)) => {
                        let owner = leak.class.clone().unwrap_or_else(|| leak.extension.clone());
                        match in_extensions
                            .iter_mut()
                            .find(|(x, _)| x.extension == leak.extension && x.method == leak.method)
                        {
                            Some((_, idx)) => idx.push(i),
                            None => in_extensions.push((leak, vec![i])),
                        }
                        statuses.push((SiteStatus::ExtensionLeak, Some(owner)));
                        continue;
                    }
                    None => Attribution::Unowned,
                },
                other => other,
            };
            match attribution {
                Attribution::Wrapper(b) => {
                    let class = b.class.clone();
                    match blamed.iter_mut().find(|(x, _)| x.class == b.class) {
                        Some((_, idx)) => idx.push(i),
                        None => blamed.push((b, vec![i])),
                    }
                    statuses.push((SiteStatus::MissingRelease, Some(class)));
                    continue;
                }
                Attribution::Finalized { class, detail } => {
                    finalized.push((class.clone(), detail, i));
                    statuses.push((SiteStatus::Finalized, Some(class)));
                    continue;
                }
                Attribution::Module {
                    evidence,
                    confidence,
                } => {
                    unowned.push((i, evidence, confidence));
                    SiteStatus::Leak
                }
                Attribution::Unowned => {
                    unowned.push((i, Vec::new(), Confidence::High));
                    SiteStatus::Leak
                }
            }
        };
        statuses.push((status, None));
    }

    let mut findings = Vec::new();
    for (blame, idx) in blamed {
        findings.push(release::missing_release(
            &blame,
            &idx.iter().map(|&i| &sites[i]).collect::<Vec<_>>(),
            over_time,
        ));
    }
    for (leak, idx) in in_extensions {
        findings.push(extension::extension_leak(
            &leak,
            &idx.iter().map(|&i| &sites[i]).collect::<Vec<_>>(),
            over_time,
        ));
    }
    unowned.sort_by(|a, b| {
        sites[b.0]
            .measure(over_time)
            .0
            .cmp(&sites[a.0].measure(over_time).0)
    });
    for (n, (i, evidence, confidence)) in unowned.into_iter().enumerate() {
        if n >= MAX_NATIVE_FINDINGS {
            statuses[i].0 = SiteStatus::Minor;
            continue;
        }
        findings.push(native_leak(&sites[i], evidence, confidence, over_time));
    }
    for (class, detail, i) in &finalized {
        notes.push(format!(
            "{} ({}) belongs to {class}, whose native memory is {detail}: not a missing release",
            sites[*i].key.function,
            sites[*i].library().unwrap_or("?")
        ));
    }
    // A single report that lists fewer leaks than it counts (an excerpt, a cut report).
    let unlisted = match ev.native.as_slice() {
        [one] => one.report.unlisted().zip(one.report.summary),
        _ => None,
    };
    if let Some(((blocks, bytes), summary)) = unlisted {
        for f in findings.iter_mut().filter(|f| f.native.is_some()) {
            f.title.push_str(&format!(
                " (the report counts {} leaks, {} bytes in all)",
                count(summary.leaks),
                count(summary.bytes)
            ));
            f.evidence.insert(
                1,
                EvidenceItem::new(
                    Source::Native,
                    format!(
                        "the report counts {} leaks for {} bytes but lists only {}: {} leaks ({} bytes) are not in it (an excerpt or a cut report), so their sites are unknown",
                        count(summary.leaks),
                        count(summary.bytes),
                        count(summary.leaks.saturating_sub(blocks)),
                        count(blocks),
                        count(bytes)
                    ),
                ),
            );
        }
    }
    if let Some(noise) = super::noise::finding(ev, sites, &statuses, over_time) {
        findings.push(noise);
    }

    let mut rows: Vec<NativeSiteRow> = sites
        .iter()
        .zip(&statuses)
        .map(|(s, (status, owner))| NativeSiteRow {
            function: s.key.function.clone(),
            library: s.library().map(str::to_owned),
            status: *status,
            owner: owner.clone(),
            blocks: s.blocks.clone(),
            bytes: s.bytes.clone(),
            delta_blocks: s.delta_blocks(),
            delta_bytes: s.delta_bytes(),
            stack: {
                let mut v: Vec<String> = s.outward().take(8).map(|f| f.label()).collect();
                v.reverse();
                v
            },
        })
        .collect();
    rows.sort_by_key(|r| {
        let noise = matches!(
            r.status,
            SiteStatus::Runtime | SiteStatus::Static | SiteStatus::Minor
        );
        (
            noise,
            std::cmp::Reverse(r.delta_bytes),
            std::cmp::Reverse(r.bytes.last().copied().unwrap_or(0)),
        )
    });
    (findings, rows)
}

fn native_leak(
    site: &SiteSeries,
    mut module_evidence: Vec<EvidenceItem>,
    module_confidence: Confidence,
    over_time: bool,
) -> Finding {
    let (bytes, blocks) = site.measure(over_time);
    let by_growth = if site.grows_at_every_step() {
        Confidence::High
    } else if over_time {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    let confidence = by_growth.min(module_confidence);
    let lib = site
        .library()
        .map(|l| format!(" in {l}"))
        .unwrap_or_default();
    let title = if over_time {
        format!(
            "{}{lib} grows by {} / {} bytes with no Ruby object to blame",
            site.key.function,
            quantity(blocks, "block"),
            count(bytes)
        )
    } else {
        format!(
            "{}{lib} leaks {} / {} bytes with no Ruby object to blame",
            site.key.function,
            quantity(blocks, "block"),
            count(bytes)
        )
    };
    let mut evidence = vec![
        EvidenceItem::new(Source::Native, release::site_text(site)),
        EvidenceItem::new(
            Source::Native,
            format!("stack: {}", release::short_stack(site, 10)),
        ),
    ];
    evidence.extend(release::unnamed_site_hint(site));
    evidence.append(&mut module_evidence);
    let headline = format!(
        "{}{lib} {} with no Ruby object to blame",
        site.key.function,
        if over_time { "grows" } else { "leaks" }
    );
    let mut f = Finding::new(FindingKind::NativeLeak, confidence, title)
        .headline(headline)
        .identify(&[
            site.key.function.as_str(),
            site.key.library.as_deref().unwrap_or(""),
        ]);
    f.native = Some(site.owner());
    f.bytes = bytes;
    f.count = blocks;
    f.evidence = evidence;
    f.suggestion = Some(Suggestion {
        text: format!(
            "Look at what frees the memory {} allocates{lib}: no Ruby wrapper owns it, so the leak is in native code or in a binding the agent did not see.",
            site.key.function
        ),
        method: None,
        locations: Vec::new(),
        shapes: Vec::new(),
    });
    f
}
