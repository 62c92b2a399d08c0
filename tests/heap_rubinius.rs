//! Rubinius `RBXHEAPDUMP` reader on dumps built by the test-side encoder
//! (`tests/support/rbx_encoder.rs`): the seed's three histo.rb tables, metaclass resolution,
//! names shared by two classes, anonymous classes, bad input with exact byte offsets, and a
//! round-trip check on random object graphs.

#[path = "support/rbx_encoder.rs"]
mod rbx_encoder;

use crate::common::fixture;
use leakhunt::diag::Position;
use leakhunt::heap::histogram::Histogram;
use leakhunt::heap::{self, HistogramRead, rubinius};
use rbx_encoder::{
    COMPACT_LOOKUP_TABLE_BYTES, ClassRef, CoreNames, Heap, ObjId, Obj, Value, tuple_bytes,
};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

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
    let array = heap.class_named("Array").id;
    let string = heap.class_named("String").id;
    let hash = heap.class_named("Hash").id;
    let entry = heap.class_named("Hash::Entry").id;
    let time = heap.class_named("Time").id;
    let access_variable = heap.class_named("Rubinius::AccessVariable").id;

    // `messages`: an Array whose Tuple holds every message.
    const MESSAGES: usize = 168_978;
    let messages: Vec<ObjId> = (0..MESSAGES).map(|_| heap.reserve()).collect();
    let (messages_array, messages_tuple) = (heap.reserve(), heap.reserve());
    let array_obj = Obj::new(messages_array, array, 56)
        .slot("@tuple", Value::Ref(messages_tuple))
        .slot("@total", Value::Fixnum(MESSAGES as i64))
        .slot("@start", Value::Fixnum(0));
    let tuple = heap.tuple(messages_tuple, messages.iter().map(|&m| Value::Ref(m)).collect());
    heap.write_all(&[array_obj, tuple]).unwrap();
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
        let id = heap.reserve();
        let data = if i < 13_527 {
            let ba = heap.reserve();
            let len = if i < 11_423 { 48 } else { 56 };
            let mut bytes = format!("message {i}").into_bytes();
            bytes.resize(len, 0);
            let ba_obj = heap.byte_array(ba, bytes);
            heap.write(&ba_obj).unwrap();
            byte_arrays.push(ba);
            ba
        } else {
            byte_arrays[i % 13_527]
        };
        let obj = Obj::new(id, string, 72)
            .slot("@data", Value::Ref(data))
            .slot("@num_bytes", Value::Fixnum(12))
            .slot("@shared", if i < 13_527 { Value::Nil } else { Value::True });
        // 225 strings carry an ivar: 168,978 + 12 + 2 + 5 + 87 + 41 + 225 = 169,350 tables.
        if i < 225 {
            write_with_ivar(&mut heap, obj);
        } else {
            heap.write(&obj).unwrap();
        }
        strings.push(id);
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
            .slot("@write", if i % 2 == 0 { Value::True } else { Value::False });
        heap.write(&obj).unwrap();
    }

    // 3,009 more Arrays (56) with their Tuples, then loose Tuples (scopes, literals): all the
    // remaining 27,859 Tuples share the remaining 569,586 entries, so that the Tuple row sums
    // to 27,901 × 16 + 8 × 739,389 = 6,361,528 bytes.
    for (t, size) in even_split(entries_left, tuples_left).enumerate() {
        let tuple_id = heap.reserve();
        let mut entries = vec![Value::Nil; size];
        entries[0] = Value::Ref(strings[t % strings.len()]);
        let tuple = heap.tuple(tuple_id, entries);
        if t < 3_009 {
            let id = heap.reserve();
            let obj = Obj::new(id, array, 56)
                .slot("@tuple", Value::Ref(tuple_id))
                .slot("@total", Value::Fixnum(1))
                .slot("@start", Value::Fixnum(0));
            heap.write(&obj).unwrap();
        }
        heap.write(&tuple).unwrap();
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
    assert_eq!(read.objects, 169_350 + 168_983 + 2 * 168_978 + 27_901 + 15_615 + 13_527 + 3_010 + 825 + 787 + 87 + 41 + 12 + 2);
}

/// A little shared heap content, identical in every dump it is written to.
fn write_base_world<W: Write>(heap: &mut Heap<W>) {
    let string = heap.class_named("String").id;
    let array = heap.class_named("Array").id;
    let mut strings = Vec::new();
    for i in 0..20 {
        let (id, data) = (heap.reserve(), heap.reserve());
        let byte_array = heap.byte_array(data, format!("constant {i:>7}").into_bytes());
        let obj = Obj::new(id, string, 72)
            .slot("@data", Value::Ref(data))
            .slot("@num_bytes", Value::Fixnum(16));
        heap.write_all(&[byte_array, obj]).unwrap();
        strings.push(id);
    }
    for chunk in strings.chunks(7) {
        let (id, tuple_id) = (heap.reserve(), heap.reserve());
        let tuple = heap.tuple(tuple_id, chunk.iter().map(|&s| Value::Ref(s)).collect());
        let obj = Obj::new(id, array, 56)
            .slot("@tuple", Value::Ref(tuple_id))
            .slot("@total", Value::Fixnum(chunk.len() as i64));
        heap.write_all(&[obj, tuple]).unwrap();
    }
}

/// leak.rb after `messages` received `count` messages, on a complete heap (named core classes,
/// method and constant tables). Each message's CompactLookupTable is written before it.
fn write_messages_dump(path: &Path, count: usize) {
    let mut heap = heap_file(path, CoreNames::Real, true);
    let c = leak_rb_classes(&mut heap);
    let array = heap.class_named("Array").id;
    let messages: Vec<ObjId> = (0..count).map(|_| heap.reserve()).collect();
    for &m in &messages {
        write_message(&mut heap, &c, m, MessageOrder::TableFirst);
    }
    let (id, tuple_id) = (heap.reserve(), heap.reserve());
    let tuple = heap.tuple(tuple_id, messages.iter().map(|&m| Value::Ref(m)).collect());
    let obj = Obj::new(id, array, 56)
        .slot("@tuple", Value::Ref(tuple_id))
        .slot("@total", Value::Fixnum(count as i64));
    heap.write_all(&[obj, tuple]).unwrap();
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
    let array = heap.class_named("Array").id;
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
        let (id, tuple_id) = (heap.reserve(), heap.reserve());
        let entries = (0..size).map(|i| Value::Ref(ids[i % ids.len()])).collect();
        let tuple = heap.tuple(tuple_id, entries);
        let obj = Obj::new(id, array, 56)
            .slot("@tuple", Value::Ref(tuple_id))
            .slot("@total", Value::Fixnum(size as i64));
        heap.write_all(&[obj, tuple]).unwrap();
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
}
