//! Rubinius `RBXHEAPDUMP` version 1 reader (FORMATS.md §1): the class histogram of a binary
//! heap dump, computed exactly as Rubinius heap_dump's `bin/histo.rb` does.
//!
//! Stage: parser (bytes in, a [`Histogram`] out; nothing printed). One pass over the big-endian
//! record stream keeps, per object, only its direct class and size (summed per direct class as
//! it goes) and, for class-like objects, the three slots that name them (`@module_name`,
//! `@superclass`, `@attached_instance`). Object ids point forward, so names are resolved once
//! the whole file is read: a direct class that is a metaclass is followed up `@superclass` to
//! the first non-metaclass that is a kind of the footer's `Class` (FORMATS.md §1.4). Each
//! object's answer to both walks is kept, and a walk that comes back to an object it passed is
//! a loop, so resolving every class costs time linear in the class-like objects read, however
//! the `@superclass` links of a damaged dump are tangled.
//!
//! Damage stops the record stream (a binary stream cannot be resynchronised) but keeps the
//! histogram of the records read before it, and the problem is reported with its byte offset.
//! No length read from the file is trusted before it is checked against the bytes left.

use super::histogram::{ClassRow, Histogram};
use super::{HeapFormat, HeapSummary, HistogramRead};
use crate::diag::{Diagnostics, Position, display_name};
use crate::error::{Error, Result};
use crate::fasthash::{FastMap, FastSet};
use crate::source::Input;
use indicatif::ProgressBar;
use std::collections::HashSet;
use std::path::Path;

/// The only version the writer ever produced (and the only one heap_dump accepts).
pub const VERSION: u32 = 1;
/// Magic (12 bytes) plus the u32 version.
pub const HEADER_LEN: usize = 16;
/// The smallest `o` record: tag, four u32, a two-byte `i` ivars value, u16 slot count 0.
const MIN_OBJECT_RECORD: usize = 1 + 16 + 2 + 2;
/// Every value takes at least two bytes (`i` and its byte), which bounds any declared count.
const MIN_VALUE_LEN: usize = 2;
/// How often (in bytes read) the progress bar is moved.
const PROGRESS_STEP: usize = 8 << 20;

/// Record tags (FORMATS.md §1.3).
const TAG_SYMBOL: u8 = b's';
const TAG_LAYOUT: u8 = b'l';
const TAG_OBJECT: u8 = b'o';
const TAG_FOOTER: u8 = b'-';

/// The class histogram of a Rubinius dump, keyed by class object (histo.rb's single-file mode).
pub fn histogram(path: &Path) -> Result<HistogramRead> {
    let input = Input::open(path)?;
    let bar = crate::progress::bytes_bar(&display_name(path), input.len() as u64);
    let read = read_histogram(path, &input, &bar);
    bar.finish_and_clear();
    read
}

/// The same histogram from bytes already in memory; `path` only names the input in messages.
pub fn histogram_from_bytes(path: &Path, data: &[u8]) -> Result<HistogramRead> {
    read_histogram(path, data, &ProgressBar::hidden())
}

/// The dump reduced for the correlator: the histogram merged by name (no allocation sites:
/// Rubinius dumps carry none).
pub fn summarize(path: &Path) -> Result<HeapSummary> {
    let read = histogram(path)?;
    Ok(HeapSummary {
        path: path.to_path_buf(),
        format: HeapFormat::Rubinius,
        ruby_version: Some("Rubinius".to_owned()),
        histogram: read.histogram.by_name(),
        alloc_sites: Vec::new(),
        data_types: Vec::new(),
        objects: read.objects,
        slot_bytes: None,
        diagnostics: read.diagnostics,
    })
}

fn read_histogram(path: &Path, data: &[u8], bar: &ProgressBar) -> Result<HistogramRead> {
    check_header(path, data)?;
    let mut scanner = Scanner::new(path, data);
    let stop = scanner.scan(bar);
    scanner.finish(path, stop)
}

fn check_header(path: &Path, data: &[u8]) -> Result<()> {
    let magic = crate::detect::RUBINIUS_MAGIC;
    if data.is_empty() {
        return Err(Error::input(
            path,
            Position::Offset(0),
            "empty file, expected the RBXHEAPDUMP magic",
        ));
    }
    let head = &data[..data.len().min(magic.len())];
    if !magic.starts_with(head) {
        return Err(Error::input(
            path,
            Position::Offset(0),
            format!(
                "not a Rubinius heap dump: starts with {}, expected \"RBXHEAPDUMP\\0\"",
                escape(head)
            ),
        ));
    }
    if data.len() < HEADER_LEN {
        let at = data.len().min(magic.len());
        return Err(Error::input(
            path,
            Position::Offset(at as u64),
            format!(
                "the file ends inside the header ({} bytes, a header is {HEADER_LEN})",
                data.len()
            ),
        ));
    }
    match u32_at(data, magic.len()) {
        Some(VERSION) => Ok(()),
        other => Err(Error::input(
            path,
            Position::Offset(magic.len() as u64),
            format!(
                "unsupported RBXHEAPDUMP version {}, only version {VERSION} exists",
                other.unwrap_or(0)
            ),
        )),
    }
}

/// What a captured slot held. Only the three naming slots of class-like objects are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The layout has no slot of that name.
    Absent,
    Nil,
    Object(u32),
    Symbol(u32),
    /// Any other value (Fixnum, true/false, a body).
    Other,
}

