//! Which kind of evidence a file holds, told by its content (never by its name).
//!
//! First stage of the flow for files a user already has: `analyze FILE…` and the single-purpose
//! commands sniff each input's first 64 KiB (decompressed) and hand it to the matching reader.

use crate::diag::Position;
use crate::error::{Error, Result};
use crate::source;
use memchr::memmem;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// CRuby `ObjectSpace.dump_all` / `dump` JSON lines.
    CrubyDump,
    /// Rubinius `RBXHEAPDUMP` binary dump.
    RubiniusDump,
    /// macOS `leaks(1)` output, any era.
    LeaksReport,
    /// LeakSanitizer text log.
    LsanLog,
    /// valgrind memcheck `--xml=yes` output.
    ValgrindXml,
    /// valgrind memcheck text: a `--log-file` or what `vgdb … leak_check` prints.
    ValgrindText,
    /// `/proc/PID/maps` text, to place addresses of unloaded libraries.
    ModuleMap,
    /// A directory written by `leakhunt run`.
    Bundle,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::CrubyDump => "CRuby heap dump",
            Kind::RubiniusDump => "Rubinius heap dump",
            Kind::LeaksReport => "macOS leaks report",
            Kind::LsanLog => "LeakSanitizer log",
            Kind::ValgrindXml => "valgrind XML",
            Kind::ValgrindText => "valgrind text",
            Kind::ModuleMap => "module map",
            Kind::Bundle => "leakhunt bundle",
        }
    }

    pub fn is_heap(self) -> bool {
        matches!(self, Kind::CrubyDump | Kind::RubiniusDump)
    }

    pub fn is_native(self) -> bool {
        matches!(
            self,
            Kind::LeaksReport | Kind::LsanLog | Kind::ValgrindXml | Kind::ValgrindText
        )
    }
}

pub const RUBINIUS_MAGIC: &[u8; 12] = b"RBXHEAPDUMP\0";

/// Detects the kind of a file or bundle directory.
pub fn detect_path(path: &Path) -> Result<Kind> {
    if path.is_dir() {
        if path.join(crate::bundle::MANIFEST).is_file() {
            return Ok(Kind::Bundle);
        }
        return Err(Error::input(
            path,
            Position::Whole,
            "a directory, but not a leakhunt bundle (no manifest.json)",
        ));
    }
    let head = source::sniff(path)?;
    if head.is_empty() {
        return Err(Error::input(path, Position::Whole, "empty file"));
    }
    detect_bytes(&head).ok_or_else(|| {
        Error::input(
            path,
            Position::Whole,
            format!(
                "not a heap dump or native leak report ({})",
                describe_unknown(&head)
            ),
        )
    })
}

/// Detects the kind from the leading bytes of the content.
pub fn detect_bytes(head: &[u8]) -> Option<Kind> {
    if head.starts_with(RUBINIUS_MAGIC) {
        return Some(Kind::RubiniusDump);
    }
    let has = |needle: &[u8]| memmem::find(head, needle).is_some();
    if has(b"<valgrindoutput>") {
        return Some(Kind::ValgrindXml);
    }
    if is_cruby_dump(head) {
        return Some(Kind::CrubyDump);
    }
    if has(b"Direct leak of ")
        || has(b"Indirect leak of ")
        || has(b"ERROR: LeakSanitizer")
        || has(b"SUMMARY: LeakSanitizer")
    {
        return Some(Kind::LsanLog);
    }
    if has(b"leaks Report Version")
        || has(b" nodes malloced for ")
        || has(b"total leaked bytes.")
        || has(b"STACK OF ")
        || has(b"leaks cannot examine process")
        || head.starts_with(b"Leak: 0x")
        || has(b"\nLeak: 0x")
    {
        return Some(Kind::LeaksReport);
    }
    if has(b"in loss record ") || has(b"LEAK SUMMARY:") || has(b"Memcheck, a memory error detector")
    {
        return Some(Kind::ValgrindText);
    }
    if is_module_map(head) {
        return Some(Kind::ModuleMap);
    }
    None
}

