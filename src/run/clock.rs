//! Wall-clock stamps for the bundle: the manifest's RFC 3339 start time (UTC) and the default
//! bundle name `leakhunt-YYYYmmdd-HHMMSS` (local time, as the user reads it).

use std::time::{SystemTime, UNIX_EPOCH};

/// Year, month, day, hour, minute, second from the C library (`utc`: gmtime, else localtime).
fn civil(at: SystemTime, utc: bool) -> Option<[i32; 6]> {
    let secs = at.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let t = libc::time_t::try_from(secs).ok()?;
    // SAFETY: `tm` is plain data; gmtime_r/localtime_r fill it from `t` and return null on error.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let ok = if utc {
            !libc::gmtime_r(&t, &mut tm).is_null()
        } else {
            !libc::localtime_r(&t, &mut tm).is_null()
        };
        ok.then_some(tm)?
    };
    Some([
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
    ])
}

/// `2024-05-01T12:34:56Z`.
pub fn rfc3339_utc(at: SystemTime) -> String {
    let [y, mo, d, h, mi, s] = civil(at, true).unwrap_or([1970, 1, 1, 0, 0, 0]);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `leakhunt-20240501-143456`.
pub fn bundle_name(at: SystemTime) -> String {
    match civil(at, false) {
        Some([y, mo, d, h, mi, s]) => format!("leakhunt-{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}"),
        None => "leakhunt-run".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_stamps_are_rfc3339() {
        let at = UNIX_EPOCH + Duration::from_secs(1_714_566_896);
        assert_eq!(rfc3339_utc(at), "2024-05-01T12:34:56Z");
    }

    #[test]
    fn bundle_names_sort_by_time() {
        let name = bundle_name(UNIX_EPOCH + Duration::from_secs(1_714_566_896));
        assert!(name.starts_with("leakhunt-202405"), "{name}");
        assert_eq!(name.len(), "leakhunt-20240501-123456".len());
    }
}
