//! Feeding dump lines to per-chunk visitors: bounded buffers, both cores, `.gz` input, and lines
//! of any length.
//!
//! Stage: parser, outer layer. A plain file is cut into chunks of [`ReadOptions::chunk_bytes`];
//! worker threads claim chunks, read them with `pread` into a buffer of
//! [`ReadOptions::buffer_bytes`], and hand every line that *starts* in the chunk to that chunk's
//! visitor (the last line may run past the chunk's end). Nothing is mapped, so the resident set
//! stays near `threads × buffer` whatever the dump size. A zstd file that leakhunt wrote
//! (line-aligned frames, see [`crate::zst`]) is read the same way with one frame per chunk, each
//! worker decoding its frame as it scans it. A gzip file, or any other zstd file, is decompressed
//! on the calling thread and cut at line ends into chunks that the workers scan meanwhile (one
//! sequential chunk when there is one thread).
//!
//! A line too long for the buffer is streamed through [`LongLine`], which keeps the keys and
//! short values, truncates long strings, and lifts the `references` array out into a `Vec<u64>`
//! (or only counts it). The visitor then sees a short line plus the decoded references.
//!
//! Visitors count problems in a per-chunk [`Diagnostics`] with chunk-local line numbers; after
//! the read, [`ReadOutcome`] turns them into file line numbers.

use crate::diag::{Diagnostics, Position};
use crate::error::{Error, Result};
use crate::progress;
use crate::source::read_up_to;
use indicatif::ProgressBar;
use memchr::memchr;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How a dump is read. [`ReadOptions::default`] suits real dumps; tests shrink the sizes to
/// exercise chunk seams and the long-line path on small inputs.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Worker threads (a compressed stream other than leakhunt's zstd frames is decompressed on
    /// the calling thread while they scan it).
    pub threads: usize,
    /// Bytes of the file per chunk (a unit of work and of line numbering).
    pub chunk_bytes: u64,
    /// Read buffer per worker; longer lines take the long-line path.
    pub buffer_bytes: usize,
    /// Decode the `references` of long lines (retainers need them; histograms do not).
    pub keep_long_refs: bool,
    /// Label for the progress bar (hidden for small inputs and when stderr is not a terminal).
    pub progress_label: Option<String>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        ReadOptions {
            threads,
            chunk_bytes: 32 << 20,
            buffer_bytes: 1 << 20,
            keep_long_refs: false,
            progress_label: None,
        }
    }
}

/// Where a line is: its chunk and its 1-based number within the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LineAt {
    pub chunk: u32,
    pub line: u64,
}

impl LineAt {
    pub fn position(self) -> Position {
        Position::Line(self.line)
    }
}

/// A line as handed to a visitor.
pub struct LineRef<'a> {
    /// The line without its `\n` (for a long line: the reduced line).
    pub bytes: &'a [u8],
    /// For a long line whose references were lifted out: those references (empty unless
    /// [`ReadOptions::keep_long_refs`]). `None` for ordinary lines.
    pub lifted_refs: Option<&'a [u64]>,
    /// The last line of the input, with no `\n` after it: possibly cut short.
    pub unterminated: bool,
    pub at: LineAt,
}

/// Receives the lines of one chunk, in order.
pub trait LineVisitor: Send {
    fn visit(&mut self, line: LineRef<'_>, diag: &mut Diagnostics);
}

/// One chunk's visitor after the read, with where its lines sit in the file.
pub struct ChunkOutcome<V> {
    pub visitor: V,
    /// Index of the chunk in file order.
    pub chunk: u32,
    /// File line number of the chunk's first line (1-based).
    pub first_line: u64,
    pub lines: u64,
}

/// What a read produced besides the visitors.
pub struct ReadSummary {
    /// Problems of every chunk, with file line numbers.
    pub diagnostics: Diagnostics,
    /// Lines in the input.
    pub lines: u64,
    /// Bytes of content read (decompressed size for gzip).
    pub bytes: u64,
}

pub struct ReadOutcome<V> {
    /// In file order.
    pub chunks: Vec<ChunkOutcome<V>>,
    pub diagnostics: Diagnostics,
    pub lines: u64,
    pub bytes: u64,
}

impl<V> ReadOutcome<V> {
    /// The file line number of a chunk-local position.
    pub fn file_line(&self, at: LineAt) -> u64 {
        let first = self
            .chunks
            .get(at.chunk as usize)
            .map_or(1, |c| c.first_line);
        first + at.line.saturating_sub(1)
    }
}

/// Reads the dump at `path`, giving each chunk a visitor made by `make(chunk_index)`; returns
/// every chunk's visitor in file order.
pub fn read_lines<V, F>(path: &Path, opts: &ReadOptions, make: F) -> Result<ReadOutcome<V>>
where
    V: LineVisitor,
    F: Fn(u32) -> V + Sync,
{
    let mut chunks = Vec::new();
    let summary = read_lines_in_order(path, opts, make, |c| chunks.push(c))?;
    Ok(ReadOutcome {
        chunks,
        diagnostics: summary.diagnostics,
        lines: summary.lines,
        bytes: summary.bytes,
    })
}

/// Like [`read_lines`], but hands each finished chunk to `sink` as soon as every chunk before
/// it is done, so results can be folded (and chunk memory freed) while the read goes on.
/// `sink` runs on worker threads, one call at a time, in file order.
pub fn read_lines_in_order<V, F, S>(
    path: &Path,
    opts: &ReadOptions,
    make: F,
    sink: S,
) -> Result<ReadSummary>
where
    V: LineVisitor,
    F: Fn(u32) -> V + Sync,
    S: FnMut(ChunkOutcome<V>) + Send,
{
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut magic = [0u8; 4];
    let n = crate::source::read_up_to(
        PreadReader {
            file: &file,
            pos: 0,
        },
        &mut magic,
    )
    .map_err(|e| Error::io(path, e))?;
    let bar = match &opts.progress_label {
        Some(label) => progress::bytes_bar(label, len),
        None => ProgressBar::hidden(),
    };
    let mut assembler = Assembler {
        path,
        next: 0,
        pending: BTreeMap::new(),
        next_line: 1,
        bytes: 0,
        diagnostics: Diagnostics::new(path),
        sink,
    };
    if crate::source::is_gzip(&magic[..n]) {
        read_gzip(path, file, opts, &make, &bar, &mut assembler);
    } else if crate::zst::is_zstd(&magic[..n]) {
        let frames = crate::zst::walk(&file, len).map_err(|e| Error::io(path, e))?;
        if frames.line_aligned {
            let shared = Mutex::new(&mut assembler);
            read_zstd_frames(path, &file, &frames, opts, &make, &bar, &shared);
        } else {
            let stream = crate::zst::file_decoder(file).map_err(|e| Error::io(path, e))?;
            read_decoded(
                path,
                stream,
                "damaged zstd streams",
                opts,
                &make,
                &mut || {},
                &mut assembler,
            );
        }
    } else {
        let shared = Mutex::new(&mut assembler);
        read_plain(path, &file, len, opts, &make, &bar, &shared)?;
    }
    bar.finish_and_clear();
    if !assembler.pending.is_empty() {
        return Err(Error::input(
            path,
            Position::Whole,
            "a worker thread stopped before reading its part of the file",
        ));
    }
    Ok(ReadSummary {
        diagnostics: assembler.diagnostics,
        lines: assembler.next_line - 1,
        bytes: assembler.bytes,
    })
}

struct RawChunk<V> {
    visitor: V,
    diag: Diagnostics,
    lines: u64,
    bytes: u64,
}

/// Puts finished chunks back in file order and numbers their lines.
struct Assembler<'p, V, S> {
    path: &'p Path,
    next: usize,
    pending: BTreeMap<usize, RawChunk<V>>,
    next_line: u64,
    bytes: u64,
    diagnostics: Diagnostics,
    sink: S,
}

