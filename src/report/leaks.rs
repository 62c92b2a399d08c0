//! The `leakhunt leaks` output: native leak sites of the last report by bytes and, with two or
//! more reports, each site's growth from the first to the last — as text, or as JSON with a
//! `schema` version.
//!
//! Stage: renderer. Reads parsed [`NativeReport`]s (already placed and named by the command);
//! never parses.

use crate::diag::display_name;
use crate::format::{count, quantity, signed};
use crate::native::{
    self, Frame, LeakKind, LeakSite, NativeFormat, NativeReport, ReportSummary, SiteGrowth,
    SiteKey, valgrind,
};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;

/// How many frames of a site's stack the text shows on each side of the site.
const FRAMES_ABOVE_SITE: usize = 3;

/// Version of the JSON layout below.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Serialize)]
pub struct LeaksOutput {
    schema: u32,
    reports: Vec<ReportEntry>,
    sites: SiteList,
    growth: Option<GrowthList>,
}

#[derive(Debug, Serialize)]
pub struct ReportEntry {
    /// `#1`, `#2`, … in reading order (files oldest first, then position in the file).
    label: String,
    path: String,
    /// 1-based position of the report in its file.
    number: u32,
    format: NativeFormat,
    tool: Option<String>,
    pid: Option<u32>,
    /// The tool's own totals, when it printed them.
    summary: Option<ReportSummary>,
    blocks: u64,
    bytes: u64,
    sites: usize,
    notices: Vec<String>,
    /// Frames given their library from a module map.
    frames_placed: usize,
    /// Frames given a function name from their library's symbols.
    frames_named: usize,
}

#[derive(Debug, Serialize)]
pub struct SiteList {
    /// The report (or, for change-only listings, the reports up to it) the sites come from.
    report: String,
    total_sites: usize,
    total_blocks: u64,
    total_bytes: u64,
    items: Vec<SiteEntry>,
}

#[derive(Debug, Serialize)]
pub struct SiteEntry {
    function: String,
    library: Option<String>,
    module: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    kinds: Vec<LeakKind>,
    blocks: u64,
    bytes: u64,
    /// The representative stack, outermost first, as labels.
    stack: Vec<String>,
    /// Index of the site frame in `stack`.
    site_frame: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct GrowthList {
    from: String,
    to: String,
    grew: usize,
    shrank: usize,
    items: Vec<GrowthEntry>,
}

#[derive(Debug, Serialize)]
pub struct GrowthEntry {
    function: String,
    library: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    blocks_before: u64,
    bytes_before: u64,
    blocks_after: u64,
    bytes_after: u64,
    delta_blocks: i64,
    delta_bytes: i64,
}

pub fn build_output(
    reports: &[NativeReport],
    resolved: &[native::symbolize::ResolveStats],
    top: usize,
) -> LeaksOutput {
    let per_report: Vec<Vec<LeakSite>> = reports.iter().map(native::sites).collect();
    let entries: Vec<ReportEntry> = reports
        .iter()
        .zip(&per_report)
        .zip(resolved)
        .enumerate()
        .map(|(i, ((r, sites), stats))| ReportEntry {
            label: format!("#{}", i + 1),
            path: display_name(&r.path),
            number: r.sequence + 1,
            format: r.format,
            tool: r.header.tool.clone(),
            pid: r.header.pid,
            summary: r.summary,
            blocks: r.total_blocks(),
            bytes: r.total_bytes(),
            sites: sites.len(),
            notices: r.header.notices.clone(),
            frames_placed: stats.placed,
            frames_named: stats.named,
        })
        .collect();
    let current = current_sites(reports, &per_report);
    let last_label = format!("#{}", reports.len());
    let sites = SiteList {
        report: last_label.clone(),
        total_sites: current.len(),
        total_blocks: current.iter().fold(0, |t, s| t.saturating_add(s.blocks)),
        total_bytes: current.iter().fold(0, |t, s| t.saturating_add(s.bytes)),
        items: current.iter().take(top).map(site_entry).collect(),
    };
    let growth = (reports.len() >= 2).then(|| {
        let changes = native::growth(&per_report[0], &current);
        let frames: HashMap<&SiteKey, &Frame> = current
            .iter()
            .chain(&per_report[0])
            .map(|s| (&s.key, &s.frame))
            .collect();
        let grew: Vec<&SiteGrowth> = changes
            .iter()
            .filter(|g| g.delta_bytes() > 0 || (g.delta_bytes() == 0 && g.delta_blocks() > 0))
            .collect();
        GrowthList {
            from: "#1".to_owned(),
            to: last_label,
            grew: grew.len(),
            shrank: changes.iter().filter(|g| g.delta_bytes() < 0).count(),
            items: grew
                .into_iter()
                .take(top)
                .map(|g| growth_entry(g, frames.get(&g.key).copied()))
                .collect(),
        }
    });
    LeaksOutput {
        schema: SCHEMA,
        reports: entries,
        sites,
        growth,
    }
}

/// The sites as of the last report. A report listing only changed loss records updates the
/// sites it lists and leaves the others at their last known totals.
fn current_sites(reports: &[NativeReport], per_report: &[Vec<LeakSite>]) -> Vec<LeakSite> {
    let mut state: Vec<LeakSite> = Vec::new();
    for (report, sites) in reports.iter().zip(per_report) {
        if valgrind::lists_changes_only(report) && !state.is_empty() {
            for site in sites {
                match state.iter_mut().find(|s| s.key == site.key) {
                    Some(known) => *known = site.clone(),
                    None => state.push(site.clone()),
                }
            }
        } else {
            state = sites.clone();
        }
    }
    state.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.key.cmp(&b.key)));
    state
}

