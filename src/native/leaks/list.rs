//! The classic list format of 1.0, 2.0, 3.0 and `--list` (FORMAT.md §3.5): `Leak:` lines with
//! zone and annotation, hex dumps, and one-line `Call stack:` frames. Pure functions on bytes.

use super::{decimal_prefix, find, hex_prefix, split_source};

/// One `Leak: 0xADDR  size=N  zone: ZONE_0xHEX  annotation` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LeakLine<'a> {
    pub address: u64,
    pub size: u64,
    /// `DefaultMallocZone_0x100dea000`, `JavaScriptCore FastMalloc_0x7fff70a09d20`.
    pub zone: Option<&'a [u8]>,
    /// The type, when the annotation names one (`NSCFData`, `malloc in InitLinkedList`).
    pub type_name: Option<&'a [u8]>,
}

pub(super) fn leak_line(line: &[u8]) -> Option<LeakLine<'_>> {
    let rest = line.strip_prefix(b"Leak: ")?;
    let (address, rest) = hex_prefix(rest)?;
    let rest = rest.trim_ascii_start().strip_prefix(b"size=")?;
    let (size, rest) = decimal_prefix(rest)?;
    let mut annotation = rest;
    let mut zone = None;
    let after_size = rest.trim_ascii_start();
    if let Some(zone_start) = after_size.strip_prefix(b"zone: ") {
        let zone_len = zone_name_len(zone_start)?;
        zone = Some(&zone_start[..zone_len]);
        annotation = &zone_start[zone_len..];
    }
    Some(LeakLine {
        address,
        size,
        zone,
        type_name: annotation_type(annotation.trim_ascii()),
    })
}

/// A zone name may contain spaces but always ends in `_0x<hex>` followed by the end of the line
/// or whitespace.
fn zone_name_len(text: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = find(&text[from..], b"_0x") {
        let hex_start = from + at + 3;
        let hex_len = text[hex_start..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let end = hex_start + hex_len;
        if hex_len > 0 && text.get(end).is_none_or(u8::is_ascii_whitespace) {
            return Some(end);
        }
        from = hex_start;
    }
    None
}

const TYPE_KINDS: &[&[u8]] = &[b"ObjC", b"C++", b"CFType", b"Swift", b"C"];

/// The type named by a `Leak:` annotation (§3.5): `<Type>  <Kind>  <Image>` (10.7+, including
/// `malloc in fn  C  Project` under MallocStackLogging lite) or `instance of 'X', type …` (10.5/10.6).
/// Content descriptions (`string '…'`, `length: 7  "…"`) name no type.
fn annotation_type(annotation: &[u8]) -> Option<&[u8]> {
    if annotation.is_empty() {
        return None;
    }
    if let Some(rest) = annotation.strip_prefix(b"instance of '") {
        let end = rest.iter().position(|&b| b == b'\'')?;
        return Some(&rest[..end]);
    }
    let mut fields = wide_fields(annotation);
    let first = fields.next()?;
    let kind = fields.next()?;
    TYPE_KINDS.contains(&kind).then_some(first)
}

/// Fields separated by a tab or by two or more spaces.
fn wide_fields(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    std::iter::from_fn(move || {
        rest = rest.trim_ascii_start();
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len();
        let mut i = 0;
        while i < rest.len() {
            let wide = rest[i] == b'\t' || (rest[i] == b' ' && rest.get(i + 1) == Some(&b' '));
            if wide {
                end = i;
                break;
            }
            i += 1;
        }
        let field = &rest[..end];
        rest = &rest[end..];
        Some(field)
    })
}

/// Whether a line (leading whitespace removed) is a hex-dump line: `0x01bb2428 0x00000001 …`
/// then ASCII. Only the first word is checked: this is the hot path of large 2.0 reports.
#[inline]
pub(super) fn is_hex_dump(line: &[u8]) -> bool {
    line.len() > 3
        && line.starts_with(b"0x")
        && line[2].is_ascii_hexdigit()
        && line[2..]
            .iter()
            .position(|&b| !b.is_ascii_hexdigit())
            .is_none_or(|end| matches!(line[2 + end], b' ' | b'\t'))
}

/// The frames text of a `Call stack:` line, without the `[thread 0x…]:` prefix of 2.0/3.0.
pub(super) fn call_stack_frames(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"Call stack:")?.trim_ascii_start();
    if let Some(thread) = rest.strip_prefix(b"[thread ") {
        let close = find(thread, b"]:")?;
        return Some(thread[close + 2..].trim_ascii());
    }
    Some(rest.trim_ascii())
}

