//! valgrind's text: `--log-file`, and what vgdb prints for `leak_check`.
//!
//! Stage: parsers (native).

use super::*;

/// Parses valgrind text output: one report per leak search.
pub fn parse_text(path: &Path, bytes: &[u8]) -> Result<Vec<NativeReport>> {
    let mut reports = Reports::new(path, NativeFormat::ValgrindText);
    let mut diagnostics = Diagnostics::new(path);
    let mut block: Option<(LossRecord, Vec<FrameId>)> = None;
    let mut in_summary = false;
    let mut summary_done = false;
    let mut seen_valgrind = false;
    for (number, line) in lines(bytes) {
        let (pid, content) = strip_prefix(line);
        if let Some(pid) = pid {
            seen_valgrind = true;
            reports.header.pid.get_or_insert(pid);
        }
        let text = content.trim_ascii();
        if text.is_empty() {
            finish_block(&mut reports, &mut block);
            continue;
        }
        if let Some(frame_text) = text
            .strip_prefix(b"at ")
            .or_else(|| text.strip_prefix(b"by "))
            .filter(|t| t.starts_with(b"0x"))
        {
            let Some((_, frames)) = block.as_mut() else {
                continue; // a frame of an error that is not a leak
            };
            match parse_text_frame(frame_text) {
                Some(frame) => frames.push(reports.builder().intern_frame(frame)),
                None => diagnostics.report(NOT_UNDERSTOOD, Position::Line(number), || {
                    format!("a frame without `0xADDRESS:`: `{}`", excerpt(text))
                }),
            }
            continue;
        }
        if memmem::find(text, b" in loss record ").is_some() {
            finish_block(&mut reports, &mut block);
            if summary_done {
                reports.close();
                summary_done = false;
            }
            in_summary = false;
            match parse_loss_record(text) {
                Some(record) => {
                    reports.before_record(&record);
                    block = Some((record, Vec::new()));
                }
                None => diagnostics.report(NOT_UNDERSTOOD, Position::Line(number), || {
                    format!("a loss record without sizes: `{}`", excerpt(text))
                }),
            }
            continue;
        }
        if text.starts_with(b"LEAK SUMMARY:") {
            finish_block(&mut reports, &mut block);
            if summary_done {
                reports.close();
            }
            reports.builder().set_summary(ReportSummary::default());
            in_summary = true;
            summary_done = true;
            continue;
        }
        if in_summary {
            match parse_summary_line(text) {
                Some((label, bytes, blocks)) => {
                    let counts = matches!(
                        label,
                        b"definitely lost" | b"indirectly lost" | b"possibly lost"
                    );
                    if label == b"indirectly lost" {
                        reports.summary_indirect = Some((bytes, blocks));
                    }
                    if counts && let Some(summary) = reports.builder().summary_mut() {
                        summary.leaks = summary.leaks.saturating_add(blocks);
                        summary.bytes = summary.bytes.saturating_add(bytes);
                    }
                    continue;
                }
                None if memmem::find(text, b" lost: ").is_some() => {
                    diagnostics.report(NOT_UNDERSTOOD, Position::Line(number), || {
                        format!("a LEAK SUMMARY line without sizes: `{}`", excerpt(text))
                    });
                    continue;
                }
                None => in_summary = false,
            }
        }
        if text.starts_with(b"All heap blocks were freed") {
            finish_block(&mut reports, &mut block);
            reports.builder();
            summary_done = true;
            continue;
        }
        header_line(&mut reports.header, text);
        // Other lines: non-leak errors, HEAP SUMMARY, hints, the program's own output.
    }
    finish_block(&mut reports, &mut block);
    let cut = reports.open.is_some() && !summary_done;
    if cut {
        diagnostics.report(
            "leak checks without a LEAK SUMMARY",
            Position::Line(lines(bytes).count() as u64),
            || "the text ends inside a leak search: cut short, or still being written".to_owned(),
        );
    }
    let found_any = reports.open.is_some() || !reports.done.is_empty();
    if !found_any {
        let what = if seen_valgrind {
            "valgrind output without any leak search (run with --leak-check=full, or use vgdb leak_check)"
        } else {
            "not valgrind output: no loss record or LEAK SUMMARY in it"
        };
        let mut message = what.to_owned();
        if let Some(first) = diagnostics.lines().first() {
            message = format!("{message} ({first})");
        }
        return Err(Error::input(path, Position::Whole, message));
    }
    Ok(reports.finish(diagnostics))
}

pub(super) fn finish_block(
    reports: &mut Reports<'_>,
    block: &mut Option<(LossRecord, Vec<FrameId>)>,
) {
    if let Some((record, mut frames)) = block.take() {
        frames.reverse();
        reports.add(&record, frames);
    }
}

/// `==13045== text`, `--13045-- text`, `**13045** text` → (pid, text). Lines without the
/// prefix (vgdb's own messages, the program's output) come back whole.
pub(super) fn strip_prefix(line: &[u8]) -> (Option<u32>, &[u8]) {
    for mark in [&b"=="[..], b"--", b"**"] {
        if let Some(rest) = line.strip_prefix(mark)
            && let Some(end) = memmem::find(rest, mark)
            && end > 0
            && rest[..end].iter().all(u8::is_ascii_digit)
        {
            let pid = std::str::from_utf8(&rest[..end])
                .ok()
                .and_then(|s| s.parse().ok());
            let text = &rest[end + 2..];
            return (pid, text.strip_prefix(b" ").unwrap_or(text));
        }
    }
    (None, line)
}

/// `0x9E3D14E: widget_create (widget.c:23)`, `0x4934483: ??? (in /usr/lib/libruby.so)`,
/// `0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)`.
pub(super) fn parse_text_frame(text: &[u8]) -> Option<Frame> {
    let colon = memchr::memchr(b':', text)?;
    let address = parse_hex(text[..colon].strip_prefix(b"0x")?)?;
    let rest = text[colon + 1..].trim_ascii();
    let mut frame = Frame {
        address: Some(address),
        ..Frame::default()
    };
    let mut function = rest;
    if let Some(inner) = rest.strip_suffix(b")")
        && let Some(open) = memmem::rfind(inner, b" (")
    {
        let location = &inner[open + 2..];
        if let Some(module) = location.strip_prefix(b"in ") {
            frame.module = Some(lossy(module));
            function = &rest[..open];
        } else if let Some(colon) = memchr::memrchr(b':', location)
            && let Ok(line) = std::str::from_utf8(&location[colon + 1..])
                .unwrap_or("")
                .parse()
        {
            frame.file = Some(lossy(&location[..colon]));
            frame.line = Some(line);
            function = &rest[..open];
        }
    }
    let function = function.trim_ascii();
    if !function.is_empty() && function != b"???" {
        frame.function = Some(lossy(function));
    }
    Some(frame)
}
