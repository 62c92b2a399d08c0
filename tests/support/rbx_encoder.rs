//! A writer of Rubinius `RBXHEAPDUMP` version 1 heap dumps, made from the description in
//! FORMATS.md §1.3 (no public dump exists), and a small model of the Rubinius object graph on
//! top of it, used to build test fixtures and benchmark inputs.
//!
//! Two layers:
//! - [`Encoder`]: the byte format. Records `s`/`l`/`o`/`-`, values `r x s f i t b c`, symbols
//!   defined inline (`s`) on first use and referred to (`x`) afterwards, layouts written
//!   lazily right before the first object that needs them, with sparse ids taken from a tree
//!   of slot names (root 0, one child per extra name), slot names in an arbitrary but fixed
//!   order (a hash of the name stands in for the writer's Symbol pointer order), object ids
//!   reserved ahead so records can refer forward.
//! - [`Heap`]: Rubinius' object model. `BasicObject`/`Object`/`Module`/`Class` and their
//!   metaclasses, classes and modules with `@module_name`, `@superclass`, `@method_table` and
//!   `@constant_table` (tables are `Rubinius::MethodTable`/`Rubinius::LookupTable` objects with
//!   a `@values` Tuple), metaclasses with `@attached_instance`, singleton classes, Tuples and
//!   ByteArrays with bodies, and `Rubinius::CompactLookupTable` companions for dynamic ivars.
//!   It remembers, for every object written, the class the writer meant it to be counted
//!   under, so tests can compare a reader's histogram with the intended one.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

pub type ObjId = u32;

/// A slot value (FORMATS.md §1.3, "Value encoding REF").
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Ref(ObjId),
    /// A Symbol, written `s` (defining it) the first time and `x` afterwards.
    Sym(String),
    /// Written as its low 32 bits, as the writer does.
    Fixnum(i64),
    True,
    False,
    Nil,
    /// A Tuple body: `t` n, then n values.
    Tuple(Vec<Value>),
    /// A ByteArray body: `b` n, then n bytes.
    Bytes(Vec<u8>),
    /// A CharArray body (2011 writers only).
    Chars(Vec<u8>),
}

impl Value {
    pub fn sym(s: &str) -> Value {
        Value::Sym(s.to_owned())
    }

    pub fn or_nil(id: Option<ObjId>) -> Value {
        id.map_or(Value::Nil, Value::Ref)
    }
}

/// One object record before encoding.
#[derive(Debug, Clone)]
pub struct Obj {
    pub id: ObjId,
    /// Size in bytes as the writer reports it (header plus body).
    pub bytes: u32,
    /// The direct class (may be a metaclass).
    pub class: ObjId,
    /// The dynamic-ivars table slot: a CompactLookupTable reference or nil.
    pub ivars_table: Value,
    pub slots: Vec<(String, Value)>,
    /// Tuple (`t`) or ByteArray (`b`) contents, written after the slots.
    pub body: Option<Value>,
}

impl Obj {
    pub fn new(id: ObjId, class: ObjId, bytes: u32) -> Obj {
        Obj {
            id,
            bytes,
            class,
            ivars_table: Value::Nil,
            slots: Vec::new(),
            body: None,
        }
    }

    pub fn slot(mut self, name: &str, value: Value) -> Obj {
        self.slots.push((name.to_owned(), value));
        self
    }

    pub fn ivars_table(mut self, table: ObjId) -> Obj {
        self.ivars_table = Value::Ref(table);
        self
    }

    pub fn body(mut self, body: Value) -> Obj {
        self.body = Some(body);
        self
    }
}

