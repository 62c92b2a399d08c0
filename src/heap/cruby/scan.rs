//! The byte-level scanner for one line of `ObjectSpace.dump_all` output (FORMATS.md §2.2–§2.4).
//!
//! Stage: parser, innermost layer. [`parse_line`] turns one line (without its `\n`) into a
//! [`Record`] whose string fields borrow from the line. Keys are matched by name, never by
//! position (the order changed in 3.2); unknown keys are stepped over.
//!
//! Strings are closed by the first `"` that is followed by `,` + optional spaces + the next key
//! (`"word":`), or by `}` and the end of the line. For properly escaped strings this is exactly
//! the JSON closing quote (inside an escaped string every `"` is preceded by `\`, so none can be
//! followed by a bare `, "key":`), and it also survives the fields Ruby never escapes (`file`, `real_class_name`,
//! `struct`, `encoding`, `root`, and `name` before 3.4), whose values may contain `"` or `\`.
//! Such values are returned raw, without unescaping. Bytes are never assumed to be UTF-8.

use memchr::memchr;

/// The `type` of a dump line. ROOT and SHAPE are records of their own, not heap objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ObjType {
    None = 0,
    Object,
    Class,
    Iclass,
    Module,
    Float,
    String,
    Regexp,
    Array,
    Hash,
    Struct,
    Bignum,
    File,
    Data,
    Match,
    Symbol,
    Rational,
    Complex,
    Imemo,
    Node,
    Zombie,
    Moved,
    /// `UNKNOWN`, or a type name this reader does not know.
    Unknown,
    Root,
    Shape,
}

/// Every type, indexed by its `u8` value.
pub const ALL_TYPES: [ObjType; 25] = [
    ObjType::None,
    ObjType::Object,
    ObjType::Class,
    ObjType::Iclass,
    ObjType::Module,
    ObjType::Float,
    ObjType::String,
    ObjType::Regexp,
    ObjType::Array,
    ObjType::Hash,
    ObjType::Struct,
    ObjType::Bignum,
    ObjType::File,
    ObjType::Data,
    ObjType::Match,
    ObjType::Symbol,
    ObjType::Rational,
    ObjType::Complex,
    ObjType::Imemo,
    ObjType::Node,
    ObjType::Zombie,
    ObjType::Moved,
    ObjType::Unknown,
    ObjType::Root,
    ObjType::Shape,
];

impl ObjType {
    pub fn from_bytes(b: &[u8]) -> ObjType {
        match b {
            b"STRING" => ObjType::String,
            b"IMEMO" => ObjType::Imemo,
            b"ARRAY" => ObjType::Array,
            b"OBJECT" => ObjType::Object,
            b"HASH" => ObjType::Hash,
            b"CLASS" => ObjType::Class,
            b"DATA" => ObjType::Data,
            b"ICLASS" => ObjType::Iclass,
            b"MODULE" => ObjType::Module,
            b"SYMBOL" => ObjType::Symbol,
            b"REGEXP" => ObjType::Regexp,
            b"STRUCT" => ObjType::Struct,
            b"FLOAT" => ObjType::Float,
            b"BIGNUM" => ObjType::Bignum,
            b"FILE" => ObjType::File,
            b"MATCH" => ObjType::Match,
            b"RATIONAL" => ObjType::Rational,
            b"COMPLEX" => ObjType::Complex,
            b"NODE" => ObjType::Node,
            b"ZOMBIE" => ObjType::Zombie,
            b"NONE" => ObjType::None,
            b"MOVED" => ObjType::Moved,
            b"ROOT" => ObjType::Root,
            b"SHAPE" => ObjType::Shape,
            _ => ObjType::Unknown,
        }
    }

    pub fn from_index(i: u8) -> ObjType {
        ALL_TYPES
            .get(usize::from(i))
            .copied()
            .unwrap_or(ObjType::Unknown)
    }