/// The frames of one `Call stack:` line or of a continuation line, in printed order (outermost
/// first): separated by ` | `, with an optional leading and trailing `|`.
pub(super) fn frame_texts(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = text.trim_ascii();
    if let Some(r) = rest.strip_prefix(b"|") {
        rest = r.trim_ascii_start();
    }
    if let Some(r) = rest.strip_suffix(b"|") {
        rest = r.trim_ascii_end();
    }
    let mut done = rest.is_empty();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match find(rest, b" | ") {
            Some(at) => {
                let frame = &rest[..at];
                rest = &rest[at + 3..];
                Some(frame.trim_ascii())
            }
            None => {
                done = true;
                Some(rest.trim_ascii())
            }
        }
    })
    .filter(|f| !f.is_empty())
}

/// One frame of a list-format stack, split into its printed parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct ListFrame<'a> {
    pub address: Option<u64>,
    pub image: Option<&'a [u8]>,
    pub symbol: Option<&'a [u8]>,
    pub file: Option<&'a [u8]>,
    pub line: Option<u32>,
}

/// `symbol`, bare `0xADDR` (2.0), `symbol file.mm:835` (2.0 on 10.7),
/// `0xADDR (image) symbol  file:line` (3.0), `0xADDR (image) symbol` (3.0 on macOS 15).
pub(super) fn list_frame(text: &[u8]) -> ListFrame<'_> {
    let mut frame = ListFrame::default();
    let mut rest = text.trim_ascii();
    if let Some((address, after)) = hex_prefix(rest)
        && after.first().is_none_or(u8::is_ascii_whitespace)
    {
        frame.address = Some(address);
        rest = after.trim_ascii_start();
    }
    if rest.first() == Some(&b'(')
        && let Some(close) = rest.iter().position(|&b| b == b')')
    {
        frame.image = Some(&rest[1..close]).filter(|i| !i.is_empty() && *i != b"???");
        rest = rest[close + 1..].trim_ascii_start();
    }
    let (symbol, source) = split_source(rest);
    frame.symbol = Some(symbol).filter(|s| !s.is_empty() && *s != b"???");
    if let Some((file, line)) = source {
        frame.file = Some(file);
        frame.line = Some(line);
    }
    frame
}

