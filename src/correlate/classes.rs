//! Ruby class counts across heap snapshots: which classes grow, which of them belong to the
//! program (rather than to the runtime or to an FFI binding), and which grow together.
//!
//! Stage: correlator (heap side). Reads the histograms of [`crate::evidence::HeapSnapshot`]s.

use crate::evidence::{Evidence, HeapSnapshot};
use crate::heap::cruby::census::SITES_PER_CLASS;
use crate::heap::histogram::Histogram;
use serde::Serialize;
use std::collections::HashMap;

/// Fewest instances a class must gain between the first and the last snapshot to count as
/// growing: below this, a full GC's jitter and lazily built runtime tables look like growth.
pub const MIN_GROWTH: i64 = 100;

/// A class's count and bytes in each heap snapshot, oldest first (0 where it is absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassSeries {
    pub class: String,
    pub counts: Vec<i64>,
    pub bytes: Vec<i64>,
}

impl ClassSeries {
    pub fn delta(&self) -> i64 {
        self.counts.last().copied().unwrap_or(0) - self.counts.first().copied().unwrap_or(0)
    }

    pub fn bytes_delta(&self) -> i64 {
        self.bytes.last().copied().unwrap_or(0) - self.bytes.first().copied().unwrap_or(0)
    }

    /// Change from each snapshot to the next.
    pub fn steps(&self) -> Vec<i64> {
        self.counts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// Gains at least [`MIN_GROWTH`] instances and either 5% of its first count, never losing
    /// more than a twentieth of that gain on the way, or, on a larger steady population, a
    /// gain at every step over three or more snapshots: new instances that keep surviving
    /// round after round are growth whatever the heap's size ([`ClassSeries::is_slow`]).
    pub fn is_growing(&self) -> bool {
        let delta = self.delta();
        if self.counts.len() < 2 || delta < MIN_GROWTH {
            return false;
        }
        if self.is_slow() {
            return self.grows_at_every_step();
        }
        self.steps().iter().all(|&s| s >= -(delta / 20))
    }

    /// Whether the gain is under a twentieth of the first count: growth on a big steady heap,
    /// which only survival across rounds (and a container holding it) tells from turnover.
    pub fn is_slow(&self) -> bool {
        let first = self.counts.first().copied().unwrap_or(0);
        self.delta().saturating_mul(20) < first
    }

    /// Grew at every step over three or more snapshots.
    pub fn grows_at_every_step(&self) -> bool {
        self.counts.len() >= 3 && self.steps().iter().all(|&s| s > 0)
    }

    /// Whether two series gain the same number of instances at each step (within 1%).
    pub fn in_lockstep_with(&self, other: &ClassSeries) -> bool {
        let (a, b) = (self.steps(), other.steps());
        a.len() == b.len()
            && a.iter().zip(&b).all(|(&x, &y)| {
                let tolerance = x.abs().max(y.abs()) / 100;
                (x - y).abs() <= tolerance
            })
    }
}

/// Every class of every snapshot, by name, in the order first seen.
pub fn class_series(heap: &[HeapSnapshot]) -> Vec<ClassSeries> {
    let merged: Vec<Histogram> = heap.iter().map(|h| h.summary.histogram.by_name()).collect();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<ClassSeries> = Vec::new();
    for (i, hist) in merged.iter().enumerate() {
        for row in &hist.rows {
            let at = *index.entry(row.name.as_str()).or_insert_with(|| {
                out.push(ClassSeries {
                    class: row.name.clone(),
                    counts: vec![0; merged.len()],
                    bytes: vec![0; merged.len()],
                });
                out.len() - 1
            });
            out[at].counts[i] = row.count;
            out[at].bytes[i] = row.bytes;
        }
    }
    out
}

/// Who a class belongs to, as far as its name tells. Ordered from least to most likely to be
/// the class a user should look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassRole {
    /// The VM's own objects: `Rubinius::*`, `RubyVM::*`, internal types, hidden objects.
    Runtime,
    /// The FFI gem's classes (`FFI::MemoryPointer`) and structs/modules of a binding
    /// (`LibZMQ::Msg`): they follow whatever wraps them.
    Binding,
    /// Core classes (`String`, `Array`, …): they grow with everything.
    Core,
    /// Everything else: the program's and its libraries' classes.
    User,
}

