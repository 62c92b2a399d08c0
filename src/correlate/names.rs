//! Matching by name: library stems, C function families (`zmq_msg_`), release verbs, Ruby
//! class names against C symbols (`zmq_msg_init_size` ↔ `ZMQ::Message`, `LibZMQ::Msg`), and
//! C extension functions against the Ruby methods they implement (`ringbuf_close` ↔
//! `RingBuf#close`).
//!
//! Stage: correlator. Agent sidecars make most of this unnecessary; with bare files it is all
//! there is, and every conclusion drawn from it is labelled a heuristic with lower confidence.

/// Words that end an object's life in C APIs, in the order a binding usually maps them to a
/// Ruby method (`zmq_msg_close` → `close`, `widget_destroy` → `destroy`).
pub const RELEASE_VERBS: &[&str] = &[
    "close", "destroy", "free", "release", "delete", "dispose", "unref", "term", "fini",
    "finalize", "cleanup", "dealloc", "drop",
];

/// `libzmq.so.5`, `/usr/lib/libzmq.so.5.2.4`, `libzmq.5.dylib`, `zmq`, `libruby-3.1.so` →
/// `zmq`, …, `ruby`: the name a binding gives to `ffi_lib`, lower case.
pub fn library_stem(library: &str) -> String {
    let base = library.rsplit('/').next().unwrap_or(library);
    let base = base.strip_prefix("lib").unwrap_or(base);
    let mut stem = base.split('.').next().unwrap_or(base);
    // `ruby-3.1`: drop a version glued on with a dash.
    if let Some((name, version)) = stem.split_once('-')
        && version.starts_with(|c: char| c.is_ascii_digit())
    {
        stem = name;
    }
    stem.to_ascii_lowercase()
}

/// The `_`-terminated prefixes of a C symbol, longest first, never the whole symbol:
/// `zmq_msg_init_size` → `zmq_msg_init_`, `zmq_msg_`, `zmq_`.
pub fn family_prefixes(symbol: &str) -> Vec<&str> {
    let mut out: Vec<&str> = symbol
        .char_indices()
        .filter(|&(i, c)| c == '_' && i > 0 && i + 1 < symbol.len())
        .map(|(i, _)| &symbol[..=i])
        .collect();
    out.reverse();
    out
}

/// The release verb of `symbol` within `prefix`'s family: `zmq_msg_close` in `zmq_msg_` →
/// `close`; `widget_destroy` in `widget_` → `destroy`; `None` when it is not a release.
pub fn release_verb<'a>(symbol: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = symbol.strip_prefix(prefix)?;
    let first = rest.split('_').next().unwrap_or(rest);
    RELEASE_VERBS.iter().find(|v| **v == first).map(|_| first)
}

/// Whether a C symbol or Ruby method name reads as a release (`close`, `zmq_msg_close`,
/// `widget_destroy`, `free_handle`).
pub fn is_release_name(name: &str) -> bool {
    name.split('_').any(|w| RELEASE_VERBS.contains(&w))
}

/// The words of a Ruby class name or C symbol, lower case, without the `lib` of a binding:
/// `LibZMQ::Msg` → `zmq msg`; `ZMQ::Message` → `zmq message`; `HTTPServer` → `http server`.
pub fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in name.split(|c: char| !c.is_ascii_alphanumeric()) {
        let chars: Vec<char> = part.chars().collect();
        let mut word = String::new();
        for (i, &c) in chars.iter().enumerate() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            let boundary = c.is_ascii_uppercase()
                && prev.is_some_and(|p| {
                    p.is_ascii_lowercase()
                        || p.is_ascii_digit()
                        || (p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()))
                });
            if boundary && !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            word.push(c.to_ascii_lowercase());
        }
        if !word.is_empty() {
            out.push(word);
        }
    }
    out.retain(|w| w != "lib");
    out
}

