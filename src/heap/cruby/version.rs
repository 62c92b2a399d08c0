//! Which Ruby wrote a dump, guessed from the keys it uses (FORMATS.md §2.4 fingerprints).
//!
//! Stage: parser support. Visitors feed every record to [`VersionEvidence::observe`]; the guess
//! is a range of releases narrowed by keys that appeared (lower or upper bounds) and by keys
//! that were expected on enough lines but never came (upper bounds).

use super::scan::{ObjType, Record, fingerprint as fp, flag_pairs};

/// The releases told apart, oldest first.
const RELEASES: [&str; 13] = [
    "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "3.0", "3.1", "3.2", "3.3", "3.4", "4.0",
];

fn release(name: &str) -> usize {
    RELEASES.iter().position(|r| *r == name).unwrap_or(0)
}

/// Flag keys with a meaning for the version.
mod flag {
    pub const LONG_LIVED: u32 = 1 << 0;
    pub const UNCOLLECTIBLE: u32 = 1 << 1;
    pub const PINNED: u32 = 1 << 2;
    pub const AGE_OR_OBJECT_ID: u32 = 1 << 3;
    pub const YOUNG_OR_INFANT: u32 = 1 << 4;
}

/// Below this many candidate lines, a missing key proves nothing.
const ABSENCE_QUORUM: u64 = 20;

/// What was seen in one dump (or one chunk of it; chunks merge).
#[derive(Debug, Clone, Default)]
pub struct VersionEvidence {
    keys: u32,
    flags: u32,
    objects: u64,
    objects_with_memsize: u64,
    objects_with_shape: u64,
    classes: u64,
    classes_with_superclass: u64,
    flag_lines: u64,
    imemos: u64,
    imemo_without_class: u64,
    imemo_without_type: u64,
    shape_lines: u64,
    /// `capacity` on a SHAPE line (3.2 only; strings have a `capacity` in every version).
    shape_capacity: bool,
    /// `embedded` on an OBJECT line (3.3+; strings and arrays have it in every version).
    object_embedded: bool,
    floats_alternate_form: u64,
    floats_short_form: u64,
    /// Flag sets already inspected: dumps repeat a handful of them on every line.
    seen_flags: FlagCache,
}

/// The last few distinct `flags` texts, compared byte for byte before parsing one again.
#[derive(Debug, Clone, Default)]
struct FlagCache {
    entries: Vec<Box<[u8]>>,
    next: usize,
}

impl FlagCache {
    const SIZE: usize = 8;

    /// Whether `flags` was seen; remembers it if not.
    fn check(&mut self, flags: &[u8]) -> bool {
        if self.entries.iter().any(|e| **e == *flags) {
            return true;
        }
        if self.entries.len() < Self::SIZE {
            self.entries.push(flags.into());
        } else {
            self.entries[self.next] = flags.into();
            self.next = (self.next + 1) % Self::SIZE;
        }
        false
    }
}

impl VersionEvidence {
    pub fn observe(&mut self, rec: &Record<'_>) {
        self.keys |= rec.fingerprints;
        let ty = rec.obj_type();
        if ty == ObjType::Shape {
            self.shape_lines += 1;
            self.shape_capacity |= rec.fingerprints & fp::CAPACITY != 0;
            return;
        }
        if ty == ObjType::Root {
            return;
        }
        self.objects += 1;
        self.objects_with_memsize += u64::from(rec.memsize.is_some());
        self.objects_with_shape +=
            u64::from(rec.fingerprints & (fp::SHAPE_ID | fp::SLOT_SIZE) != 0);
        match ty {
            ObjType::Class | ObjType::Module => {
                self.classes += 1;
                self.classes_with_superclass += u64::from(rec.superclass.is_some());
            }
            ObjType::Object => self.object_embedded |= rec.fingerprints & fp::EMBEDDED != 0,
            ObjType::Imemo => {
                self.imemos += 1;
                self.imemo_without_class += u64::from(rec.class.is_none());
                self.imemo_without_type += u64::from(rec.imemo_type.is_none());
            }
            ObjType::Float => match rec.value.map(float_form) {
                Some(FloatForm::Alternate) => self.floats_alternate_form += 1,
                Some(FloatForm::Short) => self.floats_short_form += 1,
                _ => {}
            },
            _ => {}
        }
        if !rec.flags.is_empty() {
            self.flag_lines += 1;
            if self.seen_flags.check(rec.flags) {
                return;
            }
            for (key, _) in flag_pairs(rec.flags) {
                self.flags |= match key {
                    b"long_lived" => flag::LONG_LIVED,
                    b"uncollectible" => flag::UNCOLLECTIBLE,
                    b"pinned" => flag::PINNED,
                    b"age" | b"object_id" => flag::AGE_OR_OBJECT_ID,
                    b"young" | b"infant" => flag::YOUNG_OR_INFANT,
                    _ => 0,
                };
            }
        }
    }