impl<V, S: FnMut(ChunkOutcome<V>)> Assembler<'_, V, S> {
    fn finished(&mut self, index: usize, chunk: RawChunk<V>) {
        self.pending.insert(index, chunk);
        while let Some(c) = self.pending.remove(&self.next) {
            let mut diag = c.diag;
            for kind in &mut diag.kinds {
                if let Position::Line(l) = kind.first {
                    kind.first = Position::Line(self.next_line + l.saturating_sub(1));
                }
            }
            diag.file = self.path.to_path_buf();
            self.diagnostics.merge(diag);
            let first_line = self.next_line;
            self.next_line += c.lines;
            self.bytes += c.bytes;
            (self.sink)(ChunkOutcome {
                visitor: c.visitor,
                chunk: u32::try_from(self.next).unwrap_or(u32::MAX),
                first_line,
                lines: c.lines,
            });
            self.next += 1;
        }
    }
}

fn read_plain<V, F, S>(
    path: &Path,
    file: &File,
    len: u64,
    opts: &ReadOptions,
    make: &F,
    bar: &ProgressBar,
    assembler: &Mutex<&mut Assembler<'_, V, S>>,
) -> Result<()>
where
    V: LineVisitor,
    F: Fn(u32) -> V + Sync,
    S: FnMut(ChunkOutcome<V>) + Send,
{
    let chunk_bytes = opts.chunk_bytes.max(1);
    let count = len.div_ceil(chunk_bytes).max(1);
    let count = usize::try_from(count)
        .map_err(|_| Error::input(path, Position::Whole, "file too large to cut into chunks"))?;
    let workers = opts.threads.clamp(1, count);
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<io::Error>> = Mutex::new(None);
    let work = || {
        let mut scanner = ChunkScanner::new(opts);
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= count {
                break;
            }
            let start = index as u64 * chunk_bytes;
            let end = (start + chunk_bytes).min(len);
            // Chunk indices fit in u32: a file would need 2^32 chunks of at least one byte.
            let chunk = u32::try_from(index).unwrap_or(u32::MAX);
            let mut visitor = make(chunk);
            let mut diag = Diagnostics::new(path);
            let src = PreadReader {
                file,
                pos: start.saturating_sub(1),
            };
            let stats = scanner.scan(
                src,
                ChunkSpan { start, end, chunk },
                &mut visitor,
                &mut diag,
                &mut |from, n| {
                    let a = from.max(start);
                    let b = (from + n as u64).min(end);
                    if b > a {
                        bar.inc(b - a);
                    }
                },
            );
            match stats {
                Ok(lines) => {
                    if let Ok(mut a) = assembler.lock() {
                        a.finished(
                            index,
                            RawChunk {
                                visitor,
                                diag,
                                lines,
                                bytes: end - start,
                            },
                        );
                    }
                }
                Err(e) => {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e);
                    }
                    next.store(count, Ordering::Relaxed);
                    break;
                }
            }
        }
    };
    run_workers(workers, work);
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(Error::io(path, e));
    }
    Ok(())
}

fn read_gzip<V, F, S>(
    path: &Path,
    file: File,
    opts: &ReadOptions,
    make: &F,
    bar: &ProgressBar,
    assembler: &mut Assembler<'_, V, S>,
) where
    V: LineVisitor,
    F: Fn(u32) -> V + Sync,
    S: FnMut(ChunkOutcome<V>) + Send,
{
    // The bar counts compressed bytes, the only size known in advance.
    let compressed = Arc::new(AtomicU64::new(0));
    let counting = CountingReader {
        inner: file,
        count: Arc::clone(&compressed),
    };
    let src = flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, counting));
    let mut progress = || bar.set_position(compressed.load(Ordering::Relaxed));
    read_decoded(
        path,
        Box::new(src),
        "damaged gzip streams",
        opts,
        make,
        &mut progress,
        assembler,
    );
}

/// Reads the line-aligned frames of a zstd file that leakhunt wrote, one chunk per frame, on
/// every worker. A frame that fails to decode keeps the lines decoded before the failure and is
/// counted as damaged; the other frames are read all the same.
fn read_zstd_frames<V, F, S>(
    path: &Path,
    file: &File,
    frames: &crate::zst::FrameList,
    opts: &ReadOptions,
    make: &F,
    bar: &ProgressBar,
    assembler: &Mutex<&mut Assembler<'_, V, S>>,
) where
    V: LineVisitor,
    F: Fn(u32) -> V + Sync,
    S: FnMut(ChunkOutcome<V>) + Send,
{
    let count = frames.frames.len();
    let workers = opts.threads.clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let work = || {
        let mut scanner = ChunkScanner::new(opts);
        let mut compressed = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(frame) = frames.frames.get(index).copied() else {
                break;
            };
            let chunk = u32::try_from(index).unwrap_or(u32::MAX);
            let mut visitor = make(chunk);
            let mut diag = Diagnostics::new(path);
            let mut content = 0u64;
            compressed.resize(usize::try_from(frame.len).unwrap_or(usize::MAX), 0);
            let scanned = file
                .read_exact_at(&mut compressed, frame.offset)
                .and_then(|()| crate::zst::frame_decoder(&compressed))
                .and_then(|src| {
                    scanner.scan(
                        src,
                        ChunkSpan {
                            start: 0,
                            end: u64::MAX,
                            chunk,
                        },
                        &mut visitor,
                        &mut diag,
                        &mut |_, n| content += n as u64,
                    )
                });
            let lines = scanned.unwrap_or_else(|e| {
                diag.report(
                    "damaged zstd frames",
                    Position::Offset(frame.offset),
                    || format!("decompression stopped after {content} bytes of the frame: {e}"),
                );
                scanner.lines_done
            });
            bar.inc(frame.len);
            if let Ok(mut a) = assembler.lock() {
                a.finished(
                    index,
                    RawChunk {
                        visitor,
                        diag,
                        lines,
                        bytes: content,
                    },
                );
            }
        }
    };
    run_workers(workers, work);
}

/// Content bytes per chunk when a decompressed stream is cut for the workers. Smaller than a
/// plain file's chunks: those are only positions, while a stream's chunks are in memory (one
/// being filled, `threads` queued, one per worker being scanned).
const STREAM_CHUNK_BYTES: u64 = 4 << 20;