/// Whether two words name the same thing: equal, or the shorter is an abbreviation of the
/// longer (same first letter, its letters in order): `msg` ~ `message`, `ctx` ~ `context`.
pub fn same_word(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if short.len() < 2 || short.chars().next() != long.chars().next() {
        return false;
    }
    let mut rest = long.chars();
    short.chars().all(|c| rest.any(|l| l == c))
}

/// How many words of a C family (`zmq_msg_` → `zmq`, `msg`) a Ruby class name matches; a class
/// matches the family only when every family word is matched.
pub fn family_match(class: &str, family: &str) -> Option<usize> {
    let family_words = words(family);
    let class_words = words(class);
    if family_words.is_empty() {
        return None;
    }
    let all = family_words
        .iter()
        .all(|f| class_words.iter().any(|c| same_word(f, c)));
    all.then_some(family_words.len())
}

/// A variable name for an instance of `class` in example code: `ZMQ::Message` → `message`.
pub fn instance_variable(class: &str) -> String {
    let last = class.rsplit("::").next().unwrap_or(class);
    let w = words(last);
    if w.is_empty() {
        "obj".to_owned()
    } else {
        w.join("_")
    }
}

/// How well the name of a C extension's function says it implements `method` of `class`
/// (`ringbuf_initialize` → `RingBuf#initialize`, `pgconn_finish` → `PG::Connection#finish`,
/// `rb_mysql_client_close` → `Mysql2::Client#close`, `ring::Buffer::push(unsigned long)` →
/// `Ring::Buffer#push`): `None` unless the name ends with the method's words (`init` stands
/// for `initialize`); else how many letters of the rest spell the class name or the C struct
/// its instances wrap, as abbreviations of its words in order (`pgconn` ~ `pg connection`).
/// 0 when the rest spells neither (`sqlite3_rb_close` is `close` of some class).
pub fn implements(
    function: &str,
    class: &str,
    struct_name: Option<&str>,
    method: &str,
) -> Option<usize> {
    // C++: `ns::Class::method(args) const` → the words before the parameters.
    let function = function.split('(').next().unwrap_or(function);
    let mut fwords = words(function);
    fwords.retain(|w| w != "rb" && w != "ruby");
    let mwords = words(method.trim_end_matches(['!', '?', '=']));
    let (last, rest) = mwords.split_last()?;
    if fwords.len() < mwords.len() {
        return None;
    }
    let (prefix, tail) = fwords.split_at(fwords.len() - mwords.len());
    let (tail_last, tail_rest) = tail.split_last()?;
    let last_matches = tail_last == last
        || (last == "initialize" && (tail_last == "init" || tail_last == "initialize"));
    if !last_matches || tail_rest != rest {
        return None;
    }
    let spelled: String = prefix.concat();
    if spelled.is_empty() {
        return Some(0);
    }
    let spells_it = |name: &str| spells(&spelled, &words(name));
    let by_class = spells_it(class);
    let by_struct = struct_name.is_some_and(spells_it);
    Some(if by_class || by_struct {
        spelled.len()
    } else {
        0
    })
}

