//! Times and durations as people read them on the status page: "12 s ago", "in 3 s", inside a `<time>`
//! element whose `datetime` and `title` carry the exact RFC 3339 time.

use super::html::esc;

/// How far `at_ms` is from `now_ms`, in the largest unit that fits.
pub(super) fn relative(at_ms: i64, now_ms: i64) -> String {
    let delta = at_ms - now_ms;
    let secs = delta.unsigned_abs() / 1000;
    if secs == 0 {
        return "now".to_owned();
    }
    let amount = match secs {
        0..=59 => format!("{secs} s"),
        60..=3_599 => format!("{} min", secs / 60),
        3_600..=86_399 => format!("{} h", secs / 3_600),
        _ => format!("{} d", secs / 86_400),
    };
    match delta < 0 {
        true => format!("{amount} ago"),
        false => format!("in {amount}"),
    }
}

/// A latency bin's bound as people read it.
pub(super) fn millis(ms: u64) -> String {
    match ms {
        u64::MAX => "over 10 s".to_owned(),
        0..=999 => format!("{ms} ms"),
        _ if ms.is_multiple_of(1000) => format!("{} s", ms / 1000),
        _ => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

/// A `<time>` element for `at_ms` (unix ms), or "—".
pub(super) fn time_el(at_ms: Option<i64>, now_ms: i64) -> String {
    let Some(at_ms) = at_ms else {
        return "—".to_owned();
    };
    let exact = chrono::DateTime::from_timestamp_millis(at_ms)
        .map(crate::status::rfc3339)
        .unwrap_or_default();
    format!(
        "<time datetime=\"{0}\" title=\"{0}\">{1}</time>",
        esc(&exact),
        relative(at_ms, now_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_in_the_largest_unit() {
        assert_eq!(relative(1_000, 13_500), "12 s ago");
        assert_eq!(relative(16_000, 13_000), "in 3 s");
        assert_eq!(relative(0, 300_000), "5 min ago");
        assert_eq!(relative(0, 7_200_000), "2 h ago");
        assert_eq!(relative(0, 3 * 86_400_000), "3 d ago");
        assert_eq!(relative(5, 10), "now");
        let el = time_el(Some(1_764_417_600_000), 1_764_417_612_000);
        assert_eq!(
            el,
            "<time datetime=\"2025-11-29T12:00:00.000Z\" title=\"2025-11-29T12:00:00.000Z\">12 s ago</time>"
        );
        assert_eq!(time_el(None, 0), "—");
        assert_eq!(millis(50), "50 ms");
        assert_eq!(millis(1000), "1 s");
        assert_eq!(millis(2500), "2.5 s");
        assert_eq!(millis(u64::MAX), "over 10 s");
    }
}
