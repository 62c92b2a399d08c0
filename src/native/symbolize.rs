//! Names for frames that arrive as `module+offset`, `???` or a bare address, from the module's
//! own symbol tables (read with the `object` crate), and module maps (`/proc/PID/maps` text)
//! that place bare addresses in their library.
//!
//! Stage: between the parsers and the evidence model. A parser keeps what the tool printed;
//! [`Symbolizer::resolve`] then, for each distinct frame of a report:
//! 1. places a frame that has an address but no module (LSan's `<unknown module>` after FFI
//!    `dlclose`d the library at exit, valgrind's `ip`-only frames) or no offset, using the maps;
//! 2. names a frame without a function from the module's symbols, only when the address lies
//!    inside a symbol's extent: ELF symbols are bounded by their size, Mach-O symbols (which have
//!    none) by the next symbol or the end of their section. Otherwise the frame keeps its
//!    `libzmq.so.5+0x3194a` label: a stripped library (Debian's libzmq) has symbols only for its
//!    exported functions, and guessing the nearest one would name the wrong function.
//!
//! Offsets follow the tools: for ELF, `module_offset` is the link-time virtual address (LSan
//! prints `pc - load bias`); for Mach-O it is the distance from the image's start (`leaks`'
//! Binary Images), i.e. the virtual address minus `__TEXT`'s. A map gives a file offset, turned
//! into a virtual address through the module's program headers. ELF debug files found by build
//! id under `/usr/lib/debug/.build-id` add their `.symtab`. Tables are read once per module.
//!
//! What naming took from each module (its layout and the function found at each offset looked
//! up) is kept as a [`ModuleCapture`]: a bundle stores it, and [`Symbolizer::from_capture`] names
//! the same frames alike on a machine without those files.
//!
//! C++ names (Itanium ABI: `_ZN4ring6Buffer4pushEm`, as g++ and clang write them on Linux and
//! macOS) are demangled when a frame is named, so C++ parts of gems (grpc, nokogiri's, libzmq)
//! read as `ring::Buffer::push(unsigned long)`; so are mangled names a tool printed as they were.

use super::{Frame, NativeReport};
use crate::diag::{Diagnostics, Position};
use crate::error::{Error, Result};
use crate::source::Input;
use object::{BinaryFormat, Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// One line of a module map: `start-end perms offset dev inode path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedRegion {
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Offset in the file of `start`.
    pub file_offset: u64,
    pub executable: bool,
    pub path: String,
}

/// The file-backed regions of a process's address space at one moment.
#[derive(Debug, Clone)]
pub struct ModuleMap {
    pub source: PathBuf,
    /// Sorted by `start`.
    pub regions: Vec<MappedRegion>,
    pub diagnostics: Diagnostics,
}

impl ModuleMap {
    /// Parses `/proc/PID/maps` text; anonymous and pseudo regions (`[heap]`, `[stack]`) are left out.
    pub fn parse(bytes: &[u8]) -> ModuleMap {
        ModuleMap::parse_named(Path::new("maps"), bytes)
    }

    /// As [`ModuleMap::parse`], naming `source` in diagnostics.
    pub fn parse_named(source: &Path, bytes: &[u8]) -> ModuleMap {
        let mut diagnostics = Diagnostics::new(source);
        let mut regions = Vec::new();
        for (number, line) in super::bytes::lines(bytes) {
            if line.trim_ascii().is_empty() {
                continue;
            }
            match parse_maps_line(line) {
                Some(Some(region)) => regions.push(region),
                Some(None) => {}
                None => diagnostics.report("lines not understood", Position::Line(number), || {
                    format!(
                        "not `start-end perms offset dev inode path`: `{}`",
                        super::bytes::excerpt(line)
                    )
                }),
            }
        }
        regions.sort_by_key(|r: &MappedRegion| r.start);
        ModuleMap {
            source: source.to_path_buf(),
            regions,
            diagnostics,
        }
    }

    /// Reads a maps file; an error when not one line of it is a mapping.
    pub fn read(path: &Path) -> Result<ModuleMap> {
        let input = Input::open(path)?;
        let map = ModuleMap::parse_named(path, &input);
        if map.regions.is_empty() {
            let why = match map.diagnostics.lines().first() {
                Some(first) => format!("not a module map (/proc/PID/maps text): {first}"),
                None => "not a module map (/proc/PID/maps text): no file-backed mapping in it"
                    .to_owned(),
            };
            return Err(Error::input(path, Position::Whole, why));
        }
        Ok(map)
    }