fn site_entry(site: &LeakSite) -> SiteEntry {
    let site_frame = native::allocation_frame(&site.stack.iter().collect::<Vec<_>>());
    SiteEntry {
        function: site.key.function.clone(),
        library: site.key.library.clone(),
        module: site.frame.module.clone(),
        file: site.frame.file.clone(),
        line: site.frame.line,
        kinds: site.kinds.iter().copied().collect(),
        blocks: site.blocks,
        bytes: site.bytes,
        stack: site.stack.iter().map(Frame::label).collect(),
        site_frame,
    }
}

fn growth_entry(g: &SiteGrowth, frame: Option<&Frame>) -> GrowthEntry {
    GrowthEntry {
        function: g.key.function.clone(),
        library: g.key.library.clone(),
        file: frame.and_then(|f| f.file.clone()),
        line: frame.and_then(|f| f.line),
        blocks_before: g.blocks_before,
        bytes_before: g.bytes_before,
        blocks_after: g.blocks_after,
        bytes_after: g.bytes_after,
        delta_blocks: g.delta_blocks(),
        delta_bytes: g.delta_bytes(),
    }
}

pub fn render_text(out: &LeaksOutput) -> String {
    let mut s = String::new();
    let files: std::collections::BTreeSet<&str> =
        out.reports.iter().map(|r| r.path.as_str()).collect();
    let _ = writeln!(
        s,
        "{} from {}",
        quantity(out.reports.len(), "native report"),
        quantity(files.len(), "file")
    );
    for r in &out.reports {
        let tool = r.tool.as_deref().unwrap_or("leaks");
        let pid = r.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
        let _ = write!(
            s,
            "  {} {} report {} ({tool}{pid}): {} bytes in {}, {}",
            r.label,
            r.path,
            r.number,
            count(r.bytes),
            quantity(r.blocks, "block"),
            quantity(r.sites, "site")
        );
        if let Some(summary) = r.summary {
            let _ = write!(
                s,
                "; tool's summary {} bytes in {}",
                count(summary.bytes),
                quantity(summary.leaks, "leak")
            );
        }
        s.push('\n');
    }
    if let Some(g) = &out.growth {
        let _ = writeln!(
            s,
            "\nGrowth from {} to {}: {} grew, {} shrank{}",
            g.from,
            g.to,
            quantity(g.grew, "site"),
            g.shrank,
            if g.items.len() < g.grew {
                format!(" (top {} by bytes)", g.items.len())
            } else {
                String::new()
            }
        );
        if !g.items.is_empty() {
            let rows: Vec<[String; 4]> = g
                .items
                .iter()
                .map(|e| {
                    [
                        signed(e.delta_blocks),
                        signed(e.delta_bytes),
                        site_label(&e.function, e.file.as_deref(), e.line),
                        e.library.clone().unwrap_or_else(|| "?".to_owned()),
                    ]
                })
                .collect();
            table(
                &mut s,
                ["+blocks", "+bytes", "site", "library"],
                &rows,
                |_, _| None,
            );
        }
    }
    let list = &out.sites;
    let _ = writeln!(
        s,
        "\nLeak sites in {}: {}, {} bytes in {}{}",
        list.report,
        quantity(list.total_sites as u64, "site"),
        count(list.total_bytes),
        quantity(list.total_blocks, "block"),
        if list.items.len() < list.total_sites {
            format!(" (top {} by bytes)", list.items.len())
        } else {
            String::new()
        }
    );
    if list.items.is_empty() {
        s.push_str("  no leak reported\n");
        return s;
    }
    let rows: Vec<[String; 5]> = list
        .items
        .iter()
        .map(|e| {
            [
                count(e.blocks),
                count(e.bytes),
                site_label(&e.function, e.file.as_deref(), e.line),
                e.library.clone().unwrap_or_else(|| "?".to_owned()),
                e.kinds
                    .iter()
                    .map(|k| kind_label(*k))
                    .collect::<Vec<_>>()
                    .join("+"),
            ]
        })
        .collect();
    table(
        &mut s,
        ["blocks", "bytes", "site", "library", "kind"],
        &rows,
        |i, indent| {
            let e = &list.items[i];
            short_stack(&e.stack, e.site_frame).map(|stack| format!("{:indent$}{stack}", ""))
        },
    );
    s
}

