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
    assignment(&assignment_regex()?, text.as_bytes())
}

fn assignment_regex() -> Option<Regex> {
    Regex::new(r"^((?:@@|@|\$)?[A-Za-z_][A-Za-z0-9_]*)\s*(\|\|=|=)(.?)").ok()
}

/// The variable a trimmed line assigns, with `re` from `assignment_regex`.
fn assignment(re: &Regex, text: &[u8]) -> Option<String> {
    let caps = re.captures(text)?;
    let next = caps.get(3).map(|m| m.as_bytes()).unwrap_or_default();
    if caps.get(2)?.as_bytes() == b"=" && (next == b"=" || next == b"~" || next == b">") {
        return None;
    }
    Some(String::from_utf8_lossy(caps.get(1)?.as_bytes()).into_owned())
}

/// What follows a variable on a line that adds to it: `<<`, `.push(`, `[k] = `, `[k] ||= `…
const APPENDS: &str = r"\s*(?:<<|\.(?:push|append|unshift|prepend|insert|concat|store|add|merge!|update)\b|\[[^\]]*\]\s*(?:\|\|=|=[^=~>]))";

/// Lines (1-based, with their trimmed text) that add to `var`: `var << x`, `var.push(x)`,
/// `var.append`, `var.unshift`, `var.insert`, `var.concat`, `var.store`, `var.add`,
/// `var[k] = v`, `var[k] ||= v`. Comment lines are skipped.
pub fn appending_lines(source: &[u8], var: &str) -> Vec<(u32, String)> {
    let pattern = format!(r"(?:^|[^A-Za-z0-9_@$.]){}{APPENDS}", regex::escape(var));
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

/// How many lines after an instance's allocation site the line that keeps it may be
/// (`message = socket.recv` … `messages << message`).
const KEEP_WINDOW: u32 = 3;

/// The heuristic in reverse, for a container that has no allocation site (made while
/// allocations were not traced): from the line that allocates a growing instance, the first
/// line at or shortly after it that adds to a variable (`messages << message`), and the line
/// that assigns that variable (`messages = []`). Returns (assignment line, variable, appending
/// line, its trimmed text); `None` when either is missing or the variable is assigned only on
/// the appending line itself.
pub fn container_of_appended(source: &[u8], line: u32) -> Option<(u32, String, u32, String)> {
    let re = Regex::new(&format!(
        r"(?:^|[^A-Za-z0-9_@$.])((?:@@|@|\$)?[A-Za-z_][A-Za-z0-9_]*){APPENDS}"
    ))
    .ok()?;
    let (fill_line, var, code) = (line..=line.saturating_add(KEEP_WINDOW)).find_map(|l| {
        let text = line_text(source, l)?;
        if text.starts_with('#') {
            return None;
        }
        let caps = re.captures(text.as_bytes())?;
        let var = String::from_utf8_lossy(caps.get(1)?.as_bytes()).into_owned();
        Some((l, var, text))
    })?;
    let assign = assignment_regex()?;
    let assigned = source
        .split(|&b| b == b'\n')
        .zip(1u32..)
        .find(|&(text, l)| {
            l != fill_line
                && assignment(&assign, text.trim_ascii()).as_deref() == Some(var.as_str())
        })?
        .1;
    Some((assigned, var, fill_line, code))
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
    fn seed_container_is_found_from_the_messages_line() {
        assert_eq!(
            container_of_appended(SEED, 37),
            Some((
                29,
                "messages".to_owned(),
                39,
                "messages << message".to_owned()
            ))
        );
    }

    #[test]
    fn a_late_cache_is_found_from_the_line_that_stores_into_it() {
        let src = b"class Store\n  def put(k)\n    @cache ||= {}\n    @cache[k] = Entry.new(k)\n  end\nend\n";
        assert_eq!(
            container_of_appended(src, 4),
            Some((
                3,
                "@cache".to_owned(),
                4,
                "@cache[k] = Entry.new(k)".to_owned()
            ))
        );
        // Nothing adds to a variable near the allocation, or the variable is never assigned.
        assert_eq!(
            container_of_appended(b"x = Entry.new\n\n\n\n\nlist << x\n", 1),
            None
        );
        assert_eq!(container_of_appended(b"list << Entry.new\n", 1), None);
        assert_eq!(
            container_of_appended(b"# list << Entry.new\nlist = []\n", 1),
            None
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
