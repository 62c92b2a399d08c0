//! A hand-written XML tokenizer for the fixed, attribute-free layout valgrind writes: tags and
//! text in order, declarations, comments and processing instructions skipped.
//!
//! Stage: parsers (native).

use memchr::memmem;

pub(super) enum XmlToken<'a> {
    Open(&'a [u8]),
    Close(&'a [u8]),
    /// `<name/>`: nothing valgrind writes needs it.
    Empty,
    Text(&'a [u8]),
}

/// Tags and text of an XML document, in order; declarations, comments and processing
/// instructions are skipped. Stops at the end of input, even inside a tag.
pub(super) struct XmlScanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    counted_to: usize,
    line: u64,
}

impl<'a> XmlScanner<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        XmlScanner {
            bytes,
            pos: 0,
            counted_to: 0,
            line: 1,
        }
    }

    /// 1-based line of the scanner's position.
    pub(super) fn line(&mut self) -> u64 {
        let upto = self.pos.min(self.bytes.len());
        if upto > self.counted_to {
            self.line +=
                memchr::memchr_iter(b'\n', &self.bytes[self.counted_to..upto]).count() as u64;
            self.counted_to = upto;
        }
        self.line
    }

    pub(super) fn next(&mut self) -> Option<XmlToken<'a>> {
        loop {
            let rest = self.bytes.get(self.pos..)?;
            if rest.is_empty() {
                return None;
            }
            if rest[0] != b'<' {
                let len = memchr::memchr(b'<', rest).unwrap_or(rest.len());
                self.pos += len;
                return Some(XmlToken::Text(&rest[..len]));
            }
            let skip_to = |end: &[u8]| memmem::find(rest, end).map(|i| i + end.len());
            let skipped = if rest.starts_with(b"<!--") {
                Some(skip_to(b"-->"))
            } else if rest.starts_with(b"<?") {
                Some(skip_to(b"?>"))
            } else if rest.starts_with(b"<!") {
                Some(skip_to(b">"))
            } else {
                None
            };
            if let Some(len) = skipped {
                self.pos += len.unwrap_or(rest.len());
                continue;
            }
            let Some(close) = memchr::memchr(b'>', rest) else {
                self.pos = self.bytes.len();
                return None;
            };
            self.pos += close + 1;
            let inner = &rest[1..close];
            let (is_close, inner) = match inner.strip_prefix(b"/") {
                Some(name) => (true, name),
                None => (false, inner),
            };
            let is_empty = inner.ends_with(b"/");
            let name_len = inner
                .iter()
                .position(|b| b.is_ascii_whitespace() || *b == b'/')
                .unwrap_or(inner.len());
            let name = &inner[..name_len];
            return Some(if is_close {
                XmlToken::Close(name)
            } else if is_empty {
                XmlToken::Empty
            } else {
                XmlToken::Open(name)
            });
        }
    }
}