    /// The spelling in the dump (`T_STRING` → `STRING`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjType::None => "NONE",
            ObjType::Object => "OBJECT",
            ObjType::Class => "CLASS",
            ObjType::Iclass => "ICLASS",
            ObjType::Module => "MODULE",
            ObjType::Float => "FLOAT",
            ObjType::String => "STRING",
            ObjType::Regexp => "REGEXP",
            ObjType::Array => "ARRAY",
            ObjType::Hash => "HASH",
            ObjType::Struct => "STRUCT",
            ObjType::Bignum => "BIGNUM",
            ObjType::File => "FILE",
            ObjType::Data => "DATA",
            ObjType::Match => "MATCH",
            ObjType::Symbol => "SYMBOL",
            ObjType::Rational => "RATIONAL",
            ObjType::Complex => "COMPLEX",
            ObjType::Imemo => "IMEMO",
            ObjType::Node => "NODE",
            ObjType::Zombie => "ZOMBIE",
            ObjType::Moved => "MOVED",
            ObjType::Unknown => "UNKNOWN",
            ObjType::Root => "ROOT",
            ObjType::Shape => "SHAPE",
        }
    }

    /// The Ruby class an object of this type normally has, for objects whose class is hidden.
    pub fn builtin_class(self) -> &'static str {
        match self {
            ObjType::Object => "Object",
            ObjType::Class => "Class",
            ObjType::Module => "Module",
            ObjType::Float => "Float",
            ObjType::String => "String",
            ObjType::Regexp => "Regexp",
            ObjType::Array => "Array",
            ObjType::Hash => "Hash",
            ObjType::Struct => "Struct",
            ObjType::Bignum => "Integer",
            ObjType::File => "File",
            ObjType::Match => "MatchData",
            ObjType::Symbol => "Symbol",
            ObjType::Rational => "Rational",
            ObjType::Complex => "Complex",
            other => other.as_str(),
        }
    }

    /// CLASS, MODULE and ICLASS lines describe classes; their records feed name resolution.
    pub fn is_class_like(self) -> bool {
        matches!(self, ObjType::Class | ObjType::Module | ObjType::Iclass)
    }
}

/// Keys whose mere presence tells something about the Ruby version (FORMATS.md §2.4).
pub mod fingerprint {
    pub const NODE_TYPE: u32 = 1 << 0;
    pub const ASSOCIATED: u32 = 1 << 1;
    pub const IMEMO_TYPE: u32 = 1 << 2;
    pub const SUPERCLASS: u32 = 1 << 3;
    pub const SINGLETON: u32 = 1 << 4;
    pub const REAL_CLASS_NAME: u32 = 1 << 5;
    pub const SHAPE_ID: u32 = 1 << 6;
    pub const SLOT_SIZE: u32 = 1 << 7;
    pub const CODERANGE: u32 = 1 << 8;
    pub const VARIATION_COUNT: u32 = 1 << 9;
    pub const EMBEDDED: u32 = 1 << 10;
    pub const MID_OR_CALLED_ID: u32 = 1 << 11;
    pub const CHILLED: u32 = 1 << 12;
    pub const FREE_IMMEDIATELY: u32 = 1 << 13;
    pub const CAPACITY: u32 = 1 << 14;
    pub const TOO_COMPLEX: u32 = 1 << 15;
}

/// Which kind of line a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A heap slot: `{"address":…, "type":…}`.
    Object,
    /// `{"type":"ROOT", "root":…, "references":[…]}`.
    Root,
    /// A 3.2+ SHAPE line (a malloc'd shape, not a heap slot).
    Shape,
}

