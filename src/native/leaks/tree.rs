//! The 4.0 tree format (FORMAT.md §3.6) and the `STACK OF` blocks of `4.0, multi-line stacks`
//! (§3.7): node lines read right to left, `<< TOTAL >>`, `STACK OF N INSTANCES OF '…':` and
//! numbered frame lines. Pure functions on one line's bytes.

use super::{decimal_prefix, find, hex_prefix, rfind, source_location, split_source};
use crate::native::LeakKind;

/// The marker in front of a node's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Marker {
    RootLeak,
    RootCycle,
    /// `CYCLE BACK TO`: a pointer back to a block already listed, not a new block.
    CycleBackTo,
    /// No marker: a block kept alive only through its parent.
    Interior,
}

impl Marker {
    pub(super) fn leak_kind(self) -> LeakKind {
        match self {
            Marker::RootLeak => LeakKind::RootLeak,
            Marker::RootCycle => LeakKind::RootCycle,
            Marker::CycleBackTo | Marker::Interior => LeakKind::Interior,
        }
    }
}

/// One node line: `<indent>[count (size) ][edge --> ][MARKER ]<Type 0xADDR> [bytes][content]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Node<'a> {
    pub indent: usize,
    /// Blocks in this node's subtree, itself included (absent on `CYCLE BACK TO` lines).
    pub count: Option<u64>,
    pub marker: Marker,
    /// The type or label inside `<…>` (`Swift._DictionaryStorage<…>`, `malloc in main`).
    pub type_name: Option<&'a [u8]>,
    pub address: Option<u64>,
    /// The block's own size.
    pub bytes: u64,
}

/// `    875 (101K) << TOTAL >>`: the count of every node that follows.
pub(super) fn total_line(line: &[u8]) -> Option<u64> {
    let rest = line.trim_ascii();
    let rest = rest.strip_suffix(b"<< TOTAL >>")?;
    let (count, _) = decimal_prefix(rest)?;
    Some(count)
}

pub(super) fn node_line(line: &[u8]) -> Option<Node<'_>> {
    let indent = line.iter().take_while(|&&b| b == b' ').count();
    if indent == 0 {
        return None;
    }
    let mut rest = &line[indent..];
    let mut count = None;
    if let Some((n, after)) = decimal_prefix(rest)
        && let Some(size) = after.strip_prefix(b" (")
        && let Some(close) = size.iter().position(|&b| b == b')')
        && size.get(close + 1) == Some(&b' ')
    {
        count = Some(n);
        rest = &size[close + 2..];
    }
    let (before, bytes) = block_size(rest)?;
    let (marker, description) = split_marker(before);
    let description = description.trim_ascii();
    let (type_name, address) = describe(description)?;
    Some(Node {
        indent,
        count,
        marker,
        type_name,
        address,
        bytes,
    })
}

/// Finds the node's own size `[N]`, reading from the right: the last ` [digits]` that follows
/// an address (`0x…` or `0x…>`). What follows it is a content suffix (`  length: 3  "100"`).
fn block_size(rest: &[u8]) -> Option<(&[u8], u64)> {
    let mut end = rest.len();
    while let Some(open) = rfind(&rest[..end], b" [") {
        let after = &rest[open + 2..];
        if let Some((bytes, tail)) = decimal_prefix(after)
            && tail.first() == Some(&b']')
            && tail[1..].first().is_none_or(u8::is_ascii_whitespace)
            && follows_address(&rest[..open])
        {
            return Some((&rest[..open], bytes));
        }
        end = open;
    }
    None
}

fn follows_address(text: &[u8]) -> bool {
    let text = text.strip_suffix(b">").unwrap_or(text);
    let hex = text
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    hex > 0 && text[..text.len() - hex].ends_with(b"0x")
}

/// Splits `[edge --> ][MARKER ]description` on the marker, or on the first ` --> ` (edge labels
/// never contain one).
fn split_marker(text: &[u8]) -> (Marker, &[u8]) {
    const MARKERS: [(&[u8], Marker); 3] = [
        (b"ROOT LEAK: ", Marker::RootLeak),
        (b"ROOT CYCLE: ", Marker::RootCycle),
        (b"CYCLE BACK TO ", Marker::CycleBackTo),
    ];
    let found = MARKERS
        .iter()
        .filter_map(|&(m, kind)| find(text, m).map(|at| (at, m.len(), kind)))
        .min_by_key(|&(at, _, _)| at);
    if let Some((at, len, marker)) = found {
        return (marker, &text[at + len..]);
    }
    if text.starts_with(b"--> ") {
        return (Marker::Interior, &text[4..]);
    }
    match find(text, b" --> ") {
        Some(at) => (Marker::Interior, &text[at + 5..]),
        None => (Marker::Interior, text),
    }
}