/// Where, in a layout, the slots that name a class are.
#[derive(Debug, Clone, Copy, Default)]
struct NamingSlots {
    module_name: Option<u32>,
    superclass: Option<u32>,
    attached_instance: Option<u32>,
}

impl NamingSlots {
    fn any(&self) -> bool {
        self.module_name.is_some() || self.superclass.is_some() || self.attached_instance.is_some()
    }
}

#[derive(Debug, Clone, Copy)]
struct Layout {
    len: u32,
    naming: NamingSlots,
}

/// The naming slots of one class-like object (a module, class or metaclass).
#[derive(Debug, Clone, Copy)]
struct ModuleSlots {
    /// The object's own direct class (for the "kind of Class" walk).
    class: u32,
    module_name: Slot,
    superclass: Slot,
    attached_instance: Slot,
}

impl ModuleSlots {
    /// heap_dump's `metaclass?`: `@attached_instance` is set.
    fn is_metaclass(&self) -> bool {
        !matches!(self.attached_instance, Slot::Absent | Slot::Nil)
    }

    fn superclass(&self) -> Option<u32> {
        match self.superclass {
            Slot::Object(id) => Some(id),
            _ => None,
        }
    }
}

/// Objects counted under one direct class.
#[derive(Debug, Clone, Copy)]
struct Tally {
    direct_class: u32,
    count: u64,
    bytes: u64,
    /// Byte offset of the first such object: orders the rows as first seen.
    first_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Footer {
    at: usize,
    class: u32,
}

/// Why the record stream stopped early.
#[derive(Debug)]
struct Stop {
    at: usize,
    /// Plural noun phrase for [`Diagnostics`] ("bad record tags").
    what: &'static str,
    /// The same, singular, to open a one-line error ("bad record tag").
    headline: &'static str,
    detail: String,
}

impl Stop {
    fn bad_tag(at: usize, tag: u8) -> Stop {
        Stop {
            at,
            what: "bad record tags",
            headline: "bad record tag",
            detail: format!("{}, expected s, l, o or -", describe_byte(tag)),
        }
    }

    fn bad_value_code(at: usize, code: u8) -> Stop {
        Stop {
            at,
            what: "bad value codes",
            headline: "bad value code",
            detail: format!("{}, expected one of r x s f i t b c", describe_byte(code)),
        }
    }

    fn truncated(record_at: usize, tag: u8, file_len: usize) -> Stop {
        Stop {
            at: record_at,
            what: "truncated records",
            headline: "truncated record",
            detail: format!(
                "the '{}' record starting here is cut off by the end of the file at byte {file_len}",
                char::from(tag)
            ),
        }
    }

    /// A length or count declared at `field_at` that needs more bytes than are left:
    /// `subject` and `unit` read as "layout of N names", "byte body of N bytes".
    fn too_long(
        field_at: usize,
        subject: &str,
        declared: u64,
        unit: &str,
        needed: u64,
        left: usize,
        file_len: usize,
    ) -> Stop {
        let room = if needed > file_len as u64 {
            format!("more than the whole file ({file_len} bytes)")
        } else {
            format!("only {left} are left")
        };
        Stop {
            at: field_at,
            what: "lengths past end of file",
            headline: "length past end of file",
            detail: format!("{subject} of {declared} {unit} needs at least {needed} bytes, {room}"),
        }
    }
}

/// One pass over the record stream.
struct Scanner<'a> {
    data: &'a [u8],
    symbols: IdMap<&'a [u8]>,
    layouts: IdMap<Layout>,
    defined: IdSet,
    tallies: Vec<Tally>,
    tally_of_class: IdMap<usize>,
    /// The previous object's (direct class, tally index): instances of a class often cluster.
    last_tally: Option<(u32, usize)>,
    modules: IdMap<ModuleSlots>,
    footer: Option<Footer>,
    objects_read: u64,
    diagnostics: Diagnostics,
}