/// One parsed line. Absent keys are `None` (or empty slices for `references` and `flags`).
#[derive(Debug, Clone, Default)]
pub struct Record<'a> {
    pub address: Option<u64>,
    pub obj_type: Option<ObjType>,
    pub class: Option<u64>,
    pub superclass: Option<u64>,
    pub memsize: Option<u64>,
    /// The heap slot the object occupies (3.2+: 40, 80, 160, 320 or 640 bytes on 64-bit);
    /// `memsize` includes it.
    pub slot_size: Option<u64>,
    pub name: Option<&'a [u8]>,
    pub real_class_name: Option<&'a [u8]>,
    pub singleton: bool,
    pub imemo_type: Option<&'a [u8]>,
    pub struct_name: Option<&'a [u8]>,
    pub node_type: Option<&'a [u8]>,
    pub file: Option<&'a [u8]>,
    pub line: Option<u64>,
    pub method: Option<&'a [u8]>,
    pub generation: Option<u64>,
    /// ARRAY `length`, HASH `size`, STRING/SYMBOL `bytesize`: how many elements or bytes.
    pub length: Option<u64>,
    /// Raw bytes between `[` and `]` of `references`; iterate with [`refs`].
    pub references: &'a [u8],
    /// ROOT category (`vm`, `machine_context`, …).
    pub root: Option<&'a [u8]>,
    /// Raw `value` (escaped string content, or a FLOAT's `%g`/`%#g` text).
    pub value: Option<&'a [u8]>,
    /// Raw bytes between `{` and `}` of `flags`.
    pub flags: &'a [u8],
    /// [`fingerprint`] bits of the keys seen.
    pub fingerprints: u32,
}

impl Record<'_> {
    pub fn kind(&self) -> RecordKind {
        match self.obj_type {
            Some(ObjType::Root) => RecordKind::Root,
            Some(ObjType::Shape) => RecordKind::Shape,
            _ => RecordKind::Object,
        }
    }

    pub fn obj_type(&self) -> ObjType {
        self.obj_type.unwrap_or(ObjType::Unknown)
    }
}

/// Why a line could not be read, with the 0-based column where it went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanError {
    pub column: usize,
    pub reason: &'static str,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at column {}", self.reason, self.column + 1)
    }
}

fn fail<T>(column: usize, reason: &'static str) -> Result<T, ScanError> {
    Err(ScanError { column, reason })
}

/// Parses one dump line (without its trailing `\n`; a trailing `\r` is allowed).
pub fn parse_line(line: &[u8]) -> Result<Record<'_>, ScanError> {
    let mut rec = Record::default();
    let mut p = skip_ws(line, 0);
    if line.get(p) != Some(&b'{') {
        return fail(p, "not a JSON object");
    }
    p = skip_ws(line, p + 1);
    if line.get(p) == Some(&b'}') {
        return fail(p, "empty object");
    }
    loop {
        if line.get(p) != Some(&b'"') {
            return fail(p, "expected a key");
        }
        let key_start = p + 1;
        // Keys are short words: a plain loop beats a memchr call here.
        let Some(len) = line[key_start..].iter().position(|&b| b == b'"') else {
            return fail(p, "unterminated key");
        };
        let key = &line[key_start..key_start + len];
        p = skip_ws(line, key_start + len + 1);
        if line.get(p) != Some(&b':') {
            return fail(p, "expected ':' after a key");
        }
        p = skip_ws(line, p + 1);
        p = value_for_key(line, p, key, &mut rec)?;
        p = skip_ws(line, p);
        match line.get(p) {
            Some(b',') => p = skip_ws(line, p + 1),
            Some(b'}') => {
                let end = skip_ws(line, p + 1);
                if end != line.len() {
                    return fail(end, "text after the closing brace");
                }
                break;
            }
            Some(_) => return fail(p, "expected ',' or '}'"),
            None => return fail(p, "line ends inside the object"),
        }
    }
    match rec.obj_type {
        None => fail(0, "no \"type\" key"),
        Some(ObjType::Root) if rec.root.is_none() => fail(0, "ROOT line without \"root\""),
        Some(ObjType::Root | ObjType::Shape) => Ok(rec),
        Some(_) if rec.address.is_none() => fail(0, "no \"address\" key"),
        Some(_) => Ok(rec),
    }
}