/// Reads a decompressing stream: sequentially with one thread, else cut into chunks for the
/// workers ([`read_stream_parallel`]).
fn read_decoded<V, F, S>(
    path: &Path,
    src: Box<dyn Read + Send>,
    damage: &'static str,
    opts: &ReadOptions,
    make: &F,
    progress: &mut dyn FnMut(),
    assembler: &mut Assembler<'_, V, S>,
) where
    V: LineVisitor,
    F: Fn(u32) -> V + Sync,
    S: FnMut(ChunkOutcome<V>) + Send,
{
    // Damage ends the stream like its end would, so that both readers visit every byte
    // decoded before it (the line it cuts as an unterminated last line); it is reported here.
    let stop = Arc::new(Mutex::new((0u64, None)));
    let src: Box<dyn Read + Send> = Box::new(StopAtError {
        inner: src,
        stop: Arc::clone(&stop),
    });
    if opts.threads <= 1 {
        read_stream(path, src, opts, make, progress, assembler);
    } else {
        read_stream_parallel(path, src, opts, make, progress, assembler);
    }
    let (decoded, error) = std::mem::take(&mut *stop.lock().unwrap_or_else(|p| p.into_inner()));
    if let Some(e) = error {
        assembler.diagnostics.report(damage, Position::Whole, || {
            format!("decompression stopped after {decoded} bytes: {e}")
        });
    }
}

/// A stream whose first error reads as its end; `stop` holds the bytes read and that error.
struct StopAtError {
    inner: Box<dyn Read + Send>,
    stop: Arc<Mutex<(u64, Option<io::Error>)>>,
}

impl Read for StopAtError {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if stop.1.is_some() {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Ok(n) => {
                stop.0 += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                stop.1 = Some(e);
                Ok(0)
            }
        }
    }
}

/// Reads a decompressing stream on every worker: this thread decompresses and cuts the content
/// at line ends into chunks of about [`STREAM_CHUNK_BYTES`], which the workers scan while it
/// decompresses the next ones. A line longer than a chunk is scanned here as a chunk of its own,
/// streamed through the scanner's long-line path, so it is never whole in memory. `src` ends at
/// its first error ([`StopAtError`]); a read error here would end the read all the same.
fn read_stream_parallel<V, F, S>(
    path: &Path,
    mut src: Box<dyn Read + Send>,
    opts: &ReadOptions,
    make: &F,
    progress: &mut dyn FnMut(),
    assembler: &mut Assembler<'_, V, S>,
) where
    V: LineVisitor,
    F: Fn(u32) -> V + Sync,
    S: FnMut(ChunkOutcome<V>) + Send,
{
    let chunk_bytes =
        usize::try_from(opts.chunk_bytes.clamp(1, STREAM_CHUNK_BYTES)).unwrap_or(1 << 20);
    let workers = opts.threads.max(1);
    let (queue, pieces) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>)>(workers);
    // `None` once a worker has panicked: the producer's next send fails instead of blocking
    // forever on a full channel that no live worker drains.
    let pieces = Mutex::new(Some(pieces));
    let shared = Mutex::new(assembler);
    let mut decoded = 0u64;
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let _close = CloseOnPanic(&pieces);
                let mut scanner = ChunkScanner::new(opts);
                loop {
                    // The lock is held only while waiting for the next piece.
                    let next = pieces
                        .lock()
                        .ok()
                        .and_then(|r| r.as_ref().and_then(|r| r.recv().ok()));
                    let Some((index, bytes)) = next else {
                        break;
                    };
                    let chunk = u32::try_from(index).unwrap_or(u32::MAX);
                    let mut visitor = make(chunk);
                    let mut diag = Diagnostics::new(path);
                    let span = ChunkSpan {
                        start: 0,
                        end: u64::MAX,
                        chunk,
                    };
                    // Reading from memory cannot fail.
                    let lines = scanner
                        .scan(&bytes[..], span, &mut visitor, &mut diag, &mut |_, _| {})
                        .unwrap_or(scanner.lines_done);
                    let raw = RawChunk {
                        visitor,
                        diag,
                        lines,
                        bytes: bytes.len() as u64,
                    };
                    if let Ok(mut a) = shared.lock() {
                        a.finished(index, raw);
                    }
                }
            });
        }
        let mut long = ChunkScanner::new(opts);
        let mut carry = Vec::new();
        for index in 0usize.. {
            let mut buf = std::mem::take(&mut carry);
            let mut filled = buf.len();
            buf.resize(chunk_bytes.max(filled + 1), 0);
            let mut eof = false;
            while filled < buf.len() {
                match src.read(&mut buf[filled..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        filled += n;
                        decoded += n as u64;
                        progress();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
            buf.truncate(filled);
            if eof {
                if !buf.is_empty() {
                    let _ = queue.send((index, buf));
                }
                break;
            }
            if let Some(end) = memchr::memrchr(b'\n', &buf) {
                carry.extend_from_slice(&buf[end + 1..]);
                buf.truncate(end + 1);
                if queue.send((index, buf)).is_err() {
                    break;
                }
                continue;
            }
            // No line ends in a whole chunk: scan this line here, streaming the rest of it.
            let chunk = u32::try_from(index).unwrap_or(u32::MAX);
            let mut visitor = make(chunk);
            let mut diag = Diagnostics::new(path);
            let before = decoded;
            let mut tail = LineTail {
                src: &mut src,
                rest: &mut carry,
                ended: false,
                decoded: &mut decoded,
            };
            let span = ChunkSpan {
                start: 0,
                end: u64::MAX,
                chunk,
            };
            let scanned = long.scan(
                (&buf[..]).chain(&mut tail),
                span,
                &mut visitor,
                &mut diag,
                &mut |_, _| {},
            );
            let ended = tail.ended;
            progress();
            let lines = scanned.unwrap_or(long.lines_done);
            let raw = RawChunk {
                visitor,
                diag,
                lines,
                bytes: buf.len() as u64 + (decoded - before) - carry.len() as u64,
            };
            if let Ok(mut a) = shared.lock() {
                a.finished(index, raw);
            }
            if !ended {
                break;
            }
        }
        drop(queue);
    });
}

/// Drops the pieces' receiver when a worker unwinds, so that the producer stops.
struct CloseOnPanic<'a, T>(&'a Mutex<Option<std::sync::mpsc::Receiver<T>>>);

impl<T> Drop for CloseOnPanic<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut pieces = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pieces.take();
        }
    }
}

/// The rest of a line from a stream: reads stop after its `\n`, and what was read past it is
/// kept in `rest` for the next chunk.
struct LineTail<'a> {
    src: &'a mut Box<dyn Read + Send>,
    rest: &'a mut Vec<u8>,
    ended: bool,
    decoded: &'a mut u64,
}

impl Read for LineTail<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ended {
            return Ok(0);
        }
        let n = self.src.read(buf)?;
        *self.decoded += n as u64;
        match memchr(b'\n', &buf[..n]) {
            Some(i) => {
                self.rest.extend_from_slice(&buf[i + 1..n]);
                self.ended = true;
                Ok(i + 1)
            }
            None => Ok(n),
        }
    }
}