impl<'a> Scanner<'a> {
    fn new(path: &Path, data: &'a [u8]) -> Scanner<'a> {
        Scanner {
            data,
            symbols: IdMap::default(),
            layouts: IdMap::default(),
            defined: IdSet::for_file_of(data.len()),
            tallies: Vec::new(),
            tally_of_class: IdMap::default(),
            last_tally: None,
            modules: IdMap::default(),
            footer: None,
            objects_read: 0,
            diagnostics: Diagnostics::new(path),
        }
    }

    /// Reads records until the end of the file or the first damage.
    fn scan(&mut self, bar: &ProgressBar) -> Option<Stop> {
        let mut pos = HEADER_LEN;
        let mut next_tick = PROGRESS_STEP;
        while let Some(&tag) = self.data.get(pos) {
            let next = match tag {
                TAG_OBJECT => self.object_record(pos),
                TAG_SYMBOL => self.symbol_record(pos),
                TAG_LAYOUT => self.layout_record(pos),
                TAG_FOOTER => self.footer_record(pos),
                _ => Err(Stop::bad_tag(pos, tag)),
            };
            match next {
                Ok(next) => pos = next,
                Err(stop) => return Some(stop),
            }
            if pos >= next_tick {
                bar.set_position(pos as u64);
                next_tick = pos + PROGRESS_STEP;
            }
        }
        None
    }

    fn u32_in(&self, record_at: usize, pos: usize) -> Result<u32, Stop> {
        u32_at(self.data, pos).ok_or_else(|| self.truncated(record_at))
    }

    fn truncated(&self, record_at: usize) -> Stop {
        Stop::truncated(record_at, self.data[record_at], self.data.len())
    }

    /// Checks that `needed` bytes from `from` are in the file; `field_at` is the declaring field.
    fn check_len(
        &self,
        field_at: usize,
        from: usize,
        declared: (&str, u64, &str),
        needed: u64,
    ) -> Result<(), Stop> {
        let left = self.data.len().saturating_sub(from);
        if needed > left as u64 {
            let (subject, count, unit) = declared;
            return Err(Stop::too_long(
                field_at,
                subject,
                count,
                unit,
                needed,
                left,
                self.data.len(),
            ));
        }
        Ok(())
    }

    /// `s`: u32 sym_id, u32 len, len bytes.
    fn symbol_record(&mut self, at: usize) -> Result<usize, Stop> {
        let id = self.u32_in(at, at + 1)?;
        let len = self.u32_in(at, at + 5)?;
        self.check_len(at + 5, at + 9, ("symbol", len.into(), "bytes"), len.into())?;
        let start = at + 9;
        let end = start + len as usize;
        self.symbols.insert(id, &self.data[start..end]);
        Ok(end)
    }

    /// `l`: u32 layout_id, u32 n, n × u32 sym_id.
    fn layout_record(&mut self, at: usize) -> Result<usize, Stop> {
        let id = self.u32_in(at, at + 1)?;
        let len = self.u32_in(at, at + 5)?;
        let needed = u64::from(len) * 4;
        self.check_len(at + 5, at + 9, ("layout", len.into(), "names"), needed)?;
        let mut naming = NamingSlots::default();
        let mut pos = at + 9;
        for index in 0..len {
            let name = u32_at(self.data, pos).and_then(|sym| self.symbols.get(&sym));
            match name.copied() {
                Some(b"@module_name") => naming.module_name = Some(index),
                Some(b"@superclass") => naming.superclass = Some(index),
                Some(b"@attached_instance") => naming.attached_instance = Some(index),
                Some(_) => {}
                None => self.diagnostics.report(
                    "layout names that are not defined symbols",
                    Position::Offset(pos as u64),
                    || "the layout's slot cannot be looked up by name".to_owned(),
                ),
            }
            pos += 4;
        }
        self.layouts.insert(id, Layout { len, naming });
        Ok(pos)
    }

    /// `-`: the ids of Object, Class and Module.
    fn footer_record(&mut self, at: usize) -> Result<usize, Stop> {
        let class = self.u32_in(at, at + 5)?;
        self.u32_in(at, at + 9)?;
        if let Some(first) = self.footer {
            self.diagnostics
                .report("extra footer records", Position::Offset(at as u64), || {
                    format!("the footer at byte offset {} is kept", first.at)
                });
        } else {
            self.footer = Some(Footer { at, class });
        }
        Ok(at + 13)
    }

    /// `o`: u32 id, u32 bytes, u32 layout, u32 class, ivars value, u16 n, n values.
    fn object_record(&mut self, at: usize) -> Result<usize, Stop> {
        let fixed = self
            .data
            .get(at + 1..at + 17)
            .ok_or_else(|| self.truncated(at))?;
        let id = be_u32(&fixed[0..4]);
        let bytes = be_u32(&fixed[4..8]);
        let layout_id = be_u32(&fixed[8..12]);
        let class = be_u32(&fixed[12..16]);
        let pos = self.skip_values(at, at + 17, 1)?;
        let slot_count = self
            .data
            .get(pos..pos + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| self.truncated(at))?;
        let slots_at = pos + 2;
        let naming = match self.layouts.get(&layout_id).copied() {
            Some(layout) => {
                let slots = u64::from(slot_count);
                let names = u64::from(layout.len);
                if slots != names && slots != names + 1 {
                    self.diagnostics.report(
                        "objects whose slot count disagrees with their layout",
                        Position::Offset(at as u64),
                        || format!("{slots} slots for a layout of {names} names"),
                    );
                }
                layout.naming
            }
            None => {
                self.diagnostics.report(
                    "objects with an undefined layout",
                    Position::Offset(at as u64),
                    || format!("layout {layout_id} was not defined before this object"),
                );
                NamingSlots::default()
            }
        };
        if !naming.any() {
            let end = self.skip_values(at, slots_at, slot_count.into())?;
            if self.define(at, id) {
                self.count(class, bytes, at);
            }
            return Ok(end);
        }
        let (end, module) = self.naming_slots(at, slots_at, slot_count, naming, class)?;
        if self.define(at, id) {
            self.modules.insert(id, module);
            self.count(class, bytes, at);
        }
        Ok(end)
    }

    /// Marks `id` as written; a second definition is reported and not counted.
    fn define(&mut self, at: usize, id: u32) -> bool {
        if self.defined.insert(id) {
            return true;
        }
        self.diagnostics
            .report("redefined objects", Position::Offset(at as u64), || {
                format!("object id {id} was already written; this record is not counted")
            });
        false
    }

    fn count(&mut self, class: u32, bytes: u32, at: usize) {
        self.objects_read += 1;
        let index = match self.last_tally {
            Some((last, index)) if last == class => index,
            _ => {
                let next = self.tallies.len();
                let index = *self.tally_of_class.entry(class).or_insert(next);
                if index == next {
                    self.tallies.push(Tally {
                        direct_class: class,
                        count: 0,
                        bytes: 0,
                        first_at: at,
                    });
                }
                self.last_tally = Some((class, index));
                index
            }
        };
        let tally = &mut self.tallies[index];
        tally.count += 1;
        tally.bytes += u64::from(bytes);
    }

    /// Reads the slots of a class-like object, keeping the three naming ones.
    fn naming_slots(
        &mut self,
        at: usize,
        mut pos: usize,
        slot_count: u16,
        naming: NamingSlots,
        class: u32,
    ) -> Result<(usize, ModuleSlots), Stop> {
        let mut module = ModuleSlots {
            class,
            module_name: Slot::Absent,
            superclass: Slot::Absent,
            attached_instance: Slot::Absent,
        };
        for index in 0..u32::from(slot_count) {
            let target = if naming.module_name == Some(index) {
                &mut module.module_name
            } else if naming.superclass == Some(index) {
                &mut module.superclass
            } else if naming.attached_instance == Some(index) {
                &mut module.attached_instance
            } else {
                pos = self.skip_values(at, pos, 1)?;
                continue;
            };
            let (slot, next) = self.value(at, pos)?;
            *target = slot;
            pos = next;
        }
        Ok((pos, module))
    }

    /// Reads one value, keeping what a naming slot can hold; bodies are skipped whole.
    fn value(&mut self, at: usize, pos: usize) -> Result<(Slot, usize), Stop> {
        let code = *self.data.get(pos).ok_or_else(|| self.truncated(at))?;
        let slot = match code {
            b'r' => Slot::Object(self.u32_in(at, pos + 1)?),
            b'x' => Slot::Symbol(self.u32_in(at, pos + 1)?),
            b's' => Slot::Symbol(self.u32_in(at, pos + 1)?),
            b'i' => match self.data.get(pos + 1) {
                Some(0 | 1) => Slot::Other,
                // heap_dump reads 2 and any unknown immediate as nil.
                Some(_) => Slot::Nil,
                None => return Err(self.truncated(at)),
            },
            _ => Slot::Other,
        };
        Ok((slot, self.skip_values(at, pos, 1)?))
    }

    /// Skips `count` values from `pos` (registering inline symbols); returns the end. A tuple
    /// body is a count followed by that many values, so it simply adds to what is pending.
    fn skip_values(&mut self, at: usize, mut pos: usize, count: u64) -> Result<usize, Stop> {
        let data = self.data;
        let mut pending = count;
        while pending > 0 {
            pending -= 1;
            let code = *data.get(pos).ok_or_else(|| self.truncated(at))?;
            pos = match code {
                b'r' | b'x' | b'f' => {
                    if pos + 5 > data.len() {
                        return Err(self.truncated(at));
                    }
                    pos + 5
                }
                b'i' => {
                    if pos + 2 > data.len() {
                        return Err(self.truncated(at));
                    }
                    pos + 2
                }
                b's' => {
                    let id = self.u32_in(at, pos + 1)?;
                    let len = self.u32_in(at, pos + 5)?;
                    self.check_len(
                        pos + 5,
                        pos + 9,
                        ("symbol", len.into(), "bytes"),
                        len.into(),
                    )?;
                    let end = pos + 9 + len as usize;
                    self.symbols.insert(id, &data[pos + 9..end]);
                    end
                }
                b't' => {
                    let entries = self.u32_in(at, pos + 1)?;
                    pending += u64::from(entries);
                    // Everything still pending needs at least MIN_VALUE_LEN bytes each.
                    let needed = pending * MIN_VALUE_LEN as u64;
                    self.check_len(
                        pos + 1,
                        pos + 5,
                        ("tuple body", entries.into(), "entries"),
                        needed,
                    )?;
                    pos + 5
                }
                b'b' | b'c' => {
                    let len = self.u32_in(at, pos + 1)?;
                    self.check_len(
                        pos + 1,
                        pos + 5,
                        ("byte body", len.into(), "bytes"),
                        len.into(),
                    )?;
                    pos + 5 + len as usize
                }
                other => return Err(Stop::bad_value_code(pos, other)),
            };
        }
        Ok(pos)
    }

    /// Resolves every direct class to its named class and builds the histogram.
    fn finish(mut self, path: &Path, stop: Option<Stop>) -> Result<HistogramRead> {
        let objects_before_stop = self.objects_read;
        let mut problem: Option<(usize, String)> = None;
        if let Some(stop) = &stop {
            let detail = format!(
                "{}; reading stopped there, the histogram covers the {objects_before_stop} objects read before it",
                stop.detail
            );
            problem = Some((stop.at, format!("{}: {}", stop.headline, stop.detail)));
            self.diagnostics
                .report(stop.what, Position::Offset(stop.at as u64), || detail);
        } else if self.data.len() == HEADER_LEN {
            problem = Some((HEADER_LEN, "no records after the header".to_owned()));
        } else if self.footer.is_none() {
            let end = self.data.len();
            let detail = "the file ends without its '-' footer record (the dump is incomplete), \
                          so instances of metaclasses cannot be named"
                .to_owned();
            problem = Some((end, detail.clone()));
            self.diagnostics
                .report("missing footers", Position::Offset(end as u64), || detail);
        }

        let mut resolver = Resolver::new(
            &self.modules,
            &self.symbols,
            self.footer.map(|f| f.class),
            stop.is_some(),
        );
        let mut rows: Vec<(usize, ClassRow)> = Vec::new();
        let mut row_of_class: IdMap<usize> = IdMap::default();
        for tally in &self.tallies {
            match resolver.resolve(tally.direct_class) {
                Resolved::Named(class, name) => {
                    let next = rows.len();
                    let index = *row_of_class.entry(class).or_insert(next);
                    if index == next {
                        rows.push((
                            tally.first_at,
                            ClassRow {
                                name,
                                count: 0,
                                bytes: 0,
                            },
                        ));
                    }
                    let (first_at, row) = &mut rows[index];
                    *first_at = (*first_at).min(tally.first_at);
                    row.count = row
                        .count
                        .saturating_add(crate::num::saturating_i64(tally.count));
                    row.bytes = row
                        .bytes
                        .saturating_add(crate::num::saturating_i64(tally.bytes));
                }
                Resolved::Anonymous => report_many(
                    &mut self.diagnostics,
                    "objects of anonymous classes",
                    tally,
                    || "their class has a nil @module_name; left out, as histo.rb does".to_owned(),
                ),
                Resolved::Unknown(why) => {
                    report_many(
                        &mut self.diagnostics,
                        "objects whose class could not be resolved",
                        tally,
                        || why.clone(),
                    );
                    if problem.is_none() {
                        problem = Some((tally.first_at, why));
                    }
                }
            }
        }
        rows.sort_by_key(|(first_at, _)| *first_at);
        let histogram = Histogram {
            rows: rows.into_iter().map(|(_, row)| row).collect(),
        };
        if histogram.rows.is_empty()
            && let Some((at, why)) = problem
        {
            return Err(Error::input(
                path,
                Position::Offset(at as u64),
                format!("{why}; no object could be counted"),
            ));
        }
        Ok(HistogramRead {
            objects: histogram.total_count() as u64,
            histogram,
            diagnostics: self.diagnostics,
        })
    }
}

enum Resolved {
    /// The class object's id and its name.
    Named(u32, String),
    /// `@module_name` is nil: histo.rb skips such objects.
    Anonymous,
    Unknown(String),
}

/// Where the `@superclass` walk of a metaclass, from one object up, ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Above {
    /// The first non-metaclass that is a kind of `Class`.
    Class(u32),
    /// A nil or non-object `@superclass` before any.
    End,
    /// An object that is not among the class-like objects read.
    Missing(u32),
    /// Back to an object already passed.
    Loop,
}