/// `...`: the hex dump was cut short by leaks itself.
pub(super) fn is_dump_ellipsis(line: &[u8]) -> bool {
    line == b"..."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leak_lines_of_every_era() {
        let l = leak_line(
            b"Leak: 0x114d54708  size=24  zone: JavaScriptCore FastMalloc_0x7fff70a09d20",
        )
        .unwrap();
        assert_eq!(l.address, 0x114d54708);
        assert_eq!(l.size, 24);
        assert_eq!(
            l.zone,
            Some(&b"JavaScriptCore FastMalloc_0x7fff70a09d20"[..])
        );
        assert_eq!(l.type_name, None);
        let l = leak_line(
            b"Leak: 0x1330040d0  size=112  zone: MallocStackLoggingLiteZone_0x1000cc000   malloc in InitLinkedList  C  Project",
        )
        .unwrap();
        assert_eq!(l.type_name, Some(&b"malloc in InitLinkedList"[..]));
        let l = leak_line(b"Leak: 0x1118c0e60  size=32  zone: DefaultMallocZone_0x105a92000\tstring 'com.apple.quarantine'").unwrap();
        assert_eq!(l.zone, Some(&b"DefaultMallocZone_0x105a92000"[..]));
        assert_eq!(l.type_name, None);
        let l = leak_line(b"Leak: 0x10  size=48  zone: DefaultMallocZone_0x1  instance of 'NSCFData', type ObjC, implemented in Foundation").unwrap();
        assert_eq!(l.type_name, Some(&b"NSCFData"[..]));
        let l = leak_line(b"Leak: 0x186f5250  size=64").unwrap();
        assert_eq!((l.size, l.zone), (64, None));
        let l =
            leak_line(b"Leak: 0x1  size=7  zone: DefaultMallocZone_0x2    length: 7  \"10.2.13\"")
                .unwrap();
        assert_eq!(l.type_name, None);
        assert_eq!(leak_line(b"Leak: 0x1  size="), None);
        assert_eq!(leak_line(b"Leak: 0x1  size=1  zone: nohex"), None);
    }

    #[test]
    fn hex_dumps_are_recognised_cheaply() {
        assert!(is_hex_dump(
            b"0x01bb2428 0x00000001 0x00000400 0x00000000     ($......"
        ));
        assert!(is_hex_dump(
            b"0x18571798 0x00000001 0x00000000 0x00000000 \t..W...."
        ));
        assert!(!is_hex_dump(b"0x"));
        assert!(!is_hex_dump(b"0xzz 0x1"));
        assert!(!is_hex_dump(b"0x12g4"));
    }

    #[test]
    fn call_stacks_split_into_frames() {
        let text = call_stack_frames(b"Call stack: [thread 0x7fff70126be0]: | 0x100001e84 | NSApplicationMain | malloc | malloc_zone_malloc ").unwrap();
        let frames: Vec<&[u8]> = frame_texts(text).collect();
        assert_eq!(
            frames,
            vec![
                &b"0x100001e84"[..],
                b"NSApplicationMain",
                b"malloc",
                b"malloc_zone_malloc"
            ]
        );
        let frames: Vec<&[u8]> = frame_texts(b"thread_start | _pthread_start |").collect();
        assert_eq!(frames, vec![&b"thread_start"[..], b"_pthread_start"]);
        let frames: Vec<&[u8]> = frame_texts(b"a::operator|(int) | b").collect();
        assert_eq!(frames, vec![&b"a::operator|(int)"[..], b"b"]);
    }

    #[test]
    fn list_frames_of_every_era() {
        let f = list_frame(b"0x10005f7a4 (Project) InitLinkedList");
        assert_eq!(f.address, Some(0x10005f7a4));
        assert_eq!(f.image, Some(&b"Project"[..]));
        assert_eq!(f.symbol, Some(&b"InitLinkedList"[..]));
        let f = list_frame(b"0x10a2 (libfoo.dylib) -[Foo bar:baz:]  Foo.m:42");
        assert_eq!(f.symbol, Some(&b"-[Foo bar:baz:]"[..]));
        assert_eq!((f.file, f.line), (Some(&b"Foo.m"[..]), Some(42)));
        let f = list_frame(b"-[WebView(WebPrivate) _commonInit:groupName:] WebView.mm:835");
        assert_eq!(
            f.symbol,
            Some(&b"-[WebView(WebPrivate) _commonInit:groupName:]"[..])
        );
        assert_eq!(f.line, Some(835));
        let f = list_frame(b"operator new(unsigned long)");
        assert_eq!(f.symbol, Some(&b"operator new(unsigned long)"[..]));
        assert_eq!(f.file, None);
        let f = list_frame(b"0x100001e84");
        assert_eq!((f.address, f.symbol), (Some(0x100001e84), None));
    }
}
