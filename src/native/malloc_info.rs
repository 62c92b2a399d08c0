//! glibc's `malloc_info(0, FILE*)` XML, as the agent records it under `--backend none` right
//! after a round's full GC: the bytes malloc holds in use then. Only the process-wide totals
//! (the elements after the last `</heap>`) are read:
//!
//! ```text
//! <total type="fast" count="0" size="0"/>
//! <total type="rest" count="4" size="8352"/>      free chunks, the top chunk included
//! <total type="mmap" count="1" size="266240"/>    chunks mmapped on their own
//! <system type="current" size="4509696"/>         what the arenas took from the system
//! ```
//!
//! In use = system current − free (fast and rest) + mmapped chunks.
//!
//! Stage: parser (native). Bytes in, totals out; a document without those totals is an error
//! that says what is missing, never a panic.

/// The process-wide totals of one `malloc_info` document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MallocTotals {
    /// Free chunks in fastbins.
    pub fast: u64,
    /// Every other free chunk, the arenas' top chunks included.
    pub rest: u64,
    /// Chunks malloc mmapped on their own (large allocations): in use.
    pub mmap: u64,
    /// Bytes the arenas hold from the system.
    pub system_current: u64,
}

impl MallocTotals {
    /// Bytes handed out by malloc and not freed.
    pub fn in_use(&self) -> u64 {
        self.system_current
            .saturating_sub(self.fast.saturating_add(self.rest))
            .saturating_add(self.mmap)
    }

    /// Bytes in use but a block of `requested` bytes the measurer had itself allocated: the
    /// chunk glibc gave it, a large one mapped on its own (its size and header rounded up to
    /// the page). A block taken from an arena instead is counted a page at most too large.
    pub fn in_use_without(&self, requested: u64) -> u64 {
        if requested == 0 {
            return self.in_use();
        }
        const PAGE: u64 = 4096;
        const HEADER: u64 = 16;
        let chunk = requested
            .saturating_add(HEADER)
            .div_ceil(PAGE)
            .saturating_mul(PAGE);
        self.in_use().saturating_sub(chunk)
    }
}

/// Reads the totals; the error says what is missing or unreadable, and where.
pub fn parse(xml: &[u8]) -> Result<MallocTotals, String> {
    let start = find(xml, b"<malloc")
        .ok_or_else(|| "not a malloc_info document: no <malloc> element".to_owned())?;
    // The per-arena elements repeat the names of the totals: read after the last arena only.
    let from = rfind(xml, b"</heap>").map_or(start, |i| i + b"</heap>".len());
    let tail = &xml[from..];
    if find(tail, b"</malloc>").is_none() {
        return Err("malloc_info document cut short: no </malloc> after the totals".to_owned());
    }
    let mut fast = None;
    let mut rest = None;
    let mut mmap = None;
    let mut system_current = None;
    for (at, tag) in tags(tail) {
        let slot = match (element(tag), attribute(tag, b"type")) {
            (b"total", Some(b"fast")) => &mut fast,
            (b"total", Some(b"rest")) => &mut rest,
            (b"total", Some(b"mmap")) => &mut mmap,
            (b"system", Some(b"current")) => &mut system_current,
            _ => continue,
        };
        let size = attribute(tag, b"size")
            .and_then(number)
            .ok_or_else(|| format!("no readable size in the element at byte {}", from + at))?;
        if slot.replace(size).is_some() {
            return Err(format!(
                "a total given twice, the second at byte {}",
                from + at
            ));
        }
    }
    let need = |v: Option<u64>, what: &str| v.ok_or_else(|| format!("no {what} total"));
    Ok(MallocTotals {
        fast: need(fast, "fast")?,
        rest: need(rest, "rest")?,
        mmap: need(mmap, "mmap")?,
        system_current: need(system_current, "system current")?,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(hay, needle)
}

/// The inside of each `<…>` tag (without the brackets), with its offset.
fn tags(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let open = at + memchr::memchr(b'<', &bytes[at..])?;
        let close = open + memchr::memchr(b'>', &bytes[open..])?;
        at = close + 1;
        Some((open, &bytes[open + 1..close]))
    })
}

fn element(tag: &[u8]) -> &[u8] {
    let end = tag
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'/')
        .unwrap_or(tag.len());
    &tag[..end]
}

/// The value of `name="…"` in a tag.
fn attribute<'a>(tag: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut rest = tag;
    while let Some(i) = find(rest, name) {
        let before_ok = i > 0 && rest[i - 1].is_ascii_whitespace();
        let after = &rest[i + name.len()..];
        if before_ok && let Some(value) = after.strip_prefix(b"=\"") {
            let end = memchr::memchr(b'"', value)?;
            return Some(&value[..end]);
        }
        rest = &rest[i + name.len()..];
    }
    None
}