/// Class-name resolution of FORMATS.md §1.4 over the naming slots gathered by the scan.
struct Resolver<'s, 'a> {
    modules: &'s IdMap<ModuleSlots>,
    symbols: &'s IdMap<&'a [u8]>,
    /// The footer's `Class` object.
    class: Option<u32>,
    stopped_early: bool,
    /// Per object: whether `Class` is on its `@superclass` chain (the object included).
    reaches_class: IdMap<bool>,
    /// Per object: where a metaclass's walk that arrives at it ends.
    above: IdMap<Above>,
    /// Links followed by both walks: the measure of the work done (each object is passed at
    /// most once per walk).
    steps: u64,
}

impl<'s, 'a> Resolver<'s, 'a> {
    fn new(
        modules: &'s IdMap<ModuleSlots>,
        symbols: &'s IdMap<&'a [u8]>,
        class: Option<u32>,
        stopped_early: bool,
    ) -> Self {
        Resolver {
            modules,
            symbols,
            class,
            stopped_early,
            reaches_class: IdMap::default(),
            above: IdMap::default(),
            steps: 0,
        }
    }

    fn module(&self, id: u32) -> Result<&'s ModuleSlots, String> {
        let modules = self.modules;
        modules.get(&id).ok_or_else(|| self.missing(id))
    }

    fn missing(&self, id: u32) -> String {
        if self.stopped_early {
            format!("class object {id} is not among the records read")
        } else {
            format!("class object {id} is not in the dump, or is not a class")
        }
    }

    fn resolve(&mut self, direct_class: u32) -> Resolved {
        match self.real_class(direct_class) {
            Ok(class) => match self.name(class) {
                Ok(Some(name)) => Resolved::Named(class, name),
                Ok(None) => Resolved::Anonymous,
                Err(why) => Resolved::Unknown(why),
            },
            Err(why) => Resolved::Unknown(why),
        }
    }

    /// heap_dump's `class_object`: the direct class, or for a metaclass the first class up its
    /// `@superclass` chain that is not a metaclass and is a kind of `Class`.
    fn real_class(&mut self, direct_class: u32) -> Result<u32, String> {
        let direct = self.module(direct_class)?;
        if !direct.is_metaclass() {
            return Ok(direct_class);
        }
        let Some(class_class) = self.class else {
            return Err(format!(
                "class object {direct_class} is a metaclass, and without the footer's Class \
                 its class cannot be found"
            ));
        };
        match self.class_above(direct.superclass(), class_class) {
            Above::Class(class) => Ok(class),
            Above::End => Err(format!(
                "the @superclass chain of metaclass {direct_class} ends without a class"
            )),
            Above::Missing(id) => Err(self.missing(id)),
            Above::Loop => Err(format!(
                "the @superclass chain of metaclass {direct_class} loops"
            )),
        }
    }

    /// Walks `@superclass` from `start` to the first non-metaclass that is a kind of `Class`.
    /// Every object passed shares the walk's end, which is kept for the next walk through it.
    fn class_above(&mut self, start: Option<u32>, class_class: u32) -> Above {
        let modules = self.modules;
        let mut passed: Vec<u32> = Vec::new();
        let mut on_walk: FastSet<u32> = FastSet::default();
        let mut next = start;
        let end = loop {
            let Some(id) = next else { break Above::End };
            if let Some(&known) = self.above.get(&id) {
                break known;
            }
            if !on_walk.insert(id) {
                break Above::Loop;
            }
            self.steps += 1;
            passed.push(id);
            let Some(module) = modules.get(&id) else {
                break Above::Missing(id);
            };
            if !module.is_metaclass() && self.reaches(module.class, class_class) {
                break Above::Class(id);
            }
            next = module.superclass();
        };
        for id in passed {
            self.above.insert(id, end);
        }
        end
    }

    /// Whether `ancestor` (always the footer's `Class`) is on the `@superclass` chain from
    /// `start`: for an object's direct class, whether the object is a kind of it.
    fn reaches(&mut self, start: u32, ancestor: u32) -> bool {
        let modules = self.modules;
        let mut passed: Vec<u32> = Vec::new();
        let mut on_walk: FastSet<u32> = FastSet::default();
        let mut next = Some(start);
        let found = loop {
            match next {
                None => break false,
                Some(id) if id == ancestor => break true,
                Some(id) => {
                    if let Some(&known) = self.reaches_class.get(&id) {
                        break known;
                    }
                    // Back to an object passed, without meeting `ancestor`.
                    if !on_walk.insert(id) {
                        break false;
                    }
                    self.steps += 1;
                    passed.push(id);
                    next = modules.get(&id).and_then(ModuleSlots::superclass);
                }
            }
        };
        for id in passed {
            self.reaches_class.insert(id, found);
        }
        found
    }

    fn name(&self, class: u32) -> Result<Option<String>, String> {
        match self.module(class)?.module_name {
            Slot::Symbol(sym) => match self.symbols.get(&sym) {
                Some(text) => Ok(Some(String::from_utf8_lossy(text).into_owned())),
                None => Err(format!(
                    "the @module_name of class object {class} is symbol {sym}, which is never defined"
                )),
            },
            Slot::Absent | Slot::Nil => Ok(None),
            Slot::Object(_) | Slot::Other => Err(format!(
                "the @module_name of class object {class} is not a Symbol"
            )),
        }
    }
}

