//! The terminal report: a summary line (verdict, leak rate, snapshots, backend, how the program
//! ended), the findings with their evidence and suggested change, the class-growth table in
//! histo.rb's layout, the native sites table and, for a run of several processes, the
//! processes. Colour only when asked for.
//!
//! Stage: renderer.

use super::{RenderOptions, Renderer};
use crate::correlate::finding::Finding;
use crate::correlate::{Analysis, FindingKind, Verdict};
use crate::format::{count, human_bytes, quantity, signed};
use crate::heap::histogram::HistogramDiff;
use std::io::{self, Write};

/// Rows of the class-growth and native tables printed (JSON has them all).
const TABLE_ROWS: usize = 25;
const SITE_ROWS: usize = 15;

pub struct TextReport {
    pub options: RenderOptions,
}

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn red(&self, s: &str) -> String {
        self.wrap("1;31", s)
    }
    fn green(&self, s: &str) -> String {
        self.wrap("1;32", s)
    }
    fn yellow(&self, s: &str) -> String {
        self.wrap("33", s)
    }
    fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
}

/// "exited with status 0", "killed by SIGSEGV", … from the manifest's outcome.
pub fn outcome_text(a: &Analysis) -> Option<String> {
    let o = &a.program.as_ref()?.outcome;
    let text = match (o.kind.as_str(), o.code, o.signal_name.as_deref(), o.signal) {
        ("exited", Some(c), _, _) => match &o.exception {
            Some(class) => format!("program exited with status {c} (uncaught {class})"),
            None => format!("program exited with status {c}"),
        },
        ("signaled", _, Some(name), _) => format!("program killed by {name}"),
        ("signaled", _, None, Some(n)) => format!("program killed by signal {n}"),
        ("", _, _, _) => return None,
        (kind, _, _, _) if !o.detail.is_empty() => format!("program {kind}: {}", o.detail),
        (kind, _, _, _) => format!("program {kind}"),
    };
    Some(text)
}

/// The one-line summary, shared with the HTML report.
pub fn summary_parts(a: &Analysis) -> Vec<String> {
    let leaks = a.leak_findings().count();
    let mut parts = vec![match a.verdict {
        Verdict::Leak => quantity(leaks, "leak finding"),
        Verdict::NoLeak => "no leak finding".to_owned(),
        Verdict::Inconclusive => "not enough evidence to tell".to_owned(),
    }];
    if let Some(r) = a.leak_rate {
        let verb = if a.verdict == Verdict::Leak {
            "leaking"
        } else {
            "footprint"
        };
        parts.push(format!(
            "{verb} {}/s ({})",
            human_bytes(r.bytes_per_second),
            r.source
        ));
    }
    let mut snaps = format!(
        "{} heap + {} native snapshots",
        a.heap_snapshots, a.native_snapshots
    );
    if let Some(d) = a.duration_seconds {
        snaps.push_str(&format!(" over {d:.1} s"));
    }
    parts.push(snaps);
    if let Some(p) = processes_part(a) {
        parts.push(p);
    }
    if let Some(b) = &a.backend {
        parts.push(format!("backend {b}"));
    }
    if let Some(o) = outcome_text(a) {
        parts.push(o);
    }
    parts
}

/// "3 processes (the master, 2 workers)", for a run of several.
fn processes_part(a: &Analysis) -> Option<String> {
    if a.processes.is_empty() {
        return None;
    }
    let mut groups: Vec<(&str, usize)> = Vec::new();
    for p in &a.processes {
        match groups.iter_mut().find(|(g, _)| *g == p.group) {
            Some((_, n)) => *n += 1,
            None => groups.push((&p.group, 1)),
        }
    }
    let named: Vec<String> = groups
        .iter()
        .map(|(g, n)| match n {
            1 => (*g).to_owned(),
            n => format!("{n} {}", plural_group(g)),
        })
        .collect();
    Some(format!(
        "{} ({})",
        quantity(a.processes.len(), "process"),
        named.join(", ")
    ))
}