/// Reads the value at `p` for `key` into `rec`; returns the position after the value.
fn value_for_key<'a>(
    line: &'a [u8],
    p: usize,
    key: &[u8],
    rec: &mut Record<'a>,
) -> Result<usize, ScanError> {
    use fingerprint as fp;
    match key {
        b"address" => hex_into(&mut rec.address, line, p),
        b"type" => {
            let (s, end) = string(line, p)?;
            rec.obj_type = Some(ObjType::from_bytes(s));
            Ok(end)
        }
        b"class" => hex_into(&mut rec.class, line, p),
        b"memsize" => number_into(&mut rec.memsize, line, p),
        b"slot_size" => {
            rec.fingerprints |= fp::SLOT_SIZE;
            number_into(&mut rec.slot_size, line, p)
        }
        b"references" => {
            let (inner, end) = array(line, p)?;
            rec.references = inner;
            Ok(end)
        }
        b"flags" => {
            let (inner, end) = object(line, p)?;
            rec.flags = inner;
            Ok(end)
        }
        b"file" => string_into(&mut rec.file, line, p),
        b"line" => number_into(&mut rec.line, line, p),
        b"generation" => number_into(&mut rec.generation, line, p),
        b"method" => string_into(&mut rec.method, line, p),
        b"imemo_type" => {
            rec.fingerprints |= fp::IMEMO_TYPE;
            string_into(&mut rec.imemo_type, line, p)
        }
        b"length" | b"size" | b"bytesize" => number_into(&mut rec.length, line, p),
        b"value" => string_into(&mut rec.value, line, p),
        b"name" => string_into(&mut rec.name, line, p),
        b"real_class_name" => {
            rec.fingerprints |= fp::REAL_CLASS_NAME;
            string_into(&mut rec.real_class_name, line, p)
        }
        b"superclass" => {
            rec.fingerprints |= fp::SUPERCLASS;
            hex_into(&mut rec.superclass, line, p)
        }
        b"singleton" => {
            rec.fingerprints |= fp::SINGLETON;
            let end = skip_value(line, p)?;
            rec.singleton = line[p..end].starts_with(b"true");
            Ok(end)
        }
        b"struct" => string_into(&mut rec.struct_name, line, p),
        b"node_type" => {
            rec.fingerprints |= fp::NODE_TYPE;
            string_into(&mut rec.node_type, line, p)
        }
        b"root" => string_into(&mut rec.root, line, p),
        other => {
            rec.fingerprints |= match other {
                b"shape_id" => fp::SHAPE_ID,
                b"coderange" => fp::CODERANGE,
                b"variation_count" => fp::VARIATION_COUNT,
                b"embedded" => fp::EMBEDDED,
                b"mid" | b"called_id" => fp::MID_OR_CALLED_ID,
                b"chilled" => fp::CHILLED,
                b"associated" => fp::ASSOCIATED,
                b"free_immediately" => fp::FREE_IMMEDIATELY,
                b"capacity" => fp::CAPACITY,
                b"too_complex_shape" | b"complex_shape" => fp::TOO_COMPLEX,
                _ => 0,
            };
            skip_value(line, p)
        }
    }
}

fn string_into<'a>(
    slot: &mut Option<&'a [u8]>,
    line: &'a [u8],
    p: usize,
) -> Result<usize, ScanError> {
    let (s, end) = string(line, p)?;
    *slot = Some(s);
    Ok(end)
}

fn number_into(slot: &mut Option<u64>, line: &[u8], p: usize) -> Result<usize, ScanError> {
    let (v, end) = number(line, p)?;
    *slot = Some(v);
    Ok(end)
}