/// Reads a decompressing stream as one sequential chunk (`progress` runs after each block).
/// `src` ends at its first error ([`StopAtError`]); a read error here would end the read all
/// the same.
fn read_stream<V, F, S>(
    path: &Path,
    src: Box<dyn Read + Send>,
    opts: &ReadOptions,
    make: &F,
    progress: &mut dyn FnMut(),
    assembler: &mut Assembler<'_, V, S>,
) where
    V: LineVisitor,
    F: Fn(u32) -> V,
    S: FnMut(ChunkOutcome<V>),
{
    let mut scanner = ChunkScanner::new(opts);
    let mut visitor = make(0);
    let mut diag = Diagnostics::new(path);
    let mut bytes = 0u64;
    let lines = scanner.scan(
        src,
        ChunkSpan {
            start: 0,
            end: u64::MAX,
            chunk: 0,
        },
        &mut visitor,
        &mut diag,
        &mut |_, n| {
            bytes += n as u64;
            progress();
        },
    );
    let lines = lines.unwrap_or(scanner.lines_done);
    assembler.finished(
        0,
        RawChunk {
            visitor,
            diag,
            lines,
            bytes,
        },
    );
}

/// Runs `work` on `workers` threads (on this thread when there is one) and waits for all.
pub fn run_workers(workers: usize, work: impl Fn() + Sync) {
    if workers <= 1 {
        work();
        return;
    }
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(&work);
        }
    });
}

/// Reads a file from a position with `pread`, so threads share one descriptor.
struct PreadReader<'f> {
    file: &'f File,
    pos: u64,
}

impl Read for PreadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

struct CountingReader {
    inner: File,
    count: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The byte range whose line starts belong to a chunk.
#[derive(Clone, Copy)]
struct ChunkSpan {
    start: u64,
    end: u64,
    chunk: u32,
}

/// One worker's reusable buffers.
struct ChunkScanner {
    buf: Vec<u8>,
    long: LongLine,
    lines_done: u64,
}

impl ChunkScanner {
    fn new(opts: &ReadOptions) -> Self {
        ChunkScanner {
            buf: vec![0; opts.buffer_bytes.max(16)],
            long: LongLine::new(opts.keep_long_refs),
            lines_done: 0,
        }
    }

    /// Visits the lines starting in `span`. `src` is positioned at `span.start - 1` (or 0), so
    /// that a chunk can tell whether its first byte starts a line. `on_read(offset, n)` is told
    /// about every read. Returns the number of lines visited.
    fn scan<R: Read>(
        &mut self,
        mut src: R,
        span: ChunkSpan,
        visitor: &mut dyn LineVisitor,
        diag: &mut Diagnostics,
        on_read: &mut dyn FnMut(u64, usize),
    ) -> io::Result<u64> {
        self.lines_done = 0;
        let cap = self.buf.len();
        // File offset of buf[0]; bytes buf[lo..hi] are loaded and not yet consumed.
        let mut base = span.start.saturating_sub(1);
        let (mut lo, mut hi) = (0usize, 0usize);
        let mut eof = false;
        let mut skipping = span.start > 0;
        loop {
            if lo == hi && eof {
                break;
            }
            let found = memchr(b'\n', &self.buf[lo..hi]);
            if skipping {
                // Discard the tail of the line that began in the previous chunk.
                match found {
                    Some(i) => {
                        lo += i + 1;
                        skipping = false;
                    }
                    None => lo = hi,
                }
                if lo == hi && !eof {
                    base += hi as u64;
                    lo = 0;
                    let n = read_up_to(&mut src, &mut self.buf[..])?;
                    on_read(base, n);
                    hi = n;
                    eof = n == 0;
                }
                continue;
            }
            if base + lo as u64 >= span.end {
                break;
            }
            let at = LineAt {
                chunk: span.chunk,
                line: self.lines_done + 1,
            };
            if let Some(i) = found {
                self.lines_done += 1;
                visitor.visit(
                    LineRef {
                        bytes: &self.buf[lo..lo + i],
                        lifted_refs: None,
                        unterminated: false,
                        at,
                    },
                    diag,
                );
                lo += i + 1;
                continue;
            }
            if eof {
                // The last line, with no newline after it.
                self.lines_done += 1;
                let bytes = &self.buf[lo..hi];
                if !bytes.trim_ascii().is_empty() {
                    visitor.visit(
                        LineRef {
                            bytes,
                            lifted_refs: None,
                            unterminated: true,
                            at,
                        },
                        diag,
                    );
                }
                lo = hi;
                continue;
            }
            if lo > 0 {
                self.buf.copy_within(lo..hi, 0);
                base += lo as u64;
                hi -= lo;
                lo = 0;
            }
            if hi < cap {
                let n = read_up_to(&mut src, &mut self.buf[hi..])?;
                on_read(base + hi as u64, n);
                hi += n;
                eof = n == 0;
                continue;
            }
            // The buffer holds only part of one line: stream the rest through LongLine.
            self.lines_done += 1;
            self.long.start();
            let mut ended = self.long.feed(&self.buf[..hi]);
            base += hi as u64;
            lo = 0;
            hi = 0;
            while ended.is_none() {
                let n = read_up_to(&mut src, &mut self.buf[..])?;
                on_read(base, n);
                if n == 0 {
                    eof = true;
                    break;
                }
                ended = self.long.feed(&self.buf[..n]);
                match ended {
                    Some(i) => {
                        lo = i + 1;
                        hi = n;
                    }
                    None => base += n as u64,
                }
            }
            let unterminated = ended.is_none();
            if self.long.overflowed() {
                let total = self.long.total;
                diag.report("invalid lines", at.position(), || {
                    format!("a {total}-byte line that is not a heap record")
                });
            } else {
                visitor.visit(
                    LineRef {
                        bytes: &self.long.out,
                        lifted_refs: Some(&self.long.refs),
                        unterminated,
                        at,
                    },
                    diag,
                );
            }
        }
        Ok(self.lines_done)
    }
}

/// Longest string content kept from a long line; the rest of the string is dropped.
const LONG_STRING_KEEP: usize = 4096;
/// Most bytes a reduced line may hold; a line that needs more is not a heap record.
const LONG_OUTPUT_CAP: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum LongState {
    Outside,
    InString { kept: usize, escaped: bool },
    InArray,
    InArrayItem { value: u64, digits: u32 },
}

/// Streams one over-long line into a short equivalent: keys and short values verbatim, long
/// strings cut to [`LONG_STRING_KEEP`] bytes, the `references` array replaced by `[]` with its
/// addresses lifted into `refs`. Strings here follow JSON escapes; only `\n` ends the line.
struct LongLine {
    keep_refs: bool,
    out: Vec<u8>,
    refs: Vec<u64>,
    state: LongState,
    total: u64,
    overflow: bool,
}

impl LongLine {
    fn new(keep_refs: bool) -> Self {
        LongLine {
            keep_refs,
            out: Vec::new(),
            refs: Vec::new(),
            state: LongState::Outside,
            total: 0,
            overflow: false,
        }
    }

    fn start(&mut self) {
        self.out.clear();
        self.refs.clear();
        if self.out.capacity() > 4 * LONG_OUTPUT_CAP {
            self.out.shrink_to(LONG_OUTPUT_CAP);
        }
        self.state = LongState::Outside;
        self.total = 0;
        self.overflow = false;
    }

    fn overflowed(&self) -> bool {
        self.overflow
    }

    fn push(&mut self, b: u8) {
        if self.out.len() < LONG_OUTPUT_CAP {
            self.out.push(b);
        } else {
            self.overflow = true;
        }
    }

