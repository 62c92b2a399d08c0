//! `leakhunt leaks REPORT… [--maps FILE]… [--top N] [--format text|json]`: native leak sites
//! of `leaks`, LeakSanitizer and valgrind reports, and how they grew.
//!
//! Stage: command. Reads every report (several files oldest first, or a log holding several
//! checks), places and names frames with the module maps and the modules' own symbols, groups
//! leaks by allocation site, and prints the sites of the last report by bytes; with two or more
//! reports, first the growth of each site from the first report to the last. Reports whose loss
//! records list only changes (vgdb `increased`) carry each site's last known total forward.
//! A maps file given among the reports is used as `--maps`. Problems go to stderr; the exit code
//! is 2 only when nothing usable was read.

use crate::cli::{Format, LeaksArgs};
use crate::cmd::{thousands, warn_diagnostics};
use crate::detect::{self, Kind};
use crate::diag::{Position, display_name};
use crate::error::{Error, Result, exit};
use crate::native::symbolize::{ModuleMap, Symbolizer};
use crate::native::{
    self, Frame, LeakKind, LeakSite, NativeFormat, NativeReport, ReportSummary, SiteGrowth,
    SiteKey, valgrind,
};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Version of the JSON layout below.
pub const SCHEMA: u32 = 1;

/// How many frames of a site's stack the text shows on each side of the site.
const FRAMES_ABOVE_SITE: usize = 3;

pub fn run(args: LeaksArgs) -> Result<i32> {
    let mut map_paths = args.maps.clone();
    let mut reports: Vec<NativeReport> = Vec::new();
    let mut failures: Vec<Error> = Vec::new();
    for path in &args.reports {
        match detect::detect_path(path) {
            Ok(Kind::ModuleMap) => map_paths.push(path.clone()),
            Ok(kind) if kind.is_native() => match read_reports(path, kind) {
                Ok(read) => reports.extend(read),
                Err(e) => failures.push(e),
            },
            Ok(kind) => failures.push(Error::input(
                path,
                Position::Whole,
                format!("a {}, not a native leak report", kind.describe()),
            )),
            Err(e) => failures.push(e),
        }
    }
    let mut maps = Vec::new();
    for path in &map_paths {
        match ModuleMap::read(path) {
            Ok(map) => {
                warn_diagnostics(&map.diagnostics);
                maps.push(map);
            }
            Err(e) => eprintln!("leakhunt: warning: {e} (addresses it would place stay unplaced)"),
        }
    }
    if reports.is_empty() {
        let mut failures = failures.into_iter();
        let Some(first) = failures.next() else {
            return Err(Error::Usage("no native report given".into()));
        };
        for e in failures {
            eprintln!("leakhunt: {e}");
        }
        return Err(first);
    }
    for e in &failures {
        eprintln!("leakhunt: {e}");
    }
    let mut symbolizer = Symbolizer::new();
    let resolved = resolve(&mut symbolizer, &mut reports, &maps);
    for report in &reports {
        warn_diagnostics(&report.diagnostics);
    }
    warn_about_notices(&reports);
    warn_about_unplaced(&reports, maps.is_empty());
    print!("{}", render(&reports, &resolved, args.top, args.format)?);
    Ok(exit::OK)
}

/// Places and names the frames of every report with the module maps.
pub fn resolve(
    symbolizer: &mut Symbolizer,
    reports: &mut [NativeReport],
    maps: &[ModuleMap],
) -> Vec<native::symbolize::ResolveStats> {
    reports
        .iter_mut()
        .map(|report| symbolizer.resolve(report, maps))
        .collect()
}

/// The command's output for reports already read and resolved (oldest first).
pub fn render(
    reports: &[NativeReport],
    resolved: &[native::symbolize::ResolveStats],
    top: usize,
    format: Format,
) -> Result<String> {
    let output = build_output(reports, resolved, top);
    Ok(match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&output)
                .map_err(|e| Error::Run(format!("cannot write JSON: {e}")))?;
            s.push('\n');
            s
        }
        Format::Text => render_text(&output),
    })
}

fn read_reports(path: &std::path::Path, kind: Kind) -> Result<Vec<NativeReport>> {
    let input = crate::source::Input::open(path)?;
    let bar = crate::progress::bytes_bar(&display_name(path), input.len() as u64);
    let reports = native::parse_bytes(path, kind, &input);
    bar.finish_and_clear();
    reports
}