/// FNV-1a: a stand-in for the Symbol pointer value the writer sorts slot names by.
fn pointer_order(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The record-level writer.
pub struct Encoder<W: Write> {
    out: W,
    position: u64,
    symbols: HashMap<String, u32>,
    next_symbol: u32,
    /// (parent node, slot name symbol) → child node; a layout's id is its last node.
    layout_tree: HashMap<(u32, u32), u32>,
    next_layout_node: u32,
    layouts_written: HashSet<u32>,
    next_object: ObjId,
}

impl<W: Write> Encoder<W> {
    /// Starts a dump: writes the magic and version 1.
    pub fn new(mut out: W) -> io::Result<Encoder<W>> {
        out.write_all(b"RBXHEAPDUMP\0")?;
        out.write_all(&1u32.to_be_bytes())?;
        Ok(Encoder {
            out,
            position: 16,
            symbols: HashMap::new(),
            next_symbol: 0,
            layout_tree: HashMap::new(),
            next_layout_node: 1,
            layouts_written: HashSet::new(),
            next_object: 0,
        })
    }

    /// Bytes written so far: the offset the next record will start at.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Takes the next object id; the record may be written later (forward references).
    pub fn reserve(&mut self) -> ObjId {
        let id = self.next_object;
        self.next_object += 1;
        id
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.position += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    fn put_u32(&mut self, n: u32) -> io::Result<()> {
        self.put(&n.to_be_bytes())
    }

    /// A top-level `s` record for `name` unless it is already defined; returns its id.
    fn symbol_record(&mut self, name: &str) -> io::Result<u32> {
        if let Some(&id) = self.symbols.get(name) {
            return Ok(id);
        }
        let id = self.new_symbol(name);
        self.put(b"s")?;
        self.put_u32(id)?;
        self.put_u32(name.len() as u32)?;
        self.put(name.as_bytes())?;
        Ok(id)
    }

    fn new_symbol(&mut self, name: &str) -> u32 {
        let id = self.next_symbol;
        self.next_symbol += 1;
        self.symbols.insert(name.to_owned(), id);
        id
    }

    /// The layout id for these (already ordered) names, writing `s` and `l` records if new.
    fn layout(&mut self, names: &[&str]) -> io::Result<u32> {
        let mut syms = Vec::with_capacity(names.len());
        for name in names {
            syms.push(self.symbol_record(name)?);
        }
        let mut node = 0;
        for &sym in &syms {
            node = match self.layout_tree.get(&(node, sym)) {
                Some(&child) => child,
                None => {
                    let child = self.next_layout_node;
                    self.next_layout_node += 1;
                    self.layout_tree.insert((node, sym), child);
                    child
                }
            };
        }
        if self.layouts_written.insert(node) {
            self.put(b"l")?;
            self.put_u32(node)?;
            self.put_u32(syms.len() as u32)?;
            for sym in syms {
                self.put_u32(sym)?;
            }
        }
        Ok(node)
    }

    fn value(&mut self, value: &Value) -> io::Result<()> {
        match value {
            Value::Ref(id) => {
                self.put(b"r")?;
                self.put_u32(*id)
            }
            Value::Sym(name) => match self.symbols.get(name.as_str()) {
                Some(&id) => {
                    self.put(b"x")?;
                    self.put_u32(id)
                }
                None => {
                    let id = self.new_symbol(name);
                    self.put(b"s")?;
                    self.put_u32(id)?;
                    self.put_u32(name.len() as u32)?;
                    self.put(name.as_bytes())
                }
            },
            Value::Fixnum(n) => {
                self.put(b"f")?;
                self.put_u32(*n as u32)
            }
            Value::False => self.put(b"i\x00"),
            Value::True => self.put(b"i\x01"),
            Value::Nil => self.put(b"i\x02"),
            Value::Tuple(entries) => {
                self.put(b"t")?;
                self.put_u32(entries.len() as u32)?;
                for entry in entries {
                    self.value(entry)?;
                }
                Ok(())
            }
            Value::Bytes(bytes) | Value::Chars(bytes) => {
                self.put(if matches!(value, Value::Bytes(_)) {
                    b"b"
                } else {
                    b"c"
                })?;
                self.put_u32(bytes.len() as u32)?;
                self.put(bytes)
            }
        }
    }

    /// Writes one object (and the symbols and layout it needs first); returns the offset of
    /// its `o` tag.
    pub fn object(&mut self, obj: &Obj) -> io::Result<u64> {
        let mut slots: Vec<&(String, Value)> = obj.slots.iter().collect();
        slots.sort_by_key(|(name, _)| pointer_order(name));
        let names: Vec<&str> = slots.iter().map(|(name, _)| name.as_str()).collect();
        let layout = self.layout(&names)?;
        let at = self.position;
        self.put(b"o")?;
        for n in [obj.id, obj.bytes, layout, obj.class] {
            self.put_u32(n)?;
        }
        self.value(&obj.ivars_table)?;
        let count = slots.len() + usize::from(obj.body.is_some());
        self.put(&(count as u16).to_be_bytes())?;
        for (_, value) in slots {
            self.value(value)?;
        }
        if let Some(body) = &obj.body {
            self.value(body)?;
        }
        Ok(at)
    }

    /// The `-` record: ids of Object, Class and Module. Returns its offset.
    pub fn footer(&mut self, object: ObjId, class: ObjId, module: ObjId) -> io::Result<u64> {
        let at = self.position;
        self.put(b"-")?;
        for id in [object, class, module] {
            self.put_u32(id)?;
        }
        Ok(at)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A class or module as the heap model knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassRef {
    pub id: ObjId,
    /// Its metaclass (the class object's direct class).
    pub meta: ObjId,
}

/// Whether the core `Class` and `Module` objects carry their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreNames {
    /// As in a real dump: every class object counts as a `Class`, every module as a `Module`.
    Real,
    /// `Class` and `Module` have a nil `@module_name`, so class and module objects are
    /// instances of anonymous classes and histo.rb leaves them out. Used to reproduce the
    /// seed's first table, which was edited to show only the application's classes.
    Hidden,
}

#[derive(Debug, Clone)]
enum Kind {
    Class {
        superclass: Option<ObjId>,
    },
    Module,
    /// A metaclass: of a class (`superclass` = the superclass' metaclass), of a module
    /// (`superclass` = Module) or a singleton of an ordinary object (`superclass` = its class).
    Meta {
        attached: ObjId,
        superclass: ObjId,
    },
}

#[derive(Debug, Clone)]
struct ClassDef {
    id: ObjId,
    /// The direct class of the class object itself.
    class: ObjId,
    name: Option<String>,
    kind: Kind,
}

/// The records that make up one class object, for writing in a chosen order.
pub struct ClassParts {
    pub class: Obj,
    /// The method table and its `@values` Tuple, when the heap has tables.
    pub method_table: Option<(Obj, Obj)>,
    /// The constant table and its `@values` Tuple, when the heap has tables.
    pub constant_table: Option<(Obj, Obj)>,
}

impl ClassParts {
    /// All records, in the canonical order: tables first, then the class.
    pub fn into_records(self) -> Vec<Obj> {
        let mut out = Vec::new();
        for (table, values) in [self.method_table, self.constant_table]
            .into_iter()
            .flatten()
        {
            out.push(table);
            out.push(values);
        }
        out.push(self.class);
        out
    }
}

/// Sizes used by the model (the seed's tables divide out to these).
pub const CLASS_BYTES: u32 = 112;
pub const TABLE_BYTES: u32 = 48;
pub const ARRAY_BYTES: u32 = 56;
pub const STRING_BYTES: u32 = 72;
pub const TABLE_BINS: usize = 16;
pub const COMPACT_LOOKUP_TABLE_BYTES: u32 = 128;
/// A CompactLookupTable is a Tuple of key/value pairs: 14 entries, 16 + 14 × 8 = 128 bytes.
pub const COMPACT_LOOKUP_TABLE_ENTRIES: usize = 14;

/// Tuple size: a 16-byte header and one word per entry.
pub fn tuple_bytes(entries: usize) -> u32 {
    16 + 8 * entries as u32
}

/// The Rubinius object model over an [`Encoder`].
pub struct Heap<W: Write> {
    pub enc: Encoder<W>,
    pub basic_object: ClassRef,
    pub object: ClassRef,
    pub module: ClassRef,
    pub class: ClassRef,
    tables: bool,
    defs: HashMap<ObjId, ClassDef>,
    pending: Vec<ObjId>,
    by_name: HashMap<String, ClassRef>,
    /// The class each direct class's instances are meant to count under.
    intended: HashMap<ObjId, ObjId>,
    names: HashMap<ObjId, Option<String>>,
    next_class_id: i64,
    record_truth: bool,
    /// (object id, direct class, bytes) of every object written, in file order.
    pub written: Vec<(ObjId, ObjId, u32)>,
}

impl<W: Write> Heap<W> {
    /// Starts a dump with the core classes reserved (their records are written by
    /// [`Heap::flush_classes`]). With `tables`, every class and module gets a method table and
    /// a constant table.
    pub fn new(out: W, core: CoreNames, tables: bool) -> io::Result<Heap<W>> {
        let mut enc = Encoder::new(out)?;
        let mut reserve_pair = || ClassRef {
            id: enc.reserve(),
            meta: enc.reserve(),
        };
        let basic_object = reserve_pair();
        let object = reserve_pair();
        let module = reserve_pair();
        let class = reserve_pair();
        let mut heap = Heap {
            enc,
            basic_object,
            object,
            module,
            class,
            tables,
            defs: HashMap::new(),
            pending: Vec::new(),
            by_name: HashMap::new(),
            intended: HashMap::new(),
            names: HashMap::new(),
            next_class_id: 1,
            record_truth: true,
            written: Vec::new(),
        };
        let core_name = |name: &str| match core {
            CoreNames::Real => Some(name.to_owned()),
            CoreNames::Hidden => None,
        };
        heap.declare_class(basic_object, Some("BasicObject".into()), None);
        heap.declare_class(object, Some("Object".into()), Some(basic_object.id));
        heap.declare_class(module, core_name("Module"), Some(object.id));
        heap.declare_class(class, core_name("Class"), Some(module.id));
        Ok(heap)
    }

    /// Stops remembering every object written (large benchmark inputs).
    pub fn without_truth(mut self) -> Heap<W> {
        self.record_truth = false;
        self
    }

    fn declare_class(&mut self, c: ClassRef, name: Option<String>, superclass: Option<ObjId>) {
        let meta_super = match superclass {
            Some(s) => self.meta_of(s),
            // #<Class:BasicObject> inherits from Class.
            None => self.class.id,
        };
        self.defs.insert(
            c.id,
            ClassDef {
                id: c.id,
                class: c.meta,
                name: name.clone(),
                kind: Kind::Class { superclass },
            },
        );
        self.defs.insert(
            c.meta,
            ClassDef {
                id: c.meta,
                class: self.class.id,
                name: None,
                kind: Kind::Meta {
                    attached: c.id,
                    superclass: meta_super,
                },
            },
        );
        self.pending.extend([c.id, c.meta]);
        self.intended.insert(c.id, c.id);
        self.intended.insert(c.meta, self.class.id);
        self.names.insert(c.id, name.clone());
        self.names.insert(c.meta, None);
        if let Some(name) = name {
            self.by_name.entry(name).or_insert(c);
        }
    }

    fn meta_of(&self, class: ObjId) -> ObjId {
        self.defs.get(&class).map_or(self.class.id, |d| d.class)
    }

    /// A new class (always distinct, even if another class has the same name).
    pub fn define_class(&mut self, name: Option<&str>, superclass: ClassRef) -> ClassRef {
        let c = ClassRef {
            id: self.enc.reserve(),
            meta: self.enc.reserve(),
        };
        self.declare_class(c, name.map(str::to_owned), Some(superclass.id));
        c
    }

    /// The class registered under `name`, defined (as a subclass of Object) on first use.
    pub fn class_named(&mut self, name: &str) -> ClassRef {
        if let Some(&c) = self.by_name.get(name) {
            return c;
        }
        let object = self.object;
        self.define_class(Some(name), object)
    }

    /// A new module; its metaclass inherits from Module.
    pub fn define_module(&mut self, name: &str) -> ObjId {
        let id = self.enc.reserve();
        let meta = self.enc.reserve();
        self.defs.insert(
            id,
            ClassDef {
                id,
                class: meta,
                name: Some(name.to_owned()),
                kind: Kind::Module,
            },
        );
        self.defs.insert(
            meta,
            ClassDef {
                id: meta,
                class: self.class.id,
                name: None,
                kind: Kind::Meta {
                    attached: id,
                    superclass: self.module.id,
                },
            },
        );
        self.pending.extend([id, meta]);
        self.intended.insert(meta, self.module.id);
        self.intended.insert(id, id);
        self.names.insert(id, Some(name.to_owned()));
        id
    }

    /// A singleton class for an object of class `of`: the object's direct class becomes this
    /// metaclass, and it still counts under `of`.
    pub fn singleton_class(&mut self, attached: ObjId, of: ClassRef) -> ObjId {
        let id = self.enc.reserve();
        self.defs.insert(
            id,
            ClassDef {
                id,
                class: self.class.id,
                name: None,
                kind: Kind::Meta {
                    attached,
                    superclass: of.id,
                },
            },
        );
        self.pending.push(id);
        self.intended.insert(id, of.id);
        self.names.insert(id, None);
        id
    }

    pub fn reserve(&mut self) -> ObjId {
        self.enc.reserve()
    }

    /// Writes one object record.
    pub fn write(&mut self, obj: &Obj) -> io::Result<u64> {
        if self.record_truth {
            self.written.push((obj.id, obj.class, obj.bytes));
        }
        self.enc.object(obj)
    }

    pub fn write_all(&mut self, objs: &[Obj]) -> io::Result<()> {
        for obj in objs {
            self.write(obj)?;
        }
        Ok(())
    }

    /// Takes a class, module or metaclass out of the pending list and returns its records.
    pub fn take_class(&mut self, id: ObjId) -> ClassParts {
        self.pending.retain(|&p| p != id);
        let def = self.defs[&id].clone();
        let (method_table, constant_table) = if self.tables {
            (
                Some(self.table("Rubinius::MethodTable")),
                Some(self.table("Rubinius::LookupTable")),
            )
        } else {
            (None, None)
        };
        let class_id = self.next_class_id;
        self.next_class_id += 1;
        let mut class = Obj::new(def.id, def.class, CLASS_BYTES)
            .slot(
                "@module_name",
                def.name.as_deref().map_or(Value::Nil, Value::sym),
            )
            .slot(
                "@method_table",
                Value::or_nil(method_table.as_ref().map(|t| t.0.id)),
            )
            .slot(
                "@constant_table",
                Value::or_nil(constant_table.as_ref().map(|t| t.0.id)),
            )
            .slot("@seen_ivars", Value::Nil);
        class = match def.kind {
            Kind::Class { superclass } => class
                .slot("@superclass", Value::or_nil(superclass))
                .slot("@class_id", Value::Fixnum(class_id)),
            Kind::Module => class.slot("@superclass", Value::Nil),
            Kind::Meta {
                attached,
                superclass,
            } => class
                .slot("@superclass", Value::Ref(superclass))
                .slot("@class_id", Value::Fixnum(class_id))
                .slot("@attached_instance", Value::Ref(attached)),
        };
        ClassParts {
            class,
            method_table,
            constant_table,
        }
    }

    /// A method or constant table with an empty `@values` Tuple of [`TABLE_BINS`] bins.
    fn table(&mut self, class_name: &str) -> (Obj, Obj) {
        let class = self.class_named(class_name).id;
        let tuple = self.class_named("Rubinius::Tuple").id;
        let table = self.reserve();
        let values = self.reserve();
        (
            Obj::new(table, class, TABLE_BYTES)
                .slot("@values", Value::Ref(values))
                .slot("@bins", Value::Fixnum(TABLE_BINS as i64))
                .slot("@entries", Value::Fixnum(0)),
            Obj::new(values, tuple, tuple_bytes(TABLE_BINS))
                .body(Value::Tuple(vec![Value::Nil; TABLE_BINS])),
        )
    }

    /// Writes every class, module and metaclass not written yet, in definition order
    /// (tables may define more classes on the way; they are written too).
    pub fn flush_classes(&mut self) -> io::Result<()> {
        while let Some(&id) = self.pending.first() {
            let records = self.take_class(id).into_records();
            self.write_all(&records)?;
        }
        Ok(())
    }

    /// A Tuple of `entries`, sized 16 + 8 × n.
    pub fn tuple(&mut self, id: ObjId, entries: Vec<Value>) -> Obj {
        let class = self.class_named("Rubinius::Tuple").id;
        Obj::new(id, class, tuple_bytes(entries.len())).body(Value::Tuple(entries))
    }

    /// A ByteArray holding `data`, sized 16 + its length.
    pub fn byte_array(&mut self, id: ObjId, data: Vec<u8>) -> Obj {
        let class = self.class_named("Rubinius::ByteArray").id;
        Obj::new(id, class, 16 + data.len() as u32).body(Value::Bytes(data))
    }

    /// An Array (56 bytes) and the Tuple holding its `entries`: `[array, tuple]`.
    pub fn array(&mut self, entries: Vec<Value>) -> [Obj; 2] {
        let class = self.class_named("Array").id;
        let (id, tuple_id) = (self.reserve(), self.reserve());
        let total = entries.len() as i64;
        let tuple = self.tuple(tuple_id, entries);
        let array = Obj::new(id, class, ARRAY_BYTES)
            .slot("@tuple", Value::Ref(tuple_id))
            .slot("@total", Value::Fixnum(total))
            .slot("@start", Value::Fixnum(0));
        [array, tuple]
    }

    /// A String (72 bytes) and the ByteArray holding its `data`: `[string, byte array]`.
    pub fn string(&mut self, data: Vec<u8>) -> [Obj; 2] {
        let class = self.class_named("String").id;
        let (id, data_id) = (self.reserve(), self.reserve());
        let num_bytes = data.iter().position(|&b| b == 0).unwrap_or(data.len()) as i64;
        let byte_array = self.byte_array(data_id, data);
        let string = Obj::new(id, class, STRING_BYTES)
            .slot("@data", Value::Ref(data_id))
            .slot("@num_bytes", Value::Fixnum(num_bytes))
            .slot("@shared", Value::Nil);
        [string, byte_array]
    }

    /// The CompactLookupTable that holds an object's dynamic ivars (key/value pairs).
    pub fn compact_lookup_table(&mut self, id: ObjId, ivars: &[(String, Value)]) -> Obj {
        let class = self.class_named("Rubinius::CompactLookupTable").id;
        let mut entries = Vec::with_capacity(COMPACT_LOOKUP_TABLE_ENTRIES);
        for (name, value) in ivars.iter().take(COMPACT_LOOKUP_TABLE_ENTRIES / 2) {
            entries.push(Value::sym(name));
            entries.push(value.clone());
        }
        entries.resize(COMPACT_LOOKUP_TABLE_ENTRIES, Value::Nil);
        Obj::new(id, class, COMPACT_LOOKUP_TABLE_BYTES).body(Value::Tuple(entries))
    }

    /// Takes every class not written yet (and the tables they bring) as records, for writing
    /// in an order of the caller's choosing.
    pub fn take_all_classes(&mut self) -> Vec<Obj> {
        let mut out = Vec::new();
        while let Some(&id) = self.pending.first() {
            out.extend(self.take_class(id).into_records());
        }
        out
    }

    /// Writes the pending classes and the footer, and flushes the output.
    pub fn finish(&mut self) -> io::Result<()> {
        self.flush_classes()?;
        self.footer()?;
        self.enc.out.flush()
    }

    /// The `-` record with this heap's Object, Class and Module.
    pub fn footer(&mut self) -> io::Result<u64> {
        self.enc
            .footer(self.object.id, self.class.id, self.module.id)
    }

    /// The output, once finished.
    pub fn into_output(self) -> io::Result<W> {
        self.enc.finish()
    }

    /// The class an object of direct class `direct` is meant to be counted under.
    pub fn intended_class(&self, direct: ObjId) -> Option<ObjId> {
        self.intended.get(&direct).copied()
    }

    pub fn name_of(&self, class: ObjId) -> Option<&str> {
        self.names.get(&class).and_then(|n| n.as_deref())
    }

    /// The histogram the writer intended, histo.rb's single-file semantics: rows keyed by
    /// class object in first-seen order, anonymous classes left out. (name, count, bytes).
    pub fn intended_histogram(&self) -> Vec<(String, i64, i64)> {
        let mut rows: Vec<(String, i64, i64)> = Vec::new();
        let mut row_of: HashMap<ObjId, usize> = HashMap::new();
        for &(_, direct, bytes) in &self.written {
            let Some(class) = self.intended_class(direct) else {
                continue;
            };
            let Some(name) = self.name_of(class) else {
                continue;
            };
            let index = *row_of.entry(class).or_insert_with(|| {
                rows.push((name.to_owned(), 0, 0));
                rows.len() - 1
            });
            rows[index].1 += 1;
            rows[index].2 += i64::from(bytes);
        }
        rows
    }
}