    /// Consumes bytes of the line; returns the index of the `\n` that ends it, if present.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let end = memchr(b'\n', bytes);
        let part = &bytes[..end.unwrap_or(bytes.len())];
        self.total += part.len() as u64;
        let mut i = 0;
        while i < part.len() {
            if self.state == LongState::InArray && self.keep_refs {
                i = self.lift_items(part, i);
                continue;
            }
            // Fast paths over the bulk of a long line: an array whose items are not kept, and
            // the dropped tail of a long string.
            let skip_to = match self.state {
                LongState::InArray if !self.keep_refs => memchr(b']', &part[i..]),
                LongState::InString {
                    kept,
                    escaped: false,
                } if kept >= LONG_STRING_KEEP => memchr::memchr2(b'"', b'\\', &part[i..]),
                _ => Some(0),
            };
            match skip_to {
                Some(j) => {
                    self.step(part[i + j]);
                    i += j + 1;
                }
                None => break,
            }
        }
        end
    }

    /// In an array whose items are kept: reads whole `"0x…"` items from `part[i..]` while they
    /// are complete in this piece; returns where byte-wise stepping must resume.
    fn lift_items(&mut self, part: &[u8], mut i: usize) -> usize {
        while let Some(j) = memchr::memchr2(b'"', b']', &part[i..]) {
            let open = i + j;
            if part[open] == b']' {
                self.step(b']');
                return open + 1;
            }
            let Some(len) = memchr(b'"', &part[open + 1..]) else {
                // The item continues in the next piece.
                self.step(b'"');
                return open + 1;
            };
            let item = &part[open + 1..open + 1 + len];
            let digits = item
                .strip_prefix(b"0x")
                .or_else(|| item.strip_prefix(b"0X"))
                .unwrap_or(item);
            if !digits.is_empty() && digits.len() <= 16 {
                let mut v = 0u64;
                let mut ok = true;
                for &b in digits {
                    let d = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        b'A'..=b'F' => b - b'A' + 10,
                        _ => {
                            ok = false;
                            break;
                        }
                    };
                    v = (v << 4) | u64::from(d);
                }
                if ok {
                    self.refs.push(v);
                }
            }
            i = open + len + 2;
        }
        part.len()
    }

    fn step(&mut self, b: u8) {
        match self.state {
            LongState::Outside => {
                match b {
                    b'"' => {
                        self.state = LongState::InString {
                            kept: 0,
                            escaped: false,
                        }
                    }
                    b'[' => self.state = LongState::InArray,
                    _ => {}
                }
                self.push(b);
            }
            LongState::InString { kept, escaped } => {
                if escaped {
                    if kept <= LONG_STRING_KEEP {
                        self.push(b);
                    }
                    self.state = LongState::InString {
                        kept: kept + 1,
                        escaped: false,
                    };
                } else if b == b'"' {
                    self.push(b);
                    self.state = LongState::Outside;
                } else {
                    // An escape is kept whole or not at all, so a cut never leaves a lone `\`.
                    if kept < LONG_STRING_KEEP {
                        self.push(b);
                    }
                    self.state = LongState::InString {
                        kept: kept + 1,
                        escaped: b == b'\\',
                    };
                }
            }
            LongState::InArray => match b {
                b'"' => {
                    self.state = LongState::InArrayItem {
                        value: 0,
                        digits: 0,
                    }
                }
                b']' => {
                    self.push(b']');
                    self.state = LongState::Outside;
                }
                _ => {}
            },
            LongState::InArrayItem { value, digits } => {
                let digit = match b {
                    b'0'..=b'9' => Some(b - b'0'),
                    b'a'..=b'f' => Some(b - b'a' + 10),
                    b'A'..=b'F' => Some(b - b'A' + 10),
                    _ => None,
                };
                self.state = match (b, digit) {
                    (b'"', _) => {
                        if self.keep_refs && digits > 0 && digits <= 16 {
                            self.refs.push(value);
                        }
                        LongState::InArray
                    }
                    // `0x` prefix: the `x` resets the digits read so far (the leading 0).
                    (b'x' | b'X', _) => LongState::InArrayItem {
                        value: 0,
                        digits: 0,
                    },
                    (_, Some(d)) => LongState::InArrayItem {
                        value: (value << 4) | u64::from(d),
                        digits: digits.saturating_add(1),
                    },
                    _ => LongState::InArrayItem {
                        value,
                        digits: u32::MAX,
                    },
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (chunk-local line, text, lifted references, unterminated).
    type Collected = (u64, Vec<u8>, Option<Vec<u64>>, bool);

    /// Collects every line as text plus lifted references.
    struct Collect {
        lines: Vec<Collected>,
    }

    impl LineVisitor for Collect {
        fn visit(&mut self, line: LineRef<'_>, _diag: &mut Diagnostics) {
            self.lines.push((
                line.at.line,
                line.bytes.to_vec(),
                line.lifted_refs.map(<[u64]>::to_vec),
                line.unterminated,
            ));
        }
    }

    fn read_all(content: &[u8], opts: &ReadOptions) -> (Vec<Vec<u8>>, Vec<u64>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.json");
        std::fs::write(&p, content).unwrap();
        let out = read_lines(&p, opts, |_| Collect { lines: Vec::new() }).unwrap();
        let mut texts = Vec::new();
        let mut numbers = Vec::new();
        for c in &out.chunks {
            for (l, t, _, _) in &c.visitor.lines {
                numbers.push(c.first_line + l - 1);
                texts.push(t.clone());
            }
        }
        (texts, numbers, out.lines)
    }

    fn small(threads: usize, chunk: u64, buffer: usize) -> ReadOptions {
        ReadOptions {
            threads,
            chunk_bytes: chunk,
            buffer_bytes: buffer,
            keep_long_refs: true,
            progress_label: None,
        }
    }

    #[test]
    fn every_line_once_whatever_the_chunking() {
        let mut content = Vec::new();
        for i in 0..200 {
            content.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 13)).as_bytes());
        }
        let expected: Vec<Vec<u8>> = content
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        for (threads, chunk, buffer) in
            [(1, 1 << 20, 1 << 16), (2, 7, 64), (2, 100, 32), (3, 1, 40)]
        {
            let (texts, numbers, total) = read_all(&content, &small(threads, chunk, buffer));
            let plain: Vec<Vec<u8>> = texts.clone();
            // Lines longer than the buffer come back reduced; these are short text lines that
            // the reducer keeps verbatim.
            assert_eq!(
                plain, expected,
                "threads {threads} chunk {chunk} buffer {buffer}"
            );
            assert_eq!(numbers, (1..=200).collect::<Vec<u64>>());
            assert_eq!(total, 200);
        }
    }

    #[test]
    fn long_lines_are_reduced_with_references_lifted() {
        let refs: Vec<String> = (1..=1000).map(|i| format!("\"0x{:x}\"", i * 40)).collect();
        let big = format!(
            "{{\"address\":\"0x10\", \"type\":\"ARRAY\", \"length\":1000, \"references\":[{}], \"memsize\":8040}}\n",
            refs.join(", ")
        );
        let text = format!(
            "{{\"address\":\"0x8\", \"type\":\"STRING\", \"value\":\"{}\", \"memsize\":40}}\n",
            "a\\\"".repeat(5000)
        );
        let content = format!("{big}{{\"address\":\"0x9\", \"type\":\"HASH\"}}\n{text}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.json");
        std::fs::write(&p, &content).unwrap();
        let out = read_lines(&p, &small(1, 1 << 20, 256), |_| Collect {
            lines: Vec::new(),
        })
        .unwrap();
        let lines = &out.chunks[0].visitor.lines;
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0].1,
            b"{\"address\":\"0x10\", \"type\":\"ARRAY\", \"length\":1000, \"references\":[], \"memsize\":8040}"
        );
        let lifted = lines[0].2.as_ref().unwrap();
        assert_eq!(lifted.len(), 1000);
        assert_eq!(lifted[999], 40_000);
        assert_eq!(lines[1].1, b"{\"address\":\"0x9\", \"type\":\"HASH\"}");
        let reduced = super::super::scan::parse_line(&lines[2].1).unwrap();
        assert_eq!(reduced.memsize, Some(40));
        assert!(reduced.value.unwrap().len() <= LONG_STRING_KEEP + 1);
    }

    #[test]
    fn damaged_reference_items_in_long_lines_are_skipped() {
        let mut long = LongLine::new(true);
        long.start();
        // Fed one byte at a time, so every item goes through the byte-wise states.
        let line =
            br#"{"references":["0xzz0123456789abcdef0123456789", "0x10", "0x11111111111111111"]}"#;
        for b in line.iter() {
            assert_eq!(long.feed(std::slice::from_ref(b)), None);
        }
        assert_eq!(long.refs, vec![0x10]);
        assert_eq!(long.out, br#"{"references":[]}"#);
    }

    #[test]
    fn unterminated_last_line_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.json");
        std::fs::write(&p, b"{\"a\":1}\n{\"addr").unwrap();
        let out = read_lines(&p, &small(2, 4, 64), |_| Collect { lines: Vec::new() }).unwrap();
        let all: Vec<_> = out
            .chunks
            .iter()
            .flat_map(|c| c.visitor.lines.iter())
            .collect();
        assert_eq!(all.len(), 2);
        assert!(!all[0].3);
        assert!(all[1].3);
        assert_eq!(all[1].1, b"{\"addr");
    }

    fn gzip_of(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&p).unwrap(), flate2::Compression::fast());
        enc.write_all(content).unwrap();
        enc.finish().unwrap();
        (dir, p)
    }

    /// Short lines, lines longer than the small chunks and buffers below (an Array whose
    /// references are lifted, a long string), and no newline at the end.
    fn mixed_dump() -> Vec<u8> {
        let refs: Vec<String> = (1..=300).map(|i| format!("\"0x{:x}\"", i * 40)).collect();
        let mut content = Vec::new();
        for i in 0..120 {
            content.extend_from_slice(format!("{{\"address\":\"0x{i:x}\"}}\n").as_bytes());
            if i % 40 == 7 {
                content.extend_from_slice(
                    format!(
                        "{{\"address\":\"0x1{i}\", \"type\":\"ARRAY\", \"references\":[{}]}}\n",
                        refs.join(", ")
                    )
                    .as_bytes(),
                );
            }
            if i % 40 == 21 {
                let value = "v".repeat(3000);
                content.extend_from_slice(
                    format!("{{\"type\":\"STRING\", \"value\":\"{value}\"}}\n").as_bytes(),
                );
            }
        }
        content.extend_from_slice(b"{\"address\":\"0xend\"");
        content
    }

    fn all_lines(out: &ReadOutcome<Collect>) -> Vec<Collected> {
        out.chunks
            .iter()
            .flat_map(|c| {
                c.visitor
                    .lines
                    .iter()
                    .map(|(l, t, r, u)| (c.first_line + l - 1, t.clone(), r.clone(), *u))
            })
            .collect()
    }

    #[test]
    fn gzip_is_cut_at_line_ends_for_the_workers_and_reads_like_the_plain_file() {
        let content = mixed_dump();
        let (dir, gz) = gzip_of(&content);
        let plain = dir.path().join("d.json");
        std::fs::write(&plain, &content).unwrap();
        for (threads, chunk, buffer) in [(1, 64, 256), (2, 64, 256), (3, 1, 64), (2, 5000, 512)] {
            let opts = small(threads, chunk, buffer);
            let want = read_lines(&plain, &opts, |_| Collect { lines: Vec::new() }).unwrap();
            let got = read_lines(&gz, &opts, |_| Collect { lines: Vec::new() }).unwrap();
            let what = format!("threads {threads} chunk {chunk} buffer {buffer}");
            assert_eq!(all_lines(&got), all_lines(&want), "{what}");
            assert_eq!(
                (got.lines, got.bytes),
                (want.lines, content.len() as u64),
                "{what}"
            );
            assert!(got.diagnostics.kinds.is_empty(), "{what}");
            if threads == 1 {
                assert_eq!(got.chunks.len(), 1);
            } else {
                // Cut into pieces of whole lines, the long ones alone in theirs.
                assert!(got.chunks.len() > 5, "{what}");
            }
        }
        let lines = all_lines(
            &read_lines(&gz, &small(2, 64, 256), |_| Collect { lines: Vec::new() }).unwrap(),
        );
        let array = lines.iter().find(|l| l.2.is_some()).unwrap();
        assert_eq!(array.2.as_ref().unwrap().len(), 300);
        assert!(lines.last().unwrap().3, "the last line has no newline");
    }

    #[test]
    fn a_damaged_gzip_stream_keeps_what_was_decoded_before_the_damage() {
        let content = mixed_dump();
        let (_dir, gz) = gzip_of(&content);
        let mut bytes = std::fs::read(&gz).unwrap();
        bytes.truncate(bytes.len() * 2 / 3);
        std::fs::write(&gz, &bytes).unwrap();
        for threads in [1, 2] {
            let out = read_lines(&gz, &small(threads, 64, 256), |_| Collect {
                lines: Vec::new(),
            })
            .unwrap();
            assert_eq!(out.diagnostics.count_of("damaged gzip streams"), 1);
            let lines = all_lines(&out);
            assert!(lines.len() > 20, "threads {threads}: {}", lines.len());
            assert_eq!(lines[0].1, b"{\"address\":\"0x0\"}");
            // In order, each once.
            assert!(lines.windows(2).all(|w| w[0].0 + 1 == w[1].0));
        }
    }

    fn zstd_of(content: &[u8], frame: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("d.json");
        std::fs::write(&plain, content).unwrap();
        let zst = dir.path().join("d.json.zst");
        crate::zst::compress_lines_sized(&plain, &zst, frame).unwrap();
        (dir, zst)
    }

    fn collected(out: &ReadOutcome<Collect>) -> (Vec<Vec<u8>>, Vec<u64>) {
        let mut texts = Vec::new();
        let mut numbers = Vec::new();
        for c in &out.chunks {
            for (l, t, _, _) in &c.visitor.lines {
                numbers.push(c.first_line + l - 1);
                texts.push(t.clone());
            }
        }
        (texts, numbers)
    }

    #[test]
    fn zstd_frames_are_chunks_read_by_every_worker_like_a_plain_file() {
        let mut content = Vec::new();
        for i in 0..300 {
            content.extend_from_slice(format!("line {i} {}\n", "y".repeat(i % 17)).as_bytes());
        }
        let (plain, plain_numbers, plain_total) = read_all(&content, &small(1, 1 << 20, 1 << 16));
        for frame in [1, 50, 700, 1 << 20] {
            let (_dir, zst) = zstd_of(&content, frame);
            let out =
                read_lines(&zst, &small(2, 7, 64), |_| Collect { lines: Vec::new() }).unwrap();
            let (texts, numbers) = collected(&out);
            assert_eq!(texts, plain, "frame {frame}");
            assert_eq!(numbers, plain_numbers);
            assert_eq!(out.lines, plain_total);
            assert_eq!(out.bytes, content.len() as u64);
            assert!(out.diagnostics.kinds.is_empty());
            let frames = content.len().div_ceil(frame.max(1)).min(300);
            assert!(out.chunks.len() <= frames && (frame > 1000 || out.chunks.len() > 1));
        }
    }

    #[test]
    fn a_damaged_zstd_frame_is_counted_and_the_other_frames_read() {
        let mut content = Vec::new();
        for i in 0..2000 {
            content.extend_from_slice(format!("{{\"address\":\"0x{i:x}\"}}\n").as_bytes());
        }
        let (_dir, zst) = zstd_of(&content, 4000);
        let file = File::open(&zst).unwrap();
        let frames = crate::zst::walk(&file, file.metadata().unwrap().len()).unwrap();
        assert!(frames.frames.len() >= 4);
        // Damage the content of the second frame (past its header), keeping its size.
        let second = frames.frames[1];
        let mut bytes = std::fs::read(&zst).unwrap();
        let at = (second.offset + second.len / 2) as usize;
        bytes[at] ^= 0xff;
        bytes[at + 1] ^= 0xff;
        std::fs::write(&zst, &bytes).unwrap();
        let out = read_lines(&zst, &small(2, 7, 256), |_| Collect { lines: Vec::new() }).unwrap();
        assert_eq!(out.diagnostics.count_of("damaged zstd frames"), 1);
        assert_eq!(
            out.diagnostics.kinds[0].first,
            Position::Offset(second.offset)
        );
        let (texts, numbers) = collected(&out);
        let wanted: Vec<&[u8]> = content
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert!(texts.len() < wanted.len() && texts.len() > wanted.len() / 2);
        // Every line read is a line of the dump, and the last frame's are all there.
        assert_eq!(texts.last().unwrap().as_slice(), *wanted.last().unwrap());
        assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_zstd_file_without_the_mark_is_read_as_one_stream() {
        let content = b"{\"a\":1}\n{\"b\":2}\n".repeat(100);
        let (_dir, zst) = zstd_of(&content, 30);
        let mut bytes = std::fs::read(&zst).unwrap();
        let mark = 8 + crate::zst::LINES_MARK.len();
        bytes.truncate(bytes.len() - mark);
        std::fs::write(&zst, &bytes).unwrap();
        let out = read_lines(&zst, &small(2, 7, 64), |_| Collect { lines: Vec::new() }).unwrap();
        // One stream, cut at line ends for the workers.
        assert!(out.chunks.len() > 1);
        assert_eq!(out.lines, 200);
        assert!(out.diagnostics.kinds.is_empty());
    }

    #[test]
    fn garbage_long_line_is_reported_not_visited() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.json");
        let mut content = b"{\"address\":\"0x1\", \"type\":\"HASH\"}\n".to_vec();
        content.extend(std::iter::repeat_n(b'x', LONG_OUTPUT_CAP + 10));
        content.extend_from_slice(b"\n{\"address\":\"0x2\", \"type\":\"HASH\"}\n");
        std::fs::write(&p, &content).unwrap();
        let out = read_lines(&p, &small(1, 1 << 30, 4096), |_| Collect {
            lines: Vec::new(),
        })
        .unwrap();
        assert_eq!(out.chunks[0].visitor.lines.len(), 2);
        assert_eq!(out.lines, 3);
        assert_eq!(out.diagnostics.kinds[0].first, Position::Line(2));
        assert_eq!(out.diagnostics.count_of("invalid lines"), 1);
    }

    /// A stream that returns reads of pseudo-random sizes, and fails at `fail_at` if set.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        seed: u64,
        fail_at: Option<usize>,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let stop = self.fail_at.unwrap_or(usize::MAX).min(self.data.len());
            if self.pos >= stop {
                if self.fail_at.is_some() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt"));
                }
                return Ok(0);
            }
            let want = 1 + (self.seed % 97) as usize;
            let n = want.min(buf.len()).min(stop - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn read_src<V: LineVisitor>(
        src: Box<dyn Read + Send>,
        opts: &ReadOptions,
        make: impl Fn(u32) -> V + Sync,
    ) -> (Vec<ChunkOutcome<V>>, Diagnostics, u64, u64) {
        let path = Path::new("test.gz");
        let mut chunks = Vec::new();
        let mut assembler = Assembler {
            path,
            next: 0,
            pending: BTreeMap::new(),
            next_line: 1,
            bytes: 0,
            diagnostics: Diagnostics::new(path),
            sink: |c| chunks.push(c),
        };
        read_decoded(
            path,
            src,
            "damaged",
            opts,
            &make,
            &mut || {},
            &mut assembler,
        );
        assert!(assembler.pending.is_empty());
        let (d, l, b) = (
            assembler.diagnostics,
            assembler.next_line - 1,
            assembler.bytes,
        );
        (chunks, d, l, b)
    }

    fn random_dump(seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut content = Vec::new();
        let lines = 5 + next() % 60;
        for i in 0..lines {
            let len = match next() % 10 {
                0 => 0,
                1..=6 => (next() % 40) as usize,
                7 | 8 => (next() % 600) as usize,
                _ => (next() % 3000) as usize,
            };
            content.extend_from_slice(format!("{{\"i\":{i},\"v\":\"").as_bytes());
            content.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
            content.extend_from_slice(b"\"}");
            if i + 1 < lines || next() % 2 == 0 {
                content.push(b'\n');
            }
        }
        content
    }

    #[test]
    fn random_streams_read_like_the_plain_file() {
        for seed in 1..40u64 {
            let content = random_dump(seed);
            let dir = tempfile::tempdir().unwrap();
            let plain = dir.path().join("d.json");
            std::fs::write(&plain, &content).unwrap();
            for (threads, chunk, buffer) in [(2, 1, 16), (2, 50, 64), (3, 300, 128), (2, 4000, 256)]
            {
                let opts = small(threads, chunk, buffer);
                let want = read_lines(&plain, &opts, |_| Collect { lines: Vec::new() }).unwrap();
                let src = Trickle {
                    data: content.clone(),
                    pos: 0,
                    seed: seed * 7919 + 1,
                    fail_at: None,
                };
                let (chunks, diag, lines, bytes) =
                    read_src(Box::new(src), &opts, |_| Collect { lines: Vec::new() });
                let got = ReadOutcome {
                    chunks,
                    diagnostics: diag,
                    lines,
                    bytes,
                };
                let what = format!("seed {seed} threads {threads} chunk {chunk} buffer {buffer}");
                assert_eq!(all_lines(&got), all_lines(&want), "{what}");
                assert_eq!((got.lines, got.bytes), (want.lines, want.bytes), "{what}");
                assert!(got.diagnostics.kinds.is_empty(), "{what}");
            }
        }
    }

    #[test]
    fn damaged_streams_keep_a_prefix_in_order() {
        for seed in 1..120u64 {
            let content = random_dump(seed);
            let dir = tempfile::tempdir().unwrap();
            let plain = dir.path().join("d.json");
            std::fs::write(&plain, &content).unwrap();
            let fail_at = (seed as usize * 104_729) % (content.len() + 1);
            for (threads, chunk, buffer) in [(2, 1, 16), (2, 50, 64), (3, 300, 128)] {
                let full = all_lines(
                    &read_lines(&plain, &small(1, 1 << 20, buffer), |_| Collect {
                        lines: Vec::new(),
                    })
                    .unwrap(),
                );
                let src = Trickle {
                    data: content.clone(),
                    pos: 0,
                    seed: seed * 31 + 5,
                    fail_at: Some(fail_at),
                };
                let opts = small(threads, chunk, buffer);
                let (chunks, diag, lines, bytes) =
                    read_src(Box::new(src), &opts, |_| Collect { lines: Vec::new() });
                let got = ReadOutcome {
                    chunks,
                    diagnostics: diag,
                    lines,
                    bytes,
                };
                let what = format!(
                    "seed {seed} fail {fail_at} threads {threads} chunk {chunk} buffer {buffer}"
                );
                assert_eq!(got.diagnostics.count_of("damaged"), 1, "{what}");
                let lines = all_lines(&got);
                for (i, l) in lines.iter().enumerate() {
                    assert_eq!(l.0, i as u64 + 1, "{what}");
                    let f = &full[i];
                    if l.3 && i + 1 == lines.len() {
                        // The line cut by the damage: a prefix of the real one.
                        assert!(f.1.starts_with(&l.1) || l.2.is_some(), "{what}");
                        assert_eq!(i + 1, lines.len(), "{what}");
                    } else {
                        assert_eq!(l, f, "{what}");
                    }
                }
                assert!(got.bytes <= fail_at as u64, "{what}: bytes {}", got.bytes);
            }
        }
    }

    struct Panicky;

    impl LineVisitor for Panicky {
        fn visit(&mut self, _line: LineRef<'_>, _diag: &mut Diagnostics) {
            panic!("visitor bug");
        }
    }

    /// Runs `read` on its own thread and asserts that it panics within a minute: a hang
    /// fails the test instead of stalling the suite (cargo has no per-test timeout), and a
    /// read that returns fails it too.
    fn assert_panics_without_hanging(read: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).is_err();
            let _ = tx.send(panicked);
        });
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(panicked) => assert!(panicked, "the read returned instead of panicking"),
            Err(_) => panic!("the read hung (no result after 60 s)"),
        }
    }

    /// A visitor that panics on every chunk must make the read panic, not hang: with the
    /// commit as is, both workers die, the receiver stays alive in `pieces`, and the producer
    /// blocks forever on the full channel.
    #[test]
    fn a_panicking_visitor_does_not_hang_the_stream_reader() {
        let content = b"{\"address\":\"0x1\"}\n".repeat(200);
        let src = Trickle {
            data: content,
            pos: 0,
            seed: 3,
            fail_at: None,
        };
        assert_panics_without_hanging(move || {
            let _ = read_src(Box::new(src), &small(2, 40, 64), |_| Panicky);
        });
    }

    /// A gzip stream cut at 2/3 reads alike with one or two threads.
    #[test]
    fn damage_reads_the_same_with_one_or_two_threads() {
        let content = mixed_dump();
        let (_dir, gz) = gzip_of(&content);
        let mut bytes = std::fs::read(&gz).unwrap();
        bytes.truncate(bytes.len() * 2 / 3);
        std::fs::write(&gz, &bytes).unwrap();
        let read = |threads| {
            let out = read_lines(&gz, &small(threads, 64, 256), |_| Collect {
                lines: Vec::new(),
            })
            .unwrap();
            (all_lines(&out), out.lines)
        };
        let (one, two) = (read(1), read(2));
        let last = two.0.last().unwrap();
        eprintln!(
            "one thread: {} lines visited, {} counted; two: {} visited, {} counted, last unterminated {} ({} bytes)",
            one.0.len(),
            one.1,
            two.0.len(),
            two.1,
            last.3,
            last.1.len()
        );
        assert_eq!(one, two);
    }

    #[test]
    fn damage_same_lines_one_or_two_threads_fake_source() {
        let content = b"{\"address\":\"0x1\", \"type\":\"HASH\"}\n".repeat(40);
        let mut differ = Vec::new();
        for fail_at in (0..content.len()).step_by(37) {
            let read = |threads| {
                let src = Trickle {
                    data: content.clone(),
                    pos: 0,
                    seed: 9,
                    fail_at: Some(fail_at),
                };
                let (chunks, diagnostics, lines, bytes) =
                    read_src(Box::new(src), &small(threads, 64, 256), |_| Collect {
                        lines: Vec::new(),
                    });
                let out = ReadOutcome {
                    chunks,
                    diagnostics,
                    lines,
                    bytes,
                };
                let all = all_lines(&out);
                (all.len(), all.last().is_some_and(|l| l.3), out.lines)
            };
            let (one, two) = (read(1), read(2));
            if one != two {
                differ.push((fail_at, one, two));
            }
        }
        assert!(
            differ.is_empty(),
            "(fail_at, (visited, last unterminated, counted) with 1 thread, with 2): {differ:?}"
        );
    }

    #[test]
    fn truncated_gzip_same_lines_one_or_two_threads() {
        let mut content = Vec::new();
        for i in 0..3000 {
            content.extend_from_slice(
                format!(
                    "{{\"address\":\"0x{i:x}\", \"type\":\"HASH\", \"x\":\"{}\"}}\n",
                    i * 7919 % 1000003
                )
                .as_bytes(),
            );
        }
        let (_dir, gz) = gzip_of(&content);
        let whole = std::fs::read(&gz).unwrap();
        let mut differ = Vec::new();
        for cut in (100..whole.len()).step_by(whole.len() / 9) {
            std::fs::write(&gz, &whole[..cut]).unwrap();
            let read = |threads| {
                let out = read_lines(&gz, &small(threads, 4096, 1 << 16), |_| Collect {
                    lines: Vec::new(),
                })
                .unwrap();
                let all = all_lines(&out);
                (
                    all.len(),
                    all.last().is_some_and(|l| l.3),
                    out.lines,
                    out.diagnostics.kinds.len(),
                )
            };
            let (one, two) = (read(1), read(2));
            if one != two {
                differ.push((cut, one, two));
            }
        }
        assert!(
            differ.is_empty(),
            "(cut, (visited, last unterminated, counted, diag kinds) with 1 thread, with 2): {differ:?}"
        );
    }

    #[test]
    fn a_visitor_panicking_on_the_producer_thread_does_not_hang() {
        let content = b"{\"address\":\"0x1\"}\n".repeat(200);
        let src = Trickle {
            data: content,
            pos: 0,
            seed: 3,
            fail_at: None,
        };
        // Chunks of one byte: every line is scanned on the decompressing thread.
        assert_panics_without_hanging(move || {
            let _ = read_src(Box::new(src), &small(2, 1, 64), |_| Panicky);
        });
    }
}