    pub fn merge(&mut self, o: &VersionEvidence) {
        self.keys |= o.keys;
        self.flags |= o.flags;
        self.objects += o.objects;
        self.objects_with_memsize += o.objects_with_memsize;
        self.objects_with_shape += o.objects_with_shape;
        self.classes += o.classes;
        self.classes_with_superclass += o.classes_with_superclass;
        self.flag_lines += o.flag_lines;
        self.imemos += o.imemos;
        self.imemo_without_class += o.imemo_without_class;
        self.imemo_without_type += o.imemo_without_type;
        self.shape_lines += o.shape_lines;
        self.shape_capacity |= o.shape_capacity;
        self.object_embedded |= o.object_embedded;
        self.floats_alternate_form += o.floats_alternate_form;
        self.floats_short_form += o.floats_short_form;
    }

    /// The release range the evidence allows, e.g. `3.1`, `2.7–3.0`, `≥ 3.2`; `None` when
    /// nothing was seen. Contradictory evidence (development snapshots) keeps the lower bound.
    pub fn guess(&self) -> Option<String> {
        if self.objects == 0 && self.shape_lines == 0 {
            return None;
        }
        let mut lo = 0usize;
        let mut hi = RELEASES.len() - 1;
        let mut at_least = |r: &str| lo = lo.max(release(r));
        let has = |bit: u32| self.keys & bit != 0;
        let flag = |bit: u32| self.flags & bit != 0;
        if has(fp::IMEMO_TYPE) {
            at_least("2.5");
        }
        if flag(flag::LONG_LIVED) {
            at_least("2.2");
        }
        if flag(flag::UNCOLLECTIBLE) {
            at_least("2.3");
        }
        if self.imemo_without_type > 0 {
            at_least("2.3");
        }
        if flag(flag::PINNED) {
            at_least("2.7");
        }
        if self.floats_alternate_form > 0 {
            at_least("3.0");
        }
        if has(fp::SUPERCLASS | fp::SINGLETON | fp::REAL_CLASS_NAME) {
            at_least("3.1");
        }
        // Before 3.2 some IMEMOs (env, …) lack `class` too; from 3.2 none has it.
        let imemos_classless =
            self.imemos >= ABSENCE_QUORUM && self.imemo_without_class == self.imemos;
        if has(fp::SHAPE_ID | fp::SLOT_SIZE | fp::CODERANGE | fp::VARIATION_COUNT)
            || self.shape_lines > 0
            || imemos_classless
        {
            at_least("3.2");
        }
        if has(fp::MID_OR_CALLED_ID) || self.object_embedded {
            at_least("3.3");
        }
        if has(fp::CHILLED) {
            at_least("3.4");
        }
        if flag(flag::AGE_OR_OBJECT_ID) || has(fp::FREE_IMMEDIATELY) {
            at_least("4.0");
        }
        if self.objects >= ABSENCE_QUORUM && self.objects_with_memsize * 2 >= self.objects {
            at_least("2.2");
        }
        let mut at_most = |r: &str| hi = hi.min(release(r));
        if has(fp::ASSOCIATED) || flag(flag::YOUNG_OR_INFANT) {
            at_most("2.1");
        }
        if flag(flag::LONG_LIVED) {
            at_most("2.2");
        }
        if has(fp::NODE_TYPE) || self.imemo_without_type > 0 {
            at_most("2.4");
        }
        if self.floats_short_form > 0 {
            at_most("2.7");
        }
        if self.classes >= ABSENCE_QUORUM && self.classes_with_superclass == 0 {
            at_most("3.0");
        }
        if self.objects >= ABSENCE_QUORUM && self.objects_with_shape == 0 {
            at_most("3.1");
        }
        if self.shape_capacity {
            at_most("3.2");
        }
        if self.flag_lines >= ABSENCE_QUORUM && !flag(flag::AGE_OR_OBJECT_ID) {
            at_most("3.4");
        }
        if self.objects >= ABSENCE_QUORUM && self.objects_with_memsize * 2 < self.objects {
            at_most("2.1");
        }
        if lo > hi {
            return Some(format!("≥ {} (mixed fingerprints)", RELEASES[lo]));
        }
        Some(if lo == hi {
            RELEASES[lo].to_string()
        } else if hi == RELEASES.len() - 1 {
            format!("≥ {}", RELEASES[lo])
        } else if lo == 0 {
            format!("≤ {}", RELEASES[hi])
        } else {
            format!("{}–{}", RELEASES[lo], RELEASES[hi])
        })
    }
}

