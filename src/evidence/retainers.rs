//! Why the instances of the growing classes are alive: retainer paths from GC roots, computed
//! once on the newest CRuby dump and kept in the evidence as plain data.
//!
//! Stage: evidence (resolved after loading). Which classes is the correlator's choice
//! (`correlate::classes::retainer_classes`); computing their paths is a reader's job.

use super::{ClassRetainers, Evidence, RetainerGroup, SourceLine};
use crate::error::Result;
use crate::heap::HeapFormat;
use crate::heap::cruby::command_options;
use crate::heap::cruby::diff::Baseline;
use std::path::Path;

/// Retainer paths of `classes` (the correlator chooses them: the heads of the growing
/// groups), on the newest heap snapshot whose format allows it, over the instances that
/// appeared since the first judged snapshot (when that one is a CRuby dump too).
pub fn add(ev: &mut Evidence, classes: &[String]) {
    if classes.is_empty() {
        return;
    }
    // Only a dump still in the bundle can be read again (`--keep-dumps` removes the others).
    let is_cruby = |h: &crate::evidence::HeapSnapshot| {
        h.summary.format == HeapFormat::Cruby && h.dump.is_some()
    };
    let Some((index, newest)) = ev.heap.iter().enumerate().rev().find(|(_, h)| is_cruby(h)) else {
        return;
    };
    let Some(newest_dump) = newest.dump.clone() else {
        return;
    };
    let first = ev.settled.min(ev.heap.len());
    let baseline_dump = ev
        .heap
        .get(first)
        .filter(|h| first < index && is_cruby(h))
        .and_then(|h| h.dump.clone());
    let baseline = match baseline_dump {
        Some(p) => match Baseline::read(&p, &command_options(&p)) {
            Ok(b) => Some(b),
            Err(e) => {
                ev.warnings.push(format!(
                    "retainer paths cover every instance, not only the new ones: {e}"
                ));
                None
            }
        },
        None => None,
    };
    let constants = super::sidecar_of(&ev.sidecars, newest).map(|s| &s.constants);
    match retainer_paths(&newest_dump, classes, baseline.as_ref()) {
        Ok(found) => {
            for mut r in found {
                if let Some(constants) = constants {
                    name_constants(&mut r.groups, constants);
                }
                ev.retainers.push(ClassRetainers {
                    snapshot: index + 1,
                    ..r
                });
            }
        }
        Err(e) => ev
            .warnings
            .push(format!("retainer paths not computed: {e}")),
    }
}

/// Gives a container the dump has no allocation site for the line of the constant that holds
/// it, when the agent listed one at its address.
fn name_constants(groups: &mut [RetainerGroup], constants: &[crate::bundle::ConstantContainer]) {
    for g in groups.iter_mut().filter(|g| g.container_site.is_none()) {
        // Two constants holding the same container: the same one every time.
        let Some(c) = g.container_address.and_then(|a| {
            constants
                .iter()
                .filter(|c| c.address == a)
                .min_by(|x, y| (&x.file, x.line, &x.name).cmp(&(&y.file, y.line, &y.name)))
        }) else {
            continue;
        };
        g.container_site = Some(SourceLine {
            file: c.file.clone(),
            line: c.line,
        });
        g.container_constant = Some(c.name.clone());
    }
}

/// Retainer paths of `classes` in a CRuby dump, grouped by container (one read of the dump).
fn retainer_paths(
    dump: &Path,
    classes: &[String],
    baseline: Option<&Baseline>,
) -> Result<Vec<ClassRetainers>> {
    let mut out = Vec::new();
    let found_all = crate::heap::cruby::retainers::for_classes_with(
        dump,
        classes,
        5,
        &command_options(dump),
        baseline,
    )?;
    for found in found_all {
        let groups = found
            .groups
            .into_iter()
            .map(|g| {
                let holder = g.steps.first();
                RetainerGroup {
                    count: g.count,
                    container_class: holder
                        .map(|s| s.class.clone())
                        .unwrap_or_else(|| format!("ROOT {}", g.root)),
                    container_address: holder.map(|s| s.address),
                    container_site: holder.and_then(|s| s.site.as_ref()).map(|s| SourceLine {
                        file: s.file.clone(),
                        line: s.line,
                    }),
                    container_constant: None,
                    container_length: holder.and_then(|s| s.length),
                    container_growth: g.holder_growth,
                    container_objects: holder.map(|s| s.distinct),
                    path: g
                        .steps
                        .iter()
                        .skip(1)
                        .rev()
                        .map(|s| match &s.name {
                            Some(name) => format!("{} {name}", s.class),
                            None => format!("{} {:#x}", s.class, s.address),
                        })
                        .collect(),
                    holders: g.steps.iter().skip(1).map(|s| s.class.clone()).collect(),
                    root: g.root,
                }
            })
            .collect();
        out.push(ClassRetainers {
            class: found.class,
            snapshot: 0,
            instances: found.instances,
            new_instances: found.new_instances,
            reachable: found.reachable,
            groups,
        });
    }
    Ok(out)
}