/// "worker" → "workers", "worker of 42" → "workers of 42", "ruby process" → "ruby processes".
fn plural_group(group: &str) -> String {
    match group.split_once(' ') {
        Some(("worker", rest)) => format!("workers {rest}"),
        _ => match group.rsplit_once(' ') {
            Some((head, last)) => format!("{head} {}", crate::format::plural(last)),
            None => crate::format::plural(group),
        },
    }
}

/// " of pid 4242 (worker)" when the tables describe one process of several.
pub fn whose(a: &Analysis) -> String {
    a.tables_of
        .as_ref()
        .map(|t| format!(" of pid {} ({})", t.pid, t.group))
        .unwrap_or_default()
}

pub fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Leak => "LEAK",
        Verdict::NoLeak => "NO LEAK FOUND",
        Verdict::Inconclusive => "INCONCLUSIVE",
    }
}

impl Renderer for TextReport {
    fn render(&self, a: &Analysis, out: &mut dyn Write) -> io::Result<()> {
        let a = &self.options.paths.analysis(a);
        let p = Paint(self.options.color);
        let word = verdict_word(a.verdict);
        let word = match a.verdict {
            Verdict::Leak => p.red(word),
            Verdict::NoLeak => p.green(word),
            Verdict::Inconclusive => p.yellow(word),
        };
        writeln!(out, "leakhunt: {word} — {}", summary_parts(a).join(" · "))?;
        for (i, f) in a.findings.iter().enumerate() {
            writeln!(out)?;
            write_finding(out, &p, i + 1, f)?;
        }
        if let Some(g) = &a.class_growth {
            writeln!(out)?;
            writeln!(
                out,
                "{}",
                p.bold(&format!(
                    "Class growth{}, heap snapshot {} → {} (histo.rb format: count, class, bytes)",
                    whose(a),
                    g.from,
                    g.to
                ))
            )?;
            if g.rows.is_empty() {
                writeln!(out, "  no class changed its count")?;
            }
            let shown = HistogramDiff {
                rows: g.rows.iter().take(TABLE_ROWS).cloned().collect(),
            };
            shown.write_histo_rb(out, false)?;
            if g.rows.len() > TABLE_ROWS {
                writeln!(
                    out,
                    "  … {} more rows (--format json has them all)",
                    g.rows.len() - TABLE_ROWS
                )?;
            }
            if let Some(note) = g.left_out_note() {
                writeln!(out, "  {}", p.dim(&note))?;
            }
        }
        if !a.native_sites.is_empty() {
            writeln!(out)?;
            writeln!(
                out,
                "{}",
                p.bold(&format!(
                    "Native sites{} (leaked blocks per snapshot, newest bytes, growth)",
                    whose(a)
                ))
            )?;
            writeln!(
                out,
                "  {:<15} {:>14} {:>14}  {:<24} site",
                "status", "bytes", "growth", "blocks"
            )?;
            for r in a.native_sites.iter().take(SITE_ROWS) {
                let blocks: Vec<String> = r.blocks.iter().map(|&b| count(b)).collect();
                let lib = r
                    .library
                    .as_deref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                let status = serde_json::to_value(r.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "  {:<15} {:>14} {:>14}  {:<24} {}{lib}",
                    status,
                    count(r.bytes.last().copied().unwrap_or(0)),
                    signed(r.delta_bytes),
                    blocks.join(" → "),
                    r.function
                )?;
            }
            if a.native_sites.len() > SITE_ROWS {
                writeln!(
                    out,
                    "  … {} more sites (--format json has them all)",
                    a.native_sites.len() - SITE_ROWS
                )?;
            }
        }
        if !a.processes.is_empty() {
            writeln!(out)?;
            writeln!(out, "{}", p.bold("Processes"))?;
            for s in &a.processes {
                let rounds = match (s.first_round, s.last_round) {
                    (Some(a), Some(b)) if a == b => format!("round {a}"),
                    (Some(a), Some(b)) => format!("rounds {a}–{b}"),
                    _ => "no round".to_owned(),
                };
                let findings = match s.findings.len() {
                    0 if s.judged => "no leak finding".to_owned(),
                    0 => "not judged".to_owned(),
                    n => quantity(n, "leak finding"),
                };
                writeln!(
                    out,
                    "  pid {:<8} {:<18} {:<12} {:<18} {}: {}",
                    s.pid,
                    s.group,
                    rounds,
                    findings,
                    s.outcome.kind,
                    s.command.join(" ")
                )?;
            }
        }
        if !a.notes.is_empty() {
            writeln!(out)?;
            writeln!(out, "{}", p.bold("Set aside"))?;
            for n in &a.notes {
                writeln!(out, "  - {n}")?;
            }
        }
        if !a.warnings.is_empty() {
            writeln!(out)?;
            writeln!(out, "{}", p.bold("Warnings"))?;
            for w in &a.warnings {
                writeln!(out, "  - {}", p.yellow(w))?;
            }
        }
        Ok(())
    }
}

