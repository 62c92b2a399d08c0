//! Rule 1, Ruby retention: a class whose instances pile up across heap snapshots, with its
//! growth per snapshot, where its instances are allocated, and what keeps them — the retainer
//! path grouped by container, naming the container's own allocation site and, read from the
//! source, where the container is filled.
//!
//! Stage: correlator rule. Input: class series and growth groups ([`super::classes`]), the
//! retainer paths and source files the loader put into the evidence.

use super::classes::{ClassRole, ClassSeries, GrowthGroup, class_role};
use super::finding::{
    Confidence, EvidenceItem, Finding, FindingKind, Location, LocationRole, SITES_SAMPLED, Source,
    Suggestion,
};
use crate::evidence::{ClassRetainers, Evidence, RetainerGroup, SourceLine};
use crate::format::{count, redact, signed};
use std::collections::BTreeMap;

/// Retention findings, one per growth group whose growth is retained; groups whose new
/// instances are mostly unreachable (garbage the dump caught before a GC) become notes.
pub fn findings(
    ev: &Evidence,
    groups: &[GrowthGroup],
    include_strings: bool,
    notes: &mut Vec<String>,
) -> Vec<Finding> {
    let mut runtime = Vec::new();
    let mut kept: Vec<&GrowthGroup> = Vec::new();
    for g in groups {
        if class_role(&g.head.class) == ClassRole::Runtime {
            runtime.push(format!("{} {}", g.head.class, signed(g.head.delta())));
            continue;
        }
        if let Some(note) = unretained_growth(ev, &g.head)
            .or_else(|| scattered_growth(ev, &g.head))
            .or_else(|| agent_growth(ev, &g.head))
            .or_else(|| agent_held_growth(ev, &g.head))
            .or_else(|| slow_growth_without_container(ev, &g.head))
        {
            notes.push(note);
            continue;
        }
        kept.push(g);
    }
    // A group whose new instances are mostly held by another group's objects is a symptom of
    // that group's leak: its evidence, not a finding of its own. Groups come most user-like
    // first, so a symptom folds into a cause already kept.
    let mut causes: Vec<(&GrowthGroup, Finding)> = Vec::new();
    for g in kept {
        let folded = causes.iter_mut().find_map(|(cause, f)| {
            let share = held_share(ev, &g.head.class, &cause.head.class)?;
            Some((f, share))
        });
        match folded {
            Some((f, share)) => fold_symptom(f, g, &share),
            None => causes.push((g, finding(ev, g, include_strings))),
        }
    }
    if !runtime.is_empty() {
        notes.push(format!(
            "classes of the Ruby runtime or of leakhunt's agent grew ({}): symptoms, not reported",
            runtime.join(", ")
        ));
    }
    causes.into_iter().map(|(_, f)| f).collect()
}

/// How many of a class's new instances another class's objects hold, when it is most of them.
struct HeldShare {
    held: u64,
    of: u64,
    /// The containers between the instances and the holder, nearest first (`Hash`).
    via: Vec<String>,
}

/// The share of `class`'s new (or, without a baseline, reachable) instances whose retainer path
/// goes through an object of `holder`, from the retainer groups kept (the largest ones, so a
/// lower bound); `None` unless it is more than half.
fn held_share(ev: &Evidence, class: &str, holder: &str) -> Option<HeldShare> {
    let r = retainers_of(ev, class)?;
    let of = r.new_instances.unwrap_or(r.reachable);
    let mut held = 0u64;
    let mut via: Option<Vec<String>> = None;
    for g in &r.groups {
        let chain: Vec<&str> = std::iter::once(g.container_class.as_str())
            .chain(g.holders.iter().map(String::as_str))
            .collect();
        let Some(at) = chain.iter().position(|c| *c == holder) else {
            continue;
        };
        held = held.saturating_add(g.count);
        via.get_or_insert_with(|| chain[..at].iter().map(|c| (*c).to_owned()).collect());
    }
    (of > 0 && held.saturating_mul(2) > of).then(|| HeldShare {
        held,
        of,
        via: via.unwrap_or_default(),
    })
}

/// `String +5,804 (...): 94 % of its 5,804 new instances (5,452) are held by AuditEntry objects
/// via Hash` — as evidence of the cause's finding, whose size grows by what it keeps.
fn fold_symptom(cause: &mut Finding, symptom: &GrowthGroup, share: &HeldShare) {
    let holder = cause.class.clone().unwrap_or_default();
    let via = if share.via.is_empty() {
        String::new()
    } else {
        format!(" via {}", share.via.join(" ← "))
    };
    let percent = share.held.saturating_mul(100) / share.of.max(1);
    cause.evidence.push(EvidenceItem::new(
        Source::Retainers,
        format!(
            "{} grows with it: {} instances, {percent} % of its {} new instances ({}) held by {holder} objects{via}: kept by this leak, not a leak of its own",
            symptom.head.class,
            signed(symptom.head.delta()),
            count(share.of),
            count(share.held),
        ),
    ));
    cause.bytes = symptom.members.iter().map(|m| m.bytes_delta()).fold(
        cause.bytes.saturating_add(symptom.head.bytes_delta()),
        i64::saturating_add,
    );
}

/// A small gain on a large steady population (under a twentieth of it) is a leak only when a
/// container of the program holds the new instances; without one it is the steady population
/// turning over, and a note.
fn slow_growth_without_container(ev: &Evidence, head: &ClassSeries) -> Option<String> {
    if !head.is_slow() {
        return None;
    }
    let held = retainers_of(ev, &head.class).and_then(program_group);
    held.is_none().then(|| {
        format!(
            "{} grew by {} at every heap snapshot, a small part of its {} instances, but no container of the program holds the new ones: not reported",
            head.class,
            count(head.delta()),
            count(head.counts.first().copied().unwrap_or(0))
        )
    })
}

/// When allocation sites say most of the growth was allocated by leakhunt's own agent (its
/// inventory of FFI wrappers, made while the program runs).
fn agent_growth(ev: &Evidence, head: &ClassSeries) -> Option<String> {
    let by_agent: i64 = site_growth(ev, &head.class)
        .iter()
        .filter(|((file, _), _)| super::classes::is_agent_file(file))
        .map(|(_, (delta, _))| *delta)
        .sum();
    (by_agent * 2 > head.delta()).then(|| {
        format!(
            "{} grew by {} between heap snapshots, {} of them allocated by leakhunt's agent: not the program's",
            head.class,
            count(head.delta()),
            count(by_agent)
        )
    })
}