/// `<TYPE 0xADDR>` (type = everything between the outer `<` and the last ` 0x…>`), `<TYPE>`, or
/// a bare `0xADDR`.
fn describe(description: &[u8]) -> Option<(Option<&[u8]>, Option<u64>)> {
    if let Some(inner) = description
        .strip_prefix(b"<")
        .and_then(|d| d.strip_suffix(b">"))
    {
        if let Some(space) = rfind(inner, b" 0x")
            && let Some((address, rest)) = hex_prefix(&inner[space + 1..])
            && rest.is_empty()
        {
            return Some((Some(&inner[..space]), Some(address)));
        }
        return Some((Some(inner), None));
    }
    let (address, rest) = hex_prefix(description)?;
    rest.is_empty().then_some((None, Some(address)))
}

/// `STACK OF <N> INSTANCE[S] OF '<ROOT LEAK|ROOT CYCLE>: <label>':`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StackHeader<'a> {
    pub instances: u64,
    pub marker: Marker,
    pub label: &'a [u8],
}

pub(super) fn stack_header(line: &[u8]) -> Option<StackHeader<'_>> {
    let rest = line.strip_prefix(b"STACK OF ")?;
    let (instances, rest) = decimal_prefix(rest)?;
    let rest = rest
        .strip_prefix(b" INSTANCES OF '")
        .or_else(|| rest.strip_prefix(b" INSTANCE OF '"))?;
    let rest = rest.trim_ascii_end();
    let rest = rest.strip_suffix(b"':")?;
    let (marker, label) = if let Some(label) = rest.strip_prefix(b"ROOT LEAK: ") {
        (Marker::RootLeak, label)
    } else if let Some(label) = rest.strip_prefix(b"ROOT CYCLE: ") {
        (Marker::RootCycle, label)
    } else {
        (Marker::RootLeak, rest)
    };
    Some(StackHeader {
        instances,
        marker,
        label,
    })
}

/// One numbered frame of a `STACK OF` block:
/// `<i>   <image>   <addr> <symbol> + <off>[  <file>:<line>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NumberedFrame<'a> {
    pub index: u64,
    pub image: Option<&'a [u8]>,
    pub address: u64,
    pub symbol: Option<&'a [u8]>,
    pub file: Option<&'a [u8]>,
    pub line: Option<u32>,
}

pub(super) fn numbered_frame(line: &[u8]) -> Option<NumberedFrame<'_>> {
    let (index, rest) = decimal_prefix(line)?;
    if !rest.first().is_some_and(u8::is_ascii_whitespace) {
        return None;
    }
    let rest = rest.trim_ascii_start();
    // The address is the first ` 0x…` token after the image (columns shift, so no slicing).
    let mut from = 0;
    let (image, address, after) = loop {
        let at = from + find(&rest[from..], b" 0x")?;
        if let Some((address, after)) = hex_prefix(&rest[at + 1..])
            && after.first().is_none_or(|&b| b == b' ')
        {
            break (rest[..at].trim_ascii(), address, after);
        }
        from = at + 1;
    };
    let after = after.trim_ascii();
    // `symbol + off[  file:line]`: take the last ` + <digits>`, C++ signatures contain spaces.
    let (symbol, source) = match last_offset(after) {
        Some((symbol, tail)) => (symbol, source_location(tail.trim_ascii())),
        None => split_source(after),
    };
    Some(NumberedFrame {
        index,
        image: named(image),
        address,
        symbol: named(symbol),
        file: source.map(|s| s.0),
        line: source.map(|s| s.1),
    })
}

fn named(text: &[u8]) -> Option<&[u8]> {
    Some(text).filter(|t| !t.is_empty() && *t != b"???")
}

