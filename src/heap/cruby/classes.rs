//! Class names for CRuby dump objects (FORMATS.md §2.5).
//!
//! Stage: parser support. Objects are counted in one pass under a [`LabelKey`] (class address,
//! type, and for IMEMO/DATA/NODE their sub-kind); CLASS/MODULE/ICLASS lines are kept as
//! [`ClassRecord`]s; names are resolved once at the end, because a class line can come before
//! or after its instances.
//!
//! # Labels
//! - A class with a `name` gives that name (2.x: also for singletons, which report their real
//!   class, and for anonymous classes, which report `#<Class:0x…>`).
//! - Else its `real_class_name` (3.1+ singleton classes).
//! - Else, while the class is a singleton or an ICLASS, its `superclass` is followed (at most
//!   [`SUPERCLASS_WALK_LIMIT`] steps, since ICLASSes sit in the chain).
//! - A nameless class that is not a singleton is anonymous: `#<Class:0x00007f…>` (or
//!   `#<Module:…>`), spelled as Ruby's `inspect` spells it. Its named ancestor is *not* used:
//!   instances of `Class.new(Struct)` are not `Struct`s for a leak hunter.
//! - A class address with no record in the dump (partial `since:` dumps) is labelled the same way,
//!   and counted so the command can say why.
//! - Objects of type CLASS or MODULE whose class cannot be named are `Class` / `Module`: a
//!   metaclass's real class is always Class (3.0 writes metaclasses without any name).
//! - IMEMO: `<imemo_type> (IMEMO)` whatever the `class` key says (before 3.2 it holds junk
//!   such as `0x8`). NODE: `<node_type> (NODE)`. ICLASS: `<module> (ICLASS)`.
//!   ZOMBIE: `<class> (ZOMBIE)`. NONE: `NONE (free slot)`.
//! - DATA: the class name, unless that is missing or `Object`; then `<struct> (DATA)`.
//! - **Hidden objects** (no `class` key: internal strings, arrays and hashes): the built-in
//!   class for the type plus ` (hidden)`, e.g. `String (hidden)`, `Hash (hidden)`.

use super::scan::{ObjType, Record};
use super::tables::{FastMap, Interner, fast_map};

/// How many `superclass` steps name resolution follows before giving up.
pub const SUPERCLASS_WALK_LIMIT: usize = 64;

/// `class` value for objects without a `class` key (hidden objects).
pub const NO_CLASS: u64 = u64::MAX;

/// What an object is counted under until names are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelKey {
    /// The `class` address, or [`NO_CLASS`]. Always [`NO_CLASS`] for IMEMO and NODE.
    pub class: u64,
    pub obj_type: ObjType,
    /// Interned IMEMO type, DATA struct name or NODE type (0: none).
    pub detail: u32,
}

impl LabelKey {
    /// The key of an object record; `details` interns the sub-kind.
    pub fn of(rec: &Record<'_>, details: &mut Interner) -> LabelKey {
        let obj_type = rec.obj_type();
        let (class, detail) = match obj_type {
            ObjType::Imemo => (NO_CLASS, rec.imemo_type),
            ObjType::Node => (NO_CLASS, rec.node_type),
            ObjType::Data => (rec.class.unwrap_or(NO_CLASS), rec.struct_name),
            _ => (rec.class.unwrap_or(NO_CLASS), None),
        };
        LabelKey {
            class,
            obj_type,
            detail: detail.map_or(0, |d| details.intern(d)),
        }
    }

    /// The same key with its detail id translated by `map` (local → global interner ids).
    pub fn remapped(self, map: &[u32]) -> LabelKey {
        LabelKey {
            detail: map.get(self.detail as usize).copied().unwrap_or(0),
            ..self
        }
    }
}

/// What a CLASS, MODULE or ICLASS line says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRecord {
    pub address: u64,
    pub obj_type: ObjType,
    pub superclass: Option<u64>,
    /// For an ICLASS: the included module.
    pub class: Option<u64>,
    pub name: Option<Box<[u8]>>,
    pub real_class_name: Option<Box<[u8]>>,
    pub singleton: bool,
}

