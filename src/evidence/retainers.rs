//! Why the instances of the growing classes are alive: retainer paths from GC roots, computed
//! once on the newest CRuby dump and kept in the evidence as plain data.
//!
//! Stage: evidence (resolved after loading). Which classes is the correlator's choice
//! (`correlate::classes::retainer_classes`); computing their paths is a reader's job.

use super::{ClassRetainers, Evidence, RetainerGroup, SourceLine};
use crate::error::Result;
use std::path::Path;

/// Retainer paths of `classes` (the correlator chooses them: the heads of the growing
/// groups), on the newest heap snapshot whose format allows it.
pub fn add(ev: &mut Evidence, classes: &[String]) {
    if classes.is_empty() {
        return;
    }
    let Some((index, newest)) = ev
        .heap
        .iter()
        .enumerate()
        .rev()
        .find(|(_, h)| h.summary.format == crate::heap::HeapFormat::Cruby)
    else {
        return;
    };
    match retainer_paths(&newest.summary.path, classes) {
        Ok(found) => {
            for r in found {
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

/// Retainer paths of `classes` in a CRuby dump, grouped by container (one pass per class).
fn retainer_paths(dump: &Path, classes: &[String]) -> Result<Vec<ClassRetainers>> {
    let mut out = Vec::new();
    for class in classes {
        let found = crate::heap::cruby::retainers::for_class(dump, class, 5)?;
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
                    container_length: holder.and_then(|s| s.length),
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
                    root: g.root,
                }
            })
            .collect();
        out.push(ClassRetainers {
            class: found.class,
            snapshot: 0,
            instances: found.instances,
            reachable: found.reachable,
            groups,
        });
    }
    Ok(out)
}