/// Whether `text` is made of prefixes (two letters or more, or whole words) of `words` taken in
/// order, any of them skipped: `pgconn` of `pg connection`, `ringbuf` of `ring buf`.
fn spells(text: &str, words: &[String]) -> bool {
    if text.is_empty() {
        return true;
    }
    words.iter().enumerate().any(|(i, w)| {
        (1..=w.len().min(text.len())).rev().any(|k| {
            (k >= 2 || k == w.len())
                && text.as_bytes().get(..k) == w.as_bytes().get(..k)
                && spells(&text[k..], &words[i + 1..])
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_stems() {
        assert_eq!(library_stem("libzmq.so.5"), "zmq");
        assert_eq!(
            library_stem("/usr/lib/x86_64-linux-gnu/libzmq.so.5.2.4"),
            "zmq"
        );
        assert_eq!(library_stem("libzmq.5.dylib"), "zmq");
        assert_eq!(library_stem("zmq"), "zmq");
        assert_eq!(library_stem("libruby-3.1.so.3.1"), "ruby");
        assert_eq!(library_stem("/tmp/x/libwidget.so"), "widget");
    }

    #[test]
    fn families_and_release_verbs() {
        assert_eq!(
            family_prefixes("zmq_msg_init_size"),
            ["zmq_msg_init_", "zmq_msg_", "zmq_"]
        );
        assert_eq!(family_prefixes("widget_create"), ["widget_"]);
        assert!(family_prefixes("malloc").is_empty());
        assert_eq!(release_verb("zmq_msg_close", "zmq_msg_"), Some("close"));
        assert_eq!(release_verb("widget_destroy", "widget_"), Some("destroy"));
        assert_eq!(release_verb("zmq_msg_init_size", "zmq_msg_"), None);
        assert_eq!(release_verb("zmq_msg_close", "widget_"), None);
        assert!(is_release_name("close"));
        assert!(is_release_name("gadget_free"));
        assert!(!is_release_name("closet"));
    }

    #[test]
    fn words_split_namespaces_camel_case_and_acronyms() {
        assert_eq!(words("LibZMQ::Msg"), ["zmq", "msg"]);
        assert_eq!(words("ZMQ::Message"), ["zmq", "message"]);
        assert_eq!(words("HTTPServer"), ["http", "server"]);
        assert_eq!(words("zmq_msg_"), ["zmq", "msg"]);
    }

    #[test]
    fn classes_match_c_families_by_name() {
        assert_eq!(family_match("ZMQ::Message", "zmq_msg_"), Some(2));
        assert_eq!(family_match("LibZMQ::Msg", "zmq_msg_"), Some(2));
        assert_eq!(family_match("ZMQ::Socket", "zmq_msg_"), None);
        assert_eq!(family_match("FFI::MemoryPointer", "zmq_msg_"), None);
        assert_eq!(family_match("Widget", "widget_"), Some(1));
        assert!(same_word("ctx", "context"));
        assert!(!same_word("msg", "socket"));
        assert_eq!(instance_variable("ZMQ::Message"), "message");
    }

    #[test]
    fn extension_functions_name_the_methods_they_implement() {
        let m = |f: &str, class: &str, method: &str| implements(f, class, None, method);
        assert_eq!(m("ringbuf_initialize", "RingBuf", "initialize"), Some(7));
        assert_eq!(m("ringbuf_close", "RingBuf", "close"), Some(7));
        assert_eq!(m("ringbuf_close", "RingBuf", "initialize"), None);
        assert_eq!(m("pgconn_init", "PG::Connection", "initialize"), Some(6));
        assert_eq!(m("pgconn_finish", "PG::Connection", "finish"), Some(6));
        assert_eq!(m("pgconn_finish", "PG::Result", "finish"), Some(0));
        assert_eq!(
            m("rb_mysql_client_close", "Mysql2::Client", "close"),
            Some(11)
        );
        assert_eq!(
            m("Buffer_initialize", "MessagePack::Buffer", "initialize"),
            Some(6)
        );
        assert_eq!(
            m("sqlite3_rb_close", "SQLite3::Statement", "close"),
            Some(7)
        );
        assert_eq!(m("sqlite3_rb_close", "Zlib::ZStream", "close"), Some(0));
        assert_eq!(m("reset_bang", "SQLite3::Statement", "reset!"), None);
        assert_eq!(m("leaky_fill_buffer", "Leaky", "fill_buffer"), Some(5));
        assert_eq!(m("leaky_fill_buffer", "Leaky", "buffer"), Some(0));
        assert_eq!(m("x_encoding", "X", "end"), None);
        // C++ methods, demangled.
        assert_eq!(
            m("ring::Buffer::push(unsigned long)", "Ring::Buffer", "push"),
            Some(10)
        );
        // The C struct's name spells what the class name does not.
        assert_eq!(
            implements("rbuf_initialize", "Circular", Some("rbuf"), "initialize"),
            Some(4)
        );
    }
}
