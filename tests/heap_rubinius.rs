//! Rubinius `RBXHEAPDUMP` reader on dumps built by the test-side encoder
//! (`tests/support/rbx_encoder.rs`): the seed's three histo.rb tables, metaclass resolution,
//! names shared by two classes, anonymous classes, bad input with exact byte offsets, and a
//! round-trip check on random object graphs.

#[path = "support/rbx_encoder.rs"]
mod rbx_encoder;

use crate::common::{fixture, run_leakhunt};
use leakhunt::heap::histogram::Histogram;
use leakhunt::heap::{self, HistogramRead, rubinius};
use rbx_encoder::{ClassRef, CoreNames, Heap, Obj, ObjId, Value, tuple_bytes};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

type FileHeap = Heap<BufWriter<File>>;

fn heap_file(path: &Path, core: CoreNames, tables: bool) -> FileHeap {
    let file = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    Heap::new(file, core, tables).unwrap()
}

fn memory_heap(core: CoreNames, tables: bool) -> Heap<Vec<u8>> {
    Heap::new(Vec::new(), core, tables).unwrap()
}

fn finished_bytes(mut heap: Heap<Vec<u8>>) -> Vec<u8> {
    heap.finish().unwrap();
    heap.into_output().unwrap()
}

fn read_bytes(bytes: &[u8]) -> HistogramRead {
    rubinius::histogram_from_bytes(Path::new("t.dump"), bytes).unwrap()
}

fn read_error(bytes: &[u8]) -> String {
    rubinius::histogram_from_bytes(Path::new("t.dump"), bytes)
        .expect_err("an error")
        .to_string()
}

fn rows(histogram: &Histogram) -> Vec<(String, i64, i64)> {
    histogram
        .rows
        .iter()
        .map(|r| (r.name.clone(), r.count, r.bytes))
        .collect()
}