enum FloatForm {
    /// `%#g` (3.0+): always a point and six significant digits, e.g. `1.50000`.
    Alternate,
    /// `%g` (≤ 2.7) where it cannot be `%#g`: fewer than six digits, or no point.
    Short,
    Ambiguous,
}

fn float_form(v: &[u8]) -> FloatForm {
    if !v.first().is_some_and(|b| b.is_ascii_digit() || *b == b'-') {
        return FloatForm::Ambiguous; // inf, nan
    }
    let mantissa = v.split(|&b| b == b'e').next().unwrap_or(v);
    let digits = mantissa
        .iter()
        .filter(|b| b.is_ascii_digit())
        .skip_while(|&&b| b == b'0')
        .count();
    let has_point = mantissa.contains(&b'.');
    if has_point && mantissa.ends_with(b"0") {
        FloatForm::Alternate
    } else if !has_point || digits < 6 {
        FloatForm::Short
    } else {
        FloatForm::Ambiguous
    }
}

#[cfg(test)]
mod tests {
    use super::super::scan::parse_line;
    use super::*;

    fn guess(lines: &[&[u8]], repeat: usize) -> Option<String> {
        let mut ev = VersionEvidence::default();
        for _ in 0..repeat {
            for l in lines {
                ev.observe(&parse_line(l).unwrap());
            }
        }
        ev.guess()
    }

    #[test]
    fn ruby_3_1_lines() {
        let lines: [&[u8]; 2] = [
            br#"{"address":"0x1", "type":"CLASS", "class":"0x2", "superclass":"0x3", "name":"A", "memsize":600, "flags":{"wb_protected":true}}"#,
            br#"{"address":"0x4", "type":"STRING", "class":"0x1", "bytesize":1, "value":"w", "memsize":40, "flags":{"wb_protected":true}}"#,
        ];
        assert_eq!(guess(&lines, 20).as_deref(), Some("3.1"));
    }

    #[test]
    fn ruby_2_7_lines() {
        let lines: [&[u8]; 3] = [
            br#"{"address":"0x1", "type":"CLASS", "class":"0x2", "name":"A", "memsize":600, "flags":{"old":true, "uncollectible":true, "pinned":true}}"#,
            br#"{"address":"0x5", "type":"IMEMO", "class":"0x8", "imemo_type":"cref", "memsize":40}"#,
            br#"{"address":"0x4", "type":"FLOAT", "class":"0x1", "value":"1.5", "memsize":40}"#,
        ];
        assert_eq!(guess(&lines, 20).as_deref(), Some("2.7"));
        // Too few lines for absence to count.
        assert_eq!(guess(&lines[..1], 1).as_deref(), Some("≥ 2.7"));
    }

    #[test]
    fn newer_and_mixed() {
        let l: [&[u8]; 1] = [
            br#"{"address":"0x1", "type":"STRING", "shape_id":0, "slot_size":40, "class":"0x2", "chilled":true, "memsize":40, "flags":{"age":1}}"#,
        ];
        assert_eq!(guess(&l, 1).as_deref(), Some("4.0"));
        let dev: [&[u8]; 1] =
            [br#"{"address":"0x1", "type":"SHAPE", "id":1, "capacity":8, "memsize":120}"#];
        assert_eq!(guess(&dev, 1).as_deref(), Some("3.2"));
        assert_eq!(guess(&[], 1), None);
    }

    #[test]
    fn float_forms() {
        assert!(matches!(float_form(b"1.50000"), FloatForm::Alternate));
        assert!(matches!(float_form(b"1.5"), FloatForm::Short));
        assert!(matches!(float_form(b"100"), FloatForm::Short));
        assert!(matches!(float_form(b"1.79769e+308"), FloatForm::Ambiguous));
        assert!(matches!(float_form(b"nan"), FloatForm::Ambiguous));
    }
}
