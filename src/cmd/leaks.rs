//! `leakhunt leaks REPORT… [--maps FILE]… [--top N] [--format text|json]`: native leak sites
//! of `leaks`, LeakSanitizer and valgrind reports, and how they grew.
//!
//! Stage: command (rendering in `report::leaks`). Reads every report (several files oldest first, or a log holding several
//! checks), places and names frames with the module maps and the modules' own symbols, groups
//! leaks by allocation site, and prints the sites of the last report by bytes; with two or more
//! reports, first the growth of each site from the first report to the last. Reports whose loss
//! records list only changes (vgdb `increased`) carry each site's last known total forward.
//! A maps file given among the reports is used as `--maps`. Problems go to stderr; the exit code
//! is 2 only when nothing usable was read.

use crate::cli::{Format, LeaksArgs};
use crate::cmd::warn_diagnostics;
use crate::detect::{self, Kind};
use crate::diag::{Position, display_name};
use crate::error::{Error, Result, exit};
use crate::format::quantity;
use crate::native::symbolize::{ModuleMap, Symbolizer};
use crate::native::{self, NativeReport, valgrind};
use std::path::PathBuf;

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
    let mut resolved = Vec::with_capacity(reports.len());
    for report in &mut reports {
        resolved.push(symbolizer.resolve(report, &maps));
        warn_diagnostics(&report.diagnostics);
    }
    warn_about_notices(&reports);
    warn_about_unplaced(&reports, maps.is_empty());
    let output = crate::report::leaks::build_output(&reports, &resolved, args.top);
    let rendered = match args.format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&output)
                .map_err(|e| Error::Run(format!("cannot write JSON: {e}")))?;
            s.push('\n');
            s
        }
        Format::Text => crate::report::leaks::render_text(&output),
    };
    print!("{rendered}");
    Ok(exit::OK)
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
            "leakhunt: note: {} {} (library unloaded before the report, e.g. <unknown module>): {next}",
            quantity(unplaced, "frame"),
            if unplaced == 1 {
                "is a bare address"
            } else {
                "are bare addresses"
            }
        );
    }
}
