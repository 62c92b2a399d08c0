//! The parts of a `leaks` report around the leaks themselves: the crash-report style header
//! (FORMAT.md §3.2), the version line (§3.3), the two summary lines (§3.4) and the
//! "not debuggable" notice (§3.1). Pure functions on one line's bytes.

use super::{decimal_prefix, find, parse_decimal};
use crate::native::NativeFormat;

/// Splits a header line `Key:   value` into key and value. Keys are letters, spaces, `/` and
/// parentheses (`Physical footprint (peak)`, `Date/Time`); the value may be empty.
pub(super) fn key_value(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let key = &line[..colon];
    let first_is_letter = key.first().is_some_and(u8::is_ascii_alphabetic);
    let key_chars_ok = key
        .iter()
        .all(|&b| b.is_ascii_alphabetic() || b" /()".contains(&b));
    if !first_is_letter || !key_chars_ok {
        return None;
    }
    let value = &line[colon + 1..];
    if !value.is_empty() && !value[0].is_ascii_whitespace() {
        return None;
    }
    Some((key, value.trim_ascii()))
}

/// The keys that open a header block: `Process:` everywhere, `Hardware Model:` on iOS memgraphs.
pub(super) fn opens_header(key: &[u8]) -> bool {
    key == b"Process" || key == b"Hardware Model"
}

/// `Process:` value `name [pid]`.
pub(super) fn process_value(value: &[u8]) -> (&[u8], Option<u32>) {
    if let Some(open) = value.iter().rposition(|&b| b == b'[')
        && value.last() == Some(&b']')
        && let Some(pid) = parse_decimal(&value[open + 1..value.len() - 1])
    {
        return (value[..open].trim_ascii(), u32::try_from(pid).ok());
    }
    (value, None)
}

/// A footprint such as `1344K`, `81.7M`, `1.0G` (binary units, §3.9) in bytes.
pub(super) fn size_with_unit(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    let (number, scale) = match value.last()? {
        b'K' => (&value[..value.len() - 1], 1u64 << 10),
        b'M' => (&value[..value.len() - 1], 1 << 20),
        b'G' => (&value[..value.len() - 1], 1 << 30),
        b'T' => (&value[..value.len() - 1], 1 << 40),
        b'B' | b's' => {
            // `16 bytes`, `16B`
            let digits_end = value.iter().position(|b| !b.is_ascii_digit())?;
            return parse_decimal(&value[..digits_end]);
        }
        _ => (value, 1),
    };
    let text = std::str::from_utf8(number.trim_ascii()).ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let amount: f64 = text.parse().ok()?;
    let bytes = (amount * scale as f64).round();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// What a `leaks Report Version:` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct VersionLine {
    pub format: NativeFormat,
    /// False for a version this reader does not know (read as the nearest known one).
    pub known: bool,
}

/// `leaks Report Version:  2.0` (two spaces in 2.0), `… 4.0, multi-line stacks`.
pub(super) fn version_line(line: &[u8]) -> Option<VersionLine> {
    let rest = line.strip_prefix(b"leaks Report Version:")?.trim_ascii();
    let (version, flags) = match rest.iter().position(|&b| b == b',') {
        Some(comma) => (&rest[..comma], rest[comma + 1..].trim_ascii()),
        None => (rest, &b""[..]),
    };
    let multi_line = flags == b"multi-line stacks";
    let (format, known) = match version {
        b"1.0" => (NativeFormat::Leaks1, flags.is_empty()),
        b"2.0" => (NativeFormat::Leaks2, flags.is_empty()),
        b"3.0" => (NativeFormat::Leaks3, flags.is_empty()),
        b"4.0" if multi_line => (NativeFormat::Leaks4Stacks, true),
        b"4.0" => (NativeFormat::Leaks4, flags.is_empty()),
        _ if multi_line => (NativeFormat::Leaks4Stacks, false),
        _ => (NativeFormat::Leaks4, false),
    };
    Some(VersionLine { format, known })
}

/// One of the two summary lines, identical in every version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SummaryLine {
    /// `Process N: X nodes malloced for K KB`
    Nodes { pid: u32, nodes: u64, kb: u64 },
    /// `Process N: X leaks for B total leaked bytes.` (`1 leak for` in the singular)
    Leaks { pid: u32, leaks: u64, bytes: u64 },
}

pub(super) fn summary_line(line: &[u8]) -> Option<SummaryLine> {
    let rest = line.strip_prefix(b"Process ")?;
    let (pid, rest) = decimal_prefix(rest)?;
    let pid = u32::try_from(pid).ok()?;
    let rest = rest.strip_prefix(b": ")?;
    let (count, rest) = decimal_prefix(rest)?;
    if let Some(rest) = rest.strip_prefix(b" nodes malloced for ") {
        let (kb, rest) = decimal_prefix(rest)?;
        return (rest.trim_ascii_end() == b" KB").then_some(SummaryLine::Nodes {
            pid,
            nodes: count,
            kb,
        });
    }
    let rest = rest
        .strip_prefix(b" leaks for ")
        .or_else(|| rest.strip_prefix(b" leak for "))?;
    let (bytes, rest) = decimal_prefix(rest)?;
    let rest = rest.trim_ascii_end();
    (rest == b" total leaked bytes." || rest == b" total leaked bytes").then_some(
        SummaryLine::Leaks {
            pid,
            leaks: count,
            bytes,
        },
    )
}