fn hex_into(slot: &mut Option<u64>, line: &[u8], p: usize) -> Result<usize, ScanError> {
    let (v, end) = hex_string(line, p)?;
    *slot = Some(v);
    Ok(end)
}

fn skip_ws(line: &[u8], mut p: usize) -> usize {
    while let Some(b) = line.get(p) {
        if !matches!(b, b' ' | b'\t' | b'\r') {
            break;
        }
        p += 1;
    }
    p
}

/// A string value at `p`: returns its raw content and the position after the closing quote.
/// See the module doc for the closing rule.
pub fn string(line: &[u8], p: usize) -> Result<(&[u8], usize), ScanError> {
    if line.get(p) != Some(&b'"') {
        return fail(p, "expected a string");
    }
    let start = p + 1;
    let mut from = start;
    while let Some(i) = memchr(b'"', &line[from..]) {
        let q = from + i;
        if closes_string(line, q) {
            return Ok((&line[start..q], q + 1));
        }
        from = q + 1;
    }
    fail(p, "unterminated string")
}

/// Whether the `"` at `q` ends a value: followed by `,` + spaces + a key (`"word":`), or by `}`
/// and the end of the line.
fn closes_string(line: &[u8], q: usize) -> bool {
    let after = skip_ws(line, q + 1);
    match line.get(after) {
        Some(b',') => starts_key(line, skip_ws(line, after + 1)),
        Some(b'}') => skip_ws(line, after + 1) == line.len(),
        _ => false,
    }
}

/// Whether a key (`"` + lowercase word + `":`) starts at `p`. Dump keys are lowercase words.
fn starts_key(line: &[u8], p: usize) -> bool {
    if line.get(p) != Some(&b'"') {
        return false;
    }
    let word = line[p + 1..]
        .iter()
        .take_while(|b| matches!(b, b'a'..=b'z' | b'_' | b'0'..=b'9'))
        .count();
    word > 0 && line[p + 1 + word..].starts_with(b"\":")
}

/// A hex address string such as `"0x7f3a2b"` (also `%p` spellings: upper case, no `0x`).
pub fn hex_string(line: &[u8], p: usize) -> Result<(u64, usize), ScanError> {
    if line.get(p) != Some(&b'"') {
        return fail(p, "expected an address string");
    }
    let mut i = p + 1;
    if line.get(i) == Some(&b'0') && matches!(line.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
    }
    let digits_start = i;
    let mut v: u64 = 0;
    while let Some(&b) = line.get(i) {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            b'"' => break,
            _ => return fail(i, "bad hex digit in an address"),
        };
        if i - digits_start >= 16 {
            return fail(i, "address longer than 64 bits");
        }
        v = (v << 4) | u64::from(d);
        i += 1;
    }
    if line.get(i) != Some(&b'"') {
        return fail(p, "unterminated address");
    }
    if i == digits_start {
        return fail(i, "empty address");
    }
    Ok((v, i + 1))
}

/// A non-negative integer; a negative one (`"fd":-1`) reads as 0.
pub fn number(line: &[u8], p: usize) -> Result<(u64, usize), ScanError> {
    let mut i = p;
    let negative = line.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let start = i;
    let mut v: u64 = 0;
    while let Some(&b) = line.get(i) {
        if !b.is_ascii_digit() {
            break;
        }
        v = match v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
        {
            Some(v) => v,
            None => return fail(p, "number too large"),
        };
        i += 1;
    }
    if i == start {
        return fail(p, "expected a number");
    }
    Ok((if negative { 0 } else { v }, i))
}

/// `[…]` holding address strings: returns the bytes inside.
fn array(line: &[u8], p: usize) -> Result<(&[u8], usize), ScanError> {
    if line.get(p) != Some(&b'[') {
        return fail(p, "expected '['");
    }
    match memchr(b']', &line[p + 1..]) {
        Some(i) => Ok((&line[p + 1..p + 1 + i], p + 2 + i)),
        None => fail(p, "unterminated array"),
    }
}