/// Reports the `tally.count` objects of one direct class as one problem of kind `what`.
fn report_many(
    diagnostics: &mut Diagnostics,
    what: &'static str,
    tally: &Tally,
    detail: impl FnOnce() -> String,
) {
    diagnostics.report(what, Position::Offset(tally.first_at as u64), detail);
    if let Some(kind) = diagnostics.kinds.iter_mut().find(|k| k.what == what) {
        kind.count += tally.count.saturating_sub(1);
    }
}

fn u32_at(data: &[u8], pos: usize) -> Option<u32> {
    data.get(pos..pos.checked_add(4)?).map(be_u32)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("byte 0x{b:02x} ('{}')", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// Up to 12 bytes as a quoted string with non-printing bytes escaped.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes.iter().take(12) {
        out.extend(std::ascii::escape_default(b).map(char::from));
    }
    out.push('"');
    out
}

type IdMap<V> = FastMap<u32, V>;

/// The object ids written so far: a bitmap for ids up to what the file could hold (one per
/// smallest record, so its size is bounded by the file's), a set for anything above.
struct IdSet {
    bits: Vec<u64>,
    limit: u32,
    beyond: FastSet<u32>,
}

impl IdSet {
    fn for_file_of(len: usize) -> IdSet {
        let limit = u32::try_from(len / MIN_OBJECT_RECORD + 64).unwrap_or(u32::MAX);
        IdSet {
            bits: Vec::new(),
            limit,
            beyond: HashSet::default(),
        }
    }