fn histo_text(histogram: &Histogram) -> String {
    let mut out = Vec::new();
    histogram.write_histo_rb(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn diff_text(before: &Path, after: &Path) -> String {
    let before = heap::histogram_of(before).unwrap();
    let after = heap::histogram_of(after).unwrap();
    let mut out = Vec::new();
    Histogram::diff(&before.histogram, &after.histogram)
        .write_histo_rb(&mut out, true)
        .unwrap();
    String::from_utf8(out).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The seed's tables (fixtures/rubinius/seed-histo-tables.txt, copied verbatim from the seed).

/// The rows printed under each `$ rbx … histo.rb …` command of the seed, in document order.
fn seed_tables() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(fixture("rubinius/seed-histo-tables.txt")).unwrap();
    let mut tables: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        if line.contains("histo.rb") {
            tables.push(Vec::new());
        } else if !line.trim().is_empty() {
            tables.last_mut().unwrap().push(line.to_owned());
        }
    }
    assert_eq!(tables.iter().map(Vec::len).collect::<Vec<_>>(), [14, 4, 7]);
    tables
}

/// Compares leakhunt's output with a seed table. histo.rb prints `%10d %30s %d`; the seed
/// shows its first table as a Markdown code block (indented 4 spaces, padding intact), so
/// that one must match exactly once the indent is removed. In the two diff tables the
/// document lost part of the count column's padding (`    203110` and `      -4` where
/// `%10d` gives `    203110` and `        -4` after the 4-space indent): every line is
/// compared byte for byte from the count on, which covers the name column's padding.
fn assert_matches_seed(ours: &str, seed: &[String], padding_intact: bool) {
    let ours_lines: Vec<&str> = ours.lines().collect();
    assert_eq!(ours_lines.len(), seed.len(), "ours:\n{ours}");
    for (o, s) in ours_lines.iter().zip(seed) {
        assert_eq!(o.trim_start(), s.trim_start(), "ours:\n{ours}");
        // histo.rb's `%10d ` count column.
        assert_eq!(o.as_bytes().get(10), Some(&b' '), "{o}");
        assert!(o[..10].trim_start().parse::<i64>().is_ok(), "{o}");
    }
    if padding_intact {
        let expected: String = seed.iter().map(|l| format!("{}\n", &l[4..])).collect();
        assert_eq!(ours, expected);
    }
}

/// Splits `total` entries over `count` tuples as evenly as possible (larger ones first).
fn even_split(total: usize, count: usize) -> impl Iterator<Item = usize> {
    let (base, extra) = (total / count, total % count);
    (0..count).map(move |i| base + usize::from(i < extra))
}

/// The classes of the seed's program (leak.rb with ffi-rzmq) on a Rubinius heap.
struct LeakRbClasses {
    message: ObjId,
    msg: ObjId,
    memory_pointer: ObjId,
    pointer: ObjId,
    socket: ObjId,
}

fn leak_rb_classes<W: Write>(heap: &mut Heap<W>) -> LeakRbClasses {
    for namespace in ["Rubinius", "FFI", "ZMQ", "LibZMQ"] {
        heap.define_module(namespace);
    }
    let object = heap.object;
    let message = heap.define_class(Some("ZMQ::Message"), object).id;
    let ffi_struct = heap.define_class(Some("FFI::Struct"), object);
    let msg = heap.define_class(Some("LibZMQ::Msg"), ffi_struct).id;
    let pointer = heap.define_class(Some("FFI::Pointer"), object);
    let memory_pointer = heap.define_class(Some("FFI::MemoryPointer"), pointer).id;
    let socket = heap.define_class(Some("ZMQ::Socket"), object).id;
    LeakRbClasses {
        message,
        msg,
        memory_pointer,
        pointer: pointer.id,
        socket,
    }
}

/// The order in which one message's four objects are written.
#[derive(Clone, Copy)]
enum MessageOrder {
    MessageFirst,
    TableFirst,
}

/// One `ZMQ::Message` (48 bytes) as ffi-rzmq builds it: a `LibZMQ::Msg` struct (40) over an
/// `FFI::MemoryPointer` (40), both held in dynamic ivars, hence a CompactLookupTable (128).
fn write_message<W: Write>(heap: &mut Heap<W>, c: &LeakRbClasses, id: ObjId, order: MessageOrder) {
    let (msg, pointer, table) = (heap.reserve(), heap.reserve(), heap.reserve());
    let ivars = vec![
        ("@struct".to_owned(), Value::Ref(msg)),
        ("@pointer".to_owned(), Value::Ref(pointer)),
    ];
    let mut message = Obj::new(id, c.message, 48).ivars_table(table);
    for (name, value) in &ivars {
        message = message.slot(name, value.clone());
    }
    let table = heap.compact_lookup_table(table, &ivars);
    let msg = Obj::new(msg, c.msg, 40).slot("@pointer", Value::Ref(pointer));
    let pointer = Obj::new(pointer, c.memory_pointer, 40)
        .slot("@address", Value::Fixnum(0x7f00_0000 + i64::from(id) * 64))
        .slot("@size", Value::Fixnum(64))
        .slot("@autorelease", Value::True);
    let records = match order {
        MessageOrder::MessageFirst => [message, table, msg, pointer],
        MessageOrder::TableFirst => [table, message, msg, pointer],
    };
    heap.write_all(&records).unwrap();
}

/// An object of `class` with one dynamic ivar, and its CompactLookupTable.
fn write_with_ivar<W: Write>(heap: &mut Heap<W>, obj: Obj) -> ObjId {
    let table = heap.reserve();
    let ivars = vec![("@owner".to_owned(), Value::Nil)];
    let obj = obj.ivars_table(table).slot("@owner", Value::Nil);
    let table = heap.compact_lookup_table(table, &ivars);
    heap.write_all(&[obj.clone(), table]).unwrap();
    obj.id
}

/// The heap behind the seed's first table: leak.rb holding 168,978 messages in an Array.
///
/// The seed says its output "was edited to include only relevant data". A real dump also
/// holds class and module objects (counted as `Class` and `Module`) and their method and
/// constant tables; this one keeps the class objects (their names are needed) but has no
/// tables and writes the core `Class` and `Module` without a name, so histo.rb — and
/// leakhunt — leave class and module objects out like any instance of an anonymous class,
/// and the table comes out exactly as printed. Every other object belongs to one of the 14
/// classes shown, with the counts and sizes the table implies.
fn write_first_seed_dump(path: &Path) -> Vec<(String, i64, i64)> {
    let mut heap = heap_file(path, CoreNames::Hidden, false);
    let c = leak_rb_classes(&mut heap);
    let string = heap.class_named("String").id;
    let hash = heap.class_named("Hash").id;
    let entry = heap.class_named("Hash::Entry").id;
    let time = heap.class_named("Time").id;
    let access_variable = heap.class_named("Rubinius::AccessVariable").id;

    // `messages`: an Array whose Tuple holds every message.
    const MESSAGES: usize = 168_978;
    let messages: Vec<ObjId> = (0..MESSAGES).map(|_| heap.reserve()).collect();
    let array_and_tuple = heap.array(messages.iter().map(|&m| Value::Ref(m)).collect());
    heap.write_all(&array_and_tuple).unwrap();
    for &m in &messages {
        write_message(&mut heap, &c, m, MessageOrder::MessageFirst);
    }

    // Two sockets on two FFI::Pointers, ten more pointers, five more memory pointers (poller
    // and context buffers), 87 Times: all with one dynamic ivar each.
    let pointers: Vec<ObjId> = (0..12)
        .map(|i| {
            let id = heap.reserve();
            let obj = Obj::new(id, c.pointer, 40).slot("@address", Value::Fixnum(0x1000 * i));
            write_with_ivar(&mut heap, obj)
        })
        .collect();
    for (i, &pointer) in pointers.iter().take(2).enumerate() {
        let id = heap.reserve();
        let obj = Obj::new(id, c.socket, 48)
            .slot("@socket", Value::Ref(pointer))
            .slot("@name", Value::sym(if i == 0 { "REQ" } else { "REP" }));
        write_with_ivar(&mut heap, obj);
    }
    for i in 0..5 {
        let id = heap.reserve();
        let obj = Obj::new(id, c.memory_pointer, 40).slot("@size", Value::Fixnum(4096 + i));
        write_with_ivar(&mut heap, obj);
    }
    for i in 0..87 {
        let id = heap.reserve();
        let obj = Obj::new(id, time, 56)
            .slot("@seconds", Value::Fixnum(1_292_000_000 + i))
            .slot("@is_gmt", Value::False);
        write_with_ivar(&mut heap, obj);
    }

    // 15,615 Strings (72 bytes); the first 13,527 own a ByteArray, the others share one.
    // ByteArrays are 16 + 48 or 16 + 56 bytes: 11,423 × 64 + 2,104 × 72 = 882,560.
    let mut byte_arrays = Vec::new();
    let mut strings = Vec::new();
    for i in 0..15_615 {
        let obj = if i < 13_527 {
            let mut bytes = format!("message {i}").into_bytes();
            bytes.resize(if i < 11_423 { 48 } else { 56 }, 0);
            let [string, byte_array] = heap.string(bytes);
            heap.write(&byte_array).unwrap();
            byte_arrays.push(byte_array.id);
            string
        } else {
            let id = heap.reserve();
            Obj::new(id, string, 72)
                .slot("@data", Value::Ref(byte_arrays[i % 13_527]))
                .slot("@num_bytes", Value::Fixnum(12))
                .slot("@shared", Value::True)
        };
        strings.push(obj.id);
        // 225 strings carry an ivar: 168,978 + 12 + 2 + 5 + 87 + 41 + 225 = 169,350 tables.
        if i < 225 {
            write_with_ivar(&mut heap, obj);
        } else {
            heap.write(&obj).unwrap();
        }
    }

    // 41 Hashes (80 bytes, one ivar each) over 825 Hash::Entry objects (56), 20 or 21 per
    // Hash in an `@entries` Tuple.
    let mut tuples_left = 27_901 - 1;
    let mut entries_left = 739_389 - MESSAGES;
    for (h, size) in even_split(825, 41).enumerate() {
        let (id, entries) = (heap.reserve(), heap.reserve());
        let entry_ids: Vec<ObjId> = (0..size).map(|_| heap.reserve()).collect();
        let obj = Obj::new(id, hash, 80)
            .slot("@entries", Value::Ref(entries))
            .slot("@size", Value::Fixnum(size as i64));
        write_with_ivar(&mut heap, obj);
        let tuple = heap.tuple(entries, entry_ids.iter().map(|&e| Value::Ref(e)).collect());
        heap.write(&tuple).unwrap();
        for (k, &e) in entry_ids.iter().enumerate() {
            let key = strings[(h * 21 + k) % strings.len()];
            let obj = Obj::new(e, entry, 56)
                .slot("@key", Value::Ref(key))
                .slot("@value", Value::Fixnum(k as i64))
                .slot("@key_hash", Value::Fixnum(k as i64 * 31))
                .slot("@next", Value::Nil);
            heap.write(&obj).unwrap();
        }
        tuples_left -= 1;
        entries_left -= size;
    }

    // 787 AccessVariables (80): attr_accessor methods.
    for i in 0..787 {
        let id = heap.reserve();
        let name = format!("attr{}", i % 97);
        let obj = Obj::new(id, access_variable, 80)
            .slot("@ivar_name", Value::Sym(format!("@{name}")))
            .slot("@name", Value::Sym(name))
            .slot(
                "@write",
                if i % 2 == 0 {
                    Value::True
                } else {
                    Value::False
                },
            );
        heap.write(&obj).unwrap();
    }

    // 3,009 more Arrays (56) with their Tuples, then loose Tuples (scopes, literals): all the
    // remaining 27,859 Tuples share the remaining 569,586 entries, so that the Tuple row sums
    // to 27,901 × 16 + 8 × 739,389 = 6,361,528 bytes.
    for (t, size) in even_split(entries_left, tuples_left).enumerate() {
        let mut entries = vec![Value::Nil; size];
        entries[0] = Value::Ref(strings[t % strings.len()]);
        if t < 3_009 {
            let array_and_tuple = heap.array(entries);
            heap.write_all(&array_and_tuple).unwrap();
        } else {
            let id = heap.reserve();
            let tuple = heap.tuple(id, entries);
            heap.write(&tuple).unwrap();
        }
    }
    heap.finish().unwrap();
    heap.intended_histogram()
}

#[test]
fn first_seed_table_is_reproduced_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heap.dump");
    let intended = write_first_seed_dump(&path);
    let read = heap::histogram_of(&path).unwrap();
    assert_eq!(rows(&read.histogram), intended);
    let seed = &seed_tables()[0];
    assert_matches_seed(&histo_text(&read.histogram), seed, true);
    // Class and module objects are instances of the unnamed core Class and Module.
    let anonymous = read.diagnostics.count_of("objects of anonymous classes");
    // 4 core classes, 4 modules, 6 leak.rb classes, 9 other classes, each with a metaclass.
    assert_eq!(anonymous, 2 * (4 + 4 + 6 + 9), "{:?}", read.diagnostics);
    assert_eq!(read.diagnostics.kinds.len(), 1, "{:?}", read.diagnostics);
    let (code, stdout, stderr) = run_leakhunt(["histo".as_ref(), path.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, histo_text(&read.histogram));
    assert!(
        stderr.contains("46 objects of anonymous classes, first at byte offset"),
        "{stderr}"
    );
    assert_eq!(
        read.objects,
        169_350
            + 168_983
            + 2 * 168_978
            + 27_901
            + 15_615
            + 13_527
            + 3_010
            + 825
            + 787
            + 87
            + 41
            + 12
            + 2
    );
}

/// A little shared heap content, identical in every dump it is written to.
fn write_base_world<W: Write>(heap: &mut Heap<W>) {
    let mut strings = Vec::new();
    for i in 0..20 {
        let string_and_bytes = heap.string(format!("constant {i:>7}").into_bytes());
        strings.push(Value::Ref(string_and_bytes[0].id));
        heap.write_all(&string_and_bytes).unwrap();
    }
    for chunk in strings.chunks(7) {
        let array_and_tuple = heap.array(chunk.to_vec());
        heap.write_all(&array_and_tuple).unwrap();
    }
}

/// leak.rb after `messages` received `count` messages, on a complete heap (named core classes,
/// method and constant tables). Each message's CompactLookupTable is written before it.
pub(crate) fn write_messages_dump(path: &Path, count: usize) {
    let mut heap = heap_file(path, CoreNames::Real, true);
    let c = leak_rb_classes(&mut heap);
    let messages: Vec<ObjId> = (0..count).map(|_| heap.reserve()).collect();
    for &m in &messages {
        write_message(&mut heap, &c, m, MessageOrder::TableFirst);
    }
    let array_and_tuple = heap.array(messages.iter().map(|&m| Value::Ref(m)).collect());
    heap.write_all(&array_and_tuple).unwrap();
    write_base_world(&mut heap);
    heap.finish().unwrap();
}

#[test]
fn second_seed_table_is_reproduced() {
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = (dir.path().join("heap.dump"), dir.path().join("heap2.dump"));
    write_messages_dump(&before, 1_000);
    write_messages_dump(&after, 1_000 + 203_110);
    let text = diff_text(&before, &after);
    assert_matches_seed(&text, &seed_tables()[1], false);
    let (code, stdout, stderr) =
        run_leakhunt(["histo".as_ref(), before.as_os_str(), after.as_os_str()]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(stdout, text);
}

/// A heap holding `digests` Digest::SHA256 objects (48 bytes), each with a singleton class
/// (a Class of 112 bytes with a MethodTable and a LookupTable of 48 bytes, each with a 16-bin
/// `@values` Tuple of 144 bytes) and a Digest::SHA2 (40), plus Arrays (56) whose Tuples have
/// `extra_arrays` entries. Each digest's records are written as: the digest, the singleton's
/// method table, the SHA2, the constant table, the singleton class, the two Tuples.
fn write_digests_dump(path: &Path, digests: usize, extra_arrays: &[usize]) {
    let mut heap = heap_file(path, CoreNames::Real, true);
    heap.define_module("Digest");
    let object = heap.object;
    let base = heap.define_class(Some("Digest::Base"), object);
    let sha256 = heap.define_class(Some("Digest::SHA256"), base);
    let sha2 = heap.define_class(Some("Digest::SHA2"), base).id;
    let mut ids = Vec::new();
    for _ in 0..digests {
        let (digest, inner) = (heap.reserve(), heap.reserve());
        let singleton = heap.singleton_class(digest, sha256);
        let parts = heap.take_class(singleton);
        let (method_table, method_values) = parts.method_table.unwrap();
        let (constant_table, constant_values) = parts.constant_table.unwrap();
        let records = [
            Obj::new(digest, singleton, 48).slot("@sha2", Value::Ref(inner)),
            method_table,
            Obj::new(inner, sha2, 40).slot("@bitlen", Value::Fixnum(256)),
            constant_table,
            parts.class,
            method_values,
            constant_values,
        ];
        heap.write_all(&records).unwrap();
        ids.push(digest);
    }
    for &size in extra_arrays {
        let entries = (0..size).map(|i| Value::Ref(ids[i % ids.len()])).collect();
        let array_and_tuple = heap.array(entries);
        heap.write_all(&array_and_tuple).unwrap();
    }
    write_base_world(&mut heap);
    heap.finish().unwrap();
}

#[test]
fn third_seed_table_is_reproduced_with_its_five_way_tie() {
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = (dir.path().join("heap3.dump"), dir.path().join("heap4.dump"));
    // 90 digests and 4 Arrays gone: Tuples go down by 90 × 2 + 4 = 184, by
    // 180 × 144 + (816 × 3 + 824) = 29,192 bytes.
    write_digests_dump(&before, 100, &[100, 100, 100, 101]);
    write_digests_dump(&after, 10, &[]);
    assert_eq!(tuple_bytes(100), 816);
    let text = diff_text(&before, &after);
    assert_matches_seed(&text, &seed_tables()[2], false);
    // No class vanished entirely, so histo.rb's own mode prints the same.
    for extra in [None, Some("--histo-rb")] {
        let mut args = vec!["histo".as_ref(), before.as_os_str(), after.as_os_str()];
        args.extend(extra.map(std::ffi::OsStr::new));
        let (code, stdout, stderr) = run_leakhunt(args);
        assert_eq!((code, stderr.as_str()), (0, ""));
        assert_eq!(stdout, text);
    }
}

// ---------------------------------------------------------------------------------------------
// Class resolution.

fn row(name: &str, count: i64, bytes: i64) -> (String, i64, i64) {
    (name.to_owned(), count, bytes)
}

#[test]
fn an_object_whose_class_is_a_metaclass_counts_under_its_real_class() {
    let mut heap = memory_heap(CoreNames::Real, false);
    let object = heap.object;
    let foo_class = heap.define_class(Some("Foo"), object);
    let (plain, special) = (heap.reserve(), heap.reserve());
    let singleton = heap.singleton_class(special, foo_class);
    heap.write(&Obj::new(special, singleton, 24)).unwrap();
    heap.write(&Obj::new(plain, foo_class.id, 32)).unwrap();
    let read = read_bytes(&finished_bytes(heap));
    // Class objects: BasicObject, Object, Module, Class, Foo and their 5 metaclasses (whose own
    // class is Class), plus the singleton: 11 instances of Class at 112 bytes.
    assert_eq!(
        rows(&read.histogram),
        vec![row("Foo", 2, 56), row("Class", 11, 11 * 112)]
    );
    assert!(read.diagnostics.is_empty(), "{:?}", read.diagnostics);
}

#[test]
fn modules_count_as_module_and_tables_under_their_classes() {
    let mut heap = memory_heap(CoreNames::Real, true);
    heap.define_module("Kernel");
    let read = read_bytes(&finished_bytes(heap));
    let got = rows(&read.histogram);
    // 4 core classes + the 4 table classes (MethodTable, Tuple, LookupTable are defined on the
    // way) = 7 classes, each with a metaclass; 1 module whose metaclass counts as a Class.
    // Every class-like object (7 × 2 + 2 = 16) has a method table and a constant table.
    let classes = 7 * 2 + 1;
    let expected = [
        row("Rubinius::MethodTable", 16, 16 * 48),
        row("Rubinius::Tuple", 32, 32 * 144),
        row("Rubinius::LookupTable", 16, 16 * 48),
        row("Class", classes, classes * 112),
        row("Module", 1, 112),
    ];
    for e in &expected {
        assert!(got.contains(e), "{e:?} not in {got:?}");
    }
    assert_eq!(got.len(), expected.len(), "{got:?}");
}

/// A singleton whose `@superclass` is an included module (`extend Comparable`): histo.rb
/// passes over it because it is not a kind of Class, and reaches Foo. Needs the footer.
fn extended_object_heap() -> Heap<Vec<u8>> {
    let mut heap = memory_heap(CoreNames::Real, false);
    let (object, module) = (heap.object, heap.module);
    let included_module = heap
        .define_class(Some("Rubinius::IncludedModule"), module)
        .id;
    let comparable = heap.define_module("Comparable");
    let foo_class = heap.define_class(Some("Foo"), object);
    let (extended, singleton, iclass) = (heap.reserve(), heap.reserve(), heap.reserve());
    let class = heap.class.id;
    let records = [
        Obj::new(extended, singleton, 40),
        Obj::new(singleton, class, 112)
            .slot("@module_name", Value::Nil)
            .slot("@superclass", Value::Ref(iclass))
            .slot("@attached_instance", Value::Ref(extended)),
        Obj::new(iclass, included_module, 64)
            .slot("@module_name", Value::sym("Comparable"))
            .slot("@superclass", Value::Ref(foo_class.id))
            .slot("@module", Value::Ref(comparable)),
    ];
    heap.write_all(&records).unwrap();
    heap
}

#[test]
fn a_metaclass_chain_skips_included_modules() {
    let heap = extended_object_heap();
    let read = read_bytes(&finished_bytes(heap));
    let got = rows(&read.histogram);
    assert_eq!(got[0], row("Foo", 1, 40));
    // 6 classes (4 core, IncludedModule, Foo) with their metaclasses, Comparable's metaclass
    // and the singleton.
    assert_eq!(got[1], row("Class", 6 * 2 + 1 + 1, 14 * 112));
    assert_eq!(got[2], row("Rubinius::IncludedModule", 1, 64));
    assert_eq!(got[3], row("Module", 1, 112));
    assert_eq!(got.len(), 4);
}

#[test]
fn without_the_footer_metaclass_instances_are_reported_not_guessed() {
    let mut heap = extended_object_heap();
    heap.flush_classes().unwrap();
    let bytes = heap.into_output().unwrap();
    let read = read_bytes(&bytes);
    let got = rows(&read.histogram);
    // Objects whose direct class is not a metaclass need no footer: the 8 metaclasses (their
    // own class is Class itself) and the IncludedModule still count.
    assert_eq!(got[0], row("Class", 8, 8 * 112));
    assert_eq!(got[1], row("Rubinius::IncludedModule", 1, 64));
    assert_eq!(got.len(), 2);
    let lines = read.diagnostics.lines();
    assert_eq!(
        lines[0],
        format!(
            "t.dump: 1 missing footer at byte offset {} (the file ends without its '-' footer \
             record (the dump is incomplete), so instances of metaclasses cannot be named)",
            bytes.len()
        )
    );
    // The extended object and every class and module object (their direct class is their
    // metaclass): 1 + 6 + 1.
    assert_eq!(
        read.diagnostics
            .count_of("objects whose class could not be resolved"),
        8
    );
    assert!(
        lines[1].contains("without the footer's Class"),
        "{}",
        lines[1]
    );
}

#[test]
fn two_classes_with_one_name_give_two_rows_until_merged_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.dump");
    let mut heap = heap_file(&path, CoreNames::Real, false);
    let object = heap.object;
    let first = heap.define_class(Some("Dup"), object).id;
    let second = heap.define_class(Some("Dup"), object).id;
    for (class, bytes) in [
        (first, 10),
        (second, 20),
        (second, 20),
        (second, 20),
        (first, 10),
    ] {
        let id = heap.reserve();
        heap.write(&Obj::new(id, class, bytes)).unwrap();
    }
    heap.finish().unwrap();
    let read = rubinius::histogram(&path).unwrap();
    assert_eq!(
        histo_text(&read.histogram)
            .lines()
            .filter(|l| l.contains("Dup"))
            .collect::<Vec<_>>(),
        [
            "         3                            Dup 60",
            "         2                            Dup 20"
        ]
    );
    let summary = rubinius::summarize(&path).unwrap();
    assert_eq!(summary.ruby_version.as_deref(), Some("Rubinius"));
    assert!(summary.alloc_sites.is_empty());
    assert_eq!(summary.histogram.rows[0].name, "Dup");
    assert_eq!(
        (
            summary.histogram.rows[0].count,
            summary.histogram.rows[0].bytes
        ),
        (5, 80)
    );
    assert_eq!(summary.objects, read.objects);
}

#[test]
fn instances_of_anonymous_classes_are_left_out_and_counted_in_a_note() {
    let mut heap = memory_heap(CoreNames::Real, false);
    let object = heap.object;
    let anonymous = heap.define_class(None, object).id;
    let named = heap.define_class(Some("Named"), object).id;
    let mut first_anonymous = None;
    for i in 0..5 {
        let id = heap.reserve();
        let at = heap.write(&Obj::new(id, anonymous, 16)).unwrap();
        first_anonymous.get_or_insert(at);
        if i % 2 == 0 {
            let id = heap.reserve();
            heap.write(&Obj::new(id, named, 8)).unwrap();
        }
    }
    let read = read_bytes(&finished_bytes(heap));
    assert_eq!(rows(&read.histogram)[0], row("Named", 3, 24));
    assert_eq!(read.diagnostics.count_of("objects of anonymous classes"), 5);
    assert_eq!(
        read.diagnostics.lines(),
        [format!(
            "t.dump: 5 objects of anonymous classes, first at byte offset {} (their class has a \
             nil @module_name; left out, as histo.rb does)",
            first_anonymous.unwrap()
        )]
    );
}

#[test]
fn forward_and_backward_class_references_resolve_alike() {
    let mut heap = memory_heap(CoreNames::Real, false);
    let object = heap.object;
    let early = heap.define_class(Some("WrittenFirst"), object);
    let late = heap.define_class(Some("WrittenLast"), object);
    // WrittenFirst's class object (and its metaclass) before its instances; WrittenLast's after.
    let early_class = heap.take_class(early.id).into_records();
    let early_meta = heap.take_class(early.meta).into_records();
    heap.write_all(&early_class).unwrap();
    heap.write_all(&early_meta).unwrap();
    for class in [late.id, early.id, late.id] {
        let id = heap.reserve();
        heap.write(&Obj::new(id, class, 8)).unwrap();
    }
    let read = read_bytes(&finished_bytes(heap));
    let got = rows(&read.histogram);
    // 4 core classes and the 2 others, each with its metaclass.
    assert_eq!(got[0], row("Class", 12, 12 * 112));
    assert_eq!(got[1], row("WrittenLast", 2, 16));
    assert_eq!(got[2], row("WrittenFirst", 1, 8));
}

// ---------------------------------------------------------------------------------------------
// Bad input: one line naming the file and the byte offset, what was read before kept.

/// Offsets in [`small_dump`].
struct SmallDump {
    bytes: Vec<u8>,
    /// `o` tags of the three Foo instances.
    instances: [usize; 3],
    footer: usize,
}

impl SmallDump {
    /// Instance 2's first value: `@name`, an inline symbol `s` "second" (15 bytes).
    fn symbol_at(&self) -> usize {
        self.instances[1] + 21
    }

    /// Instance 2's body: `b`, 8 bytes.
    fn body_at(&self) -> usize {
        self.symbol_at() + 15
    }
}

/// The class records first (10: the 4 core classes and Foo, with metaclasses), then three
/// Foo instances of 24 bytes, then the footer.
fn small_dump() -> SmallDump {
    let mut heap = memory_heap(CoreNames::Real, false);
    let object = heap.object;
    let foo_class = heap.define_class(Some("Foo"), object).id;
    let classes = heap.take_all_classes();
    heap.write_all(&classes).unwrap();
    let ids = [heap.reserve(), heap.reserve(), heap.reserve()];
    let records = [
        Obj::new(ids[0], foo_class, 24).slot("@a", Value::Fixnum(1)),
        Obj::new(ids[1], foo_class, 24)
            .slot("@name", Value::sym("second"))
            .body(Value::Bytes(b"abcdefgh".to_vec())),
        Obj::new(ids[2], foo_class, 24).slot("@a", Value::Fixnum(3)),
    ];
    let instances = records.map(|r| heap.write(&r).unwrap() as usize);
    let footer = heap.footer().unwrap() as usize;
    let bytes = heap.into_output().unwrap();
    SmallDump {
        bytes,
        instances,
        footer,
    }
}

const STOPPED: &str = "reading stopped there, the histogram covers the";

/// Reads a damaged [`small_dump`] that lost its footer: the 5 metaclasses still count as Class
/// (their class is Class), the 5 class objects cannot be named, `foos` Foo instances were
/// read, and `first_problem` is the first line of the report.
fn assert_kept(bytes: &[u8], foos: i64, first_problem: String) {
    let read = read_bytes(bytes);
    assert_eq!(
        rows(&read.histogram),
        [row("Class", 5, 560), row("Foo", foos, 24 * foos)]
    );
    let lines = read.diagnostics.lines();
    assert_eq!(lines[0], first_problem);
    assert_eq!(
        read.diagnostics
            .count_of("objects whose class could not be resolved"),
        5,
        "{lines:?}"
    );
}

#[test]
fn the_small_dump_reads_whole() {
    let dump = small_dump();
    assert_eq!(dump.bytes[dump.symbol_at()], b's');
    assert_eq!(dump.bytes[dump.body_at()], b'b');
    assert_eq!(dump.footer + 13, dump.bytes.len());
    let read = read_bytes(&dump.bytes);
    assert_eq!(
        rows(&read.histogram),
        [row("Class", 10, 1120), row("Foo", 3, 72)]
    );
    assert!(read.diagnostics.is_empty());
}

#[test]
fn header_errors_name_offset_zero_or_twelve() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.dump");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        rubinius::histogram(&empty).unwrap_err().to_string(),
        format!(
            "{}: byte offset 0: empty file, expected the RBXHEAPDUMP magic",
            empty.display()
        )
    );
    let mut bytes = small_dump().bytes;
    bytes[10] = b'Q';
    assert_eq!(
        read_error(&bytes),
        "t.dump: byte offset 0: not a Rubinius heap dump: starts with \"RBXHEAPDUMQ\\x00\", \
         expected \"RBXHEAPDUMP\\0\""
    );
    let mut bytes = small_dump().bytes;
    bytes[15] = 2;
    assert_eq!(
        read_error(&bytes),
        "t.dump: byte offset 12: unsupported RBXHEAPDUMP version 2, only version 1 exists"
    );
}

