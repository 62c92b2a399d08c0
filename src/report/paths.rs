//! How the reports people read show file paths: relative to the current directory when they
//! lie under it (`fixtures/seed/leak.rb:37`), absolute otherwise. The JSON report keeps the
//! absolute paths the evidence holds, so a tool reading it never depends on where leakhunt ran.
//!
//! The correlator writes paths into its sentences ("allocated at /work/app/leak.rb:29"), so the
//! rewrite works on text: an absolute path is shortened where a path starts (after a space, a
//! bracket, a quote, …) with the directory and a `/`; `/work/apple` is not under `/work/app`.
//!
//! Stage: renderers (text and HTML); it only changes how strings are shown.

use crate::correlate::Analysis;
use std::path::Path;

/// The directory paths are shown relative to, as text prefixes (`/work/main/`). `$PWD` is
/// tried beside the resolved current directory, so a directory reached through a symlink
/// shortens paths written either way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathStyle {
    /// Longest first.
    prefixes: Vec<String>,
    /// The directory named to the reader (the first one given).
    base: Option<String>,
}

impl PathStyle {
    /// Paths shown as the evidence has them.
    pub fn absolute() -> PathStyle {
        PathStyle::default()
    }

    /// Paths under `dir` shown relative to it. The root directory shortens nothing: every
    /// absolute path lies under it, and `usr/lib/…` would read as relative to somewhere else.
    pub fn relative_to(dirs: &[&Path]) -> PathStyle {
        let mut prefixes: Vec<String> = Vec::new();
        for dir in dirs {
            let Some(text) = dir.to_str() else { continue };
            let text = text.trim_end_matches('/');
            if !text.starts_with('/') || text.is_empty() {
                continue;
            }
            let prefix = format!("{text}/");
            if !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
        let base = prefixes.first().map(|p| p.trim_end_matches('/').to_owned());
        // Longest first: a deeper directory wins when both apply.
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        PathStyle { prefixes, base }
    }

    /// The current directory of this process (and `$PWD` when it names the same directory).
    pub fn current_dir() -> PathStyle {
        let Ok(cwd) = std::env::current_dir() else {
            return PathStyle::absolute();
        };
        let pwd = std::env::var_os("PWD")
            .map(std::path::PathBuf::from)
            .filter(|p| same_directory(p, &cwd));
        match pwd {
            Some(pwd) => PathStyle::relative_to(&[&pwd, &cwd]),
            None => PathStyle::relative_to(&[&cwd]),
        }
    }

    /// The directory paths are shown relative to, when there is one.
    pub fn base(&self) -> Option<&str> {
        self.base.as_deref()
    }

    /// `text` with every absolute path under the directory made relative.
    pub fn show(&self, text: &str) -> String {
        if self.prefixes.is_empty() || !text.contains('/') {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut previous: Option<char> = None;
        'scan: while let Some(c) = rest.chars().next() {
            if c == '/' && previous.is_none_or(starts_a_path) {
                for prefix in &self.prefixes {
                    if let Some(after) = rest.strip_prefix(prefix.as_str())
                        && after.chars().next().is_some_and(|n| !n.is_whitespace())
                    {
                        rest = after;
                        previous = Some('/');
                        continue 'scan;
                    }
                }
            }
            out.push(c);
            previous = Some(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    /// A copy of the analysis with the paths of every shown string rewritten.
    pub fn analysis(&self, a: &Analysis) -> Analysis {
        let mut a = a.clone();
        if self.prefixes.is_empty() {
            return a;
        }
        let fix = |s: &mut String| *s = self.show(s);
        for f in &mut a.findings {
            fix(&mut f.title);
            for e in &mut f.evidence {
                fix(&mut e.text);
                if let Some(l) = e.location.as_mut() {
                    fix(&mut l.file);
                }
            }
            if let Some(s) = f.suggestion.as_mut() {
                fix(&mut s.text);
                s.shapes.iter_mut().for_each(fix);
                for l in &mut s.locations {
                    fix(&mut l.file);
                }
            }
            if let Some(n) = f.native.as_mut() {
                fix(&mut n.function);
            }
        }
        for r in &mut a.native_sites {
            fix(&mut r.function);
            r.stack.iter_mut().for_each(fix);
        }
        a.input.paths.iter_mut().for_each(fix);
        if let Some(p) = a.program.as_mut() {
            p.command.iter_mut().for_each(fix);
        }
        a.notes.iter_mut().for_each(fix);
        a.warnings.iter_mut().for_each(fix);
        a
    }
}

/// Characters after which a `/` begins a path rather than continuing a word or a path.
fn starts_a_path(c: char) -> bool {
    !(c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '~' | '+' | '@'))
}

fn same_directory(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style(dir: &str) -> PathStyle {
        PathStyle::relative_to(&[Path::new(dir)])
    }

    #[test]
    fn paths_under_the_directory_become_relative() {
        let s = style("/work/main");
        assert_eq!(
            s.show("created at /work/main/fixtures/seed/leak.rb:37 (14,237)"),
            "created at fixtures/seed/leak.rb:37 (14,237)"
        );
        assert_eq!(
            s.show("Array 0x7f (allocated at /work/main/leak.rb:29, 3 elements)"),
            "Array 0x7f (allocated at leak.rb:29, 3 elements)"
        );
        assert_eq!(s.show("`/work/main/a.rb:1`: x"), "`a.rb:1`: x");
        assert_eq!(s.show("/work/main/a.rb"), "a.rb");
        assert_eq!(style("/work/main/").show("/work/main/a.rb"), "a.rb");
    }

    #[test]
    fn other_paths_stay_as_they_are() {
        let s = style("/work/main");
        for text in [
            "/work/mainline/a.rb:3",
            "/work/other/a.rb:3",
            "/x/work/main/a.rb",
            "lib/work/main/a.rb",
            "/work/main",
            "/work/main/ then",
            "/usr/lib/x86_64-linux-gnu/libzmq.so.5",
            "no path here",
        ] {
            assert_eq!(s.show(text), text);
        }
        assert_eq!(style("/").show("/usr/lib/libzmq.so"), "/usr/lib/libzmq.so");
        assert_eq!(style("relative").show("relative/a.rb"), "relative/a.rb");
        assert_eq!(
            PathStyle::absolute().show("/work/main/a.rb"),
            "/work/main/a.rb"
        );
    }

    #[test]
    fn the_deeper_directory_wins_and_every_occurrence_is_shortened() {
        let s = PathStyle::relative_to(&[Path::new("/home/u"), Path::new("/home/u/app")]);
        assert_eq!(
            s.show("/home/u/app/a.rb:1 and /home/u/lib/b.rb:2"),
            "a.rb:1 and lib/b.rb:2"
        );
        assert_eq!(s.base(), Some("/home/u"));
    }
}