/// Right-aligned numbers in the first two columns, left-aligned text after; `below` may add a
/// line under each row, indented to the third column.
fn table<const N: usize>(
    s: &mut String,
    headers: [&str; N],
    rows: &[[String; N]],
    below: impl Fn(usize, usize) -> Option<String>,
) {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count()).min(60);
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::from(" ");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i < 2 {
                let _ = write!(out, " {cell:>w$}");
            } else if i + 1 == N {
                let _ = write!(out, "  {cell}");
            } else {
                let _ = write!(out, "  {cell:<w$}");
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    s.push_str(&line(headers));
    let indent = 1 + 2 + widths[0] + 1 + widths[1] + 2;
    for (i, row) in rows.iter().enumerate() {
        s.push_str(&line(std::array::from_fn(|c| row[c].as_str())));
        if let Some(extra) = below(i, indent) {
            s.push_str(&extra);
            s.push('\n');
        }
    }
}

/// A few frames around the site: `outer → … → [site] → allocator`.
fn short_stack(stack: &[String], site: Option<usize>) -> Option<String> {
    let site = site?;
    if stack.len() <= 1 {
        return None;
    }
    let start = site.saturating_sub(FRAMES_ABOVE_SITE);
    let end = (site + 2).min(stack.len());
    let mut parts: Vec<String> = Vec::new();
    if start > 0 {
        parts.push("…".to_owned());
    }
    for (i, label) in stack.iter().enumerate().take(end).skip(start) {
        parts.push(if i == site {
            format!("[{label}]")
        } else {
            label.clone()
        });
    }
    if end < stack.len() {
        parts.push("…".to_owned());
    }
    Some(parts.join(" → "))
}

fn site_label(function: &str, file: Option<&str>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(file), Some(line)) => {
            let name = file.rsplit('/').next().unwrap_or(file);
            format!("{function} ({name}:{line})")
        }
        _ => function.to_owned(),
    }
}

