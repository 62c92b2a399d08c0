//! Where a container is filled, read from the program's source: the heap says which object
//! keeps the instances and the line that allocated it (`messages = []` at leak.rb:29); this
//! module takes the variable assigned on that line and finds the lines that append to it
//! (`messages << message` at leak.rb:39). A labelled heuristic: it reads text, not the program.
//!
//! Stage: correlator. The loader reads the source files; this module only looks at bytes.

use regex::bytes::Regex;

/// How many appending lines to report at most.
const MAX_LINES: usize = 5;

/// The source line `line` (1-based), trimmed, lossily decoded.
pub fn line_text(source: &[u8], line: u32) -> Option<String> {
    let index = (line as usize).checked_sub(1)?;
    let text = source.split(|&b| b == b'\n').nth(index)?;
    Some(String::from_utf8_lossy(text.trim_ascii()).into_owned())
}

/// The variable assigned on `line`: `messages = []` → `messages`; `@cache ||= {}` → `@cache`;
/// `LIST = Array.new` → `LIST`. `None` when the line assigns nothing (`foo([])`, `a == []`).
pub fn assigned_variable(source: &[u8], line: u32) -> Option<String> {
    let text = line_text(source, line)?;
    let re = Regex::new(r"^((?:@@|@|\$)?[A-Za-z_][A-Za-z0-9_]*)\s*(\|\|=|=)(.?)").ok()?;
    let caps = re.captures(text.as_bytes())?;
    let next = caps.get(3).map(|m| m.as_bytes()).unwrap_or_default();
    if caps.get(2)?.as_bytes() == b"=" && (next == b"=" || next == b"~" || next == b">") {
        return None;
    }
    Some(String::from_utf8_lossy(caps.get(1)?.as_bytes()).into_owned())
}

/// Lines (1-based, with their trimmed text) that add to `var`: `var << x`, `var.push(x)`,
/// `var.append`, `var.unshift`, `var.insert`, `var.concat`, `var.store`, `var.add`,
/// `var[k] = v`, `var[k] ||= v`. Comment lines are skipped.
pub fn appending_lines(source: &[u8], var: &str) -> Vec<(u32, String)> {
    let pattern = format!(
        r"(?:^|[^A-Za-z0-9_@$.]){}\s*(?:<<|\.(?:push|append|unshift|prepend|insert|concat|store|add|merge!|update)\b|\[[^\]]*\]\s*(?:\|\|=|=[^=~>]))",
        regex::escape(var)
    );
    let Ok(re) = Regex::new(&pattern) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, raw) in source.split(|&b| b == b'\n').enumerate() {
        let text = raw.trim_ascii();
        if text.starts_with(b"#") || !re.is_match(text) {
            continue;
        }
        out.push((i as u32 + 1, String::from_utf8_lossy(text).into_owned()));
        if out.len() == MAX_LINES {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &[u8] = include_bytes!("../../fixtures/seed/leak.rb");

    #[test]
    fn seed_container_is_filled_at_line_39() {
        assert_eq!(line_text(SEED, 29).as_deref(), Some("messages = []"));
        assert_eq!(assigned_variable(SEED, 29).as_deref(), Some("messages"));
        assert_eq!(
            appending_lines(SEED, "messages"),
            vec![(39, "messages << message".to_owned())]
        );
    }

    #[test]
    fn assignments_and_appends_of_every_shape() {
        let src = b"@cache ||= {}\nLIST = Array.new\nif a == []\nfoo([])\n# items << x\n\
                    @cache[key] = value\nLIST.push(1)\nother_list << 2\nx = a =~ /b/\n";
        assert_eq!(assigned_variable(src, 1).as_deref(), Some("@cache"));
        assert_eq!(assigned_variable(src, 2).as_deref(), Some("LIST"));
        assert_eq!(assigned_variable(src, 3), None);
        assert_eq!(assigned_variable(src, 4), None);
        assert_eq!(assigned_variable(src, 99), None);
        let lines: Vec<u32> = appending_lines(src, "@cache").iter().map(|l| l.0).collect();
        assert_eq!(lines, [6]);
        let lines: Vec<u32> = appending_lines(src, "LIST").iter().map(|l| l.0).collect();
        assert_eq!(lines, [7]);
        assert!(appending_lines(src, "list").is_empty());
        assert!(appending_lines(b"items << 1\n", "items").len() == 1);
        assert!(appending_lines(b"# items << 1\n", "items").is_empty());
        assert!(appending_lines(b"\xff\xfe items << 1\n", "items").len() == 1);
    }
}