impl ClassRecord {
    /// `None` unless the record is a CLASS, MODULE or ICLASS line with an address.
    pub fn of(rec: &Record<'_>) -> Option<ClassRecord> {
        let obj_type = rec.obj_type();
        if !obj_type.is_class_like() {
            return None;
        }
        Some(ClassRecord {
            address: rec.address?,
            obj_type,
            superclass: rec.superclass,
            class: rec.class,
            name: rec.name.filter(|n| !n.is_empty()).map(Box::from),
            real_class_name: rec.real_class_name.filter(|n| !n.is_empty()).map(Box::from),
            singleton: rec.singleton,
        })
    }
}

/// How a class address resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassName {
    Named(String),
    /// A class without a name: the label to print.
    Anonymous(String),
    /// No record for this address in the dump.
    Missing(String),
}

impl ClassName {
    pub fn label(&self) -> &str {
        match self {
            ClassName::Named(s) | ClassName::Anonymous(s) | ClassName::Missing(s) => s,
        }
    }

    fn named(&self) -> Option<&str> {
        match self {
            ClassName::Named(s) => Some(s),
            _ => None,
        }
    }
}

/// Every class record of a dump, and the names resolved from them.
#[derive(Debug, Default)]
pub struct ClassTable {
    records: FastMap<u64, ClassRecord>,
    resolved: FastMap<u64, ClassName>,
}

impl ClassTable {
    pub fn new() -> Self {
        ClassTable {
            records: fast_map(),
            resolved: fast_map(),
        }
    }

    pub fn insert(&mut self, rec: ClassRecord) {
        self.records.insert(rec.address, rec);
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn record(&self, address: u64) -> Option<&ClassRecord> {
        self.records.get(&address)
    }

    /// The name of the class at `address` (memoized).
    pub fn resolve(&mut self, address: u64) -> &ClassName {
        if !self.resolved.contains_key(&address) {
            let name = self.walk(address);
            self.resolved.insert(address, name);
        }
        &self.resolved[&address]
    }

    fn walk(&self, address: u64) -> ClassName {
        let mut current = address;
        for _ in 0..SUPERCLASS_WALK_LIMIT {
            let Some(rec) = self.records.get(&current) else {
                return if current == address {
                    ClassName::Missing(anonymous_label(ObjType::Class, address))
                } else {
                    ClassName::Anonymous(anonymous_label(ObjType::Class, address))
                };
            };
            if let Some(n) = rec.name.as_deref().or(rec.real_class_name.as_deref()) {
                return ClassName::Named(String::from_utf8_lossy(n).into_owned());
            }
            match rec.superclass {
                Some(up) if rec.singleton || rec.obj_type == ObjType::Iclass => current = up,
                _ => return ClassName::Anonymous(anonymous_label(rec.obj_type, current)),
            }
        }
        ClassName::Anonymous(anonymous_label(ObjType::Class, address))
    }

    /// What a class object calls itself, for showing it on a path: its `name`, else a
    /// singleton marker or the anonymous label. `None` when no record has that address.
    pub fn own_name(&self, address: u64) -> Option<String> {
        let rec = self.records.get(&address)?;
        if let Some(n) = &rec.name {
            return Some(String::from_utf8_lossy(n).into_owned());
        }
        let anonymous = anonymous_label(rec.obj_type, address);
        Some(if rec.singleton {
            format!("{anonymous} (singleton class)")
        } else {
            anonymous
        })
    }

    /// The histogram label of objects counted under `key` (rules in the module doc).
    pub fn label(&mut self, key: LabelKey, details: &Interner) -> String {
        let detail = String::from_utf8_lossy(details.get(key.detail)).into_owned();
        let ty = key.obj_type;
        match ty {
            ObjType::Imemo | ObjType::Node if detail.is_empty() => return ty.as_str().into(),
            ObjType::Imemo | ObjType::Node => return format!("{detail} ({})", ty.as_str()),
            ObjType::None => return "NONE (free slot)".into(),
            _ => {}
        }
        if key.class == NO_CLASS {
            return match ty {
                ObjType::Data if !detail.is_empty() => format!("{detail} (DATA)"),
                ObjType::Iclass | ObjType::Zombie | ObjType::Moved | ObjType::Unknown => {
                    ty.as_str().into()
                }
                _ => format!("{} (hidden)", ty.builtin_class()),
            };
        }
        let class = self.resolve(key.class).clone();
        match (ty, class.named()) {
            (ObjType::Iclass, Some(n)) => format!("{n} (ICLASS)"),
            (ObjType::Iclass, None) => "ICLASS".into(),
            (ObjType::Zombie, Some(n)) => format!("{n} (ZOMBIE)"),
            (ObjType::Zombie, None) => "ZOMBIE".into(),
            (ObjType::Data, n) if n.is_none_or(|n| n == "Object") && !detail.is_empty() => {
                format!("{detail} (DATA)")
            }
            (ObjType::Class, None) => "Class".into(),
            (ObjType::Module, None) => "Module".into(),
            _ => class.label().to_owned(),
        }
    }

    /// Whether objects under `key` are labelled `#<Class:0x…>` because their class address has
    /// no record in the dump (types labelled otherwise do not count).
    pub fn class_missing(&mut self, key: LabelKey) -> bool {
        let labelled_by_class = match key.obj_type {
            ObjType::Class | ObjType::Module | ObjType::Iclass | ObjType::Zombie => false,
            ObjType::Imemo | ObjType::Node | ObjType::None => false,
            ObjType::Data => key.detail == 0,
            _ => true,
        };
        labelled_by_class
            && key.class != NO_CLASS
            && matches!(self.resolve(key.class), ClassName::Missing(_))
    }
}

/// `#<Class:0x00007f3a2b1c0d08>`, as Ruby's `inspect` writes an anonymous class.
pub fn anonymous_label(obj_type: ObjType, address: u64) -> String {
    let kind = if obj_type == ObjType::Module {
        "Module"
    } else {
        "Class"
    };
    format!("#<{kind}:0x{address:016x}>")
}

#[cfg(test)]
mod tests {
    use super::super::scan::parse_line;
    use super::*;

