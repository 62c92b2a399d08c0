//! valgrind's XML: `--xml=yes`, protocol 4.
//!
//! Stage: parsers (native).

use super::tokenizer::{XmlScanner, XmlToken};
use super::*;

/// Parses valgrind's XML: one report per leak search (at least one, even with no leak).
pub fn parse_xml(path: &Path, bytes: &[u8]) -> Result<Vec<NativeReport>> {
    let mut scanner = XmlScanner::new(bytes);
    let mut reports = Reports::new(path, NativeFormat::ValgrindXml);
    let mut diagnostics = Diagnostics::new(path);
    let mut elements: Vec<&[u8]> = Vec::new();
    let mut error: Option<XmlError> = None;
    let mut other_errors = 0u64;
    let mut seen_root = false;
    let mut finished = false;
    while let Some(token) = scanner.next() {
        match token {
            XmlToken::Open(name) => {
                if name == b"valgrindoutput" {
                    seen_root = true;
                }
                if name == b"error" && elements.last() == Some(&&b"valgrindoutput"[..]) {
                    error = Some(XmlError::new(scanner.line()));
                }
                if name == b"frame"
                    && let Some(e) = error.as_mut()
                {
                    e.frame = Some(Frame::default());
                }
                if name == b"stack"
                    && let Some(e) = error.as_mut()
                {
                    e.stacks += 1;
                }
                if elements.len() < 64 {
                    elements.push(name);
                }
            }
            XmlToken::Close(name) => {
                match elements.iter().rposition(|&open| open == name) {
                    Some(at) => elements.truncate(at),
                    None => diagnostics.report(
                        "XML closing tags without an opening one",
                        Position::Line(scanner.line()),
                        || format!("</{}>", lossy(name)),
                    ),
                }
                match name {
                    b"frame" => {
                        if let Some(e) = error.as_mut()
                            && let Some(frame) = e.frame.take()
                            && e.stacks == 1
                        {
                            e.frames.push(frame);
                        }
                    }
                    b"error" => {
                        if let Some(e) = error.take() {
                            if e.kind.starts_with(b"Leak_") {
                                add_xml_leak(&mut reports, &mut diagnostics, e);
                            } else {
                                other_errors += 1;
                            }
                        }
                    }
                    b"valgrindoutput" => finished = true,
                    _ => {}
                }
            }
            XmlToken::Empty => {}
            XmlToken::Text(raw) => {
                let (Some(&leaf), parent) = (
                    elements.last(),
                    elements.len().checked_sub(2).map(|i| elements[i]),
                ) else {
                    continue;
                };
                xml_text(&mut reports.header, error.as_mut(), leaf, parent, raw);
            }
        }
    }
    let end_line = scanner.line();
    if let Some(e) = &error {
        let start = e.line;
        diagnostics.report(
            "XML files ending early",
            Position::Line(end_line),
            || format!("the file ends inside the <error> begun at line {start}: it was cut short or is still being written; the errors before it are kept"),
        );
    } else if seen_root && !finished {
        diagnostics.report("XML files ending early", Position::Line(end_line), || {
            "no </valgrindoutput>: the run was still going or the file was cut; what was written is kept".to_owned()
        });
    }
    if !seen_root {
        return Err(Error::input(
            path,
            Position::Whole,
            "not valgrind XML: no <valgrindoutput> element",
        ));
    }
    if other_errors > 0 {
        reports.header.notices.push(format!(
            "{other_errors} memcheck errors that are not leaks (uninitialised values, invalid accesses) left out"
        ));
    }
    // A run without leaks is still a report: it says nothing leaked.
    reports.builder();
    Ok(reports.finish(diagnostics))
}

/// An `<error>` being read.
pub(super) struct XmlError {
    line: u64,
    kind: Vec<u8>,
    xwhat: Option<String>,
    leaked_bytes: Option<u64>,
    leaked_blocks: Option<u64>,
    /// How many `<stack>` elements began (only the first is the allocation stack).
    stacks: u32,
    frame: Option<Frame>,
    /// Innermost first, as written.
    frames: Vec<Frame>,
}

impl XmlError {
    fn new(line: u64) -> Self {
        XmlError {
            line,
            kind: Vec::new(),
            xwhat: None,
            leaked_bytes: None,
            leaked_blocks: None,
            stacks: 0,
            frame: None,
            frames: Vec::new(),
        }
    }
}