/// Splits `symbol + 123[tail]` at the last ` + <digits>`; returns the symbol and the tail.
fn last_offset(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut end = text.len();
    while let Some(at) = rfind(&text[..end], b" + ") {
        if let Some((_, tail)) = decimal_prefix(&text[at + 3..])
            && tail.first().is_none_or(u8::is_ascii_whitespace)
        {
            return Some((&text[..at], tail));
        }
        end = at;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_read_right_to_left() {
        let n = node_line(b"               2 (192 bytes) windows --> <Swift._DictionaryStorage<Foundation.UUID, Client.AppWindowInfo> 0x600003334460> [160]").unwrap();
        assert_eq!(n.indent, 15);
        assert_eq!(n.count, Some(2));
        assert_eq!(n.marker, Marker::Interior);
        assert_eq!(
            n.type_name,
            Some(&b"Swift._DictionaryStorage<Foundation.UUID, Client.AppWindowInfo>"[..])
        );
        assert_eq!((n.address, n.bytes), (Some(0x600003334460), 160));

        let n = node_line(b"                     1 (112 bytes)  + 8 --> <Swift closure context 0x600002962ca0> [112]").unwrap();
        assert_eq!(n.type_name, Some(&b"Swift closure context"[..]));

        let n = node_line(
            b"         6 (1.09K) savePostObject --> ROOT CYCLE: <RustPlaces 0x600003335a40> [160]",
        )
        .unwrap();
        assert_eq!((n.marker, n.count), (Marker::RootCycle, Some(6)));

        let n = node_line(b"            notificationCenter --> CYCLE BACK TO <MockNotificationCenter 0x60000331b0c0> [160]").unwrap();
        assert_eq!((n.marker, n.count), (Marker::CycleBackTo, None));

        let n = node_line(b"                  1 (32 bytes) 0x600000231380 [32]").unwrap();
        assert_eq!(
            (n.type_name, n.address, n.bytes),
            (None, Some(0x600000231380), 32)
        );

        let n =
            node_line(b"    1 (16 bytes) ROOT LEAK: <malloc in main 0x12e7040f0> [16]").unwrap();
        assert_eq!(n.marker, Marker::RootLeak);
        assert_eq!(n.type_name, Some(&b"malloc in main"[..]));

        let n =
            node_line(b"      3 (48 bytes) __strong  --> <Foo [1] 0x10> [32]  length: 3  \"[9]\"")
                .unwrap();
        assert_eq!((n.type_name, n.bytes), (Some(&b"Foo [1]"[..]), 32));

        assert_eq!(total_line(b"    875 (101K) << TOTAL >>"), Some(875));
        assert_eq!(node_line(b"    875 (101K) << TOTAL >>"), None);
        assert_eq!(node_line(b"      32 (3.66K) ROOT LEAK: <Toolbar"), None);
    }

    #[test]
    fn stack_headers_and_numbered_frames() {
        let h = stack_header(b"STACK OF 1 INSTANCE OF 'ROOT LEAK: <malloc in main>':").unwrap();
        assert_eq!((h.instances, h.marker), (1, Marker::RootLeak));
        assert_eq!(h.label, b"<malloc in main>");
        let h = stack_header(b"STACK OF 12 INSTANCES OF 'ROOT CYCLE: <Node>':").unwrap();
        assert_eq!((h.instances, h.marker), (12, Marker::RootCycle));

        let f = numbered_frame(b"1   libc++abi.dylib                       0x1aed808b0 operator new(unsigned long) + 32").unwrap();
        assert_eq!(f.index, 1);
        assert_eq!(f.image, Some(&b"libc++abi.dylib"[..]));
        assert_eq!(f.address, 0x1aed808b0);
        assert_eq!(f.symbol, Some(&b"operator new(unsigned long)"[..]));
        assert_eq!(f.file, None);

        let f = numbered_frame(
            b"5   miniruby                              0x1006796c8 main + 88  main.c:62",
        )
        .unwrap();
        assert_eq!(
            (f.symbol, f.file, f.line),
            (Some(&b"main"[..]), Some(&b"main.c"[..]), Some(62))
        );

        let f = numbered_frame(b"0   libsystem_malloc.dylib                0x1aec2ec20 _malloc_zone_malloc_instrumented_or_legacy + 128 ").unwrap();
        assert_eq!(
            f.symbol,
            Some(&b"_malloc_zone_malloc_instrumented_or_legacy"[..])
        );

        let f = numbered_frame(
            b"12  Google Chrome Framework  0x7ff804f879d9 foo + 1  <compiler-generated>:0",
        )
        .unwrap();
        assert_eq!(f.image, Some(&b"Google Chrome Framework"[..]));
        assert_eq!(
            (f.file, f.line),
            (Some(&b"<compiler-generated>"[..]), Some(0))
        );
        assert_eq!(numbered_frame(b"3 dyld"), None);
    }
}