#[test]
fn a_bad_record_tag_keeps_the_records_before_it() {
    let mut dump = small_dump();
    dump.bytes[dump.footer] = b'Q';
    assert_kept(
        &dump.bytes,
        3,
        format!(
            "t.dump: 1 bad record tag at byte offset {} (byte 0x51 ('Q'), expected s, l, o or \
             -; {STOPPED} 13 objects read before it)",
            dump.footer
        ),
    );
}

#[test]
fn nothing_readable_is_an_error() {
    let mut bytes = small_dump().bytes;
    bytes[16] = b'Q';
    assert_eq!(
        read_error(&bytes),
        "t.dump: byte offset 16: bad record tag: byte 0x51 ('Q'), expected s, l, o or -; no \
         object could be counted"
    );
}

#[test]
fn a_bad_value_code_is_located() {
    let mut dump = small_dump();
    let at = dump.symbol_at();
    dump.bytes[at] = b'z';
    assert_kept(
        &dump.bytes,
        1,
        format!(
            "t.dump: 1 bad value code at byte offset {at} (byte 0x7a ('z'), expected one of r x \
                 s f i t b c; {STOPPED} 11 objects read before it)"
        ),
    );
}

#[test]
fn a_length_past_the_end_is_located() {
    let mut dump = small_dump();
    let at = dump.body_at() + 1;
    dump.bytes[at..at + 4].copy_from_slice(&100u32.to_be_bytes());
    let left = dump.bytes.len() - (at + 4);
    assert_kept(
        &dump.bytes,
        1,
        format!(
            "t.dump: 1 length past end of file at byte offset {at} (byte body of 100 bytes \
                 needs at least 100 bytes, only {left} are left; {STOPPED} 11 objects read before it)"
        ),
    );
}