const CORE_CLASSES: &[&str] = &[
    "Array",
    "BasicObject",
    "Class",
    "Complex",
    "Data",
    "Encoding",
    "Enumerator",
    "Fiber",
    "Float",
    "Hash",
    "Hash::Entry",
    "Integer",
    "MatchData",
    "Method",
    "Module",
    "Mutex",
    "Object",
    "Proc",
    "Range",
    "Rational",
    "Regexp",
    "String",
    "Struct",
    "Symbol",
    "Thread",
    "Time",
    "UnboundMethod",
    "Binding",
    "File",
    "IO",
    "Set",
    "Digest::SHA256",
    "Digest::SHA2",
];

/// The namespace of the Ruby agent `leakhunt run` injects: its objects are the tool's, not the
/// program's.
pub const AGENT_NAMESPACE: &str = "LeakhuntAgent";
/// The file name the agent runs from (allocation sites in it are the agent's).
pub const AGENT_FILE: &str = "leakhunt_agent.rb";

/// Whether a class is in the agent's namespace (`LeakhuntAgent::MethodFacts`).
pub fn is_agent_class(name: &str) -> bool {
    name.strip_prefix(AGENT_NAMESPACE)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// Whether an allocation site's file is the agent's.
pub fn is_agent_file(file: &str) -> bool {
    file.strip_suffix(AGENT_FILE)
        .is_some_and(|dir| dir.is_empty() || dir.ends_with('/'))
}

/// The classes whose change between the first and the last heap snapshot is the agent's own
/// doing, not the program's: the agent's namespace, and classes whose every new instance was
/// allocated in the agent's file. The second needs allocation sites in both snapshots, complete
/// for the class (the reader keeps at most [`SITES_PER_CLASS`] per class: a list that long may
/// miss the program's sites, so the class stays).
pub fn agent_classes(heap: &[HeapSnapshot], series: &[ClassSeries]) -> Vec<String> {
    let (Some(first), Some(last)) = (heap.first(), heap.last()) else {
        return Vec::new();
    };
    let traced = heap.len() >= 2
        && !first.summary.alloc_sites.is_empty()
        && !last.summary.alloc_sites.is_empty();
    // (sites of the class, instances the agent allocated) in one snapshot.
    let agent_part = |h: &HeapSnapshot, class: &str| -> Option<i64> {
        let mut sites = 0usize;
        let mut by_agent = 0i64;
        for s in h.summary.alloc_sites.iter().filter(|s| s.class == class) {
            sites += 1;
            if is_agent_file(&s.file) {
                by_agent += i64::try_from(s.count).unwrap_or(i64::MAX);
            }
        }
        (sites < SITES_PER_CLASS).then_some(by_agent)
    };
    series
        .iter()
        .filter(|s| {
            if is_agent_class(&s.class) {
                return true;
            }
            if !traced || s.delta() == 0 {
                return false;
            }
            match (agent_part(first, &s.class), agent_part(last, &s.class)) {
                (Some(before), Some(after)) => after - before == s.delta(),
                _ => false,
            }
        })
        .map(|s| s.class.clone())
        .collect()
}

const RUNTIME_NAMESPACES: &[&str] = &[
    AGENT_NAMESPACE,
    "Rubinius::",
    "RubyVM",
    "ObjectSpace",
    "Thread::",
    "Enumerator::",
    "Process::",
    "Errno::",
    "Gem::",
];

pub fn class_role(name: &str) -> ClassRole {
    let starts_upper = name.chars().next().is_some_and(|c| c.is_ascii_uppercase());
    // `#<Class:0x…>` (anonymous), `callcache (IMEMO)`, `Hash (hidden)`, `mutex (DATA)`.
    if !starts_upper
        || name.starts_with("#<")
        || name.contains(" (")
        || RUNTIME_NAMESPACES.iter().any(|ns| name.starts_with(ns))
    {
        return ClassRole::Runtime;
    }
    if name.starts_with("FFI::") || is_binding_namespace(name) {
        return ClassRole::Binding;
    }
    if CORE_CLASSES.contains(&name) {
        return ClassRole::Core;
    }
    ClassRole::User
}

/// `LibZMQ`, `LibZMQ::Msg`, `Libwidget::Handle`: the conventional name of an FFI module.
fn is_binding_namespace(name: &str) -> bool {
    let head = name.split("::").next().unwrap_or(name);
    head.len() > 3
        && head.starts_with("Lib")
        && head[3..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase())
}

/// Growing classes whose retainer paths are computed (one read of the newest dump for all).
const MAX_RETAINER_CLASSES: usize = 8;

/// The classes whose retainer paths the retention rule needs, for the evidence to compute once:
/// the heads of the growing groups (grouped before any retainer path is known), then the
/// classes that grow in lockstep with them. The members need paths too: the final grouping
/// follows which class holds which, and a member without paths holds nothing. Without them a
/// lockstep that holds only by chance (`Invoice` and the `Array` each of them keeps, within
/// 1 % per step) decided whether the user's class or `Array` headed the finding.
pub fn retainer_classes(ev: &Evidence) -> Vec<String> {
    if ev.heap.len() < 2 {
        return Vec::new();
    }
    let series = class_series(ev.judged_heap());
    let groups = growth_groups(&series, &|_| None);
    let heads = groups.iter().map(|g| &g.head);
    let members = groups.iter().flat_map(|g| &g.members);
    heads
        .chain(members)
        .map(|s| s.class.clone())
        .take(MAX_RETAINER_CLASSES)
        .collect()
}

/// Growing classes gathered into groups that grow together: the head is the class a user
/// should look at, the members follow it (held by it, or gaining exactly as many instances).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowthGroup {
    pub head: ClassSeries,
    pub members: Vec<ClassSeries>,
}