/// `{…}` of flags (never nested, keys are plain words): returns the bytes inside.
fn object(line: &[u8], p: usize) -> Result<(&[u8], usize), ScanError> {
    if line.get(p) != Some(&b'{') {
        return fail(p, "expected '{'");
    }
    match memchr(b'}', &line[p + 1..]) {
        Some(i) => Ok((&line[p + 1..p + 1 + i], p + 2 + i)),
        None => fail(p, "unterminated flags object"),
    }
}

/// Steps over any value: string, number, literal, array or flags object.
fn skip_value(line: &[u8], p: usize) -> Result<usize, ScanError> {
    match line.get(p) {
        Some(b'"') => string(line, p).map(|(_, e)| e),
        Some(b'[') => array(line, p).map(|(_, e)| e),
        Some(b'{') => object(line, p).map(|(_, e)| e),
        Some(b'-' | b'0'..=b'9') => {
            let mut i = p + 1;
            while let Some(b) = line.get(i) {
                if !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    break;
                }
                i += 1;
            }
            Ok(i)
        }
        Some(b't' | b'f' | b'n') => {
            let mut i = p + 1;
            while line.get(i).is_some_and(u8::is_ascii_alphabetic) {
                i += 1;
            }
            Ok(i)
        }
        Some(_) => fail(p, "unexpected character in a value"),
        None => fail(p, "line ends before a value"),
    }
}

/// The first two keys of an object line, `{"address":"0x…", "type":"…"`, read without looking at
/// the rest: what address-set diffs need. `None` when the line does not start that way (ROOT,
/// SHAPE, other key orders, damage); callers then fall back to [`parse_line`].
pub fn parse_prefix(line: &[u8]) -> Option<(u64, ObjType)> {
    const ADDRESS: &[u8] = b"{\"address\":";
    const TYPE: &[u8] = b", \"type\":";
    let rest = line.strip_prefix(ADDRESS)?;
    let (address, end) = hex_string(rest, 0).ok()?;
    let rest = rest[end..].strip_prefix(TYPE)?;
    let ty = rest.strip_prefix(b"\"")?;
    let close = memchr(b'"', ty)?;
    match ObjType::from_bytes(&ty[..close]) {
        ObjType::Root | ObjType::Shape => None,
        t => Some((address, t)),
    }
}

/// Iterates the addresses in the raw bytes of a `references` array; malformed items are skipped.
pub fn refs(raw: &[u8]) -> RefIter<'_> {
    RefIter { raw, pos: 0 }
}

pub struct RefIter<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl Iterator for RefIter<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        loop {
            let open = self.pos + memchr(b'"', &self.raw[self.pos..])?;
            match hex_string(self.raw, open) {
                Ok((v, end)) => {
                    self.pos = end;
                    return Some(v);
                }
                Err(_) => {
                    let close = memchr(b'"', &self.raw[open + 1..])?;
                    self.pos = open + close + 2;
                }
            }
        }
    }
}

