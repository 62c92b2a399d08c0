//! Benchmark of the Rubinius heap-dump histogram (`leakhunt histo` on an `RBXHEAPDUMP` file).
//!
//! Writes a large dump with the test-side encoder (leak.rb's heap: ZMQ messages with their
//! structs, memory pointers and CompactLookupTables, Strings with ByteArrays, Arrays with
//! Tuples), then, in the same invocation and on the same file, times `wc -l` as the baseline
//! and the histogram in a child process (so its peak RSS is its own), and prints MB/s, the
//! ratio to `wc -l` and the peak RSS. Not a test: nothing is asserted.
//!
//! `cargo bench --bench rubinius` (size with `LEAKHUNT_BENCH_MB`, default 320; the file goes
//! to `LEAKHUNT_BENCH_DIR` or a temporary directory and is deleted afterwards).

#[path = "../tests/support/rbx_encoder.rs"]
mod rbx_encoder;
mod support;

use rbx_encoder::{CoreNames, Heap, Obj, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const READ_FLAG: &str = "--read-histogram";
const RUNS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == READ_FLAG) {
        read_histogram(Path::new(&args[i + 1]));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("rubinius bench: run it with `cargo bench --bench rubinius`");
        return;
    }
    let megabytes: u64 = std::env::var("LEAKHUNT_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(320);
    let dir = match std::env::var_os("LEAKHUNT_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("a scratch directory");
    let path = dir.path().join("leak.rbx.dump");

    let started = Instant::now();
    let objects = write_dump(&path, megabytes << 20);
    let size = std::fs::metadata(&path).expect("dump written").len();
    println!(
        "generated {} ({:.1} MB, {objects} objects) in {:.1} s",
        path.display(),
        support::mib(size),
        started.elapsed().as_secs_f64()
    );

    let wc = support::wc_l(&path, RUNS);
    let mut rss = String::new();
    let histo = support::best_of(RUNS, || {
        let exe = std::env::current_exe().expect("own path");
        let out = Command::new(exe)
            .arg(READ_FLAG)
            .arg(&path)
            .output()
            .expect("child");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        rss = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    });
    println!(
        "wc -l:            {:>8.3} s  {:>8.0} MB/s",
        wc.as_secs_f64(),
        support::mib(size) / wc.as_secs_f64()
    );
    println!(
        "rubinius histo:   {:>8.3} s  {:>8.0} MB/s  ({:.2}× the time of wc -l)",
        histo.as_secs_f64(),
        support::mib(size) / histo.as_secs_f64(),
        histo.as_secs_f64() / wc.as_secs_f64()
    );
    println!("histogram child:  {rss}");
}

/// The child: reads the histogram as `rubinius::histogram` does (map the file, one pass) and
/// prints its peak RSS (`VmHWM`) and, with the file still mapped, how much of the resident
/// memory is the mapped dump (file-backed, reclaimable) and how much the reader's own.
fn read_histogram(path: &Path) {
    let input = leakhunt::source::Input::open(path).expect("open dump");
    let read = leakhunt::heap::rubinius::histogram_from_bytes(path, &input).expect("histogram");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_owned())
            .unwrap_or_else(|| "?".to_owned())
    };
    println!(
        "{} rows, {} objects; peak RSS {} = mapped dump {} + anonymous {}",
        read.histogram.rows.len(),
        read.objects,
        field("VmHWM:"),
        field("RssFile:"),
        field("RssAnon:")
    );
}

/// Writes leak.rb's heap until the file reaches `target` bytes; returns the object count.
fn write_dump(path: &Path, target: u64) -> u64 {
    let file = BufWriter::with_capacity(1 << 20, File::create(path).expect("create dump"));
    let mut heap = Heap::new(file, CoreNames::Real, true)
        .expect("header")
        .without_truth();
    let object = heap.object;
    for namespace in ["Rubinius", "FFI", "ZMQ", "LibZMQ"] {
        heap.define_module(namespace);
    }
    let message = heap.define_class(Some("ZMQ::Message"), object).id;
    let msg = heap.define_class(Some("LibZMQ::Msg"), object).id;
    let pointer = heap.define_class(Some("FFI::Pointer"), object);
    let memory_pointer = heap.define_class(Some("FFI::MemoryPointer"), pointer).id;
    let mut objects = 0u64;
    let mut round = 0u64;
    while heap.enc.position() < target {
        let (m, s, p, table) = (
            heap.reserve(),
            heap.reserve(),
            heap.reserve(),
            heap.reserve(),
        );
        let ivars = vec![
            ("@struct".to_owned(), Value::Ref(s)),
            ("@pointer".to_owned(), Value::Ref(p)),
        ];
        let records = [
            Obj::new(m, message, 48)
                .ivars_table(table)
                .slot("@struct", Value::Ref(s))
                .slot("@pointer", Value::Ref(p)),
            heap.compact_lookup_table(table, &ivars),
            Obj::new(s, msg, 40).slot("@pointer", Value::Ref(p)),
            Obj::new(p, memory_pointer, 40)
                .slot("@address", Value::Fixnum(0x7f00_0000 + round as i64 * 64))
                .slot("@size", Value::Fixnum(1024))
                .slot("@autorelease", Value::True),
        ];
        heap.write_all(&records).expect("write");
        objects += 4;
        if round % 4 == 0 {
            let mut text = format!("message number {round}").into_bytes();
            text.resize(64, 0);
            let string_and_bytes = heap.string(text);
            heap.write_all(&string_and_bytes).expect("write");
            objects += 2;
        }
        if round % 8 == 0 {
            let entries = (0..20)
                .map(|i| Value::Ref(m.saturating_sub(i * 4)))
                .collect();
            let array_and_tuple = heap.array(entries);
            heap.write_all(&array_and_tuple).expect("write");
            objects += 2;
        }
        round += 1;
    }
    heap.finish().expect("footer");
    heap.into_output().expect("flush").flush().expect("flush");
    objects
}