/// Stores the text of a leaf element where it belongs.
pub(super) fn xml_text(
    header: &mut ReportHeader,
    error: Option<&mut XmlError>,
    leaf: &[u8],
    parent: Option<&[u8]>,
    raw: &[u8],
) {
    let value = || decode_entities(raw.trim_ascii());
    match error {
        Some(e) => match (parent, leaf) {
            (Some(b"error"), b"kind") => e.kind = raw.trim_ascii().to_vec(),
            (Some(b"xwhat"), b"text") => e.xwhat = Some(value()),
            (Some(b"xwhat"), b"leakedbytes") => e.leaked_bytes = value().parse().ok(),
            (Some(b"xwhat"), b"leakedblocks") => e.leaked_blocks = value().parse().ok(),
            (Some(b"frame"), field) => {
                if let Some(frame) = e.frame.as_mut() {
                    set_frame_field(frame, field, value());
                }
            }
            _ => {}
        },
        None => match (parent, leaf) {
            (Some(b"valgrindoutput"), b"pid") => header.pid = value().parse().ok(),
            (Some(b"preamble"), b"line") => header_line(header, value().as_bytes()),
            (Some(b"argv"), b"exe") => set_command(header, value().as_bytes()),
            _ => {}
        },
    }
}

pub(super) fn set_frame_field(frame: &mut Frame, field: &[u8], value: String) {
    match field {
        b"ip" => {
            frame.address = value
                .strip_prefix("0x")
                .and_then(|h| parse_hex(h.as_bytes()))
        }
        b"obj" => frame.module = Some(value),
        b"fn" if value != "???" => frame.function = Some(value),
        b"dir" => {
            frame.file = Some(match frame.file.take() {
                Some(file) => format!("{value}/{file}"),
                None => value + "/",
            })
        }
        b"file" => {
            frame.file = Some(match frame.file.take() {
                Some(dir) if dir.ends_with('/') => dir + &value,
                _ => value,
            })
        }
        b"line" => frame.line = value.parse().ok(),
        _ => {}
    }
}

pub(super) fn add_xml_leak(reports: &mut Reports<'_>, diagnostics: &mut Diagnostics, e: XmlError) {
    let kind = match &e.kind[..] {
        b"Leak_DefinitelyLost" => LeakKind::Definite,
        b"Leak_IndirectlyLost" => LeakKind::IndirectlyLost,
        b"Leak_PossiblyLost" => LeakKind::Possible,
        b"Leak_StillReachable" => LeakKind::Reachable,
        other => {
            let other = lossy(other);
            diagnostics.report("unknown leak kinds", Position::Line(e.line), || other);
            return;
        }
    };
    let parsed = e
        .xwhat
        .as_deref()
        .and_then(|t| parse_loss_record(t.as_bytes()));
    let record = match (parsed, e.leaked_bytes, e.leaked_blocks) {
        (Some(record), _, _) => LossRecord { kind, ..record },
        (None, Some(bytes), Some(blocks)) => LossRecord {
            kind,
            bytes,
            direct_bytes: None,
            blocks,
            has_deltas: false,
            record: 0,
            of: 0,
        },
        _ => {
            diagnostics.report("leak errors without sizes", Position::Line(e.line), || {
                "no <leakedbytes>/<leakedblocks> and no readable <xwhat><text>".to_owned()
            });
            return;
        }
    };
    if parsed.is_some() {
        reports.before_record(&record);
    }
    let builder = reports.builder();
    let mut frames: Vec<FrameId> = e
        .frames
        .into_iter()
        .map(|f| builder.intern_frame(f))
        .collect();
    frames.reverse();
    reports.add(&record, frames);
}

/// `&lt;` `&gt;` `&amp;` `&quot;` `&apos;` `&#NN;` `&#xHH;`; anything else is kept as written.
pub(super) fn decode_entities(raw: &[u8]) -> String {
    if !raw.contains(&b'&') {
        return lossy(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = memchr::memchr(b'&', rest) {
        out.extend_from_slice(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = memchr::memchr(b';', &rest[..rest.len().min(12)]).and_then(|semi| {
            let name = &rest[1..semi];
            let c = match name {
                b"lt" => '<',
                b"gt" => '>',
                b"amp" => '&',
                b"quot" => '"',
                b"apos" => '\'',
                _ => {
                    let digits = name.strip_prefix(b"#")?;
                    let value = match digits
                        .strip_prefix(b"x")
                        .or_else(|| digits.strip_prefix(b"X"))
                    {
                        Some(hex) => u32::try_from(parse_hex(hex)?).ok()?,
                        None => std::str::from_utf8(digits).ok()?.parse().ok()?,
                    };
                    char::from_u32(value)?
                }
            };
            Some((c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                rest = &rest[len..];
            }
            None => {
                out.push(b'&');
                rest = &rest[1..];
            }
        }
    }
    out.extend_from_slice(rest);
    lossy(&out)
}