    /// The region holding `address`.
    pub fn region_at(&self, address: u64) -> Option<&MappedRegion> {
        let after = self.regions.partition_point(|r| r.start <= address);
        let region = self.regions.get(after.checked_sub(1)?)?;
        (address < region.end).then_some(region)
    }

    /// Where `path` starts in memory: its lowest mapping.
    pub fn load_base(&self, path: &str) -> Option<u64> {
        self.regions
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.start - r.file_offset.min(r.start))
            .min()
    }
}

/// `Some(Some(region))` for a file mapping, `Some(None)` for an anonymous or pseudo one,
/// `None` for a line that is not a mapping.
fn parse_maps_line(line: &[u8]) -> Option<Option<MappedRegion>> {
    let mut rest = line;
    let mut field = || -> Option<&[u8]> {
        rest = rest.trim_ascii_start();
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        rest = tail;
        (!word.is_empty()).then_some(word)
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let _device = field()?;
    let _inode = field()?;
    let dash = range.iter().position(|&b| b == b'-')?;
    let start = super::bytes::parse_hex(&range[..dash])?;
    let end = super::bytes::parse_hex(&range[dash + 1..])?;
    let file_offset = super::bytes::parse_hex(offset)?;
    if perms.len() != 4 || end < start {
        return None;
    }
    let path = rest.trim_ascii();
    let path = path.strip_suffix(b" (deleted)").unwrap_or(path);
    if !path.starts_with(b"/") {
        return Some(None);
    }
    Some(Some(MappedRegion {
        start,
        end,
        file_offset,
        executable: perms.get(2) == Some(&b'x'),
        path: String::from_utf8_lossy(path).into_owned(),
    }))
}

/// What [`Symbolizer::resolve`] did to a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolveStats {
    /// Frames given their module (and offset) from a map.
    pub placed: usize,
    /// Frames given a function name from their module's symbols.
    pub named: usize,
}

/// What naming frames took from one module's file: enough to place and name the same frames
/// again without it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModuleCapture {
    /// `elf` or `macho`.
    pub format: String,
    /// Mach-O `__TEXT` address; 0 for ELF.
    pub text_base: u64,
    pub segments: Vec<LoadSegment>,
    /// Module offset → function, for each offset looked up that a symbol of the module holds
    /// (offsets that none holds are left out: they stay unnamed).
    pub functions: BTreeMap<u64, String>,
}

