//! Writes a macOS `leaks` report in the 2.0 layout of the seed document (Mac OS X 10.6.5,
//! `MallocStackLogging=1 leaks PID`): header, the two summary lines, then one `Leak:` block
//! per leak with an eight-line hex dump, `...` and a one-line `Call stack:` like the seed's.
//! Used by the `leaks_report` benchmark (at the seed's scale, 171,502 leaks) and by the
//! memory test in `tests/native_leaks.rs` (small).

use std::io::{self, Write};

/// Bytes per leaked block, as in the seed (`size=1536`).
pub const BLOCK_SIZE: u64 = 1536;

/// The seed's leak count.
pub const SEED_LEAKS: u64 = 171_502;

/// The seed's stack, outermost first; variants insert one frame before `zmq_msg_init_size`.
pub const SEED_FRAMES: [&str; 9] = [
    "thread_start",
    "_pthread_start",
    "thread_routine",
    "zmq::kqueue_t::loop()",
    "zmq::zmq_engine_t::in_event()",
    "zmq::decoder_t::eight_byte_size_ready()",
    "zmq_msg_init_size",
    "malloc",
    "malloc_zone_malloc",
];

const HEX_DUMP: &str = "\t0x01bb2428 0x00000001 0x00000400 0x00000000 \t($..............\n\
\t0x00000000 0x00000000 0x00000000 0x00000000 \t................\n\
\t0x00000000 0x00000000 0x61616161 0x61616161 \t........aaaaaaaa\n\
\t0x61616161 0x61616161 0x61616161 0x61616161 \taaaaaaaaaaaaaaaa\n\
\t0x61616161 0x61616161 0x61616161 0x61616161 \taaaaaaaaaaaaaaaa\n\
\t0x61616161 0x61616161 0x61616161 0x61616161 \taaaaaaaaaaaaaaaa\n\
\t0x61616161 0x61616161 0x61616161 0x61616161 \taaaaaaaaaaaaaaaa\n\
\t0x61616161 0x61616161 0x61616161 0x61616161 \taaaaaaaaaaaaaaaa\n\
\t...\n";

/// The `Call stack:` frames text of stack variant `variant` (0 is the seed's own stack).
pub fn stack_text(variant: u32) -> String {
    let mut frames: Vec<String> = SEED_FRAMES.iter().map(|f| (*f).to_owned()).collect();
    if variant > 0 {
        frames.insert(6, format!("zmq::session_{variant}_t::write()"));
    }
    let mut text = String::from("| ");
    text.push_str(&frames.join(" | "));
    text.push(' ');
    text
}

/// Writes a report of `leaks` leaks spread round-robin over `stacks` distinct call stacks
/// (at least one); returns the number of bytes written.
pub fn write_report(out: &mut impl Write, leaks: u64, stacks: u32) -> io::Result<u64> {
    let mut out = CountingWriter {
        inner: out,
        bytes: 0,
    };
    write!(
        out,
        "leaks Report Version:  2.0\n\
         Process:         rbx [36700]\n\
         Path:            /Volumes/calvin/Users/cremes/.rvm/rubies/rbx-head/bin/rbx\n\
         Load Address:    0x100000000\n\
         Identifier:      rbx\n\
         Version:         ??? (???)\n\
         Code Type:       X86-64 (Native)\n\
         Parent Process:  bash [997]\n\
         \n\
         Date/Time:       2010-12-22 11:34:35.225 -0600\n\
         OS Version:      Mac OS X 10.6.5 (10H574)\n\
         Report Version:  6\n\
         \n\
         Process 36700: {} nodes malloced for {} KB\n\
         Process 36700: {} leaks for {} total leaked bytes.\n",
        leaks + leaks / 2,
        leaks * BLOCK_SIZE / 1024 + 30_000,
        leaks,
        leaks * BLOCK_SIZE,
    )?;
    let stacks = stacks.max(1);
    let texts: Vec<String> = (0..stacks).map(stack_text).collect();
    const THREADS: [&str; 3] = ["0x102f81000", "0x103004000", "0x103087000"];
    for i in 0..leaks {
        let address = 0x101bb2400 + i * 0x600;
        writeln!(
            out,
            "Leak: {address:#x}  size={BLOCK_SIZE}  zone: DefaultMallocZone_0x100dea000"
        )?;
        out.write_all(HEX_DUMP.as_bytes())?;
        let thread = THREADS[(i % 3) as usize];
        let text = &texts[(i % u64::from(stacks)) as usize];
        writeln!(out, "\tCall stack: [thread {thread}]: {text}")?;
    }
    Ok(out.bytes)
}

struct CountingWriter<'w, W: Write> {
    inner: &'w mut W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