#[test]
fn a_huge_declared_length_is_refused_without_allocating() {
    let mut dump = small_dump();
    let at = dump.symbol_at() + 5;
    dump.bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_kept(
        &dump.bytes,
        1,
        format!(
            "t.dump: 1 length past end of file at byte offset {at} (symbol of 4294967295 bytes \
                 needs at least 4294967295 bytes, more than the whole file ({} bytes); {STOPPED} 11 \
                 objects read before it)",
            dump.bytes.len()
        ),
    );
}

#[test]
fn a_truncated_record_is_located_at_its_start() {
    let dump = small_dump();
    let cut = &dump.bytes[..dump.instances[2] + 10];
    assert_kept(
        cut,
        2,
        format!(
            "t.dump: 1 truncated record at byte offset {} (the 'o' record starting here is cut \
                 off by the end of the file at byte {}; {STOPPED} 12 objects read before it)",
            dump.instances[2],
            cut.len()
        ),
    );
}

#[test]
fn a_missing_footer_is_said() {
    let dump = small_dump();
    assert_kept(
        &dump.bytes[..dump.footer],
        3,
        format!(
            "t.dump: 1 missing footer at byte offset {} (the file ends without its '-' footer \
                 record (the dump is incomplete), so instances of metaclasses cannot be named)",
            dump.footer
        ),
    );
}

