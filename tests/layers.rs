//! Data flows one way (STYLE.md): run → bundle → readers → evidence → correlator → renderers.
//! This reads every `crate::…` reference in `src/` and fails when a module reaches a layer
//! above its own. Test code (from a file's first `#[cfg(test)]`, and `tests.rs` files) may
//! reach up to build its inputs; the code it tests may not.

use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its layer, lowest first. A module may use its own layer
/// and the ones below it.
const LAYERS: &[(&str, u32)] = &[
    // Shared by every stage: errors, soft-error positions, number formatting, input mapping and
    // decompression.
    ("error", 0),
    ("diag", 0),
    ("fasthash", 0),
    ("format", 0),
    ("num", 0),
    ("progress", 0),
    ("source", 0),
    ("zst", 0),
    // The bundle's on-disk format: written by `run`, read back by the loader.
    ("bundle", 1),
    // Readers: what a file is, then parsers (bytes in, records out).
    ("detect", 2),
    ("heap", 3),
    ("native", 3),
    // The evidence model, loaded and resolved once.
    ("evidence", 4),
    // The correlator's rules.
    ("correlate", 5),
    // Renderers: every format and every subcommand's output.
    ("report", 6),
    // The command line's words, and the OS code `run` uses.
    ("cli", 7),
    ("platform", 7),
    // Recording a bundle.
    ("run", 8),
    // Commands: read inputs, call the library, render.
    ("cmd", 9),
    ("lib", 10),
    ("main", 10),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/heap/cruby/scan.rs` → `heap`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The modules a source text names as `crate::NAME`, with the line, outside comments and
/// before its tests.
fn references(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        let code = code.split(" //").next().unwrap_or(code);
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((i + 1, name));
            }
            rest = after;
        }
        // `use crate::{a, b}` names several.
        if let Some(group) = code.strip_prefix("use crate::{") {
            for name in group.split([',', '}', ';']) {
                let name = name.trim().split("::").next().unwrap_or("").trim();
                if !name.is_empty() {
                    out.push((i + 1, name.to_owned()));
                }
            }
        }
    }
    out
}

#[test]
fn no_module_reaches_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    for file in &files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let module = module_of(&src, file);
        let mine = layer(&module).unwrap_or_else(|| {
            panic!(
                "{}: module `{module}` has no layer in tests/layers.rs",
                file.display()
            )
        });
        let text = std::fs::read_to_string(file).unwrap();
        for (line, used) in references(&text) {
            let Some(theirs) = layer(&used) else {
                continue;
            };
            if theirs > mine {
                upward.push(format!(
                    "{}:{line}: {module} (layer {mine}) uses {used} (layer {theirs})",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "modules reaching a layer above their own:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_reference() {
    let text = "use crate::bundle::Manifest;\nfn f() { crate::report::renderer(); }\n\
                // crate::cmd in a comment\n#[cfg(test)]\nuse crate::cli::Cli;\n";
    let names: Vec<String> = references(text).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["bundle", "report"]);
    let grouped: Vec<String> = references("use crate::{evidence::Evidence, report};")
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert!(grouped.contains(&"evidence".to_owned()) && grouped.contains(&"report".to_owned()));
    assert!(layer("report") > layer("evidence"));
}
