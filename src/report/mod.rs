//! Renderers for the combined report: one per format behind [`Renderer`] — the terminal
//! ([`text`]), JSON ([`json`], serde structs with a `schema` version) and one self-contained
//! HTML file ([`html`]) — and the exit code the findings give; and the outputs of the other
//! subcommands ([`leaks`], [`diff`], [`retainers`], [`histo`]).
//!
//! Stage: renderers, the end of the flow. They read a [`crate::correlate::Analysis`] and write
//! bytes; they never parse evidence and never decide what leaks.

pub mod diff;
pub mod histo;
pub mod html;
pub mod json;
pub mod leaks;
pub mod paths;
pub mod retainers;
pub mod text;

use crate::correlate::{Analysis, Confidence};
use crate::error::exit;
use std::io::{self, Write};

/// The format of the combined report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportFormat {
    #[default]
    Text,
    Json,
    Html,
}

/// Which findings make the exit status 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum FailOn {
    /// Any leak finding (Ruby retention, missing release, native leak without owner).
    #[default]
    Leak,
    /// Only findings of high confidence.
    High,
    /// Never: exit 0 whatever is found.
    Never,
}

/// How a report is written.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// ANSI colour (terminal only: stdout is a terminal and `NO_COLOR` is unset).
    pub color: bool,
    /// How the text and HTML reports show file paths (JSON keeps them as the evidence has
    /// them): relative to the current directory for `run` and `analyze`.
    pub paths: paths::PathStyle,
}

pub trait Renderer {
    fn render(&self, analysis: &Analysis, out: &mut dyn Write) -> io::Result<()>;
}

pub fn renderer(format: ReportFormat, options: RenderOptions) -> Box<dyn Renderer> {
    match format {
        ReportFormat::Text => Box::new(text::TextReport { options }),
        ReportFormat::Json => Box::new(json::JsonReport),
        ReportFormat::Html => Box::new(html::HtmlReport { options }),
    }
}

/// Colour for a report written to stdout: only on a terminal, and never with `NO_COLOR` set
/// (to anything, per no-color.org).
pub fn stdout_wants_color() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// 0 when no finding is at or above `fail_on`, 1 otherwise (the same for `run` and `analyze`).
pub fn exit_code(analysis: &Analysis, fail_on: FailOn) -> i32 {
    let failing = analysis.leak_findings().any(|f| match fail_on {
        FailOn::Leak => true,
        FailOn::High => f.confidence == Confidence::High,
        FailOn::Never => false,
    });
    if failing { exit::FINDINGS } else { exit::OK }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::correlate::{Options, correlate};
    use crate::evidence::{Evidence, HeapSnapshot, Origin};
    use crate::heap::histogram::{ClassRow, Histogram};
    use crate::heap::{HeapFormat, HeapSummary};

    /// A small analysis with a growing class named like an attack, for every renderer.
    pub fn hostile_analysis() -> Analysis {
        let mut ev = Evidence::empty(Origin::Files(vec!["a.json".into(), "b.json".into()]));
        for (i, n) in [1000i64, 5000, 9000].iter().enumerate() {
            ev.heap.push(HeapSnapshot {
                t: Some(i as f64 * 2.0),
                snapshot: Some(i as u32 + 1),
                dump: None,
                summary: HeapSummary {
                    path: "heap.json".into(),
                    format: HeapFormat::Cruby,
                    ruby_version: None,
                    histogram: Histogram {
                        rows: vec![
                            ClassRow {
                                name: "Evil<script>document.title='pwned'</script>".into(),
                                count: *n,
                                bytes: n * 40,
                            },
                            ClassRow {
                                name: "String".into(),
                                count: 500,
                                bytes: 20_000,
                            },
                        ],
                    },
                    alloc_sites: Vec::new(),
                    data_types: Vec::new(),
                    objects: 0,
                    slot_bytes: None,
                    diagnostics: Default::default(),
                },
            });
        }
        ev.footprint = (0..20)
            .map(|i| crate::bundle::FootprintSample {
                t: i as f64 * 0.25,
                bytes: 30_000_000 + i * 1_000_000,
            })
            .collect();
        correlate(&ev, &Options::default())
    }

    #[test]
    fn exit_codes_follow_fail_on() {
        let a = hostile_analysis();
        assert_eq!(a.findings[0].confidence, Confidence::Medium);
        assert_eq!(exit_code(&a, FailOn::Leak), 1);
        assert_eq!(exit_code(&a, FailOn::High), 0);
        assert_eq!(exit_code(&a, FailOn::Never), 0);
    }
}