#[test]
fn a_redefined_object_id_is_counted_once() {
    let mut dump = small_dump();
    // Instance 1 written again just before the footer.
    let record = dump.bytes[dump.instances[0]..dump.instances[1]].to_vec();
    let layout_len = record.iter().position(|&b| b == b'o').unwrap();
    let record = record[layout_len..].to_vec();
    assert!(record.len() < dump.instances[1] - dump.instances[0] + 1);
    let at = dump.footer;
    dump.bytes.splice(at..at, record.iter().copied());
    let read = read_bytes(&dump.bytes);
    assert_eq!(
        rows(&read.histogram),
        [row("Class", 10, 1120), row("Foo", 3, 72)]
    );
    assert_eq!(
        read.diagnostics.lines(),
        [format!(
            "t.dump: 1 redefined object at byte offset {at} (object id {} was already written; \
             this record is not counted)",
            u32::from_be_bytes(record[1..5].try_into().unwrap())
        )]
    );
}

#[test]
fn gzip_compressed_dumps_read_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.dump.gz");
    let mut gz =
        flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::fast());
    gz.write_all(&small_dump().bytes).unwrap();
    gz.finish().unwrap();
    let read = heap::histogram_of(&path).unwrap();
    assert_eq!(
        rows(&read.histogram),
        [row("Class", 10, 1120), row("Foo", 3, 72)]
    );
}

