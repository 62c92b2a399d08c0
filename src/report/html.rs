//! The HTML report: one self-contained file (inline CSS, inline SVG drawn by an inline script,
//! no network) with charts over time — footprint, instances per heap snapshot, native leaked
//! bytes per snapshot — the findings and the tables. The page layout is `report.html`, embedded
//! at build time.
//!
//! Every string that came from evidence is escaped here: HTML text through [`escape`], the
//! data block through [`json_for_script`] (no `<`, `>`, `&` can close the script element).
//! String contents from dumps are already redacted by the correlator unless asked for.
//!
//! Stage: renderer.

use super::text::{summary_parts, verdict_word, whose};
use super::{RenderOptions, Renderer};
use crate::correlate::finding::Finding;
use crate::correlate::{Analysis, FindingKind};
use crate::format::{count, signed};
use std::fmt::Write as _;
use std::io::{self, Write};

const TEMPLATE: &str = include_str!("report.html");

#[derive(Debug, Clone, Default)]
pub struct HtmlReport {
    /// Colour is not used; paths are shown as [`RenderOptions::paths`] says.
    pub options: RenderOptions,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON that can sit inside `<script type="application/json">`: the characters that could end
/// the element or start markup are written as `\u` escapes (valid JSON, same value).
pub fn json_for_script(value: &impl serde::Serialize) -> io::Result<String> {
    let json = serde_json::to_string(value).map_err(io::Error::other)?;
    let mut out = String::with_capacity(json.len() + 64);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Fills `{{name}}` markers of the template in one pass; text inserted is never re-scanned.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let key = &after[..end];
                match values.iter().find(|(k, _)| *k == key) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

impl Renderer for HtmlReport {
    fn render(&self, data: &Analysis, out: &mut dyn Write) -> io::Result<()> {
        // What the page shows has paths made relative; the embedded data keeps them whole.
        let a = &self.options.paths.analysis(data);
        let verdict_class = serde_json::to_value(a.verdict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut findings = String::new();
        if a.findings.is_empty() {
            findings.push_str("<p class=\"muted\">No finding.</p>");
        }
        for (i, f) in a.findings.iter().enumerate() {
            finding_html(&mut findings, i + 1, f);
        }
        let page = fill(
            TEMPLATE,
            &[
                (
                    "title",
                    &escape(&format!("leakhunt: {}", verdict_word(a.verdict))),
                ),
                ("verdict_class", &escape(&verdict_class)),
                ("verdict", &escape(verdict_word(a.verdict))),
                ("summary", &escape(&summary_parts(a).join(" · "))),
                ("paths", &paths_html(&self.options)),
                ("findings", &findings),
                ("tables", &tables_html(a)),
                ("data", &json_for_script(data)?),
            ],
        );
        out.write_all(page.as_bytes())
    }
}

/// The line saying what the page's relative paths are relative to (the page may be read
/// elsewhere), or nothing.
fn paths_html(options: &RenderOptions) -> String {
    match options.paths.base() {
        Some(base) => format!(
            "<p class=\"muted\" id=\"paths-base\">Paths are relative to <code>{}</code>, where leakhunt ran.</p>",
            escape(base)
        ),
        None => String::new(),
    }
}

fn finding_html(out: &mut String, n: usize, f: &Finding) {
    let kind = f.kind.as_str();
    let _ = write!(
        out,
        "<section class=\"finding {kind}\" data-kind=\"{kind}\" data-fingerprint=\"{}\">",
        escape(&f.fingerprint)
    );
    let badge = if f.kind == FindingKind::RuntimeNoise {
        String::new()
    } else {
        format!(
            "<span class=\"badge {c}\">{c}</span>",
            c = f.confidence.as_str()
        )
    };
    let _ = write!(
        out,
        "<h3>{n}. {badge}{}: {}</h3><div class=\"fingerprint\">fingerprint {}</div><ul>",
        escape(f.kind.title()),
        escape(&f.title),
        escape(&f.fingerprint)
    );
    for e in &f.evidence {
        let source = serde_json::to_value(e.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mark = if e.heuristic {
            "<span class=\"heuristic\">heuristic</span>"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<li><span class=\"src\">{}</span> {}{mark}</li>",
            escape(&source),
            escape(&e.text)
        );
    }
    out.push_str("</ul>");
    if let Some(s) = &f.suggestion {
        let _ = write!(
            out,
            "<div class=\"fix\"><strong>Fix:</strong> {}",
            escape(&s.text)
        );
        if !s.locations.is_empty() || !s.shapes.is_empty() {
            out.push_str("<ul>");
        }
        for l in s.locations.iter().filter(|l| l.is_fix_site()) {
            let role = l.role.label();
            let _ = write!(
                out,
                "<li class=\"location\">{role} <code>{}</code>{}{}</li>",
                escape(&l.site()),
                l.count_text()
                    .map(|c| format!(" ({})", escape(&c)))
                    .unwrap_or_default(),
                l.code
                    .as_deref()
                    .map(|c| format!(": <code>{}</code>", escape(c)))
                    .unwrap_or_default()
            );
        }
        for shape in &s.shapes {
            let _ = write!(out, "<li>{}</li>", escape(shape));
        }
        if !s.locations.is_empty() || !s.shapes.is_empty() {
            out.push_str("</ul>");
        }
        out.push_str("</div>");
    }
    out.push_str("</section>");
}

fn tables_html(a: &Analysis) -> String {
    let mut out = String::new();
    if let Some(g) = &a.class_growth {
        let _ = write!(
            out,
            "<h2>Class growth{}, heap snapshot {} → {}</h2><table id=\"class-growth\"><thead><tr><th class=\"num\">count</th><th>class</th><th class=\"num\">bytes</th></tr></thead><tbody>",
            escape(&whose(a)),
            g.from,
            g.to
        );
        for r in g.rows.iter().take(200) {
            let _ = write!(
                out,
                "<tr><td class=\"num\">{}</td><td class=\"mono\">{}</td><td class=\"num\">{}</td></tr>",
                signed(r.count),
                escape(&r.name),
                signed(r.bytes)
            );
        }
        out.push_str("</tbody></table>");
        if let Some(note) = g.left_out_note() {
            let _ = write!(
                out,
                "<p class=\"muted\" id=\"agent-rows\">{}</p>",
                escape(&note)
            );
        }
    }
    if !a.native_sites.is_empty() {
        let _ = write!(
            out,
            "<h2>Native sites{}</h2><table id=\"native-sites\"><thead><tr><th>status</th><th>site</th><th>library</th><th class=\"num\">blocks per snapshot</th><th class=\"num\">bytes</th><th class=\"num\">growth</th></tr></thead><tbody>",
            escape(&whose(a))
        );
        for r in a.native_sites.iter().take(100) {
            let status = serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let blocks: Vec<String> = r.blocks.iter().map(|&b| count(b)).collect();
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"mono\" title=\"{}\">{}</td><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&status),
                escape(&r.stack.join(" → ")),
                escape(&r.function),
                escape(r.library.as_deref().unwrap_or("")),
                escape(&blocks.join(" → ")),
                count(r.bytes.last().copied().unwrap_or(0)),
                signed(r.delta_bytes)
            );
        }
        out.push_str("</tbody></table>");
    }
    if !a.processes.is_empty() {
        out.push_str(
            "<h2>Processes</h2><table id=\"processes\"><thead><tr><th class=\"num\">pid</th><th>group</th><th>rounds</th><th class=\"num\">leak findings</th><th>outcome</th><th>command</th></tr></thead><tbody>",
        );
        for s in &a.processes {
            let rounds = match (s.first_round, s.last_round) {
                (Some(a), Some(b)) => format!("{a}–{b}"),
                _ => "none".to_owned(),
            };
            let findings = if s.judged {
                count(s.findings.len())
            } else {
                "not judged".to_owned()
            };
            let _ = write!(
                out,
                "<tr data-pid=\"{}\"><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td title=\"{}\">{}</td><td class=\"mono\">{}</td></tr>",
                s.pid,
                s.pid,
                escape(&s.group),
                escape(&rounds),
                escape(&findings),
                escape(&s.outcome.detail),
                escape(&s.outcome.kind),
                escape(&s.command.join(" "))
            );
        }
        out.push_str("</tbody></table>");
    }
    for (title, lines) in [("Set aside", &a.notes), ("Warnings", &a.warnings)] {
        if lines.is_empty() {
            continue;
        }
        let _ = write!(out, "<h2>{title}</h2><ul>");
        for l in lines {
            let _ = write!(out, "<li>{}</li>", escape(l));
        }
        out.push_str("</ul>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_script_safe_json() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        let j = json_for_script(&serde_json::json!({"c": "</script><!--"})).unwrap();
        assert_eq!(j, r#"{"c":"\u003c/script\u003e\u003c!--"}"#);
        let back: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(back["c"], "</script><!--");
    }

    #[test]
    fn template_markers_fill_once() {
        assert_eq!(
            fill("a{{x}}b{{y}}c{{z}}", &[("x", "{{y}}"), ("y", "2")]),
            "a{{y}}b2c{{z}}"
        );
    }

    #[test]
    fn the_agents_rows_are_left_out_of_the_table_and_the_chart_data() {
        let a = crate::correlate::correlate(
            &crate::correlate::tests::with_agent_objects(),
            &crate::correlate::Options::default(),
        );
        let mut buf = Vec::new();
        HtmlReport::default().render(&a, &mut buf).unwrap();
        let page = String::from_utf8(buf).unwrap();
        let table = &page[page.find("<table id=\"class-growth\"").unwrap()..];
        let table = &table[..table.find("</table>").unwrap()];
        assert!(
            table.contains("Widget") && table.contains("Hash"),
            "{table}"
        );
        assert!(!table.contains("Fiddle::Function") && !table.contains("LeakhuntAgent"));
        assert!(page.contains("<p class=\"muted\" id=\"agent-rows\">2 rows left out: objects of leakhunt&#39;s own agent (Fiddle::Function +900, LeakhuntAgent::MethodFacts +9)"));
        let needle = "id=\"leakhunt-data\">";
        let data = &page[page.find(needle).unwrap() + needle.len()..];
        let data: serde_json::Value =
            serde_json::from_str(&data[..data.find("</script>").unwrap()]).unwrap();
        let charted: Vec<&str> = data["timeline"]["classes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["class"].as_str())
            .collect();
        assert_eq!(charted, ["Widget", "Hash", "String"]);
    }

    #[test]
    fn paths_under_the_directory_are_shown_relative() {
        let a = crate::correlate::correlate(
            &crate::correlate::tests::seed_b_in("/home/u/app"),
            &crate::correlate::Options::default(),
        );
        let mut buf = Vec::new();
        HtmlReport {
            options: crate::report::RenderOptions {
                paths: crate::report::paths::PathStyle::relative_to(&[std::path::Path::new(
                    "/home/u",
                )]),
                ..Default::default()
            },
        }
        .render(&a, &mut buf)
        .unwrap();
        let page = String::from_utf8(buf).unwrap();
        assert!(
            page.contains("<li class=\"location\">created at <code>app/leak.rb:37</code>"),
            "{page}"
        );
        assert!(page.contains("each ZMQ::Message created at app/leak.rb:37: it calls"));
        assert!(page.contains(
            "<p class=\"muted\" id=\"paths-base\">Paths are relative to <code>/home/u</code>"
        ));
        // The visible page is relative; the embedded data keeps the evidence's paths.
        let visible = &page[..page.find("id=\"leakhunt-data\"").unwrap()];
        assert_eq!(visible.matches("/home/u").count(), 1, "only the base line");
        assert!(page.contains("\"file\":\"/home/u/app/leak.rb\""));
    }

    #[test]
    fn hostile_names_never_reach_the_page_raw() {
        let a = crate::report::tests::hostile_analysis();
        let mut buf = Vec::new();
        HtmlReport::default().render(&a, &mut buf).unwrap();
        let page = String::from_utf8(buf).unwrap();
        assert!(
            !page.contains("<script>document.title"),
            "raw class name in page"
        );
        assert!(page.contains("Evil&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"));
        assert!(
            page.contains(r#"Evil\u003cscript\u003edocument.title='pwned'\u003c/script\u003e"#)
        );
        assert_eq!(page.matches("<script").count(), 2);
        assert!(
            !page.contains("http://") || page.matches("http://").count() == 1,
            "only the SVG namespace"
        );
        assert!(!page.contains("https://"));
    }
}