/// A CRuby dump's first non-blank line is a JSON object that starts with `address` or is a ROOT.
fn is_cruby_dump(head: &[u8]) -> bool {
    let first = head
        .split(|&b| b == b'\n')
        .find(|l| l.iter().any(|b| !b.is_ascii_whitespace()));
    match first {
        Some(l) => {
            let l = l.trim_ascii_start();
            l.starts_with(b"{\"address\":") || l.starts_with(b"{\"type\":\"ROOT\"")
        }
        None => false,
    }
}

/// `/proc/PID/maps`: `start-end perms offset dev inode [path]`.
fn is_module_map(head: &[u8]) -> bool {
    let Some(first) = head.split(|&b| b == b'\n').next() else {
        return false;
    };
    let mut fields = first.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let range_ok = fields.next().is_some_and(|r| {
        let mut it = r.splitn(2, |&b| b == b'-');
        let a = it.next().unwrap_or_default();
        let b = it.next().unwrap_or_default();
        !a.is_empty() && !b.is_empty() && a.iter().chain(b).all(u8::is_ascii_hexdigit)
    });
    let perms_ok = fields
        .next()
        .is_some_and(|p| p.len() == 4 && p.iter().all(|c| b"rwxps-".contains(c)));
    range_ok && perms_ok
}

/// A short guess at what an unknown file is, for the error message.
fn describe_unknown(head: &[u8]) -> &'static str {
    if head.starts_with(b"\x89PNG") {
        "looks like a PNG image"
    } else if head.starts_with(b"%PDF") {
        "looks like a PDF"
    } else if head.starts_with(b"\x7fELF") {
        "looks like an ELF binary"
    } else if head.starts_with(b"{") || head.starts_with(b"[") {
        "JSON, but not ObjectSpace.dump_all lines"
    } else if head.iter().take(512).any(|&b| b == 0) {
        "binary data of an unknown kind"
    } else {
        "text of an unknown kind"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_formats_apart() {
        assert_eq!(
            detect_bytes(b"RBXHEAPDUMP\0\0\0\0\x01"),
            Some(Kind::RubiniusDump)
        );
        assert_eq!(
            detect_bytes(b"{\"type\":\"ROOT\", \"root\":\"vm\", \"references\":[]}\n"),
            Some(Kind::CrubyDump)
        );
        assert_eq!(
            detect_bytes(b"{\"address\":\"0x7f\", \"type\":\"STRING\"}\n"),
            Some(Kind::CrubyDump)
        );
        assert_eq!(
            detect_bytes(b"hello from the target\nleaks Report Version: 4.0\n"),
            Some(Kind::LeaksReport)
        );
        assert_eq!(
            detect_bytes(b"Process 1602: 86671 nodes malloced for 13261 KB\n"),
            Some(Kind::LeaksReport)
        );
        assert_eq!(
            detect_bytes(b"==1==ERROR: LeakSanitizer: detected memory leaks\n\nDirect leak of 8 byte(s) in 1 object(s) allocated from:\n"),
            Some(Kind::LsanLog)
        );
        assert_eq!(
            detect_bytes(b"<?xml version=\"1.0\"?>\n\n<valgrindoutput>\n"),
            Some(Kind::ValgrindXml)
        );
        assert_eq!(
            detect_bytes(b"==9== 16 bytes in 1 blocks are definitely lost in loss record 1 of 2\n"),
            Some(Kind::ValgrindText)
        );
        assert_eq!(
            detect_bytes(b"55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 123 /usr/bin/ruby3.1\n"),
            Some(Kind::ModuleMap)
        );
        assert_eq!(detect_bytes(b"\x89PNG\r\n\x1a\n"), None);
        assert_eq!(describe_unknown(b"\x89PNG\r\n"), "looks like a PNG image");
    }
}