/// Groups the growing classes. `container_of` names the class whose objects hold most instances
/// of a class (from retainer paths; not when one object holds them all), when known: a class
/// held by another growing class joins that class's group, wherever its holder ends up (held
/// itself, or held around a cycle of holders, whose most user-like class heads their group);
/// otherwise classes in lockstep join the group of the most user-like of them. The groups do
/// not depend on the order the classes come in.
pub fn growth_groups(
    series: &[ClassSeries],
    container_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<GrowthGroup> {
    let mut growing: Vec<&ClassSeries> = series.iter().filter(|s| s.is_growing()).collect();
    // Most user-like first, then largest growth; stable, so first-seen order breaks ties.
    growing.sort_by(|a, b| {
        class_role(&b.class)
            .cmp(&class_role(&a.class))
            .then_with(|| b.delta().cmp(&a.delta()))
    });
    let names: Vec<&str> = growing.iter().map(|s| s.class.as_str()).collect();
    let mut groups: Vec<GrowthGroup> = Vec::new();
    // Classes held by another growing class, and their holders: they join once every class
    // that is not held has its group.
    let mut held: Vec<(&ClassSeries, String)> = Vec::new();
    for s in &growing {
        if let Some(holder) = container_of(&s.class)
            && holder != s.class
            && names.contains(&holder.as_str())
        {
            held.push((s, holder));
            continue;
        }
        let lockstep = groups.iter_mut().find(|g| g.head.in_lockstep_with(s));
        match lockstep {
            Some(g) if class_role(&s.class) <= class_role(&g.head.class) => {
                g.members.push((*s).clone())
            }
            _ => groups.push(GrowthGroup {
                head: (*s).clone(),
                members: Vec::new(),
            }),
        }
    }
    let holder_of: HashMap<&str, &str> = held
        .iter()
        .map(|(s, h)| (s.class.as_str(), h.as_str()))
        .collect();
    let by_name: HashMap<&str, &ClassSeries> =
        growing.iter().map(|s| (s.class.as_str(), *s)).collect();
    let ends: Vec<&str> = held
        .iter()
        .map(|(s, _)| holders_end(&s.class, &holder_of, &by_name))
        .collect();
    for ((s, _), end) in held.iter().zip(&ends) {
        // The class a cycle of holders ends at heads a group of its own.
        if s.class == *end {
            groups.push(GrowthGroup {
                head: (*s).clone(),
                members: Vec::new(),
            });
        }
    }
    for ((s, _), end) in held.iter().zip(&ends) {
        if s.class == *end {
            continue;
        }
        let group = groups
            .iter_mut()
            .find(|g| g.head.class == *end || g.members.iter().any(|m| m.class == *end));
        match group {
            Some(g) => g.members.push((*s).clone()),
            None => groups.push(GrowthGroup {
                head: (*s).clone(),
                members: Vec::new(),
            }),
        }
    }
    groups
}

/// Where following a held class's holders ends: at the first class no growing class holds (it
/// has a group already), or, around a cycle of holders, at the cycle's most user-like class
/// (then the largest growth, then the name: whatever order the classes came in).
fn holders_end<'a>(
    class: &'a str,
    holder_of: &HashMap<&'a str, &'a str>,
    by_name: &HashMap<&str, &ClassSeries>,
) -> &'a str {
    let mut path = vec![class];
    let mut at = class;
    while let Some(&holder) = holder_of.get(at) {
        if let Some(from) = path.iter().position(|c| *c == holder) {
            let key = |c: &&'a str| {
                let delta = by_name.get(*c).map_or(0, |s| s.delta());
                (
                    std::cmp::Reverse(class_role(c)),
                    std::cmp::Reverse(delta),
                    *c,
                )
            };
            return path[from..]
                .iter()
                .copied()
                .min_by_key(key)
                .unwrap_or(holder);
        }
        path.push(holder);
        at = holder;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(class: &str, counts: &[i64]) -> ClassSeries {
        ClassSeries {
            class: class.into(),
            counts: counts.to_vec(),
            bytes: counts.iter().map(|c| c * 40).collect(),
        }
    }

    #[test]
    fn growth_needs_size_and_direction() {
        assert!(series("ZMQ::Message", &[168978, 372088]).is_growing());
        assert!(!series("String", &[15615, 15680]).is_growing());
        assert!(!series("Array", &[3010, 3006]).is_growing());
        // Under 5% of a large count between two snapshots: jitter, not growth.
        assert!(!series("String", &[100_000, 100_150]).is_growing());
        // Nor when it goes back down on the way.
        assert!(!series("String", &[100_000, 100_400, 100_300, 100_500]).is_growing());
        // A slow gain that survives every round is growth however big the steady heap.
        let slow = series("Record", &[500_000, 508_000, 516_000, 524_000]);
        assert!(slow.is_slow() && slow.is_growing());
        // Up, then back down: not a leak.
        assert!(!series("Foo", &[10, 5000, 20]).is_growing());
        assert!(series("Foo", &[10, 5000, 9000]).grows_at_every_step());
    }

    #[test]
    fn roles_tell_program_classes_from_the_rest() {
        assert_eq!(class_role("ZMQ::Message"), ClassRole::User);
        assert_eq!(class_role("Widget"), ClassRole::User);
        assert_eq!(class_role("LibZMQ::Msg"), ClassRole::Binding);
        assert_eq!(class_role("FFI::MemoryPointer"), ClassRole::Binding);
        assert_eq!(
            class_role("Rubinius::CompactLookupTable"),
            ClassRole::Runtime
        );
        assert_eq!(class_role("String"), ClassRole::Core);
        assert_eq!(class_role("Library"), ClassRole::User);
        assert_eq!(class_role("#<Class:0x1>"), ClassRole::Runtime);
        assert_eq!(class_role("callcache (IMEMO)"), ClassRole::Runtime);
        assert_eq!(class_role("LeakhuntAgent::MethodFacts"), ClassRole::Runtime);
    }

    #[test]
    fn seed_lockstep_classes_fold_under_the_program_class() {
        // The seed's second table: four classes gaining 203,110 each.
        let all = vec![
            series("Rubinius::CompactLookupTable", &[169350, 372460]),
            series("ZMQ::Message", &[168978, 372088]),
            series("LibZMQ::Msg", &[168978, 372088]),
            series("FFI::MemoryPointer", &[168983, 372093]),
            series("String", &[15615, 15615]),
        ];
        let groups = growth_groups(&all, &|_| None);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].head.class, "ZMQ::Message");
        let members: Vec<&str> = groups[0].members.iter().map(|m| m.class.as_str()).collect();
        assert_eq!(
            members,
            [
                "LibZMQ::Msg",
                "FFI::MemoryPointer",
                "Rubinius::CompactLookupTable"
            ]
        );
    }

    #[test]
    fn a_class_held_by_another_growing_class_joins_it() {
        let all = vec![
            series("FFI::MemoryPointer", &[10, 5000, 10000]),
            series("ZMQ::Message", &[5, 4995, 9995]),
            series("Session", &[1, 300, 900]),
        ];
        let holder = |c: &str| (c == "FFI::MemoryPointer").then(|| "ZMQ::Message".to_string());
        let groups = growth_groups(&all, &holder);
        let heads: Vec<&str> = groups.iter().map(|g| g.head.class.as_str()).collect();
        assert_eq!(heads, ["ZMQ::Message", "Session"]);
        assert_eq!(groups[0].members[0].class, "FFI::MemoryPointer");
    }

    /// grows.rb: every Invoice keeps an Array of four Strings, and KEPT (an Array) keeps every
    /// Invoice. Invoice and Array gain the same count per step (within 1 %), so Array is a
    /// lockstep member before any path is known; it needs paths of its own all the same.
    #[test]
    fn lockstep_members_get_retainer_paths_and_the_user_class_heads_whatever_the_lockstep() {
        use crate::correlate::retention::tests::heap;
        let rounds = [(5_000i64, 5_003i64), (14_000, 14_003), (23_000, 23_004)];
        let mut ev = Evidence::empty(crate::evidence::Origin::Bundle("b".into()));
        for (invoices, arrays) in rounds {
            ev.heap.push(heap(
                &[
                    ("Invoice", invoices),
                    ("Array", arrays),
                    ("String", invoices * 4),
                ],
                &[],
            ));
        }
        let classes = retainer_classes(&ev);
        assert_eq!(classes, ["Invoice", "String", "Array"]);
        // What the paths say: the Invoices are in an Array (KEPT), each Array in an Invoice,
        // each String in an Array. With every class's holder known, the user's class heads.
        let series = class_series(&ev.heap);
        let holder = |c: &str| match c {
            "Invoice" => Some("Array".to_owned()),
            "Array" => Some("Invoice".to_owned()),
            "String" => Some("Array".to_owned()),
            _ => None,
        };
        // String, held by Array, joins Invoice's group too, though it comes before Array.
        let heads = |groups: Vec<GrowthGroup>| -> Vec<String> {
            groups.into_iter().map(|g| g.head.class).collect()
        };
        let groups = growth_groups(&series, &holder);
        let members: Vec<&str> = groups[0].members.iter().map(|m| m.class.as_str()).collect();
        assert_eq!(members, ["String", "Array"]);
        assert_eq!(heads(groups), ["Invoice"]);
        // Had Array no paths (a head-only choice), Array would have headed the finding.
        let without_array = |c: &str| holder(c).filter(|_| c != "Array");
        assert_eq!(heads(growth_groups(&series, &without_array)), ["Array"]);
    }

    /// Every order of `all`, for checking that the grouping does not follow it.
    fn orders(all: &[ClassSeries]) -> Vec<Vec<ClassSeries>> {
        if all.len() <= 1 {
            return vec![all.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..all.len() {
            let mut rest = all.to_vec();
            let first = rest.remove(i);
            for mut tail in orders(&rest) {
                tail.insert(0, first.clone());
                out.push(tail);
            }
        }
        out
    }

    /// Each group as its head and its members' names, sorted.
    fn shape(groups: &[GrowthGroup]) -> Vec<(String, Vec<String>)> {
        groups
            .iter()
            .map(|g| {
                let mut members: Vec<String> = g.members.iter().map(|m| m.class.clone()).collect();
                members.sort();
                (g.head.class.clone(), members)
            })
            .collect()
    }

    /// Orders of carts: each LineItem is held by its Order, each Order by an Array (the cart
    /// list) that each Order holds back, and the Strings by the Arrays. LineItem and Order
    /// grow alike, so the order they come in decides which is seen first: seen before Order
    /// had a group, LineItem used to head a group of its own (and String one too, seen before
    /// Array joined Order's).
    #[test]
    fn a_held_class_joins_its_holder_s_group_whatever_order_the_classes_come_in() {
        let all = vec![
            series("LineItem", &[10, 1010, 2010]),
            series("Order", &[20, 1020, 2020]),
            series("String", &[50, 4050, 8050]),
            series("Array", &[30, 1030, 2030]),
        ];
        let holder = |c: &str| {
            let h = match c {
                "LineItem" => "Order",
                "Order" => "Array",
                "Array" => "Order",
                "String" => "Array",
                _ => return None,
            };
            Some(h.to_owned())
        };
        let want = vec![(
            "Order".to_owned(),
            vec![
                "Array".to_owned(),
                "LineItem".to_owned(),
                "String".to_owned(),
            ],
        )];
        for order in orders(&all) {
            let names: Vec<&str> = order.iter().map(|s| s.class.as_str()).collect();
            assert_eq!(shape(&growth_groups(&order, &holder)), want, "{names:?}");
        }
    }

    /// A cycle of holders is headed by its most user-like class, whatever grows most and
    /// whichever comes first; among classes alike, by growth, then by name.
    #[test]
    fn a_cycle_of_holders_is_headed_by_its_most_user_like_class() {
        let all = vec![
            series("Hash", &[10, 5010, 10010]),
            series("Session", &[10, 1010, 2010]),
            series("Symbol", &[10, 3010, 6010]),
        ];
        let holder = |c: &str| {
            let h = match c {
                "Hash" => "Session",
                "Session" => "Hash",
                "Symbol" => "Hash",
                _ => return None,
            };
            Some(h.to_owned())
        };
        let want = vec![(
            "Session".to_owned(),
            vec!["Hash".to_owned(), "Symbol".to_owned()],
        )];
        for order in orders(&all) {
            assert_eq!(shape(&growth_groups(&order, &holder)), want);
        }
        // Core classes only, growing alike: the name decides, not the order.
        let core = vec![
            series("Hash", &[10, 1010, 2010]),
            series("Array", &[10, 1010, 2010]),
        ];
        let holder = |c: &str| match c {
            "Hash" => Some("Array".to_owned()),
            "Array" => Some("Hash".to_owned()),
            _ => None,
        };
        for order in orders(&core) {
            let groups = growth_groups(&order, &holder);
            assert_eq!(
                shape(&groups),
                [("Array".to_owned(), vec!["Hash".to_owned()])]
            );
        }
    }
}