    fn table(lines: &[&[u8]]) -> ClassTable {
        let mut t = ClassTable::new();
        for l in lines {
            if let Some(r) = ClassRecord::of(&parse_line(l).unwrap()) {
                t.insert(r);
            }
        }
        t
    }

    fn label_of(t: &mut ClassTable, line: &[u8]) -> String {
        let mut details = Interner::new();
        let key = LabelKey::of(&parse_line(line).unwrap(), &mut details);
        t.label(key, &details)
    }

    #[test]
    fn names_singletons_and_anonymous_classes_3_1() {
        let mut t = table(&[
            br#"{"address":"0x10", "type":"CLASS", "class":"0x11", "superclass":"0x12", "name":"Widget"}"#,
            br#"{"address":"0x20", "type":"CLASS", "class":"0x21", "superclass":"0x30", "real_class_name":"Object", "singleton":true}"#,
            br#"{"address":"0x40", "type":"CLASS", "class":"0x41", "superclass":"0x42"}"#,
            br#"{"address":"0x50", "type":"CLASS", "class":"0x51", "superclass":"0x52", "singleton":true}"#,
            br#"{"address":"0x52", "type":"ICLASS", "class":"0x60", "superclass":"0x10"}"#,
            br#"{"address":"0x60", "type":"MODULE", "class":"0x61", "name":"Greeting"}"#,
        ]);
        let obj = |c: &str| format!(r#"{{"address":"0x99", "type":"OBJECT", "class":"{c}"}}"#);
        assert_eq!(label_of(&mut t, obj("0x10").as_bytes()), "Widget");
        assert_eq!(label_of(&mut t, obj("0x20").as_bytes()), "Object");
        assert_eq!(
            label_of(&mut t, obj("0x40").as_bytes()),
            "#<Class:0x0000000000000040>"
        );
        // singleton → ICLASS (extended module) → Widget
        assert_eq!(label_of(&mut t, obj("0x50").as_bytes()), "Widget");
        assert_eq!(
            label_of(
                &mut t,
                br#"{"address":"0x98", "type":"ICLASS", "class":"0x60", "superclass":"0x10"}"#
            ),
            "Greeting (ICLASS)"
        );
        assert_eq!(
            label_of(&mut t, obj("0x77").as_bytes()),
            "#<Class:0x0000000000000077>"
        );
        let mut details = Interner::new();
        let missing = LabelKey::of(&parse_line(obj("0x77").as_bytes()).unwrap(), &mut details);
        assert!(t.class_missing(missing));
    }

    #[test]
    fn names_2x_and_3_0_quirks() {
        let mut t = table(&[
            br#"{"address":"0x10", "type":"CLASS", "class":"0x11", "name":"File"}"#,
            br#"{"address":"0x11", "type":"CLASS", "class":"0x12"}"#,
            br##"{"address":"0x20", "type":"CLASS", "class":"0x21", "name":"#<Class:0x00007fb1f80e0400>"}"##,
        ]);
        assert_eq!(
            label_of(
                &mut t,
                br#"{"address":"0x1", "type":"ZOMBIE", "class":"0x10"}"#
            ),
            "File (ZOMBIE)"
        );
        // 3.0: a class object whose metaclass has no name is a Class.
        assert_eq!(
            label_of(
                &mut t,
                br#"{"address":"0x10", "type":"CLASS", "class":"0x11", "name":"File"}"#
            ),
            "Class"
        );
        assert_eq!(
            label_of(
                &mut t,
                br#"{"address":"0x2", "type":"OBJECT", "class":"0x20"}"#
            ),
            "#<Class:0x00007fb1f80e0400>"
        );
    }

    #[test]
    fn imemo_data_and_hidden_objects() {
        let mut t = table(&[
            br#"{"address":"0x10", "type":"CLASS", "class":"0x11", "name":"Object"}"#,
            br#"{"address":"0x20", "type":"CLASS", "class":"0x21", "name":"FFI::Pointer"}"#,
        ]);
        let cases: [(&[u8], &str); 8] = [
            (
                br#"{"address":"0x1", "type":"IMEMO", "class":"0x8", "imemo_type":"cref"}"#,
                "cref (IMEMO)",
            ),
            (
                br#"{"address":"0x1", "type":"IMEMO", "imemo_type":"callcache"}"#,
                "callcache (IMEMO)",
            ),
            (br#"{"address":"0x1", "type":"IMEMO"}"#, "IMEMO"),
            (
                br#"{"address":"0x1", "type":"DATA", "class":"0x10", "struct":"mutex"}"#,
                "mutex (DATA)",
            ),
            (
                br#"{"address":"0x1", "type":"DATA", "class":"0x20", "struct":"ffi_pointer"}"#,
                "FFI::Pointer",
            ),
            (
                br#"{"address":"0x1", "type":"HASH", "size":3}"#,
                "Hash (hidden)",
            ),
            (
                br#"{"address":"0x1", "type":"NODE", "node_type":"NODE_SCOPE"}"#,
                "NODE_SCOPE (NODE)",
            ),
            (br#"{"address":"0x1", "type":"NONE"}"#, "NONE (free slot)"),
        ];
        for (line, want) in cases {
            assert_eq!(label_of(&mut t, line), want);
        }
    }

    #[test]
    fn superclass_cycles_stop() {
        let mut t = table(&[
            br#"{"address":"0x1", "type":"CLASS", "class":"0x9", "superclass":"0x2", "singleton":true}"#,
            br#"{"address":"0x2", "type":"CLASS", "class":"0x9", "superclass":"0x1", "singleton":true}"#,
        ]);
        assert_eq!(
            t.resolve(1),
            &ClassName::Anonymous("#<Class:0x0000000000000001>".into())
        );
    }
}