fn kind_label(kind: LeakKind) -> &'static str {
    match kind {
        LeakKind::Direct => "direct",
        LeakKind::Indirect => "indirect",
        LeakKind::Definite => "definite",
        LeakKind::IndirectlyLost => "indirectly lost",
        LeakKind::Possible => "possible",
        LeakKind::Reachable => "reachable",
        LeakKind::RootLeak => "root leak",
        LeakKind::RootCycle => "root cycle",
        LeakKind::Interior => "interior",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_stacks() {
        assert_eq!(count(0), "0");
        assert_eq!(count(263_427_072), "263,427,072");
        assert_eq!(signed(-5440), "-5,440");
        assert_eq!(signed(40), "+40");
        let stack: Vec<String> = ["main", "a", "b", "c", "widget_create", "malloc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            short_stack(&stack, Some(4)).unwrap(),
            "… → a → b → c → [widget_create] → malloc"
        );
        assert_eq!(
            short_stack(&stack[3..5], Some(1)).unwrap(),
            "c → [widget_create]"
        );
        assert_eq!(
            site_label("widget_create", Some("/src/widget.c"), Some(23)),
            "widget_create (widget.c:23)"
        );
    }

    #[test]
    fn change_only_reports_carry_sites_forward() {
        let text =
            b"==1== 16 (+16) bytes in 1 (+1) blocks are definitely lost in loss record 1 of 2\n\
==1==    at 0x1: malloc (in /vg/vgpreload_memcheck-amd64-linux.so)\n\
==1==    by 0x2: noise (in /lib/libruby.so)\n\
==1== \n\
==1== 32 (+32) bytes in 2 (+2) blocks are definitely lost in loss record 2 of 2\n\
==1==    at 0x1: malloc (in /vg/vgpreload_memcheck-amd64-linux.so)\n\
==1==    by 0x3: widget_create (in /lib/libwidget.so)\n\
==1== \n\
==1== LEAK SUMMARY:\n\
==1==    definitely lost: 48 (+48) bytes in 3 (+3) blocks\n\
==1== 64 (+32) bytes in 4 (+2) blocks are definitely lost in loss record 2 of 2\n\
==1==    at 0x1: malloc (in /vg/vgpreload_memcheck-amd64-linux.so)\n\
==1==    by 0x3: widget_create (in /lib/libwidget.so)\n\
==1== \n\
==1== LEAK SUMMARY:\n\
==1==    definitely lost: 80 (+32) bytes in 5 (+2) blocks\n";
        let reports = valgrind::parse_text(std::path::Path::new("v"), text).unwrap();
        assert_eq!(reports.len(), 2);
        let stats = vec![native::symbolize::ResolveStats::default(); 2];
        let out = build_output(&reports, &stats, 10);
        let names: Vec<(&str, u64)> = out
            .sites
            .items
            .iter()
            .map(|e| (e.function.as_str(), e.blocks))
            .collect();
        assert_eq!(names, [("widget_create", 4), ("noise", 1)]);
        let g = out.growth.unwrap();
        assert_eq!((g.grew, g.shrank), (1, 0));
        assert_eq!(g.items[0].function, "widget_create");
        assert_eq!((g.items[0].delta_blocks, g.items[0].delta_bytes), (2, 32));
    }

    /// Two sites whose sizes add past `u64::MAX` (LSan prints up to 19 digits): the totals of
    /// the sites table saturate.
    #[test]
    fn site_totals_past_u64_saturate() {
        let log = b"==1==ERROR: LeakSanitizer: detected memory leaks\n\n\
Direct leak of 9999999999999999999 byte(s) in 9999999999999999999 object(s) allocated from:\n\
    #0 0x1 in malloc (/usr/lib/liblsan.so.0+0x1)\n\
    #1 0x2 in widget_create (/lib/libwidget.so+0x2)\n\n\
Direct leak of 9999999999999999999 byte(s) in 9999999999999999999 object(s) allocated from:\n\
    #0 0x1 in malloc (/usr/lib/liblsan.so.0+0x1)\n\
    #1 0x3 in gadget_create (/lib/libwidget.so+0x3)\n\n";
        let reports = native::lsan::parse(std::path::Path::new("l"), log).unwrap();
        let stats = vec![native::symbolize::ResolveStats::default(); reports.len()];
        let out = build_output(&reports, &stats, 10);
        assert_eq!(out.sites.total_sites, 2);
        assert_eq!(
            (out.sites.total_blocks, out.sites.total_bytes),
            (u64::MAX, u64::MAX)
        );
        render_text(&out);
    }
}
