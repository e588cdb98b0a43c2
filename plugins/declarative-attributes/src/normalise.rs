//! Canonical forms of typed values: what the host accepts and stores.

use roster_plugin_sdk::custom_attributes::AttributeType;

pub fn value(ty: AttributeType, v: &str) -> Result<String, &'static str> {
    let t = v.trim();
    match ty {
        AttributeType::String | AttributeType::List => Ok(v.to_string()),
        AttributeType::Integer => t.parse::<i64>().map(|n| n.to_string()).map_err(|_| "is not an integer"),
        AttributeType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok("true".into()),
            "false" | "no" | "0" => Ok("false".into()),
            _ => Err("is not a boolean (true/false)"),
        },
        AttributeType::Timestamp => timestamp(t).ok_or("is not a timestamp (RFC 3339 or 20240131120000Z)"),
    }
}

/// RFC 3339 with any offset, or GeneralizedTime in UTC, → `YYYY-MM-DDTHH:MM:SSZ`
/// (fractions of a second are kept).
pub fn timestamp(t: &str) -> Option<String> {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (date, time, rest) = if b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && matches!(b[10], b'T' | b't' | b' ') {
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        ((digits(0..4)?, digits(5..7)?, digits(8..10)?), (digits(11..13)?, digits(14..16)?, digits(17..19)?), &t[19..])
    } else if b.len() >= 15 && b[..14].iter().all(u8::is_ascii_digit) {
        ((digits(0..4)?, digits(4..6)?, digits(6..8)?), (digits(8..10)?, digits(10..12)?, digits(12..14)?), &t[14..])
    } else {
        return None;
    };
    let (fraction, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            (&r[..end], &r[end..])
        }
        None => ("", rest),
    };
    let offset_minutes = match zone {
        "Z" | "z" => 0,
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) && &z[3..4] == ":" => {
            let h: i64 = z[1..3].parse().ok()?;
            let m: i64 = z[4..6].parse().ok()?;
            if h > 23 || m > 59 {
                return None;
            }
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (h * 60 + m)
        }
        _ => return None,
    };
    let (y, mo, d) = date;
    let (h, mi, s) = time;
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_minutes * 60;
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    let frac = if fraction.is_empty() { String::new() } else { format!(".{fraction}") };
    Some(format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z", secs / 3600, secs % 3600 / 60, secs % 60))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms: days since 1970-01-01 ↔ proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp("20240131120000Z").as_deref(), Some("2024-01-31T12:00:00Z"));
        assert_eq!(timestamp("2024-01-31T12:00:00Z").as_deref(), Some("2024-01-31T12:00:00Z"));
        assert_eq!(timestamp("2024-03-01T01:30:00+02:00").as_deref(), Some("2024-02-29T23:30:00Z"));
        assert_eq!(timestamp("2023-12-31T23:00:00.5-01:00").as_deref(), Some("2024-01-01T00:00:00.5Z"));
        assert_eq!(timestamp("19991231235959.0Z").as_deref(), Some("1999-12-31T23:59:59.0Z"));
        for bad in
            ["yesterday", "2024-02-30T00:00:00Z", "2024-01-31T12:00:00", "20241301000000Z", "2024-01-31T25:00:00Z"]
        {
            assert_eq!(timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(value(AttributeType::Integer, " 007 ").as_deref(), Ok("7"));
        assert_eq!(value(AttributeType::Boolean, "No").as_deref(), Ok("false"));
        assert!(value(AttributeType::Boolean, "maybe").is_err());
        assert_eq!(value(AttributeType::String, " kept as is ").as_deref(), Ok(" kept as is "));
    }
}