/// When retainer paths say the new instances are not reachable: the growth is churn (objects
/// made between the GC and the dump), not retention. `None` when it is retained or unknown.
/// When most of the new instances are held by containers leakhunt's agent allocated (its
/// per-site bookkeeping of wrapper lifecycles, say, on a program that creates them at ever new
/// sites): the agent's own growth, whoever allocated the instances.
fn agent_held_growth(ev: &Evidence, head: &ClassSeries) -> Option<String> {
    let r = retainers_of(ev, &head.class)?;
    let total: u64 = r.groups.iter().map(|g| g.count).sum();
    let by_agent = r.groups.iter().filter(|g| agent_container(g).is_some());
    let whose = by_agent.clone().find_map(agent_container)?;
    let held: u64 = by_agent.map(|g| g.count).sum();
    (held.saturating_mul(2) > total).then(|| {
        format!(
            "{} grew by {} between heap snapshots, {} of its new instances held by leakhunt's agent ({whose}): the agent's bookkeeping, not the program's",
            head.class,
            count(head.delta()),
            count(held),
        )
    })
}

/// "an Array", "a Hash": a class name with its indefinite article.
fn a(class: &str) -> String {
    let vowel = class.starts_with(['A', 'E', 'I', 'O', 'U']);
    format!("{} {class}", if vowel { "an" } else { "a" })
}

/// How a group's container is the agent's own, `None` when it is not: allocated by the agent
/// (with allocation sites), or held directly by one of the agent's objects (without them; only
/// directly: a path may pass through the agent's tables of the program's classes on its way to
/// the program's own containers).
fn agent_container(g: &RetainerGroup) -> Option<String> {
    if let Some(site) = g
        .container_site
        .as_ref()
        .filter(|s| super::classes::is_agent_file(&s.file))
    {
        return Some(format!("the {} allocated at {site}", g.container_class));
    }
    let holder = g.holders.first().filter(|h| is_agent_class(h))?;
    Some(format!("{} held by its {holder}", a(&g.container_class)))
}

/// One of the agent's own classes (`LeakhuntAgent::Sites`), or its module.
fn is_agent_class(class: &str) -> bool {
    class == "LeakhuntAgent" || class.starts_with("LeakhuntAgent::")
}

fn unretained_growth(ev: &Evidence, head: &ClassSeries) -> Option<String> {
    let r = retainers_of(ev, &head.class)?;
    // Over the new instances, every reachable one is retained growth; over all of them, the
    // first snapshot's population is taken to be the steady part.
    let (retained, of) = match r.new_instances {
        Some(new) => (
            crate::num::saturating_i64(r.reachable),
            format!("{} new", count(new)),
        ),
        None => {
            let first = head.counts.first().copied().unwrap_or(0);
            (
                crate::num::saturating_i64(r.reachable).saturating_sub(first),
                count(r.instances),
            )
        }
    };
    let needed = (head.delta() / 2).max(super::classes::MIN_GROWTH);
    (retained < needed).then(|| {
        format!(
            "{} grew by {} between heap snapshots, but only {} of its {of} instances are reachable from a root: garbage not yet collected, not retention",
            head.class,
            count(head.delta()),
            count(r.reachable),
        )
    })
}

/// When the new instances are reachable but no one way of holding them keeps
/// [`MIN_GROWTH`](super::classes::MIN_GROWTH) of them: a pile-up has one holder (a container,
/// or many made at one site, along one path), so growth spread thinly over unrelated holders —
/// specs RubyGems fills in lazily, the request a server thread is serving — is turnover and
/// warm-up, not retention. Judged only over the new instances (a baseline), where a group's
/// count is growth and not the steady population.
fn scattered_growth(ev: &Evidence, head: &ClassSeries) -> Option<String> {
    let r = retainers_of(ev, &head.class)?;
    let new = r.new_instances?;
    let largest = r.groups.iter().max_by_key(|g| g.count)?;
    let needed = crate::num::non_negative(super::classes::MIN_GROWTH);
    (largest.count < needed).then(|| {
        format!(
            "{} grew by {} between heap snapshots, but no one holder keeps {needed} of its {} new instances (the most, {}, through {}): scattered, not a pile-up; not reported",
            head.class,
            count(head.delta()),
            count(new),
            count(largest.count),
            largest.container_class,
        )
    })
}

/// The class that holds most instances of `class`, from the retainer paths.
pub fn main_container(ev: &Evidence, class: &str) -> Option<String> {
    retainers_of(ev, class)
        .and_then(program_group)
        .map(|g| g.container_class.clone())
}

/// The class whose growth `class`'s growth is part of, for grouping: its main container's
/// class, when the instances are spread over many of its objects (each `LineItem` in its
/// `Order`). Not when one object holds them all: a pile-up in one `Array` is not `Array`'s
/// growth, and folded into it, it would follow whatever the other new Arrays are (scattered
/// over unrelated holders, they are a note).
pub fn growth_holder(ev: &Evidence, class: &str) -> Option<String> {
    retainers_of(ev, class)
        .and_then(program_group)
        .filter(|g| g.container_objects != Some(1))
        .map(|g| g.container_class.clone())
}

/// The largest retainer group whose container the program can change (not one of the Ruby
/// runtime's own objects), preferring a container that piles the new instances up over one
/// that only turns its contents over.
fn program_group(r: &ClassRetainers) -> Option<&RetainerGroup> {
    let mut program = r.groups.iter().filter(|g| runtime_container(g).is_none());
    let first = program.clone().next();
    program.find(|g| !turns_over(g)).or(first)
}

/// A container that was already there and gained fewer elements than half the new instances
/// it holds: they replaced others (a steady cache, a fixed-size table).
fn turns_over(g: &RetainerGroup) -> bool {
    g.container_growth
        .is_some_and(|grew| grew.saturating_mul(2) < crate::num::saturating_i64(g.count))
}

/// Why a group's container belongs to the Ruby runtime rather than to the program, if it does:
/// hidden objects and VM internals (`Array (hidden)`, iseqs, IMEMOs), objects allocated by
/// Ruby's own library code (`<internal:…>`, the standard library, RubyGems' `require`) or by
/// leakhunt's agent, and objects the VM marks itself with no allocation site
/// (`$LOADED_FEATURES`, `$LOAD_PATH`).
/// Telling the user to change one of these would send them into the runtime.
pub fn runtime_container(g: &RetainerGroup) -> Option<&'static str> {
    if g.container_class.starts_with("ROOT ") {
        return (g.container_class == "ROOT vm").then_some("the VM itself");
    }
    if class_role(&g.container_class) == ClassRole::Runtime {
        return Some("an object of the Ruby runtime");
    }
    match &g.container_site {
        Some(site) if is_runtime_file(&site.file) => Some("allocated by Ruby's own code"),
        Some(site) if super::classes::is_agent_file(&site.file) => {
            Some("allocated by leakhunt's agent")
        }
        Some(_) => None,
        None if g.root == "vm" && g.path.is_empty() => Some("an object the VM keeps itself"),
        None => None,
    }
}