// ---------------------------------------------------------------------------------------------
// Round trip on random graphs: what the encoder meant to write is what the reader counts.

/// xorshift64*: a small deterministic generator (no new dependency).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const CLASS_NAMES: [&str; 6] = ["Foo", "Bar", "Foo::Bar", "Ünïcödé", "A::B::C", "Foo"];
const SLOT_NAMES: [&str; 6] = ["@a", "@b", "@name", "@module", "@values", "@next"];

fn random_value(rng: &mut Rng, ids: ObjId, depth: usize) -> Value {
    match rng.below(if depth < 2 { 9 } else { 6 }) {
        0 => Value::Ref(rng.below(ids as usize + 10) as ObjId),
        1 => Value::sym(CLASS_NAMES[rng.below(CLASS_NAMES.len())]),
        2 => Value::Fixnum(rng.next() as i64),
        3 => Value::True,
        4 => Value::False,
        5 => Value::Nil,
        6 => Value::Tuple(
            (0..rng.below(5))
                .map(|_| random_value(rng, ids, depth + 1))
                .collect(),
        ),
        7 => Value::Bytes(vec![rng.below(256) as u8; rng.below(24)]),
        _ => Value::Chars(b"chars".to_vec()),
    }
}

/// A random heap, its records written in a random order; returns the dump and the histogram
/// its writer intended.
fn random_dump(seed: u64) -> (Vec<u8>, Vec<(String, i64, i64)>) {
    let mut rng = Rng::new(seed);
    let core = if rng.chance(50) {
        CoreNames::Real
    } else {
        CoreNames::Hidden
    };
    let mut heap = memory_heap(core, rng.chance(50));
    let mut classes: Vec<ClassRef> = vec![heap.object];
    for _ in 0..1 + rng.below(6) {
        let superclass = classes[rng.below(classes.len())];
        let name = (!rng.chance(20)).then(|| CLASS_NAMES[rng.below(CLASS_NAMES.len())]);
        classes.push(heap.define_class(name, superclass));
    }
    for _ in 0..rng.below(3) {
        heap.define_module(CLASS_NAMES[rng.below(CLASS_NAMES.len())]);
    }
    let mut records = Vec::new();
    for _ in 0..rng.below(150) {
        let class = classes[rng.below(classes.len())];
        let id = heap.reserve();
        let direct = if rng.chance(10) {
            heap.singleton_class(id, class)
        } else {
            class.id
        };
        let mut obj = Obj::new(id, direct, rng.below(4096) as u32);
        let mut names: Vec<&str> = SLOT_NAMES.to_vec();
        for _ in 0..rng.below(4) {
            let name = names.swap_remove(rng.below(names.len()));
            obj = obj.slot(name, random_value(&mut rng, id, 0));
        }
        if rng.chance(30) {
            obj = obj.body(if rng.chance(50) {
                Value::Tuple(
                    (0..rng.below(8))
                        .map(|_| random_value(&mut rng, id, 1))
                        .collect(),
                )
            } else {
                Value::Bytes((0..rng.below(40)).map(|i| i as u8).collect())
            });
        }
        if rng.chance(20) {
            let table = heap.reserve();
            obj = obj.ivars_table(table);
            let ivars = obj.slots.clone();
            records.push(heap.compact_lookup_table(table, &ivars));
        }
        records.push(obj);
    }
    records.extend(heap.take_all_classes());
    for i in (1..records.len()).rev() {
        records.swap(i, rng.below(i + 1));
    }
    heap.write_all(&records).unwrap();
    heap.footer().unwrap();
    let intended = heap.intended_histogram();
    (heap.into_output().unwrap(), intended)
}