/// Reads modules' symbol tables on demand and names frames; keeps each module's table.
pub struct Symbolizer {
    modules: HashMap<String, Option<Rc<ModuleSymbols>>>,
    debug_root: Option<PathBuf>,
    /// Names come only from a capture: no module file is read.
    captured_only: bool,
    /// Per module, the function found at each offset looked up (for [`Symbolizer::capture`]).
    named: HashMap<String, BTreeMap<u64, String>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Symbolizer::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer {
            modules: HashMap::new(),
            debug_root: Some(PathBuf::from("/usr/lib/debug")),
            captured_only: false,
            named: HashMap::new(),
        }
    }

    /// A symbolizer that does not look for separate debug files (tests, reproducible output).
    pub fn without_debug_files() -> Self {
        Symbolizer {
            debug_root: None,
            ..Symbolizer::new()
        }
    }

    /// A symbolizer that reads no file: it knows the modules of `captured` (what another
    /// symbolizer's [`Symbolizer::capture`] kept) and no other.
    pub fn from_capture(captured: &BTreeMap<String, ModuleCapture>) -> Self {
        Symbolizer {
            modules: captured
                .iter()
                .map(|(path, capture)| {
                    (
                        path.clone(),
                        ModuleSymbols::from_capture(capture).map(Rc::new),
                    )
                })
                .collect(),
            debug_root: None,
            captured_only: true,
            named: HashMap::new(),
        }
    }

    /// What this symbolizer took from each module it could read: its layout and the functions
    /// it named. Naming the same frames with [`Symbolizer::from_capture`] of it gives the same
    /// names and places.
    pub fn capture(&self) -> BTreeMap<String, ModuleCapture> {
        self.modules
            .iter()
            .filter_map(|(path, symbols)| {
                let symbols = symbols.as_ref()?;
                let format = match symbols.format {
                    BinaryFormat::Elf => "elf",
                    BinaryFormat::MachO => "macho",
                    _ => return None,
                };
                Some((
                    path.clone(),
                    ModuleCapture {
                        format: format.to_owned(),
                        text_base: symbols.text_base,
                        segments: symbols.segments.clone(),
                        functions: self.named.get(path).cloned().unwrap_or_default(),
                    },
                ))
            })
            .collect()
    }

    /// Places and names the report's frames (each distinct frame once).
    pub fn resolve(&mut self, report: &mut NativeReport, maps: &[ModuleMap]) -> ResolveStats {
        let mut stats = ResolveStats::default();
        for frame in &mut report.frames {
            let (placed, named) = self.resolve_frame(frame, maps);
            stats.placed += placed as usize;
            stats.named += named as usize;
        }
        stats
    }

    /// Places and names one frame; returns (placed, named).
    pub fn resolve_frame(&mut self, frame: &mut Frame, maps: &[ModuleMap]) -> (bool, bool) {
        if frame
            .function
            .as_deref()
            .is_some_and(|f| f == "???" || f.is_empty())
        {
            frame.function = None;
        }
        if let Some(readable) = frame.function.as_deref().and_then(demangle) {
            frame.function = Some(readable);
        }
        let placed = self.place(frame, maps);
        let mut named = false;
        if frame.function.is_none()
            && let (Some(module), Some(offset)) = (frame.module.clone(), frame.module_offset)
            && let Some(name) = self.symbol_at(&module, offset)
        {
            frame.function = Some(name);
            named = true;
        }
        (placed, named)
    }

    /// The function whose extent holds `module_offset` in `module` (a path), if any.
    pub fn symbol_at(&mut self, module: &str, module_offset: u64) -> Option<String> {
        let symbols = self.module(module)?;
        let name = match &symbols.names {
            Names::Index(index) => {
                let address = symbols.address_of_module_offset(module_offset)?;
                let name = index.name_at(address)?;
                demangle(name).unwrap_or_else(|| name.to_owned())
            }
            Names::Captured(functions) => functions.get(&module_offset)?.clone(),
        };
        self.named
            .entry(module.to_owned())
            .or_default()
            .insert(module_offset, name.clone());
        Some(name)
    }

    fn module(&mut self, path: &str) -> Option<Rc<ModuleSymbols>> {
        if let Some(known) = self.modules.get(path) {
            return known.clone();
        }
        if self.captured_only {
            return None;
        }
        let loaded = ModuleSymbols::load(Path::new(path), self.debug_root.as_deref()).map(Rc::new);
        self.modules.insert(path.to_owned(), loaded.clone());
        loaded
    }

    /// Gives an address-only frame its module, and a module without offset its offset; a frame
    /// whose module the maps contradict is placed again from the maps.
    fn place(&mut self, frame: &mut Frame, maps: &[ModuleMap]) -> bool {
        let Some(address) = frame.address else {
            return false;
        };
        let Some((map, region)) = maps
            .iter()
            .find_map(|m| m.region_at(address).map(|r| (m, r)))
        else {
            return false;
        };
        if let (Some(module), Some(_)) = (&frame.module, frame.module_offset) {
            if same_file(module, &region.path)
                || !map.regions.iter().any(|r| same_file(module, &r.path))
            {
                return false;
            }
            // The tool names modules from the process as it is at report time. LSan's exit
            // report comes after FFI has unloaded the library, and LSan can then name another
            // module for the freed range (it printed `libm.so.6+0xe18c` for `widget_create`,
            // with libm mapped elsewhere). When the maps show the named module mapped elsewhere (a library
            // is loaded once), the tool's module, offset and names are wrong; when they do not
            // list it at all, it may have been loaded after the maps were taken, so it stands.
            frame.module = None;
            frame.module_offset = None;
            frame.function = None;
            frame.file = None;
            frame.line = None;
        }
        if let Some(module) = &frame.module
            && !same_file(module, &region.path)
        {
            return false;
        }
        let Some(file_offset) = (address - region.start).checked_add(region.file_offset) else {
            return false;
        };
        let offset = match self.module(&region.path) {
            Some(symbols) => symbols.module_offset_of_file_offset(file_offset),
            None => map.load_base(&region.path).map(|base| address - base),
        };
        let Some(offset) = offset else {
            return false;
        };
        if frame.module.is_none() {
            frame.module = Some(region.path.clone());
        }
        frame.module_offset = Some(offset);
        true
    }
}

/// Whether two spellings name the same library (`/lib/…/libffi.so.8` and `/usr/lib/…/libffi.so.8`).
fn same_file(a: &str, b: &str) -> bool {
    let name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
    a == b || name(a) == name(b)
}

/// A loadable segment: where file bytes land in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSegment {
    pub file_offset: u64,
    pub file_size: u64,
    pub address: u64,
}

/// Where a module's function names come from.
enum Names {
    /// Its symbol tables, read from the file.
    Index(SymbolIndex),
    /// A capture: the names found at the offsets looked up when it was taken.
    Captured(BTreeMap<u64, String>),
}