/// Ruby's own code: `<internal:…>` files, the standard library (`…/lib/ruby/3.1.0/…`) and
/// RubyGems.
fn is_runtime_file(file: &str) -> bool {
    if file.starts_with("<internal:")
        || file.contains("/rubygems/")
        || file.ends_with("/rubygems.rb")
    {
        return true;
    }
    file.match_indices("/lib/ruby/").any(|(at, m)| {
        file[at + m.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

fn retainers_of<'a>(ev: &'a Evidence, class: &str) -> Option<&'a ClassRetainers> {
    ev.retainers.iter().rev().find(|r| r.class == class)
}

fn finding(ev: &Evidence, group: &GrowthGroup, include_strings: bool) -> Finding {
    let head = &group.head;
    let snapshots = head.counts.len();
    let mut evidence = vec![growth_item(head)];
    evidence.extend(allocation_items(ev, &head.class));
    for m in &group.members {
        let how = match main_container(ev, &m.class) {
            Some(holder)
                if holder == head.class || group.members.iter().any(|o| o.class == holder) =>
            {
                format!("held by {holder}")
            }
            _ if m.in_lockstep_with(head) => "same growth per snapshot".to_owned(),
            _ => "grows with it".to_owned(),
        };
        evidence.push(EvidenceItem::new(
            Source::Heap,
            format!(
                "{} grows with it: {} instances ({how})",
                m.class,
                signed(m.delta())
            ),
        ));
    }

    let retainers = retainers_of(ev, &head.class);
    let top = retainers.and_then(program_group);
    // Paths are known, and every one goes through the runtime's own objects.
    let runtime_only = retainers
        .and_then(|r| r.groups.first())
        .filter(|_| top.is_none())
        .and_then(|g| Some((g, runtime_container(g)?)));
    let mut locations = Vec::new();
    if let Some(r) = retainers {
        for g in r.groups.iter().take(3) {
            evidence.push(EvidenceItem::new(
                Source::Retainers,
                retainer_text(r, g, include_strings),
            ));
        }
    }
    let mut filled_at = Vec::new();
    let mut variable = None;
    // The constant holding the container, when that is how its line is known.
    let constant = top.and_then(|g| g.container_constant.as_ref());
    if let Some(site) = top.and_then(|g| g.container_site.as_ref()) {
        let role = match constant {
            Some(_) => LocationRole::ContainerAssigned,
            None => LocationRole::ContainerAllocated,
        };
        let mut allocated = Location::new(site, role);
        allocated.count = top.map(|g| g.count);
        if let Some(src) = ev.sources.get(&site.file) {
            allocated.code = super::source_hint::line_text(src, site.line);
            if let Some(code) = &allocated.code {
                evidence.push(
                    EvidenceItem::new(Source::RubySource, format!("{site}: `{code}`"))
                        .at(site.clone()),
                );
            }
            variable = super::source_hint::assigned_variable(src, site.line);
            if let Some(var) = &variable {
                for (line, code) in super::source_hint::appending_lines(src, var) {
                    let at = SourceLine {
                        file: site.file.clone(),
                        line,
                    };
                    evidence.push(
                        EvidenceItem::new(
                            Source::RubySource,
                            format!("{at}: `{code}` adds to `{var}` (read from the source)"),
                        )
                        .at(at.clone())
                        .heuristic(),
                    );
                    let mut filled = Location::new(&at, LocationRole::ContainerFilled);
                    filled.code = Some(code);
                    filled_at.push(filled);
                }
            }
        }
        locations.push(allocated);
        locations.extend(filled_at.iter().cloned());
    }
    // The container has no allocation site (made while allocations were not traced): the line
    // that keeps a new instance names the variable, and its assignment the container.
    let mut read_from_source = false;
    if let Some(g) = top.filter(|g| g.container_site.is_none()) {
        let found = site_growth(ev, &head.class)
            .into_iter()
            .filter(|(_, (delta, _))| *delta > 0)
            .max_by_key(|(_, (delta, _))| *delta)
            .and_then(|((file, line), _)| {
                let src = ev.sources.get(&file)?;
                let (assigned, var, fill, code) =
                    super::source_hint::container_of_appended(src, line)?;
                Some((file, src, assigned, var, fill, code))
            });
        if let Some((file, src, assigned, var, fill, code)) = found {
            let site = SourceLine {
                file: file.clone(),
                line: assigned,
            };
            let at = SourceLine { file, line: fill };
            let mut allocated = Location::new(&site, LocationRole::ContainerAllocated);
            allocated.count = Some(g.count);
            allocated.code = super::source_hint::line_text(src, assigned);
            evidence.push(
                EvidenceItem::new(
                    Source::RubySource,
                    format!(
                        "{at}: `{code}` keeps the new {} in `{var}`, assigned at {site}: `{}` (read from the source; the {} has no allocation site)",
                        head.class,
                        allocated.code.as_deref().unwrap_or_default(),
                        g.container_class
                    ),
                )
                .at(site)
                .heuristic(),
            );
            let mut filled = Location::new(&at, LocationRole::ContainerFilled);
            filled.code = Some(code);
            filled_at.push(filled.clone());
            locations.push(allocated);
            locations.push(filled);
            variable = Some(var);
            read_from_source = true;
        }
    }

    let container = top.map(|g| g.container_class.as_str());
    // How the container's line is known: its allocation, or the constant holding it.
    let kept_by = |c: &str, site: &SourceLine| match constant {
        Some(name) => format!("kept by the {c} held by the constant {name} (assigned at {site})"),
        None => format!("kept by the {c} allocated at {site}"),
    };
    let confidence = match runtime_only {
        Some(_) => Confidence::Low,
        None => confidence(head, top),
    };
    let runtime_holder = runtime_only.map(|(g, why)| match &g.container_site {
        Some(site) => format!("{} allocated at {site}: {why}", g.container_class),
        None => format!("{}: {why}", g.container_class),
    });
    let title = match (container, top.and_then(|g| g.container_site.as_ref())) {
        _ if runtime_holder.is_some() => format!(
            "{} instances pile up ({} over {snapshots} heap snapshots), held only by the Ruby runtime's own objects ({})",
            head.class,
            signed(head.delta()),
            runtime_holder.as_deref().unwrap_or_default()
        ),
        (Some(c), Some(site)) => format!(
            "{} instances pile up ({} over {snapshots} heap snapshots), {}",
            head.class,
            signed(head.delta()),
            kept_by(c, site)
        ),
        (Some(c), None) => format!(
            "{} instances pile up ({} over {snapshots} heap snapshots), kept by {}",
            head.class,
            signed(head.delta()),
            a(c)
        ),
        _ => format!(
            "{} instances pile up ({} over {snapshots} heap snapshots)",
            head.class,
            signed(head.delta())
        ),
    };
    let text = match (container, locations.first()) {
        _ if runtime_holder.is_some() => format!(
            "Nothing in the program holds the new {} instances: only the Ruby runtime's own objects do ({}), and those are not for the program to change. Look for what the program makes the runtime keep while it runs: files required, methods or classes defined, strings or symbols interned at run time.",
            head.class,
            runtime_holder.as_deref().unwrap_or_default()
        ),
        (Some(c), Some(alloc)) => {
            let name = variable
                .as_ref()
                .map(|v| format!(" (`{v}`)"))
                .unwrap_or_default();
            let filled = if filled_at.is_empty() {
                String::new()
            } else {
                let sites: Vec<String> = filled_at.iter().map(Location::site).collect();
                format!(", filled at {}", sites.join(", "))
            };
            let made = match constant {
                Some(name) => format!("held by the constant {name}, assigned at"),
                None if read_from_source => "assigned (read from the source) at".to_owned(),
                None => "allocated at".to_owned(),
            };
            format!(
                "Stop keeping every {} in the {c} {made} {}{name}{filled}: keep a count or only the few you need, or remove each one when you are done with it.",
                head.class,
                alloc.site()
            )
        }
        (Some(c), None) => format!(
            "Find where the program adds {} to {} and stop keeping every one (a count, a bounded buffer, or removal when done).",
            head.class,
            a(c)
        ),
        _ => format!(
            "Find what keeps {} instances alive (`leakhunt retainers DUMP --class {}` on a CRuby dump made with allocation tracing) and drop the reference when done.",
            head.class, head.class
        ),
    };
    let headline = match (container, top.and_then(|g| g.container_site.as_ref())) {
        _ if runtime_holder.is_some() => format!(
            "{} instances pile up, held only by the Ruby runtime's own objects",
            head.class
        ),
        (Some(c), Some(site)) => format!("{} instances pile up, {}", head.class, kept_by(c, site)),
        (Some(c), None) => format!("{} instances pile up, kept by {}", head.class, a(c)),
        _ => format!("{} instances pile up", head.class),
    };
    let mut f = Finding::new(FindingKind::RubyRetention, confidence, title)
        .headline(headline)
        .identify(&[head.class.as_str()]);
    f.class = Some(head.class.clone());
    f.count = head.delta();
    f.bytes = group
        .members
        .iter()
        .map(|m| m.bytes_delta())
        .fold(head.bytes_delta(), i64::saturating_add);
    f.evidence = evidence;
    f.suggestion = Some(Suggestion {
        text,
        method: None,
        locations,
        shapes: if runtime_holder.is_some() {
            Vec::new()
        } else {
            vec![
                "count instead of collecting (`received += 1`)".to_owned(),
                "keep a bounded buffer (drop the oldest past N)".to_owned(),
                "remove or clear entries once they are used".to_owned(),
            ]
        },
    });
    f
}

fn confidence(head: &ClassSeries, top: Option<&RetainerGroup>) -> Confidence {
    let sustained = head.grows_at_every_step() || head.delta() >= 1000;
    let c = match (top.is_some(), sustained) {
        (true, true) => Confidence::High,
        (true, false) | (false, true) => Confidence::Medium,
        (false, false) => Confidence::Low,
    };
    match class_role(&head.class) {
        ClassRole::User | ClassRole::Binding => c,
        ClassRole::Core | ClassRole::Runtime => c.lowered(),
    }
}

fn growth_item(s: &ClassSeries) -> EvidenceItem {
    let counts: Vec<String> = s.counts.iter().map(|&c| count(c)).collect();
    let steps: Vec<String> = s.steps().iter().map(|&d| signed(d)).collect();
    EvidenceItem::new(
        Source::Heap,
        format!(
            "{} instances per heap snapshot: {} (per snapshot: {}; {} bytes)",
            s.class,
            counts.join(" → "),
            steps.join(", "),
            signed(s.bytes_delta())
        ),
    )
}

/// Per allocation site of `class`: (growth between the first and last heap snapshot that
/// have sites, count in the newest). With one such snapshot, the growth is its count.
fn site_growth(ev: &Evidence, class: &str) -> BTreeMap<(String, u32), (i64, i64)> {
    let with_sites: Vec<_> = ev
        .judged_heap()
        .iter()
        .filter(|h| !h.summary.alloc_sites.is_empty())
        .collect();
    let mut growth: BTreeMap<(String, u32), (i64, i64)> = BTreeMap::new();
    let Some(last) = with_sites.last() else {
        return growth;
    };
    for s in last.summary.alloc_sites.iter().filter(|s| s.class == class) {
        let e = growth.entry((s.file.clone(), s.line)).or_default();
        let n = crate::num::saturating_i64(s.count);
        e.0 = e.0.saturating_add(n);
        e.1 = e.1.saturating_add(n);
    }
    if with_sites.len() >= 2 {
        for s in with_sites[0]
            .summary
            .alloc_sites
            .iter()
            .filter(|s| s.class == class)
        {
            let e = growth.entry((s.file.clone(), s.line)).or_default();
            e.0 = e.0.saturating_sub(crate::num::saturating_i64(s.count));
        }
    }
    growth
}

/// Allocation sites of the class whose counts grew between the first and last heap snapshot
/// (or, with one snapshot that has sites, its largest sites). When the run sampled sites, the
/// counts are of the traced objects only, and the text says so.
fn allocation_items(ev: &Evidence, class: &str) -> Vec<EvidenceItem> {
    let over_time = ev
        .judged_heap()
        .iter()
        .filter(|h| !h.summary.alloc_sites.is_empty())
        .count()
        >= 2;
    let mut rows: Vec<((String, u32), (i64, i64))> = site_growth(ev, class)
        .into_iter()
        .filter(|(_, (d, _))| *d > 0)
        .collect();
    rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    rows.into_iter()
        .take(3)
        .map(|((file, line), (delta, now))| {
            let at = SourceLine { file, line };
            let text = match (over_time, ev.alloc_sites_sampled) {
                (true, false) => format!(
                    "{class} allocated at {at}: {} ({} alive now)",
                    signed(delta),
                    count(now)
                ),
                (true, true) => format!(
                    "{class} allocated at {at}: {} of the traced objects ({} traced alive now; {SITES_SAMPLED})",
                    signed(delta),
                    count(now)
                ),
                (false, false) => format!("{class} allocated at {at}: {} alive", count(now)),
                (false, true) => format!(
                    "{class} allocated at {at}: {} traced objects alive ({SITES_SAMPLED})",
                    count(now)
                ),
            };
            EvidenceItem::new(Source::Heap, text).at(at)
        })
        .collect()
}

/// `168,978 of 168,978 ZMQ::Message <- Array 0x7f… (allocated at leak.rb:29, 168,978 elements)
/// <- ROOT machine_context`
fn retainer_text(r: &ClassRetainers, g: &RetainerGroup, include_strings: bool) -> String {
    let mut container = g.container_class.clone();
    if let Some(a) = g.container_address {
        container.push_str(&format!(" {a:#x}"));
    }
    let mut details = Vec::new();
    match (&g.container_site, &g.container_constant) {
        (Some(site), Some(name)) => details.push(format!("the constant {name} assigned at {site}")),
        (Some(site), None) => details.push(format!("allocated at {site}")),
        _ => {}
    }
    if let Some(n) = g.container_length {
        details.push(format!("{} elements", count(n)));
    }
    if let Some(grew) = g.container_growth {
        let grew = if grew >= 0 {
            format!("+{}", count(grew))
        } else {
            signed(grew)
        };
        details.push(format!("{grew} elements since the first judged snapshot"));
    }
    if !details.is_empty() {
        container.push_str(&format!(" ({})", details.join(", ")));
    }
    let of = match r.new_instances {
        Some(new) => format!("{} new", count(new)),
        None => count(r.instances),
    };
    let mut chain = vec![format!("{} of {of} {}", count(g.count), r.class)];
    chain.push(container);
    for label in g.path.iter().rev() {
        chain.push(redact(label, include_strings));
    }
    chain.push(format!("ROOT {}", g.root));
    chain.join(" <- ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::classes::{class_series, growth_groups};
    use super::*;
    use crate::evidence::{HeapSnapshot, Origin};
    use crate::heap::histogram::{ClassRow, Histogram};
    use crate::heap::{AllocSite, HeapFormat, HeapSummary};

    pub fn heap(rows: &[(&str, i64)], sites: &[(&str, &str, u32, u64)]) -> HeapSnapshot {
        HeapSnapshot {
            t: None,
            snapshot: None,
            dump: None,
            summary: HeapSummary {
                path: "heap.json".into(),
                format: HeapFormat::Cruby,
                ruby_version: None,
                histogram: Histogram {
                    rows: rows
                        .iter()
                        .map(|&(n, c)| ClassRow {
                            name: n.into(),
                            count: c,
                            bytes: c * 40,
                        })
                        .collect(),
                },
                alloc_sites: sites
                    .iter()
                    .map(|&(class, file, line, count)| AllocSite {
                        class: class.into(),
                        file: file.into(),
                        line,
                        count,
                        bytes: count * 40,
                    })
                    .collect(),
                data_types: Vec::new(),
                objects: 0,
                slot_bytes: None,
                diagnostics: Default::default(),
            },
        }
    }

    /// Seed A as a bundle would give it: three snapshots, the Array at leak.rb:29.
    pub fn seed_a() -> Evidence {
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        for n in [10_000i64, 40_000, 70_000] {
            ev.heap.push(heap(
                &[
                    ("ZMQ::Message", n),
                    ("FFI::MemoryPointer", n + 3),
                    ("String", 9000),
                ],
                &[
                    ("ZMQ::Message", "leak.rb", 37, n as u64),
                    ("ZMQ::Message", "leak.rb", 26, 1),
                ],
            ));
        }
        ev.retainers.push(ClassRetainers {
            class: "ZMQ::Message".into(),
            snapshot: 3,
            instances: 70_000,
            new_instances: None,
            reachable: 70_000,
            groups: vec![RetainerGroup {
                count: 70_000,
                container_class: "Array".into(),
                container_address: Some(0x7f00_0000_1000),
                container_constant: None,
                container_site: Some(SourceLine {
                    file: "leak.rb".into(),
                    line: 29,
                }),
                container_length: Some(70_000),
                container_growth: None,
                container_objects: None,
                root: "machine_context".into(),
                path: vec![],
                holders: vec![],
            }],
        });
        ev.retainers.push(ClassRetainers {
            class: "FFI::MemoryPointer".into(),
            snapshot: 3,
            instances: 70_003,
            new_instances: None,
            reachable: 70_003,
            groups: vec![RetainerGroup {
                count: 70_000,
                container_class: "ZMQ::Message".into(),
                container_address: None,
                container_constant: None,
                container_site: None,
                container_length: None,
                container_growth: None,
                container_objects: None,
                root: "machine_context".into(),
                path: vec!["Array 0x7f0000001000".into()],
                holders: vec![],
            }],
        });
        ev.sources.insert(
            "leak.rb".into(),
            include_bytes!("../../fixtures/seed/leak.rb").to_vec(),
        );
        ev
    }

    fn run(ev: &Evidence) -> Vec<Finding> {
        let series = class_series(&ev.heap);
        let groups = growth_groups(&series, &|c| growth_holder(ev, c));
        findings(ev, &groups, false, &mut Vec::new())
    }

    #[test]
    fn seed_a_names_the_array_and_where_it_is_filled() {
        let f = run(&seed_a());
        assert_eq!(f.len(), 1, "{f:#?}");
        let f = &f[0];
        assert_eq!(f.class.as_deref(), Some("ZMQ::Message"));
        assert_eq!(f.confidence, Confidence::High);
        assert_eq!(f.count, 60_000);
        assert!(
            f.title.contains("Array allocated at leak.rb:29"),
            "{}",
            f.title
        );
        let s = f.suggestion.as_ref().unwrap();
        let locs: Vec<(String, LocationRole)> =
            s.locations.iter().map(|l| (l.site(), l.role)).collect();
        assert_eq!(
            locs,
            [
                ("leak.rb:29".to_owned(), LocationRole::ContainerAllocated),
                ("leak.rb:39".to_owned(), LocationRole::ContainerFilled)
            ]
        );
        assert_eq!(s.locations[1].code.as_deref(), Some("messages << message"));
        assert!(
            s.text.contains("(`messages`), filled at leak.rb:39"),
            "{}",
            s.text
        );
        let texts: Vec<&str> = f.evidence.iter().map(|e| e.text.as_str()).collect();
        assert!(
            texts.contains(&"ZMQ::Message allocated at leak.rb:37: +60,000 (70,000 alive now)")
        );
        assert!(texts.contains(
            &"FFI::MemoryPointer grows with it: +60,000 instances (held by ZMQ::Message)"
        ));
        assert!(texts.iter().any(|t| t.starts_with(
            "70,000 of 70,000 ZMQ::Message <- Array 0x7f0000001000 (allocated at leak.rb:29, 70,000 elements) <- ROOT machine_context"
        )));
        assert!(
            f.evidence
                .iter()
                .any(|e| e.heuristic && e.location.as_ref().is_some_and(|l| l.line == 39))
        );
    }

    #[test]
    fn without_retainers_the_finding_is_weaker_and_says_how_to_look() {
        let mut ev = seed_a();
        ev.retainers.clear();
        let f = run(&ev);
        assert_eq!(f[0].confidence, Confidence::Medium);
        assert!(
            f[0].suggestion
                .as_ref()
                .unwrap()
                .text
                .contains("leakhunt retainers")
        );
    }

    #[test]
    fn growth_made_of_unreachable_garbage_is_a_note_not_a_finding() {
        // ffi-rzmq's poller makes PollItems every round; a dump taken a moment after the GC
        // catches a few hundred that nothing references any more.
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        ev.heap.push(heap(&[("ZMQ::PollItem", 142)], &[]));
        ev.heap.push(heap(&[("ZMQ::PollItem", 371)], &[]));
        ev.retainers.push(ClassRetainers {
            class: "ZMQ::PollItem".into(),
            snapshot: 2,
            instances: 371,
            new_instances: None,
            reachable: 2,
            groups: vec![],
        });
        let series = class_series(&ev.heap);
        let groups = growth_groups(&series, &|_| None);
        let mut notes = Vec::new();
        assert!(findings(&ev, &groups, false, &mut notes).is_empty());
        assert_eq!(
            notes,
            [
                "ZMQ::PollItem grew by 229 between heap snapshots, but only 2 of its 371 instances are reachable from a root: garbage not yet collected, not retention"
            ]
        );
    }

    /// Retainers computed over the new instances only: `reachable` counts new ones.
    fn new_records(reachable: u64) -> Evidence {
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        for n in [48_000i64, 51_000, 53_800] {
            ev.heap.push(heap(&[("Record", n)], &[]));
        }
        ev.retainers.push(ClassRetainers {
            class: "Record".into(),
            snapshot: 3,
            instances: 53_800,
            new_instances: Some(5_804),
            reachable,
            groups: vec![RetainerGroup {
                count: reachable,
                container_class: "Array".into(),
                container_address: Some(0x7f00_0000_1000),
                container_constant: None,
                container_site: None,
                container_length: Some(reachable),
                container_growth: None,
                container_objects: None,
                root: "vm".into(),
                path: vec![],
                holders: vec![],
            }],
        });
        ev
    }

    #[test]
    fn new_instances_that_stay_reachable_are_retained_growth() {
        let f = run(&new_records(5_500));
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(
            f[0].evidence
                .iter()
                .any(|e| e.text.starts_with("5,500 of 5,804 new Record <- Array")),
            "{:#?}",
            f[0].evidence
        );
        let mut notes = Vec::new();
        let ev = new_records(40);
        let groups = growth_groups(&class_series(&ev.heap), &|_| None);
        assert!(findings(&ev, &groups, false, &mut notes).is_empty());
        assert_eq!(
            notes,
            [
                "Record grew by 5,800 between heap snapshots, but only 40 of its 5,804 new instances are reachable from a root: garbage not yet collected, not retention"
            ]
        );
    }

    fn group(count: u64, class: &str, site: Option<(&str, u32)>, root: &str) -> RetainerGroup {
        RetainerGroup {
            count,
            container_class: class.into(),
            container_address: Some(0x7f00_0000_2000),
            container_constant: None,
            container_site: site.map(|(file, line)| SourceLine {
                file: file.into(),
                line,
            }),
            container_length: None,
            container_growth: None,
            container_objects: None,
            root: root.into(),
            path: vec!["Object 0x7f0000003000".into()],
            holders: vec!["Object".into()],
        }
    }

    fn strings_held_by(groups: Vec<RetainerGroup>) -> Vec<Finding> {
        run(&strings_evidence(groups))
    }

    /// Three heap snapshots in which String grows by 6,000, all new and reachable through
    /// `groups`.
    fn strings_evidence(groups: Vec<RetainerGroup>) -> Evidence {
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        for n in [40_000i64, 43_000, 46_000] {
            ev.heap.push(heap(&[("String", n)], &[]));
        }
        ev.retainers.push(ClassRetainers {
            class: "String".into(),
            snapshot: 3,
            instances: 46_000,
            new_instances: Some(6_000),
            reachable: 6_000,
            groups,
        });
        ev
    }

    const REQUIRE: &str = "<internal:/usr/lib/ruby/3.1.0/rubygems/core_ext/kernel_require.rb>";

    /// A widget server creating each Widget at a new site: the agent's per-site Hashes pile up
    /// in its own Hash. Its bookkeeping, not a leak of the program's; a program's container
    /// holding most of them is still one.
    #[test]
    fn growth_held_by_the_agents_own_containers_is_a_note() {
        const AGENT: &str = "/tmp/leakhunt-x/leakhunt_agent.rb";
        let f = strings_held_by(vec![
            group(5_000, "Hash", Some((AGENT, 140)), "global_tbl"),
            group(1_000, "Array", Some(("app.rb", 7)), "global_tbl"),
        ]);
        assert!(f.is_empty(), "{f:#?}");
        let ev = strings_evidence(vec![group(5_000, "Hash", Some((AGENT, 140)), "global_tbl")]);
        let groups = growth_groups(&class_series(&ev.heap), &|_| None);
        let mut notes = Vec::new();
        assert!(findings(&ev, &groups, false, &mut notes).is_empty());
        assert_eq!(
            notes,
            [format!(
                "String grew by 6,000 between heap snapshots, 5,000 of its new instances held by leakhunt's agent (the Hash allocated at {AGENT}:140): the agent's bookkeeping, not the program's"
            )]
        );
        let f = strings_held_by(vec![
            group(1_000, "Hash", Some((AGENT, 140)), "global_tbl"),
            group(5_000, "Array", Some(("app.rb", 7)), "global_tbl"),
        ]);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(
            f[0].title
                .contains("kept by the Array allocated at app.rb:7"),
            "{}",
            f[0].title
        );
    }

    /// Without allocation sites the agent's containers are told by their holder: a Hash held
    /// directly by one of the agent's objects is its bookkeeping; one the program's object holds
    /// is the program's, even when the path to it passes through the agent.
    #[test]
    fn growth_held_directly_by_the_agents_objects_is_a_note_without_sites() {
        let mut agents = group(5_000, "Hash", None, "machine_context");
        agents.holders = vec!["LeakhuntAgent::Sites".into(), "Module".into()];
        let ev = strings_evidence(vec![agents.clone()]);
        let groups = growth_groups(&class_series(&ev.heap), &|_| None);
        let mut notes = Vec::new();
        assert!(findings(&ev, &groups, false, &mut notes).is_empty());
        assert_eq!(
            notes,
            [
                "String grew by 6,000 between heap snapshots, 5,000 of its new instances held by leakhunt's agent (a Hash held by its LeakhuntAgent::Sites): the agent's bookkeeping, not the program's"
            ]
        );
        let mut programs = agents;
        programs.holders = vec!["Cache".into(), "LeakhuntAgent::Inventory".into()];
        let f = strings_held_by(vec![programs]);
        assert_eq!(f.len(), 1, "{f:#?}");
    }

    #[test]
    fn the_runtimes_own_objects_are_never_the_thing_to_change() {
        // Only runtime containers: said so, ranked low, no location to edit.
        let f = strings_held_by(vec![
            group(4_000, "Array (hidden)", Some((REQUIRE, 85)), "vm"),
            group(
                1_000,
                "Hash",
                Some(("/usr/lib/ruby/3.1.0/set.rb", 12)),
                "vm",
            ),
        ]);
        assert_eq!(f.len(), 1);
        let f = &f[0];
        assert_eq!(f.confidence, Confidence::Low);
        assert!(
            f.title
                .contains("held only by the Ruby runtime's own objects (Array (hidden) allocated at <internal:"),
            "{}",
            f.title
        );
        let s = f.suggestion.as_ref().unwrap();
        assert!(s.locations.is_empty() && s.shapes.is_empty());
        assert!(
            s.text
                .starts_with("Nothing in the program holds the new String instances")
        );
        // A program's container after the runtime's: the program's is named.
        let f = strings_held_by(vec![
            group(4_000, "Array (hidden)", Some((REQUIRE, 85)), "vm"),
            group(1_500, "Array", Some(("app.rb", 7)), "global_tbl"),
        ]);
        assert!(
            f[0].title
                .contains("kept by the Array allocated at app.rb:7"),
            "{}",
            f[0].title
        );
        assert_ne!(f[0].confidence, Confidence::Low);
    }

    /// The Rails application: records holding each request's headers appended to a
    /// class-level Array; the header Strings grow among a large population of other Strings.
    fn audit_log() -> Evidence {
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        for (records, strings) in [(100i64, 48_000i64), (700, 51_000), (1_300, 53_800)] {
            ev.heap
                .push(heap(&[("AuditEntry", records), ("String", strings)], &[]));
        }
        let mut holder = group(1_200, "Array", Some(("app.rb", 5)), "vm");
        holder.path = vec!["Class AuditLog".into()];
        holder.holders = vec!["Class".into()];
        ev.retainers.push(ClassRetainers {
            class: "AuditEntry".into(),
            snapshot: 3,
            instances: 1_300,
            new_instances: Some(1_200),
            reachable: 1_200,
            groups: vec![holder],
        });
        let mut headers = group(5_452, "Hash", Some(("app.rb", 9)), "vm");
        headers.holders = vec!["AuditEntry".into(), "Array".into(), "Class".into()];
        ev.retainers.push(ClassRetainers {
            class: "String".into(),
            snapshot: 3,
            instances: 53_800,
            new_instances: Some(5_804),
            reachable: 5_800,
            groups: vec![
                headers,
                group(300, "Array (hidden)", Some((REQUIRE, 85)), "vm"),
            ],
        });
        ev
    }

    #[test]
    fn a_symptom_held_by_a_leaking_class_is_evidence_of_its_leak() {
        let f = run(&audit_log());
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].class.as_deref(), Some("AuditEntry"));
        assert!(
            f[0].title
                .contains("kept by the Array allocated at app.rb:5")
        );
        let texts: Vec<&str> = f[0].evidence.iter().map(|e| e.text.as_str()).collect();
        assert!(
            texts.contains(
                &"String grows with it: +5,800 instances, 93 % of its 5,804 new instances (5,452) held by AuditEntry objects via Hash: kept by this leak, not a leak of its own"
            ),
            "{texts:#?}"
        );
        assert_eq!(f[0].bytes, (1_200 + 5_800) * 40);
        // Held by the records for less than half of its new instances: a finding of its own.
        let mut ev = audit_log();
        ev.retainers[1].groups[0].count = 2_000;
        ev.retainers[1].groups[1].count = 3_700;
        assert_eq!(run(&ev).len(), 2);
    }

    #[test]
    fn a_slow_leak_on_a_big_steady_heap_is_found_when_a_container_holds_it() {
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        for (records, strings) in [
            (500_000i64, 1_000_000i64),
            (508_000, 1_000_300),
            (516_000, 1_000_700),
            (524_000, 1_000_900),
        ] {
            ev.heap
                .push(heap(&[("Record", records), ("String", strings)], &[]));
        }
        ev.retainers.push(ClassRetainers {
            class: "Record".into(),
            snapshot: 4,
            instances: 524_000,
            new_instances: Some(24_000),
            reachable: 24_000,
            groups: vec![group(24_000, "Array", Some(("slow.rb", 4)), "vm")],
        });
        let series = class_series(&ev.heap);
        let groups = growth_groups(&series, &|c| growth_holder(&ev, c));
        let mut notes = Vec::new();
        let f = findings(&ev, &groups, false, &mut notes);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].class.as_deref(), Some("Record"));
        assert_eq!(f[0].confidence, Confidence::High);
        assert!(
            f[0].title
                .contains("kept by the Array allocated at slow.rb:4")
        );
        assert_eq!(
            notes,
            [
                "String grew by 900 at every heap snapshot, a small part of its 1,000,000 instances, but no container of the program holds the new ones: not reported"
            ]
        );
    }

    #[test]
    fn a_container_that_piles_up_is_named_before_one_that_turns_over() {
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        for n in [1_000_000i64, 1_001_000, 1_002_000] {
            ev.heap.push(heap(&[("Record", n)], &[]));
        }
        let mut steady = group(3_025, "Array", Some(("slow.rb", 14)), "vm");
        steady.container_growth = Some(0);
        let mut piled = group(2_000, "Array", Some(("slow.rb", 15)), "vm");
        piled.container_growth = Some(2_000);
        ev.retainers.push(ClassRetainers {
            class: "Record".into(),
            snapshot: 3,
            instances: 1_002_000,
            new_instances: Some(5_025),
            reachable: 5_025,
            groups: vec![steady, piled],
        });
        let f = run(&ev);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(
            f[0].title
                .contains("kept by the Array allocated at slow.rb:15"),
            "{}",
            f[0].title
        );
        let texts: Vec<&str> = f[0].evidence.iter().map(|e| e.text.as_str()).collect();
        assert!(
            texts.iter().any(|t| t.contains(
                "(allocated at slow.rb:14, +0 elements since the first judged snapshot)"
            )),
            "{texts:#?}"
        );
    }

    #[test]
    fn runtime_containers_are_told_from_the_programs() {
        let g = |class: &str, site: Option<(&str, u32)>, root: &str| {
            let mut g = group(1, class, site, root);
            g.path.clear();
            runtime_container(&g).is_some()
        };
        assert!(g("Array (hidden)", None, "vm"));
        assert!(g("iseq (IMEMO)", None, "vm"));
        assert!(g("Array", Some((REQUIRE, 85)), "vm"));
        assert!(g("Hash", Some(("/usr/lib/ruby/3.3.0/set.rb", 3)), "vm"));
        // `$LOADED_FEATURES`: an Array the VM marks itself, allocated before tracing.
        assert!(g("Array", None, "vm"));
        assert!(g("ROOT vm", None, "vm"));
        assert!(!g("ROOT global_tbl", None, "global_tbl"));
        assert!(!g("Array", Some(("app.rb", 3)), "vm"));
        assert!(!g(
            "Hash",
            Some(("/usr/lib/ruby/vendor_ruby/action_dispatch/x.rb", 3)),
            "vm"
        ));
        assert!(!g("Array", None, "global_tbl"));
    }

    /// A Puma worker between a round before its first request and two after: RubyGems filled in
    /// gem specs lazily and a thread was serving a request at the dump; String grew past the
    /// threshold, spread over holders none of which keeps as many.
    fn scattered_strings(program_array: u64) -> Evidence {
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        for n in [17_921i64, 18_016, 18_023 + program_array as i64] {
            ev.heap.push(heap(&[("String", n)], &[]));
        }
        let mut specs = group(63, "Gem::Specification", None, "vm");
        specs.path = vec!["Module Gem".into(), "Hash 0x7f5ee81e6308".into()];
        let env = group(
            15,
            "Hash",
            Some(("/gems/puma-5.6.5/lib/puma/client.rb", 78)),
            "vm",
        );
        let spec_strings = group(
            11,
            "String",
            Some((
                "/usr/lib/ruby/vendor_ruby/rubygems/basic_specification.rb",
                112,
            )),
            "vm",
        );
        let mut groups = vec![specs, env, spec_strings];
        if program_array > 0 {
            groups.insert(0, group(program_array, "Array", Some(("app.rb", 4)), "vm"));
        }
        ev.retainers.push(ClassRetainers {
            class: "String".into(),
            snapshot: 3,
            instances: 18_023 + program_array,
            new_instances: Some(120 + program_array),
            reachable: 120 + program_array,
            groups,
        });
        ev
    }

    #[test]
    fn growth_no_one_holder_keeps_is_a_note() {
        let ev = scattered_strings(0);
        let groups = growth_groups(&class_series(&ev.heap), &|c| growth_holder(&ev, c));
        let mut notes = Vec::new();
        let f = findings(&ev, &groups, false, &mut notes);
        assert!(f.is_empty(), "{f:#?}");
        assert_eq!(
            notes,
            [
                "String grew by 102 between heap snapshots, but no one holder keeps 100 of its 120 new instances (the most, 63, through Gem::Specification): scattered, not a pile-up; not reported"
            ]
        );
        // The same heap with a program Array keeping 100 more: that one is a pile-up.
        let f = run(&scattered_strings(100));
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(
            f[0].title
                .contains("kept by the Array allocated at app.rb:4"),
            "{}",
            f[0].title
        );
    }

    #[test]
    fn the_agents_and_the_runtimes_own_growth_are_notes() {
        // The agent's MethodFacts grow in lockstep with its Hashes and fold into their group.
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        for n in [9u64, 933, 933] {
            ev.heap.push(heap(
                &[
                    ("LeakhuntAgent::MethodFacts", n as i64),
                    ("Hash", 500 + n as i64),
                    ("callcache (IMEMO)", 1600 + 3 * n as i64),
                ],
                &[
                    ("Hash", "/tmp/leakhunt-x/leakhunt_agent.rb", 235, n),
                    ("Hash", "app.rb", 3, 500),
                ],
            ));
        }
        let series = class_series(&ev.heap);
        let groups = growth_groups(&series, &|_| None);
        let mut notes = Vec::new();
        assert!(findings(&ev, &groups, false, &mut notes).is_empty());
        assert_eq!(
            notes,
            [
                "Hash grew by 924 between heap snapshots, 924 of them allocated by leakhunt's agent: not the program's",
                "classes of the Ruby runtime or of leakhunt's agent grew (callcache (IMEMO) +2,772): symptoms, not reported"
            ]
        );
    }

    #[test]
    fn a_stable_heap_gives_no_finding() {
        let mut ev = Evidence::empty(Origin::Files(vec![]));
        for _ in 0..3 {
            ev.heap
                .push(heap(&[("ZMQ::Message", 3), ("String", 9000)], &[]));
        }
        assert!(run(&ev).is_empty());
    }

    /// Seed A on a slow machine (CI): the first heap snapshot came before the first message, and
    /// the program's (and the agent's) own Arrays grew by hundreds between rounds, scattered over
    /// many holders. The one Array holding every message is a single object: Array's growth is
    /// not what holds them, and the messages head their own finding. Folded into Array's group,
    /// they went with its "scattered" note and the run had no finding.
    #[test]
    fn a_pile_up_in_one_container_is_not_folded_into_its_class_growing_elsewhere() {
        let mut ev = Evidence::empty(Origin::Bundle("b".into()));
        for (messages, arrays) in [(0i64, 20_000i64), (5_392, 20_300), (7_976, 20_639)] {
            ev.heap.push(heap(
                &[
                    ("ZMQ::Message", messages),
                    ("FFI::MemoryPointer", messages + 3),
                    ("Array", arrays),
                ],
                &[],
            ));
        }
        let mut kept = group(7_975, "Array", Some(("leak.rb", 29)), "vm");
        kept.container_length = Some(7_976);
        kept.container_objects = Some(1);
        ev.retainers.push(ClassRetainers {
            class: "ZMQ::Message".into(),
            snapshot: 3,
            instances: 7_976,
            new_instances: Some(7_976),
            reachable: 7_976,
            groups: vec![kept],
        });
        let mut pointers = group(7_976, "ZMQ::Message", None, "vm");
        pointers.container_objects = Some(7_976);
        ev.retainers.push(ClassRetainers {
            class: "FFI::MemoryPointer".into(),
            snapshot: 3,
            instances: 7_979,
            new_instances: Some(7_976),
            reachable: 7_976,
            groups: vec![pointers],
        });
        let scattered: Vec<RetainerGroup> = (0..9)
            .map(|i| {
                let mut g = group(71, if i % 2 == 0 { "Hash" } else { "Object" }, None, "vm");
                g.container_objects = Some(71);
                g
            })
            .collect();
        ev.retainers.push(ClassRetainers {
            class: "Array".into(),
            snapshot: 3,
            instances: 20_639,
            new_instances: Some(639),
            reachable: 639,
            groups: scattered,
        });
        let mut notes = Vec::new();
        let series = class_series(&ev.heap);
        let groups = growth_groups(&series, &|c| growth_holder(&ev, c));
        let f = findings(&ev, &groups, false, &mut notes);
        assert_eq!(f.len(), 1, "{f:#?}\n{notes:#?}");
        assert_eq!(f[0].class.as_deref(), Some("ZMQ::Message"));
        assert!(
            f[0].title
                .contains("kept by the Array allocated at leak.rb:29"),
            "{}",
            f[0].title
        );
        assert!(
            notes.iter().any(|n| n.starts_with("Array grew by 639")),
            "{notes:#?}"
        );
    }
}