/// Tool notices worth a line on stderr, once per file and notice, with the next step.
fn warn_about_notices(reports: &[NativeReport]) {
    let mut seen: Vec<(&PathBuf, &str)> = Vec::new();
    for report in reports {
        for notice in &report.header.notices {
            if notice == valgrind::CHANGES_ONLY || seen.contains(&(&report.path, notice.as_str())) {
                continue;
            }
            seen.push((&report.path, notice));
            let hint = if notice.starts_with("Too many leaks!") {
                " — sites may be missing: fewer distinct stacks help (LSAN_OPTIONS=malloc_context_size=6)"
            } else {
                ""
            };
            eprintln!(
                "leakhunt: note: {} report {}: {notice}{hint}",
                display_name(&report.path),
                report.sequence + 1
            );
        }
    }
}

/// Frames still without a module after the maps: say how to place them.
fn warn_about_unplaced(reports: &[NativeReport], no_maps: bool) {
    let unplaced: usize = reports
        .iter()
        .map(|r| {
            r.frames
                .iter()
                .filter(|f| f.address.is_some() && f.module.is_none() && f.function.is_none())
                .count()
        })
        .sum();
    if unplaced > 0 {
        let next = if no_maps {
            "pass --maps with /proc/PID/maps saved while the program ran"
        } else {
            "none of the maps given holds them"
        };
        eprintln!(
            "leakhunt: note: {unplaced} frame{} {} (library unloaded before the report, e.g. <unknown module>): {next}",
            plural(unplaced),
            if unplaced == 1 {
                "is a bare address"
            } else {
                "are bare addresses"
            }
        );
    }
}

#[derive(Debug, Serialize)]
struct LeaksOutput {
    schema: u32,
    reports: Vec<ReportEntry>,
    sites: SiteList,
    growth: Option<GrowthList>,
}

#[derive(Debug, Serialize)]
struct ReportEntry {
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
struct SiteList {
    /// The report (or, for change-only listings, the reports up to it) the sites come from.
    report: String,
    total_sites: usize,
    total_blocks: u64,
    total_bytes: u64,
    items: Vec<SiteEntry>,
}

#[derive(Debug, Serialize)]
struct SiteEntry {
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
struct GrowthList {
    from: String,
    to: String,
    grew: usize,
    shrank: usize,
    items: Vec<GrowthEntry>,
}

#[derive(Debug, Serialize)]
struct GrowthEntry {
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

fn build_output(
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

fn render_text(out: &LeaksOutput) -> String {
    let mut s = String::new();
    let files: std::collections::BTreeSet<&str> =
        out.reports.iter().map(|r| r.path.as_str()).collect();
    let _ = writeln!(
        s,
        "{} native report{} from {} file{}",
        out.reports.len(),
        plural(out.reports.len()),
        files.len(),
        plural(files.len())
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
            thousands(r.bytes),
            counted(r.blocks, "block"),
            counted(r.sites as u64, "site")
        );
        if let Some(summary) = r.summary {
            let _ = write!(
                s,
                "; tool's summary {} bytes in {}",
                thousands(summary.bytes),
                counted(summary.leaks, "leak")
            );
        }
        s.push('\n');
    }
    if let Some(g) = &out.growth {
        let _ = writeln!(
            s,
            "\nGrowth from {} to {}: {} site{} grew, {} shrank{}",
            g.from,
            g.to,
            g.grew,
            plural(g.grew),
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
        counted(list.total_sites as u64, "site"),
        thousands(list.total_bytes),
        counted(list.total_blocks, "block"),
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
                thousands(e.blocks),
                thousands(e.bytes),
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

/// `1 block`, `1,024 blocks`.
fn counted(n: u64, noun: &str) -> String {
    format!("{} {noun}{}", thousands(n), plural(n as usize))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn signed(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", thousands(n.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_stacks() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(263_427_072), "263,427,072");
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

    /// Review find while fuzzing: two sites whose sizes add past `u64::MAX` (LSan prints up to
    /// 19 digits) overflowed the totals of the sites table (a panic in debug builds); they
    /// saturate.
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