#[test]
fn random_graphs_round_trip() {
    for seed in 0..300 {
        let (bytes, intended) = random_dump(seed);
        let read = rubinius::histogram_from_bytes(Path::new("random.dump"), &bytes)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(rows(&read.histogram), intended, "seed {seed}");
        assert_eq!(
            read.diagnostics
                .count_of("objects whose class could not be resolved"),
            0,
            "seed {seed}: {:?}",
            read.diagnostics
        );
        assert_eq!(read.objects as i64, read.histogram.total_count());
    }
}

#[test]
fn damaged_dumps_never_panic() {
    let small = small_dump().bytes;
    for len in 0..small.len() {
        let _ = rubinius::histogram_from_bytes(Path::new("cut.dump"), &small[..len]);
    }
    let mut rng = Rng::new(7);
    for seed in 0..40 {
        let (bytes, _) = random_dump(seed);
        for _ in 0..50 {
            let mut damaged = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                let at = 16 + rng.below(damaged.len().saturating_sub(16).max(1));
                if let Some(b) = damaged.get_mut(at) {
                    *b = rng.next() as u8;
                }
            }
            if let Ok(read) = rubinius::histogram_from_bytes(Path::new("x.dump"), &damaged) {
                assert_eq!(read.objects as i64, read.histogram.total_count());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The command line.

#[test]
fn histo_reports_damage_on_stderr_and_exits_2_only_when_nothing_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let dump = small_dump();
    let cut = dir.path().join("cut.dump");
    std::fs::write(&cut, &dump.bytes[..dump.instances[2] + 10]).unwrap();
    let (code, stdout, stderr) = run_leakhunt(["histo".as_ref(), cut.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "         5                          Class 560\n         2                            Foo 48\n"
    );
    let first = stderr.lines().next().unwrap();
    assert!(
        first.contains(&format!(
            "{}: 1 truncated record at byte offset {}",
            cut.display(),
            dump.instances[2]
        )),
        "{stderr}"
    );

    let mut bytes = dump.bytes.clone();
    bytes[16] = b'Q';
    let broken = dir.path().join("broken.dump");
    std::fs::write(&broken, &bytes).unwrap();
    let (code, stdout, stderr) = run_leakhunt(["histo".as_ref(), broken.as_os_str()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: byte offset 16: bad record tag",
            broken.display()
        )),
        "{stderr}"
    );
}

#[test]
fn histo_json_lists_the_rubinius_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.dump");
    std::fs::write(&path, small_dump().bytes).unwrap();
    let (code, stdout, stderr) = run_leakhunt([
        "histo".as_ref(),
        path.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(json["schema"].is_u64(), "{json}");
    let rows: Vec<(String, i64, i64)> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["count"].as_i64().unwrap(),
                r["bytes"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [row("Class", 10, 1120), row("Foo", 3, 72)]);
}
