//! Byte helpers the text report parsers share (LeakSanitizer, valgrind, module maps): numbered
//! lines with CR stripped, hexadecimal numbers, lossy text and short excerpts for messages.
//!
//! Stage: parsers (native).

/// One line of the input with its 1-based number, CR stripped.
pub(crate) fn lines(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut rest = bytes;
    let mut number = 0u64;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        number += 1;
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        Some((number, line.strip_suffix(b"\r").unwrap_or(line)))
    })
}

pub(crate) fn parse_hex(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    u64::from_str_radix(text, 16).ok()
}

pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The first 80 characters of a line, for messages.
pub(crate) fn excerpt(text: &[u8]) -> String {
    let cut = &text[..text.len().min(80)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if text.len() > 80 {
        s.push('…');
    }
    s
}