    /// Adds `id`; false if it was already there.
    fn insert(&mut self, id: u32) -> bool {
        if id >= self.limit {
            return self.beyond.insert(id);
        }
        let word = (id / 64) as usize;
        if word >= self.bits.len() {
            let wanted = (word + 1)
                .next_power_of_two()
                .min(self.limit as usize / 64 + 1);
            self.bits.resize(wanted.max(word + 1), 0);
        }
        let mask = 1u64 << (id % 64);
        let fresh = self.bits[word] & mask == 0;
        self.bits[word] |= mask;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"RBXHEAPDUMP\0\0\0\0\x01";

    fn read(bytes: &[u8]) -> Result<HistogramRead> {
        histogram_from_bytes(Path::new("t.dump"), bytes)
    }

    fn rows(read: &HistogramRead) -> Vec<(String, i64, i64)> {
        read.histogram
            .rows
            .iter()
            .map(|r| (r.name.clone(), r.count, r.bytes))
            .collect()
    }

    fn err(bytes: &[u8]) -> String {
        read(bytes).expect_err("an error").to_string()
    }

    /// FORMATS.md §1.3's worked example, completed with a class object #7 named "Foo"
    /// whose layout is [@module_name] (sym#1), and the footer.
    fn worked_example() -> Vec<u8> {
        let mut d = HEADER.to_vec();
        d.extend_from_slice(b"s\0\0\0\0\0\0\0\x02@a");
        d.extend_from_slice(b"l\0\0\0\x01\0\0\0\x01\0\0\0\0");
        d.extend_from_slice(b"o\0\0\0\x05\0\0\0\x18\0\0\0\x01\0\0\0\x07i\x02\0\x01f\0\0\0\x2a");
        d.extend_from_slice(b"s\0\0\0\x01\0\0\0\x0c@module_name");
        d.extend_from_slice(b"l\0\0\0\x09\0\0\0\x01\0\0\0\x01");
        d.extend_from_slice(
            b"o\0\0\0\x07\0\0\0\x40\0\0\0\x09\0\0\0\x01i\x02\0\x01s\0\0\0\x02\0\0\0\x03Foo",
        );
        d.extend_from_slice(b"-\0\0\0\0\0\0\0\x01\0\0\0\x02");
        d
    }

    #[test]
    fn reads_the_worked_example_with_a_forward_class_reference() {
        let read = read(&worked_example()).unwrap();
        // Object #7 is the class of #5 (written after it); #7's own class #1 is not in the
        // dump, so #7 itself cannot be named and is reported, not counted.
        assert_eq!(rows(&read), vec![("Foo".to_owned(), 1, 24)]);
        assert_eq!(read.objects, 1);
        assert_eq!(
            read.diagnostics
                .count_of("objects whose class could not be resolved"),
            1
        );
    }

    #[test]
    fn header_problems_name_the_offset() {
        assert_eq!(
            err(b""),
            "t.dump: byte offset 0: empty file, expected the RBXHEAPDUMP magic"
        );
        assert!(err(b"\x89PNG\r\n").starts_with("t.dump: byte offset 0: not a Rubinius heap dump"));
        assert!(
            err(b"RBXHEAP").starts_with("t.dump: byte offset 7: the file ends inside the header")
        );
        assert_eq!(
            err(b"RBXHEAPDUMP\0\0\0\0\x02"),
            "t.dump: byte offset 12: unsupported RBXHEAPDUMP version 2, only version 1 exists"
        );
    }

    #[test]
    fn header_alone_is_an_error() {
        assert_eq!(
            err(HEADER),
            "t.dump: byte offset 16: no records after the header; no object could be counted"
        );
    }

    #[test]
    fn bad_tag_keeps_what_came_before() {
        let mut d = worked_example();
        let footer_at = d.len() - 13;
        d.insert(footer_at, b'A');
        let read = read(&d).unwrap();
        assert_eq!(rows(&read), vec![("Foo".to_owned(), 1, 24)]);
        let lines = read.diagnostics.lines();
        assert_eq!(
            lines[0],
            format!(
                "t.dump: 1 bad record tag at byte offset {footer_at} (byte 0x41 ('A'), expected \
                 s, l, o or -; reading stopped there, the histogram covers the 2 objects read before it)"
            )
        );
        // Without the footer, #7's own class (#1) is unknown; #5 still counts under Foo.
        assert_eq!(
            lines[1],
            format!(
                "t.dump: 1 object whose class could not be resolved at byte offset {} (class \
                 object 1 is not among the records read)",
                16 + 11 + 13 + 26 + 21 + 13
            )
        );
    }

    #[test]
    fn bad_value_code_is_located() {
        let mut d = worked_example();
        // The `f` of `@a = 42` sits 23 bytes into object #5's record.
        let obj5 = 16 + 11 + 13;
        assert_eq!(d[obj5 + 21], b'f');
        d[obj5 + 21] = b'z';
        // Nothing before it was an object: nothing usable, so an error.
        assert_eq!(
            err(&d),
            format!(
                "t.dump: byte offset {}: bad value code: byte 0x7a ('z'), expected one of \
                 r x s f i t b c; no object could be counted",
                obj5 + 21
            )
        );
    }

    #[test]
    fn huge_lengths_are_refused_without_allocating() {
        let mut d = HEADER.to_vec();
        d.extend_from_slice(b"l\0\0\0\x01\xff\xff\xff\xff");
        assert_eq!(
            err(&d),
            "t.dump: byte offset 21: length past end of file: layout of 4294967295 names needs \
             at least 17179869180 bytes, more than the whole file (25 bytes); no object could be \
             counted"
        );
        let mut d = HEADER.to_vec();
        d.extend_from_slice(b"o\0\0\0\x01\0\0\0\x10\0\0\0\0\0\0\0\0t\xff\xff\xff\xff");
        assert_eq!(
            err(&d),
            "t.dump: byte offset 34: length past end of file: tuple body of 4294967295 entries \
             needs at least 8589934590 bytes, more than the whole file (38 bytes); no object \
             could be counted"
        );
    }

    #[test]
    fn nested_tuples_cannot_overflow_the_pending_count() {
        let mut d = HEADER.to_vec();
        d.extend_from_slice(b"o\0\0\0\x01\0\0\0\x10\0\0\0\0\0\0\0\0");
        for _ in 0..1000 {
            d.extend_from_slice(b"t\0\0\0\x02");
        }
        // Each `t 2` leaves one more value pending; the 715th finds 716 pending values (at
        // least 1432 bytes) with 1425 bytes left. Its count field is at 16 + 17 + 5 × 714 + 1.
        assert_eq!(
            err(&d),
            "t.dump: byte offset 3604: length past end of file: tuple body of 2 entries needs \
             at least 1432 bytes, only 1425 are left; no object could be counted"
        );
    }

    #[test]
    fn truncated_record_names_its_start() {
        let d = worked_example();
        let cut = &d[..16 + 11 + 13 + 10];
        assert!(
            err(cut).starts_with(&format!(
                "t.dump: byte offset {}: truncated record: the 'o' record starting here is cut \
                 off by the end of the file at byte {}",
                16 + 11 + 13,
                cut.len()
            )),
            "{}",
            err(cut)
        );
    }

    #[test]
    fn redefined_object_is_not_counted_twice() {
        let mut d = worked_example();
        let obj5 = 16 + 11 + 13;
        let record = d[obj5..obj5 + 26].to_vec();
        d.splice(obj5 + 26..obj5 + 26, record);
        let read = read(&d).unwrap();
        assert_eq!(rows(&read), vec![("Foo".to_owned(), 1, 24)]);
        assert_eq!(read.diagnostics.count_of("redefined objects"), 1);
        assert_eq!(
            read.diagnostics.kinds[0].first,
            Position::Offset((obj5 + 26) as u64)
        );
    }

    /// A class-like object's record: layout 9 ([@module_name, @superclass, @attached_instance]),
    /// with each slot an object reference (`r`), a symbol reference (`x`) or nil.
    fn module_record(
        id: u32,
        class: u32,
        name: Option<u32>,
        superclass: u32,
        attached: bool,
    ) -> Vec<u8> {
        let mut d = vec![b'o'];
        for field in [id, 16, 9, class] {
            d.extend_from_slice(&field.to_be_bytes());
        }
        d.extend_from_slice(b"i\x02\0\x03");
        match name {
            Some(sym) => {
                d.push(b'x');
                d.extend_from_slice(&sym.to_be_bytes());
            }
            None => d.extend_from_slice(b"i\x02"),
        }
        d.push(b'r');
        d.extend_from_slice(&superclass.to_be_bytes());
        if attached {
            d.push(b'r');
            d.extend_from_slice(&id.to_be_bytes());
        } else {
            d.extend_from_slice(b"i\x02");
        }
        d
    }

    /// Metaclasses whose `@superclass` leads into a loop of classes that are not a kind of
    /// `Class` (their own class chain loops too), as a damaged dump can have: every walk ends in
    /// a loop, and the work must stay linear in the objects, not in walks times chain lengths.
    /// The links followed are counted, so the bound holds whatever the machine's speed.
    #[test]
    fn superclass_loops_are_resolved_in_linear_steps() {
        const METACLASSES: u32 = 50;
        let mut d = HEADER.to_vec();
        for (id, name) in [
            (1u32, &b"@module_name"[..]),
            (2, b"@superclass"),
            (3, b"@attached_instance"),
            (4, b"Foo"),
        ] {
            d.push(b's');
            d.extend_from_slice(&id.to_be_bytes());
            d.extend_from_slice(&(name.len() as u32).to_be_bytes());
            d.extend_from_slice(name);
        }
        d.extend_from_slice(b"l\0\0\0\x09\0\0\0\x03\0\0\0\x01\0\0\0\x02\0\0\0\x03");
        d.extend_from_slice(b"l\0\0\0\x08\0\0\0\0");
        // #100 "Foo" is its own superclass; its class #101 is its own superclass as well.
        d.extend(module_record(100, 101, Some(4), 100, false));
        d.extend(module_record(101, 101, None, 101, false));
        for i in 0..METACLASSES {
            d.extend(module_record(200 + i, 101, None, 100, true));
            // One plain object per metaclass: each is a direct class to resolve.
            d.push(b'o');
            for field in [1000 + i, 8, 8, 200 + i] {
                d.extend_from_slice(&field.to_be_bytes());
            }
            d.extend_from_slice(b"i\x02\0\0");
        }
        // Footer: Class is #500, which no chain reaches.
        d.extend_from_slice(b"-\0\0\0\0\0\0\x01\xf4\0\0\0\0");

        let path = Path::new("t.dump");
        let mut scanner = Scanner::new(path, &d);
        assert!(scanner.scan(&ProgressBar::hidden()).is_none());
        assert_eq!(scanner.tallies.len(), 1 + METACLASSES as usize);
        let mut resolver = Resolver::new(&scanner.modules, &scanner.symbols, Some(500), false);
        for tally in &scanner.tallies[1..] {
            match resolver.resolve(tally.direct_class) {
                Resolved::Unknown(why) => assert_eq!(
                    why,
                    format!(
                        "the @superclass chain of metaclass {} loops",
                        tally.direct_class
                    )
                ),
                _ => panic!("metaclass {} resolved", tally.direct_class),
            }
        }
        // Two walks, each passing an object at most once: at most twice the objects read.
        let modules = scanner.modules.len() as u64;
        assert!(
            resolver.steps <= 2 * modules,
            "{} links followed for {modules} class-like objects",
            resolver.steps
        );

        // Through the reader: nothing can be named (#101 is anonymous), and it says why.
        assert!(
            err(&d).ends_with(
                "the @superclass chain of metaclass 200 loops; no object could be counted"
            ),
            "{}",
            err(&d)
        );
    }

    #[test]
    fn id_set_stays_small_for_wild_ids() {
        let mut set = IdSet::for_file_of(1000);
        assert!(set.insert(u32::MAX));
        assert!(!set.insert(u32::MAX));
        assert!(set.insert(3));
        assert!(!set.insert(3));
        assert!(set.bits.len() <= 2);
    }
}