/// A module's function symbols and layout.
struct ModuleSymbols {
    format: BinaryFormat,
    /// Mach-O `__TEXT` address (module offsets count from it); 0 for ELF.
    text_base: u64,
    segments: Vec<LoadSegment>,
    names: Names,
}

impl ModuleSymbols {
    fn load(path: &Path, debug_root: Option<&Path>) -> Option<ModuleSymbols> {
        if !path.is_file() {
            return None;
        }
        let input = Input::open(path).ok()?;
        let data = thin_macho(&input).unwrap_or(&input);
        let file = object::File::parse(data).ok()?;
        let mut candidates = Vec::new();
        let format = file.format();
        let mut text_base = 0;
        let mut segments = Vec::new();
        for segment in file.segments() {
            let (file_offset, file_size) = segment.file_range();
            segments.push(LoadSegment {
                file_offset,
                file_size,
                address: segment.address(),
            });
            if format == BinaryFormat::MachO && segment.name().ok().flatten() == Some("__TEXT") {
                text_base = segment.address();
            }
        }
        let index = match format {
            BinaryFormat::Elf => {
                collect_sized(&file, &mut candidates);
                if let Some(root) = debug_root
                    && let Ok(Some(id)) = file.build_id()
                    && let Some(debug_path) = build_id_path(root, id)
                    && let Ok(debug_input) = Input::open(&debug_path)
                    && let Ok(debug_file) = object::File::parse(&*debug_input)
                {
                    collect_sized(&debug_file, &mut candidates);
                }
                SymbolIndex::from_sized(candidates)
            }
            BinaryFormat::MachO => macho_index(&file),
            _ => return None,
        };
        Some(ModuleSymbols {
            format,
            text_base,
            segments,
            names: Names::Index(index),
        })
    }

    fn from_capture(capture: &ModuleCapture) -> Option<ModuleSymbols> {
        let format = match capture.format.as_str() {
            "elf" => BinaryFormat::Elf,
            "macho" => BinaryFormat::MachO,
            _ => return None,
        };
        Some(ModuleSymbols {
            format,
            text_base: capture.text_base,
            segments: capture.segments.clone(),
            names: Names::Captured(capture.functions.clone()),
        })
    }

    fn address_of_module_offset(&self, offset: u64) -> Option<u64> {
        match self.format {
            BinaryFormat::MachO => self.text_base.checked_add(offset),
            _ => Some(offset),
        }
    }

    /// A file offset (from a map) as a module offset, through the program headers.
    fn module_offset_of_file_offset(&self, file_offset: u64) -> Option<u64> {
        let segment = self.segments.iter().find(|s| {
            s.file_offset <= file_offset && file_offset < s.file_offset.saturating_add(s.file_size)
        })?;
        let address = segment
            .address
            .checked_add(file_offset - segment.file_offset)?;
        match self.format {
            BinaryFormat::MachO => address.checked_sub(self.text_base),
            _ => Some(address),
        }
    }
}

/// `/usr/lib/debug/.build-id/ab/cdef….debug` for build id `abcdef…`.
fn build_id_path(root: &Path, id: &[u8]) -> Option<PathBuf> {
    let (first, rest) = id.split_first()?;
    let rest: String = rest.iter().map(|b| format!("{b:02x}")).collect();
    let path = root
        .join(".build-id")
        .join(format!("{first:02x}"))
        .join(format!("{rest}.debug"));
    path.is_file().then_some(path)
}

/// The slice of a universal (fat) Mach-O for this machine's architecture, or its first.
fn thin_macho(data: &[u8]) -> Option<&[u8]> {
    use object::read::macho::{FatArch, MachOFatFile32, MachOFatFile64};
    let wanted = if cfg!(target_arch = "aarch64") {
        object::Architecture::Aarch64
    } else {
        object::Architecture::X86_64
    };
    fn pick<'d, A: FatArch>(
        data: &'d [u8],
        arches: &[A],
        wanted: object::Architecture,
    ) -> Option<&'d [u8]> {
        let arch = arches
            .iter()
            .find(|a| a.architecture() == wanted)
            .or_else(|| arches.first())?;
        arch.data(data).ok()
    }
    if let Ok(fat) = MachOFatFile32::parse(data) {
        return pick(data, fat.arches(), wanted);
    }
    if let Ok(fat) = MachOFatFile64::parse(data) {
        return pick(data, fat.arches(), wanted);
    }
    None
}

/// A symbol candidate before extents are settled; lower `rank` wins among aliases.
#[derive(Debug, Clone)]
struct Candidate {
    start: u64,
    size: u64,
    rank: u8,
    name: String,
}