/// `Process N is not debuggable. …` (13 and later, one line) or, after a `leaks[PID]: ` prefix
/// already removed, the first line of the 10.13 wording. Returns the pid.
pub(super) fn not_debuggable(line: &[u8]) -> Option<u32> {
    let rest = line.strip_prefix(b"Process ")?;
    let (pid, rest) = decimal_prefix(rest)?;
    rest.strip_prefix(b" is not debuggable")?;
    u32::try_from(pid).ok()
}

/// The second line of the 10.13 wording of the notice.
pub(super) fn continues_not_debuggable(line: &[u8]) -> bool {
    line.starts_with(b"Due to security restrictions, leaks ")
}

/// `N leaks excluded (not printed)` after `-exclude` (§3.4).
pub(super) fn excluded_line(line: &[u8]) -> Option<u64> {
    let (count, rest) = decimal_prefix(line)?;
    let rest = rest
        .strip_prefix(b" leaks excluded")
        .or_else(|| rest.strip_prefix(b" leak excluded"))?;
    rest.trim_ascii()
        .starts_with(b"(not printed)")
        .then_some(count)
}

/// A MallocStackLogging message, from the target or from leaks itself (§3.1):
/// `prog(pid[,0xthread]) MallocStackLogging: …` or `… malloc: …`. Returns the program and pid.
pub(super) fn stack_logging_message(line: &[u8]) -> Option<(&[u8], Option<u32>)> {
    if line.starts_with(b"MallocStackLogging: ") || line.starts_with(b"malloc: ") {
        return Some((&b""[..], None));
    }
    let close = find(line, b") MallocStackLogging: ").or_else(|| find(line, b") malloc: "))?;
    let open = line[..close].iter().rposition(|&b| b == b'(')?;
    let inside = &line[open + 1..close];
    let pid_text = match inside.iter().position(|&b| b == b',') {
        Some(comma) => &inside[..comma],
        None => inside,
    };
    let pid = parse_decimal(pid_text)?;
    Some((&line[..open], u32::try_from(pid).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_and_process() {
        assert_eq!(
            key_value(b"Physical footprint (peak):  113.1M"),
            Some((&b"Physical footprint (peak)"[..], &b"113.1M"[..]))
        );
        assert_eq!(
            key_value(b"Idle exit: untracked"),
            Some((&b"Idle exit"[..], &b"untracked"[..]))
        );
        assert_eq!(key_value(b"Leak:0x1"), None);
        assert_eq!(key_value(b"10 20 30"), None);
        assert_eq!(
            process_value(b"Safari [53606]"),
            (&b"Safari"[..], Some(53606))
        );
        assert_eq!(process_value(b"??? [1]"), (&b"???"[..], Some(1)));
    }

    #[test]
    fn footprints_in_binary_units() {
        assert_eq!(size_with_unit(b"1344K"), Some(1344 * 1024));
        assert_eq!(size_with_unit(b"81.7M"), Some(85_668_659));
        assert_eq!(size_with_unit(b"1.0G"), Some(1 << 30));
        assert_eq!(size_with_unit(b"16 bytes"), Some(16));
        assert_eq!(size_with_unit(b"M"), None);
        assert_eq!(size_with_unit(b"1e400M"), None);
    }

    #[test]
    fn version_and_summary_lines() {
        assert_eq!(
            version_line(b"leaks Report Version:  2.0").map(|v| v.format),
            Some(NativeFormat::Leaks2)
        );
        assert_eq!(
            version_line(b"leaks Report Version: 4.0, multi-line stacks"),
            Some(VersionLine {
                format: NativeFormat::Leaks4Stacks,
                known: true
            })
        );
        assert!(!version_line(b"leaks Report Version: 5.0").is_some_and(|v| v.known));
        assert_eq!(
            summary_line(b"Process 14025: 1 leak for 16 total leaked bytes."),
            Some(SummaryLine::Leaks {
                pid: 14025,
                leaks: 1,
                bytes: 16
            })
        );
        assert_eq!(
            summary_line(b"Process 36700: 274490 nodes malloced for 294357 KB"),
            Some(SummaryLine::Nodes {
                pid: 36700,
                nodes: 274490,
                kb: 294357
            })
        );
        assert_eq!(
            summary_line(b"Process 1: 99999999999999999999999 leaks for"),
            None
        );
        assert_eq!(excluded_line(b"3 leaks excluded (not printed)"), Some(3));
    }

    #[test]
    fn notices_and_stack_logging_chatter() {
        assert_eq!(
            not_debuggable(b"Process 53176 is not debuggable. Due to security restrictions, leaks can only show or save contents of readonly memory of restricted processes."),
            Some(53176)
        );
        assert_eq!(
            stack_logging_message(
                b"main.exe(14025) MallocStackLogging: recording malloc and VM allocation stacks using lite mode"
            ),
            Some((&b"main.exe"[..], Some(14025)))
        );
        assert_eq!(
            stack_logging_message(
                b"leaks(12871,0xacdfa2c0) malloc: process 89617 no longer exists"
            ),
            Some((&b"leaks"[..], Some(12871)))
        );
        assert_eq!(stack_logging_message(b"Hello Leaks!"), None);
    }
}
