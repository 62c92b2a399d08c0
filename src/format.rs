//! Numbers, sizes and counted nouns as every message and report writes them: thousands
//! separators, one sign style (`+5`, `-5`, `0`), one byte unit (binary: KiB, MiB, GiB), one
//! plural rule, and the redaction of string contents in dump-derived labels.
//!
//! Stage: shared by every stage that writes text for people (the correlator's finding titles,
//! the renderers, the run's spinner, the readers' soft-error lines). It formats; it never
//! decides.

/// Every integer type a count or size comes in, widened without loss, so that no caller
/// converts (and wraps or saturates) before formatting.
pub trait Integer: Copy {
    fn wide(self) -> i128;
}

macro_rules! integer {
    ($($t:ty),*) => {
        $(impl Integer for $t {
            fn wide(self) -> i128 {
                // Lossless: every one of these types fits in an i128.
                self as i128
            }
        })*
    };
}
integer!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, i128);

/// `1234567` → `1,234,567`; `-5` → `-5`.
pub fn count(n: impl Integer) -> String {
    let n = n.wide();
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1234` → `+1,234`; `-5` → `-5`; `0` → `0`: a change, signed when there is one.
pub fn signed(n: impl Integer) -> String {
    let n = n.wide();
    if n > 0 {
        format!("+{}", count(n))
    } else {
        count(n)
    }
}

/// `1 block`, `2 blocks`, `1,234 summaries`: the count and the noun it agrees with.
pub fn quantity(n: impl Integer, noun: &str) -> String {
    let n = n.wide();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {}", count(n), plural(noun))
    }
}

/// The plural of one English noun: `block` → `blocks`, `summary` → `summaries`, `box` →
/// `boxes`, `class` → `classes`.
pub fn plural(noun: &str) -> String {
    let consonant_y = noun.strip_suffix('y').filter(|stem| {
        stem.chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphabetic() && !"aeiouAEIOU".contains(c))
    });
    if let Some(stem) = consonant_y {
        format!("{stem}ies")
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| noun.ends_with(e))
    {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

/// The singular of a phrase written in the plural, for a count of one: its first plural word
/// is made singular (`invalid lines` → `invalid line`, `summaries at odds with the listed leaks`
/// → `summary at odds with the listed leaks`). The inverse of [`plural`] on the nouns it makes.
pub fn singular(phrase: &str) -> String {
    let mut words: Vec<String> = phrase.split(' ').map(str::to_owned).collect();
    for w in words.iter_mut() {
        if let Some(one) = singular_word(w) {
            *w = one;
            break;
        }
    }
    words.join(" ")
}

fn singular_word(word: &str) -> Option<String> {
    if word.len() <= 3 {
        return None;
    }
    if let Some(stem) = word.strip_suffix("ies") {
        return Some(format!("{stem}y"));
    }
    for ending in ["sses", "xes", "zes", "ches", "shes"] {
        if word.ends_with(ending) {
            return Some(word[..word.len() - 2].to_owned());
        }
    }
    word.strip_suffix('s')
        .filter(|stem| !stem.ends_with('s') && !stem.ends_with('u'))
        .map(str::to_owned)
}

/// `263427072` → `251.2 MiB`; below a KiB, whole bytes (`512 B`).
pub fn human_bytes(n: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n.abs();
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    let sign = if n < 0.0 { "-" } else { "" };
    if u == 0 {
        format!("{sign}{v:.0} B")
    } else {
        format!("{sign}{v:.1} {}", units[u])
    }
}

/// Replaces the contents of every double-quoted part of a dump-derived label with a note of its
/// length, unless string contents were asked for: `String "secret"` → `String "‹6 bytes›"`.
pub fn redact(label: &str, include_strings: bool) -> String {
    if include_strings || !label.contains('"') {
        return label.to_owned();
    }
    let mut out = String::with_capacity(label.len());
    let mut parts = label.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('"');
        // Even parts are inside quotes; an unclosed quote is redacted to the end.
        if i % 2 == 0 {
            out.push_str(&format!("‹{} bytes›", part.len()));
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_every_integer_type_and_never_wrap() {
        assert_eq!(count(0u8), "0");
        assert_eq!(count(999u32), "999");
        assert_eq!(count(168_978u64), "168,978");
        assert_eq!(count(-1_234_567i64), "-1,234,567");
        assert_eq!(count(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(count(i64::MIN), "-9,223,372,036,854,775,808");
    }

    #[test]
    fn one_sign_style() {
        assert_eq!(signed(1234i64), "+1,234");
        assert_eq!(signed(-5i64), "-5");
        assert_eq!(signed(0i64), "0");
        assert_eq!(signed(u64::MAX), "+18,446,744,073,709,551,615");
    }

    #[test]
    fn plurals_agree_with_their_count() {
        assert_eq!(quantity(1u64, "block"), "1 block");
        assert_eq!(quantity(0u64, "block"), "0 blocks");
        assert_eq!(quantity(1_024u64, "block"), "1,024 blocks");
        assert_eq!(quantity(2u32, "summary"), "2 summaries");
        assert_eq!(quantity(3u32, "box"), "3 boxes");
        assert_eq!(quantity(3u32, "class"), "3 classes");
        assert_eq!(quantity(2u32, "key"), "2 keys");
        assert_eq!(
            quantity(2u32, "smaller unowned site"),
            "2 smaller unowned sites"
        );
        for noun in [
            "block", "summary", "box", "class", "key", "line", "leak", "tree", "kind",
        ] {
            assert_eq!(singular(&plural(noun)), noun, "{noun}");
        }
    }

    #[test]
    fn plural_phrases_read_right_for_one() {
        assert_eq!(singular("invalid lines"), "invalid line");
        assert_eq!(singular("lines not understood"), "line not understood");
        assert_eq!(
            singular("summaries at odds with the listed leaks"),
            "summary at odds with the listed leaks"
        );
        assert_eq!(singular("XML files ending early"), "XML file ending early");
        assert_eq!(singular("damaged gzip streams"), "damaged gzip stream");
        assert_eq!(singular("unknown leak kinds"), "unknown leak kind");
        assert_eq!(singular("lines ending in CR LF"), "line ending in CR LF");
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes((253_596u64 * 1024) as f64), "247.7 MiB");
        assert_eq!(human_bytes(263_427_072.0), "251.2 MiB");
        assert_eq!(human_bytes(-3.0 * 1024.0 * 1024.0 * 1024.0), "-3.0 GiB");
    }

    #[test]
    fn string_contents_are_redacted_unless_asked_for() {
        assert_eq!(redact(r#"String "secret""#, false), r#"String "‹6 bytes›""#);
        assert_eq!(redact(r#"String "secret""#, true), r#"String "secret""#);
        assert_eq!(
            redact(r#"a "x" b "yy"#, false),
            r#"a "‹1 bytes›" b "‹2 bytes›"#
        );
        assert_eq!(redact("no quotes", false), "no quotes");
    }
}