fn collect_sized(file: &object::File<'_>, out: &mut Vec<Candidate>) {
    let dynamic = file.dynamic_symbols().map(|s| (s, 0u8));
    let statics = file.symbols().map(|s| (s, 1u8));
    for (symbol, from_symtab) in dynamic.chain(statics) {
        if symbol.kind() != SymbolKind::Text || !symbol.is_definition() || symbol.size() == 0 {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        if name.is_empty() {
            continue;
        }
        let binding = if symbol.is_global() && !symbol.is_weak() {
            0
        } else if symbol.is_weak() {
            1
        } else {
            2
        };
        out.push(Candidate {
            start: symbol.address(),
            size: symbol.size(),
            rank: binding * 2 + from_symtab,
            name: strip_version(name).to_owned(),
        });
    }
}

/// The readable form of an Itanium-mangled C++ name (`_ZN4ring6Buffer4pushEm` →
/// `ring::Buffer::push(unsigned long)`); `None` for a name that is not one, or that the
/// demangler does not understand (the name is then shown as it is).
pub fn demangle(name: &str) -> Option<String> {
    if !name.starts_with("_Z") {
        return None;
    }
    let symbol = cpp_demangle::Symbol::new(name.as_bytes()).ok()?;
    symbol
        .demangle_with_options(&cpp_demangle::DemangleOptions::new().no_return_type())
        .ok()
}

/// `memcpy@@GLIBC_2.14` → `memcpy`.
fn strip_version(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// Mach-O symbols have no size: each ends where the next symbol of its section starts, or at
/// the section's end.
fn macho_index(file: &object::File<'_>) -> SymbolIndex {
    let mut sections: HashMap<object::SectionIndex, (u64, u64)> = HashMap::new();
    for section in file.sections() {
        sections.insert(
            section.index(),
            (
                section.address(),
                section.address().saturating_add(section.size()),
            ),
        );
    }
    let mut starts: Vec<(u64, object::SectionIndex, String, bool)> = Vec::new();
    for symbol in file.symbols() {
        let Some(section) = symbol.section_index() else {
            continue;
        };
        if !symbol.is_definition() && symbol.kind() != SymbolKind::Text {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let name = name.strip_prefix('_').unwrap_or(name);
        starts.push((
            symbol.address(),
            section,
            name.to_owned(),
            symbol.kind() == SymbolKind::Text,
        ));
    }
    let symbols = starts
        .into_iter()
        .filter_map(|(start, section, name, is_text)| {
            let &(_, section_end) = sections.get(&section)?;
            Some(UnsizedSymbol {
                start,
                section_end,
                name,
                is_text,
            })
        })
        .collect();
    SymbolIndex::from_unsized(symbols)
}

/// A Mach-O symbol: its start and the end of its section.
#[derive(Debug, Clone)]
struct UnsizedSymbol {
    start: u64,
    section_end: u64,
    name: String,
    /// Only code symbols name frames; the others still bound the ones before them.
    is_text: bool,
}

/// A function's extent `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SymbolExtent {
    start: u64,
    end: u64,
    name: Box<str>,
}

/// Function extents sorted by start, one per start address.
#[derive(Debug, Default)]
struct SymbolIndex {
    extents: Vec<SymbolExtent>,
}

impl SymbolIndex {
    /// From sized symbols (ELF): aliases at one address keep the best-ranked, then shortest, name.
    fn from_sized(mut candidates: Vec<Candidate>) -> SymbolIndex {
        candidates.sort_by(|a, b| {
            (a.start, a.rank, a.name.len(), &a.name).cmp(&(b.start, b.rank, b.name.len(), &b.name))
        });
        candidates.dedup_by(|later, first| later.start == first.start);
        let extents = candidates
            .into_iter()
            .map(|c| SymbolExtent {
                start: c.start,
                end: c.start.saturating_add(c.size),
                name: c.name.into_boxed_str(),
            })
            .collect();
        SymbolIndex { extents }
    }

    /// From unsized symbols (Mach-O): each extends to the next start in its section.
    fn from_unsized(mut symbols: Vec<UnsizedSymbol>) -> SymbolIndex {
        symbols.sort_by(|a, b| {
            (a.start, !a.is_text, a.name.len(), &a.name).cmp(&(
                b.start,
                !b.is_text,
                b.name.len(),
                &b.name,
            ))
        });
        symbols.dedup_by(|later, first| later.start == first.start);
        let mut extents = Vec::with_capacity(symbols.len());
        for (i, symbol) in symbols.iter().enumerate() {
            if !symbol.is_text {
                continue;
            }
            let next = symbols.get(i + 1).map_or(u64::MAX, |n| n.start);
            extents.push(SymbolExtent {
                start: symbol.start,
                end: next.min(symbol.section_end),
                name: symbol.name.clone().into_boxed_str(),
            });
        }
        SymbolIndex { extents }
    }

    /// The function whose extent holds `address`. Looks back a few entries for a larger
    /// symbol enclosing smaller ones.
    fn name_at(&self, address: u64) -> Option<&str> {
        let after = self.extents.partition_point(|e| e.start <= address);
        self.extents[..after]
            .iter()
            .rev()
            .take(8)
            .find(|e| address < e.end)
            .map(|e| &*e.name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MAPS: &[u8] = b"5612e1774000-5612e1775000 r--p 00000000 fe:01 1835 /usr/bin/ruby3.1\n\
5612e1775000-5612e1776000 r-xp 00001000 fe:01 1835 /usr/bin/ruby3.1\n\
5612e26f4000-5612e2715000 rw-p 00000000 00:00 0    [heap]\n\
7fb62c193000-7fb62c194000 r--p 00000000 fe:01 91 /tmp/w dir/libwidget.so\n\
7fb62c194000-7fb62c195000 r-xp 00001000 fe:01 91 /tmp/w dir/libwidget.so\n\
7fb62c196000-7fb62c197000 rw-p 00002000 fe:01 91 /tmp/w dir/libwidget.so (deleted)\n\
7fb62c200000-7fb62c201000 rw-p 00000000 00:00 0 \n\
this is not a mapping\n";

    #[test]
    fn maps_keep_file_regions_and_count_bad_lines() {
        let map = ModuleMap::parse(MAPS);
        assert_eq!(map.regions.len(), 5);
        let r = map.region_at(0x7fb62c19414e).unwrap();
        assert_eq!(r.path, "/tmp/w dir/libwidget.so");
        assert_eq!(
            (r.start, r.file_offset, r.executable),
            (0x7fb62c194000, 0x1000, true)
        );
        assert_eq!(
            map.region_at(0x7fb62c196000).unwrap().path,
            "/tmp/w dir/libwidget.so"
        );
        assert!(map.region_at(0x7fb62c195000).is_none());
        assert!(map.region_at(0x5612e26f4100).is_none());
        assert_eq!(
            map.load_base("/tmp/w dir/libwidget.so"),
            Some(0x7fb62c193000)
        );
        assert_eq!(
            map.diagnostics.lines(),
            [
                "maps: 1 line not understood at line 8 (not `start-end perms offset dev inode path`: `this is not a mapping`)"
            ]
        );
    }

    #[test]
    fn unknown_module_frame_is_placed_even_without_the_file() {
        let map = ModuleMap::parse(MAPS);
        let mut frame = Frame {
            address: Some(0x7fb62c19414e),
            ..Frame::default()
        };
        let mut symbolizer = Symbolizer::without_debug_files();
        assert_eq!(symbolizer.resolve_frame(&mut frame, &[map]), (true, false));
        assert_eq!(frame.label(), "libwidget.so+0x114e");
        assert!(frame.function.is_none());
    }

    #[test]
    fn a_module_the_maps_show_elsewhere_gives_way_to_the_maps() {
        let mut text = MAPS.to_vec();
        text.extend_from_slice(
            b"7fb62d520000-7fb62d530000 r--p 00000000 fe:01 77 /usr/lib/x86_64-linux-gnu/libm.so.6\n",
        );
        let map = ModuleMap::parse(&text);
        let maps = [map];
        let mut symbolizer = Symbolizer::without_debug_files();
        // LSan's exit report, libwidget already unloaded: the frame named under libm, whose
        // own mapping is elsewhere.
        let mut misnamed = Frame {
            address: Some(0x7fb62c19414e),
            module: Some("/lib/x86_64-linux-gnu/libm.so.6".into()),
            module_offset: Some(0xe14e),
            function: Some("cosf".into()),
            ..Frame::default()
        };
        assert_eq!(
            symbolizer.resolve_frame(&mut misnamed, &maps),
            (true, false)
        );
        assert_eq!(misnamed.module.as_deref(), Some("/tmp/w dir/libwidget.so"));
        assert_eq!(misnamed.label(), "libwidget.so+0x114e");
        assert!(misnamed.function.is_none());

        // A module the maps do not list may have been loaded after they were taken: it stands.
        let mut later = Frame {
            address: Some(0x7fb62c19414e),
            module: Some("/opt/plugin.so".into()),
            module_offset: Some(0x14e),
            ..Frame::default()
        };
        assert_eq!(symbolizer.resolve_frame(&mut later, &maps), (false, false));
        assert_eq!(later.label(), "plugin.so+0x14e");

        // A module that agrees with the maps is kept as printed.
        let mut agreeing = Frame {
            address: Some(0x7fb62c19414e),
            module: Some("/tmp/w dir/libwidget.so".into()),
            module_offset: Some(0x114e),
            function: Some("widget_create".into()),
            ..Frame::default()
        };
        assert_eq!(
            symbolizer.resolve_frame(&mut agreeing, &maps),
            (false, false)
        );
        assert_eq!(agreeing.function.as_deref(), Some("widget_create"));
    }

    #[test]
    fn sized_extents_do_not_name_addresses_past_a_symbol() {
        let candidates = vec![
            Candidate {
                start: 0x1000,
                size: 0x40,
                rank: 2,
                name: "__GI___libc_malloc".into(),
            },
            Candidate {
                start: 0x1000,
                size: 0x40,
                rank: 0,
                name: "malloc".into(),
            },
            Candidate {
                start: 0x1000,
                size: 0x40,
                rank: 0,
                name: "__libc_malloc".into(),
            },
            Candidate {
                start: 0x1100,
                size: 0x10,
                rank: 0,
                name: "free".into(),
            },
            Candidate {
                start: 0x2000,
                size: 0x400,
                rank: 3,
                name: "big".into(),
            },
            Candidate {
                start: 0x2100,
                size: 0x10,
                rank: 3,
                name: "inner".into(),
            },
        ];
        let index = SymbolIndex::from_sized(candidates);
        assert_eq!(index.name_at(0x1000), Some("malloc"));
        assert_eq!(index.name_at(0x103f), Some("malloc"));
        assert_eq!(index.name_at(0x1040), None);
        assert_eq!(index.name_at(0x10ff), None);
        assert_eq!(index.name_at(0x1105), Some("free"));
        assert_eq!(index.name_at(0x0fff), None);
        assert_eq!(index.name_at(0x2105), Some("inner"));
        assert_eq!(index.name_at(0x2200), Some("big"));
        assert_eq!(index.name_at(0x2400), None);
    }

    #[test]
    fn cpp_names_are_demangled_and_c_names_left_alone() {
        assert_eq!(
            demangle("_ZN4ring6Buffer4pushEm").as_deref(),
            Some("ring::Buffer::push(unsigned long)")
        );
        // grpc's C++ core: a template inside a namespace, a const method.
        assert_eq!(
            demangle("_ZNK9grpc_core13RefCountedPtrIiE3getEv").as_deref(),
            Some("grpc_core::RefCountedPtr<int>::get() const")
        );
        assert_eq!(
            demangle("_Znwm").as_deref(),
            Some("operator new(unsigned long)")
        );
        for plain in ["ringbuf_initialize", "malloc", "_Zgarbage", "Z", ""] {
            assert_eq!(demangle(plain), None, "{plain}");
        }
        // A tool that printed the mangled name gets the readable one too.
        let mut frame = Frame::function("_ZN4ring6Buffer4pushEm");
        Symbolizer::without_debug_files().resolve_frame(&mut frame, &[]);
        assert_eq!(
            frame.function.as_deref(),
            Some("ring::Buffer::push(unsigned long)")
        );
    }

    #[test]
    fn unsized_extents_end_at_next_symbol_or_section_end() {
        let sym = |start: u64, name: &str, is_text: bool| UnsizedSymbol {
            start,
            section_end: 0x3000,
            name: name.into(),
            is_text,
        };
        let index = SymbolIndex::from_unsized(vec![
            sym(0x2000, "zmq_msg_init_size", true),
            sym(0x2800, "a_label_in_data", false),
            sym(0x1000, "zmq_ctx_new", true),
        ]);
        assert_eq!(index.name_at(0x1fff), Some("zmq_ctx_new"));
        assert_eq!(index.name_at(0x2000), Some("zmq_msg_init_size"));
        assert_eq!(index.name_at(0x27ff), Some("zmq_msg_init_size"));
        assert_eq!(index.name_at(0x2800), None);
        assert_eq!(index.name_at(0x3000), None);
    }

    #[test]
    fn missing_module_is_remembered_as_missing() {
        let mut symbolizer = Symbolizer::without_debug_files();
        assert_eq!(symbolizer.symbol_at("/nonexistent/libx.so", 0x10), None);
        assert!(symbolizer.modules.contains_key("/nonexistent/libx.so"));
        let mut frame = Frame {
            function: Some("???".into()),
            module: Some("/nonexistent/libx.so".into()),
            module_offset: Some(0x10),
            ..Frame::default()
        };
        assert_eq!(symbolizer.resolve_frame(&mut frame, &[]), (false, false));
        assert_eq!(frame.label(), "libx.so+0x10");
    }

    /// A minimal Mach-O 64 dylib: `__TEXT` at 0x1000, `__text` at 0x1100..0x1200 holding
    /// `_first` (0x1100) and `_second` (0x1180), and `_data_mark` in no section.
    pub(crate) fn tiny_macho() -> Vec<u8> {
        let mut b = Vec::new();
        let u32le = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes());
        let u64le = |b: &mut Vec<u8>, v: u64| b.extend_from_slice(&v.to_le_bytes());
        let name16 = |b: &mut Vec<u8>, n: &str| {
            let mut field = [0u8; 16];
            field[..n.len()].copy_from_slice(n.as_bytes());
            b.extend_from_slice(&field);
        };
        let segment_size = 72 + 80;
        let symtab_size = 24;
        let symoff = 32 + segment_size + symtab_size;
        let strings = b"\0_first\0_second\0";
        let stroff = symoff + 2 * 16;
        // mach_header_64: MH_MAGIC_64, x86_64, MH_DYLIB, 2 commands.
        for v in [
            0xfeed_facf,
            0x0100_0007,
            3,
            6,
            2,
            (segment_size + symtab_size) as u32,
            0,
            0,
        ] {
            u32le(&mut b, v);
        }
        // LC_SEGMENT_64 __TEXT with one section.
        u32le(&mut b, 0x19);
        u32le(&mut b, segment_size as u32);
        name16(&mut b, "__TEXT");
        for v in [0x1000u64, 0x1000, 0, 0x1000] {
            u64le(&mut b, v);
        }
        for v in [5u32, 5, 1, 0] {
            u32le(&mut b, v);
        }
        name16(&mut b, "__text");
        name16(&mut b, "__TEXT");
        u64le(&mut b, 0x1100);
        u64le(&mut b, 0x100);
        for v in [0x100u32, 4, 0, 0, 0x8000_0400, 0, 0, 0] {
            u32le(&mut b, v);
        }
        // LC_SYMTAB.
        for v in [
            2u32,
            symtab_size as u32,
            symoff as u32,
            2,
            stroff as u32,
            strings.len() as u32,
        ] {
            u32le(&mut b, v);
        }
        // nlist_64: N_SECT|N_EXT in section 1.
        for (strx, value) in [(1u32, 0x1100u64), (8, 0x1180)] {
            u32le(&mut b, strx);
            b.push(0x0f);
            b.push(1);
            b.extend_from_slice(&0u16.to_le_bytes());
            u64le(&mut b, value);
        }
        b.extend_from_slice(strings);
        b.resize(0x1000, 0xcc);
        b
    }

    #[test]
    fn macho_symbols_end_at_the_next_symbol_and_offsets_count_from_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libtiny.dylib");
        std::fs::write(&path, tiny_macho()).unwrap();
        let module = path.to_str().unwrap();
        let mut symbolizer = Symbolizer::without_debug_files();
        // Offsets count from the image start, which is __TEXT's address (0x1000).
        assert_eq!(
            symbolizer.symbol_at(module, 0x100).as_deref(),
            Some("first")
        );
        assert_eq!(
            symbolizer.symbol_at(module, 0x17f).as_deref(),
            Some("first")
        );
        assert_eq!(
            symbolizer.symbol_at(module, 0x180).as_deref(),
            Some("second")
        );
        assert_eq!(
            symbolizer.symbol_at(module, 0x1ff).as_deref(),
            Some("second")
        );
        assert_eq!(symbolizer.symbol_at(module, 0x200), None);
        assert_eq!(symbolizer.symbol_at(module, 0xff), None);
    }

    /// A section whose address plus size passes `u64::MAX`: its end saturates.
    #[test]
    fn macho_section_ending_past_u64_max_still_names_symbols() {
        let mut bytes = tiny_macho();
        // `__text`'s size field (header 32 + LC_SEGMENT_64 72 + sectname 16 + segname 16 + addr 8).
        bytes[144..152].copy_from_slice(&u64::MAX.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libhuge.dylib");
        std::fs::write(&path, bytes).unwrap();
        let mut symbolizer = Symbolizer::without_debug_files();
        let module = path.to_str().unwrap();
        assert_eq!(
            symbolizer.symbol_at(module, 0x180).as_deref(),
            Some("second")
        );
        assert_eq!(
            symbolizer.symbol_at(module, 0x10_0000).as_deref(),
            Some("second")
        );
    }

    #[test]
    fn build_id_paths() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".build-id/86/2794fb.debug");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"").unwrap();
        assert_eq!(
            build_id_path(dir.path(), &[0x86, 0x27, 0x94, 0xfb]),
            Some(file)
        );
        assert_eq!(build_id_path(dir.path(), &[0x11]), None);
    }
}