fn number(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape glibc 2.36 prints (Debian 12), two arenas, numbers shortened.
    const TWO_ARENAS: &[u8] = br#"<malloc version="1">
<heap nr="0">
<sizes>
<size from="17" to="32" total="64" count="2"/>
<unsorted from="49" to="49" total="49" count="1"/>
</sizes>
<total type="fast" count="2" size="64"/>
<total type="rest" count="3" size="9000"/>
<system type="current" size="4000000"/>
<system type="max" size="4000000"/>
<aspace type="total" size="4000000"/>
<aspace type="mprotect" size="4000000"/>
</heap>
<heap nr="1">
<sizes>
</sizes>
<total type="fast" count="0" size="0"/>
<total type="rest" count="1" size="100"/>
<system type="current" size="135168"/>
<system type="max" size="135168"/>
<aspace type="total" size="135168"/>
<aspace type="mprotect" size="135168"/>
</heap>
<total type="fast" count="2" size="64"/>
<total type="rest" count="4" size="9100"/>
<total type="mmap" count="1" size="266240"/>
<system type="current" size="4135168"/>
<system type="max" size="4135168"/>
<aspace type="total" size="4135168"/>
<aspace type="mprotect" size="4135168"/>
</malloc>
"#;

    #[test]
    fn the_totals_after_the_last_arena_give_the_bytes_in_use() {
        let t = parse(TWO_ARENAS).unwrap();
        assert_eq!(
            t,
            MallocTotals {
                fast: 64,
                rest: 9100,
                mmap: 266_240,
                system_current: 4_135_168
            }
        );
        assert_eq!(t.in_use(), 4_135_168 - 64 - 9100 + 266_240);
    }

    #[test]
    fn a_document_without_arenas_still_has_its_totals() {
        let xml = br#"<malloc version="1">
<total type="fast" count="0" size="0"/><total type="rest" count="1" size="10"/>
<total type="mmap" count="0" size="0"/><system type="current" size="110"/></malloc>"#;
        assert_eq!(parse(xml).unwrap().in_use(), 100);
    }

    #[test]
    fn bad_documents_are_errors_that_say_what_is_missing() {
        assert!(parse(b"").unwrap_err().contains("no <malloc>"));
        assert!(
            parse(b"\xff\x00garbage")
                .unwrap_err()
                .contains("no <malloc>")
        );
        // Cut inside the totals.
        let cut = &TWO_ARENAS[..TWO_ARENAS.len() - 120];
        assert!(
            parse(cut).unwrap_err().contains("cut short"),
            "{:?}",
            parse(cut)
        );
        let no_mmap = String::from_utf8_lossy(TWO_ARENAS)
            .replace(r#"<total type="mmap" count="1" size="266240"/>"#, "");
        assert_eq!(parse(no_mmap.as_bytes()).unwrap_err(), "no mmap total");
        let bad_size = String::from_utf8_lossy(TWO_ARENAS).replace(
            r#"type="mmap" count="1" size="266240""#,
            r#"type="mmap" count="1" size="-5""#,
        );
        assert!(
            parse(bad_size.as_bytes())
                .unwrap_err()
                .starts_with("no readable size")
        );
        let huge = String::from_utf8_lossy(TWO_ARENAS).replace("266240", "99999999999999999999999");
        assert!(parse(huge.as_bytes()).is_err());
        let twice = String::from_utf8_lossy(TWO_ARENAS).replace(
            "</malloc>",
            r#"<total type="rest" count="1" size="1"/></malloc>"#,
        );
        assert!(parse(twice.as_bytes()).unwrap_err().contains("twice"));
        // Unclosed tags and quotes end the scan without a panic.
        assert!(parse(br#"<malloc version="1"><total type="fast size="#).is_err());
    }

    #[test]
    fn a_held_round_s_own_buffer_is_taken_off_as_its_mapped_chunk() {
        let t = parse(TWO_ARENAS).unwrap();
        assert_eq!(t.in_use_without(0), t.in_use());
        // 10 MiB requested: 10 MiB + a page once the header is added and rounded up.
        let requested = 10 << 20;
        assert_eq!(
            t.in_use_without(requested),
            t.in_use().saturating_sub(requested + 4096)
        );
        assert_eq!(t.in_use_without(u64::MAX), 0);
    }

    #[test]
    fn in_use_never_underflows_on_inconsistent_totals() {
        let t = MallocTotals {
            fast: 10,
            rest: u64::MAX,
            mmap: 5,
            system_current: 3,
        };
        assert_eq!(t.in_use(), 5);
    }
}