/// Iterates `(key, value)` pairs of a raw `flags` object (`"old":true, "age":2`).
pub fn flag_pairs(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw.split(|&b| b == b',').filter_map(|pair| {
        let colon = memchr(b':', pair)?;
        let key = pair[..colon].trim_ascii();
        let key = key.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        Some((key, pair[colon + 1..].trim_ascii()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_3_1_object_line() {
        let line = br#"{"address":"0x7ff6652c36a8", "type":"OBJECT", "class":"0x7ff66883bce0", "ivars":3, "file":"gen.rb", "line":9, "method":"new", "generation":10, "memsize":40, "flags":{"wb_protected":true}}"#;
        let r = parse_line(line).unwrap();
        assert_eq!(r.kind(), RecordKind::Object);
        assert_eq!(r.address, Some(0x7ff6652c36a8));
        assert_eq!(r.obj_type, Some(ObjType::Object));
        assert_eq!(r.class, Some(0x7ff66883bce0));
        assert_eq!(r.file, Some(&b"gen.rb"[..]));
        assert_eq!(r.line, Some(9));
        assert_eq!(r.method, Some(&b"new"[..]));
        assert_eq!(r.generation, Some(10));
        assert_eq!(r.memsize, Some(40));
        assert_eq!(r.flags, br#""wb_protected":true"#);
    }

    /// A line of a Ruby 3.3.8 dump (Debian trixie): `slot_size` is read, and counts as a 3.2+
    /// fingerprint; a 3.1 line has none.
    #[test]
    fn reads_the_slot_size_of_a_3_3_object_line() {
        let line = br#"{"address":"0x7fc771e96340", "type":"OBJECT", "shape_id":15, "slot_size":80, "class":"0x7fc771e8e578", "embedded":true, "ivars":5, "memsize":80, "flags":{"wb_protected":true}}"#;
        let r = parse_line(line).unwrap();
        assert_eq!((r.slot_size, r.memsize), (Some(80), Some(80)));
        assert_ne!(r.fingerprints & fingerprint::SLOT_SIZE, 0);
        let old = br#"{"address":"0x1", "type":"OBJECT", "class":"0x2", "ivars":3, "memsize":40}"#;
        assert_eq!(parse_line(old).unwrap().slot_size, None);
    }

    #[test]
    fn key_order_does_not_matter() {
        let a = parse_line(br#"{"address":"0x10", "type":"STRING", "class":"0x20", "memsize":40}"#)
            .unwrap();
        let b = parse_line(br#"{"memsize":40, "class":"0x20", "type":"STRING", "address":"0x10"}"#)
            .unwrap();
        assert_eq!(
            (a.address, a.obj_type, a.class, a.memsize),
            (b.address, b.obj_type, b.class, b.memsize)
        );
    }

    #[test]
    fn unescaped_fields_with_quotes_and_backslashes() {
        let line = br#"{"address":"0x1", "type":"STRING", "file":"C:\app\say "hi".rb", "line":3, "memsize":40}"#;
        let r = parse_line(line).unwrap();
        assert_eq!(r.file, Some(&br#"C:\app\say "hi".rb"#[..]));
        assert_eq!(r.line, Some(3));
        let line = br#"{"address":"0x2", "type":"CLASS", "name":"Weird", "x", "real_class_name":"A"B", "singleton":true}"#;
        let r = parse_line(line).unwrap();
        assert_eq!(r.name, Some(&br#"Weird", "x"#[..]));
        assert_eq!(r.real_class_name, Some(&br#"A"B"#[..]));
        assert!(r.singleton);
    }

    #[test]
    fn escaped_values_close_at_the_real_quote() {
        let line = br#"{"address":"0x1", "type":"STRING", "value":"a\", \"b\"}", "memsize":40}"#;
        let r = parse_line(line).unwrap();
        assert_eq!(r.value, Some(&br#"a\", \"b\"}"#[..]));
        assert_eq!(r.memsize, Some(40));
        let line = br#"{"address":"0x1", "type":"STRING", "value":"ends\\"}"#;
        assert_eq!(parse_line(line).unwrap().value, Some(&br#"ends\\"#[..]));
    }

    #[test]
    fn non_utf8_bytes_pass_through() {
        let mut line = br#"{"address":"0x1", "type":"CLASS", "name":"Caf"#.to_vec();
        line.extend_from_slice(b"\xe9\xff");
        line.extend_from_slice(br#"", "memsize":40}"#);
        assert_eq!(parse_line(&line).unwrap().name, Some(&b"Caf\xe9\xff"[..]));
    }

    #[test]
    fn root_and_shape_lines() {
        let r =
            parse_line(br#"{"type":"ROOT", "root":"vm", "references":["0x1", "0x2a"]}"#).unwrap();
        assert_eq!(r.kind(), RecordKind::Root);
        assert_eq!(r.root, Some(&b"vm"[..]));
        assert_eq!(refs(r.references).collect::<Vec<_>>(), vec![1, 0x2a]);
        let s = br#"{"address":"0x104dd0020", "type":"SHAPE", "id":1, "parent_id":0, "depth":2, "shape_type":"INITIAL_CAPACITY", "capacity":8, "edges":3, "memsize":120}"#;
        let r = parse_line(s).unwrap();
        assert_eq!(r.kind(), RecordKind::Shape);
        assert_ne!(r.fingerprints & fingerprint::CAPACITY, 0);
        let e = br#"{"address":"0x1", "type":"SHAPE", "id":3, "parent_id":1, "depth":2, "shape_type":"IVAR","edge_name":"@a", "edges":0, "memsize":32}"#;
        assert_eq!(parse_line(e).unwrap().memsize, Some(32));
    }

    #[test]
    fn junk_class_words_and_2x_addresses() {
        let r = parse_line(br#"{"address":"0x7fb1f800c998", "type":"IMEMO", "class":"0x8", "imemo_type":"cref", "memsize":40}"#).unwrap();
        assert_eq!(r.class, Some(8));
        let r = parse_line(
            br#"{"address":"00000000027A1B28", "type":"STRING", "class":"0000000002715C40"}"#,
        )
        .unwrap();
        assert_eq!(r.address, Some(0x27A1B28));
        assert_eq!(r.class, Some(0x2715C40));
    }

    #[test]
    fn bad_lines_say_where() {
        let e = parse_line(br#"{"address":"0x1", "type":"STRI"#).unwrap_err();
        assert_eq!(e.reason, "unterminated string");
        let e = parse_line(br#"{"address":"0x1", "type""STRING"}"#).unwrap_err();
        assert_eq!(e.reason, "expected ':' after a key");
        assert_eq!(e.column, 24);
        assert_eq!(
            parse_line(b"hello").unwrap_err().reason,
            "not a JSON object"
        );
        assert_eq!(
            parse_line(br#"{"address":"0xzz", "type":"STRING"}"#)
                .unwrap_err()
                .reason,
            "bad hex digit in an address"
        );
        assert_eq!(
            parse_line(br#"{"type":"STRING"}"#).unwrap_err().reason,
            "no \"address\" key"
        );
        assert_eq!(
            parse_line(br#"{"address":"0x1", "type":"STRING", "memsize":40} x"#)
                .unwrap_err()
                .reason,
            "text after the closing brace"
        );
        assert!(parse_line(br#"{"address":"0x1", "type":"ARRAY", "references":["0x2""#).is_err());
        assert!(parse_line(br#"{"address":"0x11111111111111111", "type":"ARRAY"}"#).is_err());
    }

    #[test]
    fn negative_fd_and_crlf() {
        let r =
            parse_line(b"{\"address\":\"0x1\", \"type\":\"FILE\", \"fd\":-1, \"memsize\":240}\r")
                .unwrap();
        assert_eq!(r.memsize, Some(240));
    }

    #[test]
    fn prefix_reads_address_and_type_only() {
        assert_eq!(
            parse_prefix(br#"{"address":"0x7f01", "type":"HASH", "size":1, garbage"#),
            Some((0x7f01, ObjType::Hash))
        );
        assert_eq!(
            parse_prefix(br#"{"type":"ROOT", "root":"vm", "references":[]}"#),
            None
        );
        assert_eq!(parse_prefix(br#"{"address":"0x1", "type":"SHAPE""#), None);
    }

    #[test]
    fn flags_split_into_pairs() {
        let pairs: Vec<_> = flag_pairs(br#""wb_protected":true, "age":2, "old":true"#).collect();
        assert_eq!(pairs[1], (&b"age"[..], &b"2"[..]));
        assert_eq!(pairs.len(), 3);
    }
}
