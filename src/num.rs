//! Saturating conversions for numbers read from inputs: sizes and counts in dumps and reports are
//! u64 and can be anything a hostile or damaged file says, while findings carry signed changes.
//! Past a type's range a value saturates; it never wraps into a negative or small number.
//!
//! Stage: shared by the readers, the evidence model and the correlator.

/// A size or count as an i64: past `i64::MAX` it saturates.
pub fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A count as a u32 (snapshot indexes, line numbers): past `u32::MAX` it saturates.
pub fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A signed value as a u64: negatives become 0.
pub fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `after - before`, saturated to the i64 range.
pub fn difference(after: u64, before: u64) -> i64 {
    (i128::from(after) - i128::from(before)).clamp(i128::from(i64::MIN), i128::from(i64::MAX))
        as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_range_saturate() {
        assert_eq!(saturating_i64(5), 5);
        assert_eq!(saturating_i64(1 << 63), i64::MAX);
        assert_eq!(saturating_i64(u64::MAX), i64::MAX);
        assert_eq!(saturating_u32(u64::MAX), u32::MAX);
        assert_eq!(saturating_u32(7), 7);
        assert_eq!(non_negative(-3), 0);
        assert_eq!(non_negative(i64::MAX), i64::MAX as u64);
        assert_eq!(difference(u64::MAX, 0), i64::MAX);
        assert_eq!(difference(0, u64::MAX), i64::MIN);
        assert_eq!(difference(3, 5), -2);
    }
}