fn write_finding(out: &mut dyn Write, p: &Paint, n: usize, f: &Finding) -> io::Result<()> {
    let conf = format!("[{}]", f.confidence.as_str());
    let conf = match f.confidence {
        crate::correlate::Confidence::High => p.red(&conf),
        crate::correlate::Confidence::Medium => p.yellow(&conf),
        crate::correlate::Confidence::Low => conf,
    };
    if f.kind == FindingKind::RuntimeNoise {
        writeln!(out, "{n}. {} — {}", p.dim(f.kind.title()), p.dim(&f.title))?;
        for e in &f.evidence {
            writeln!(out, "   {}", p.dim(&e.text))?;
        }
        return Ok(());
    }
    writeln!(out, "{n}. {conf} {} — {}", p.bold(f.kind.title()), f.title)?;
    writeln!(
        out,
        "   {}",
        p.dim(&format!("fingerprint {}", f.fingerprint))
    )?;
    writeln!(out, "   evidence:")?;
    for e in &f.evidence {
        let source = serde_json::to_value(e.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mark = if e.heuristic { " [heuristic]" } else { "" };
        writeln!(out, "     {:<10} {}{mark}", source, e.text)?;
    }
    if let Some(s) = &f.suggestion {
        writeln!(out, "   {} {}", p.bold("fix:"), s.text)?;
        for l in s.locations.iter().filter(|l| l.is_fix_site()) {
            let role = l.role.label();
            let mut line = format!("     {role} {}", l.site());
            if let Some(c) = l.count_text() {
                line.push_str(&format!(" ({c})"));
            }
            if let Some(code) = &l.code {
                line.push_str(&format!(": {code}"));
            }
            writeln!(out, "{line}")?;
        }
        for shape in &s.shapes {
            writeln!(out, "     - {shape}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The terminal report of `ev`, rendered with `options`.
    fn report_of(ev: &crate::evidence::Evidence, options: RenderOptions) -> String {
        let a = crate::correlate::correlate(ev, &crate::correlate::Options::default());
        let mut buf = Vec::new();
        TextReport { options }.render(&a, &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn render(color: bool) -> String {
        let a = super::super::tests::hostile_analysis();
        let mut buf = Vec::new();
        TextReport {
            options: RenderOptions {
                color,
                ..RenderOptions::default()
            },
        }
        .render(&a, &mut buf)
        .unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn summary_findings_and_histo_table() {
        let text = render(false);
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "leakhunt: LEAK — 1 leak finding · leaking 3.8 MiB/s (footprint slope) · 3 heap + 0 native snapshots"
        );
        assert!(
            text.contains("1. [medium] Ruby retention — Evil<script>"),
            "{text}"
        );
        assert!(text.contains(
            "Class growth, heap snapshot 1 → 3 (histo.rb format: count, class, bytes)\n      8000 Evil<script>document.title='pwned'</script> 320000\n"
        ), "{text}");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn a_missing_release_reads_as_evidence_then_fix() {
        let text = report_of(&crate::correlate::tests::seed_b(), RenderOptions::default());
        let finding: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("1. "))
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(
            finding[0],
            "1. [high] Missing release — ZMQ::Message#close is not called: libzmq.so.5 memory from libzmq.so.5+0x3194a grows by 80,000 blocks / 87,040,000 bytes"
        );
        assert!(finding.contains(&"     native     libzmq.so.5+0x3194a in libzmq.so.5: 20,000 → 60,000 → 100,000 leaked blocks per snapshot (+80,000 blocks, +87,040,000 bytes)"), "{finding:#?}");
        assert!(finding.contains(&"     lifecycle  ZMQ::Message: 200,000 created, 0 released by close (200,000 never released)"), "{finding:#?}");
        assert!(finding.contains(&"   fix: Call `ZMQ::Message#close` after the last use of each ZMQ::Message created at leak.rb:37: it calls zmq_msg_close, which frees the native memory."), "{finding:#?}");
        assert!(finding.contains(&"     lifecycle  ZMQ::Message instances also created at leak.rb:40 (100,000 created, 100,000 never released)"), "{finding:#?}");
        // Under the fix: the leading site only (the others are evidence above).
        let fix: Vec<&str> = finding
            .iter()
            .skip_while(|l| !l.starts_with("   fix:"))
            .skip(1)
            .filter(|l| !l.starts_with("     - "))
            .copied()
            .collect();
        assert_eq!(fix, ["     created at leak.rb:37 (100,000)"]);
        assert!(text.contains("\n2. Runtime noise — 1 native site set aside as noise: 5,000 blocks, 900,000,000 bytes\n"), "{text}");
    }

    #[test]
    fn the_agents_rows_are_left_out_and_said_so_once() {
        let text = report_of(
            &crate::correlate::tests::with_agent_objects(),
            RenderOptions::default(),
        );
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("Class growth"))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(
            table,
            [
                "      9000                         Widget 360000",
                "        27                           Hash 1080",
                "  2 rows left out: objects of leakhunt's own agent (Fiddle::Function +900, LeakhuntAgent::MethodFacts +9), not the program's; the charts and findings leave them out too"
            ]
        );
        assert_eq!(text.matches("leakhunt's own agent").count(), 1, "{text}");
    }

    #[test]
    fn paths_under_the_directory_are_shown_relative_and_json_keeps_them_whole() {
        let ev = crate::correlate::tests::seed_b_in("/home/u/app");
        let text = report_of(
            &ev,
            RenderOptions {
                paths: crate::report::paths::PathStyle::relative_to(&[std::path::Path::new(
                    "/home/u",
                )]),
                ..RenderOptions::default()
            },
        );
        assert!(text.contains("   fix: Call `ZMQ::Message#close` after the last use of each ZMQ::Message created at app/leak.rb:37: it calls zmq_msg_close"), "{text}");
        assert!(
            text.contains("\n     created at app/leak.rb:37 (100,000)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "     lifecycle  ZMQ::Message instances also created at app/leak.rb:40 ("
            ),
            "{text}"
        );
        assert!(!text.contains("/home/u"), "{text}");
        let a = crate::correlate::correlate(&ev, &crate::correlate::Options::default());
        let mut json = Vec::new();
        super::super::json::JsonReport
            .render(&a, &mut json)
            .unwrap();
        let json = String::from_utf8(json).unwrap();
        assert!(json.contains("\"file\": \"/home/u/app/leak.rb\""), "{json}");
        assert!(!json.contains("\"app/leak.rb"), "{json}");
    }

    #[test]
    fn colour_only_when_asked() {
        assert!(render(true).contains("\x1b[1;31mLEAK\x1b[0m"));
    }
}
