//! SCIM resource JSON → flat attributes, and ordering of SCIM timestamps.

use std::cmp::Ordering;

use roster_plugin_sdk::prelude::*;
use serde_json::{Map, Value};

/// Its attributes appear under their short names (`department`, `manager.value`).
pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Top-level attributes left out: schema URNs, and memberships (a group's
/// `members` become the object's members; a user's `groups` is their mirror).
const SKIPPED: &[&str] = &["schemas", "members", "groups"];

/// Adds the resource's attributes to `object`:
///
/// * scalars as text (`true`/`false` for booleans), `null` left out;
/// * arrays of scalars as several values;
/// * arrays of objects as their `value` fields under the array's name, and the
///   primary one's also as `NAME.primary` (`emails`, `emails.primary`);
/// * nested objects with dotted names (`name.givenName`, `meta.lastModified`);
///   `meta.location` is left out;
/// * the enterprise extension under its short names, any other extension
///   under its URN (`urn:…:User.attribute`).
pub fn flatten_into(object: &mut SourceObject, resource: &Map<String, Value>) {
    for (key, value) in resource {
        match (key.as_str(), value) {
            (k, _) if SKIPPED.contains(&k) => {}
            (ENTERPRISE_USER, Value::Object(extension)) => walk(object, "", extension),
            _ => add(object, key, value),
        }
    }
}

fn walk(object: &mut SourceObject, prefix: &str, map: &Map<String, Value>) {
    for (key, value) in map {
        let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        add(object, &name, value);
    }
}

fn add(object: &mut SourceObject, name: &str, value: &Value) {
    if name == "meta.location" {
        return;
    }
    match value {
        Value::Object(map) => walk(object, name, map),
        Value::Array(items) => {
            let mut primary = None;
            for item in items {
                match item {
                    Value::Object(sub) => {
                        let Some(text) = sub.get("value").and_then(scalar) else { continue };
                        if primary.is_none() && sub.get("primary") == Some(&Value::Bool(true)) {
                            primary = Some(text.clone());
                        }
                        object.push_attr(name, text);
                    }
                    other => {
                        if let Some(text) = scalar(other) {
                            object.push_attr(name, text);
                        }
                    }
                }
            }
            if let Some(p) = primary {
                object.push_attr(&format!("{name}.primary"), p);
            }
        }
        other => {
            if let Some(text) = scalar(other) {
                object.push_attr(name, text);
            }
        }
    }
}

/// A scalar as text; `None` for null, arrays and objects.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Orders two RFC 3339 timestamps by the instant they name (offsets and
/// fractions of a second included); text order when one does not parse.
pub fn compare_times(a: &str, b: &str) -> Ordering {
    match (instant(a), instant(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` → (seconds since the epoch, nanoseconds).
fn instant(s: &str) -> Option<(i64, u32)> {
    let digits = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let seconds = digits(11, 13)? * 3600 + digits(14, 16)? * 60 + digits(17, 19)?;
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let nine: String = fraction[..n].chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = nine.parse().ok()?;
        rest = &fraction[n..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let at = s.len() - 5;
            let minutes = digits(at, at + 2)? * 60 + digits(at + 3, at + 5)?;
            if *sign == b'+' { minutes * 60 } else { -minutes * 60 }
        }
        _ => return None,
    };
    Some((days_from_civil(year, month, day) * 86_400 + seconds - offset, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_like_the_readme_says() {
        let resource = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER],
            "id": "2819c223", "userName": "bjensen", "active": true, "x-logins": 42, "nickName": null,
            "name": { "givenName": "Barbara", "familyName": "Jensen" },
            "emails": [
                { "value": "bjensen@example.com", "type": "work", "primary": true },
                { "value": "babs@jensen.org", "type": "home" }
            ],
            "addresses": [{ "streetAddress": "100 Universal City Plaza" }],
            "entitlements": ["a", "b"],
            "groups": [{ "value": "g1" }],
            ENTERPRISE_USER: { "department": "Tour Operations", "manager": { "value": "26118915", "displayName": "John" } },
            "meta": { "lastModified": "2011-05-13T04:42:34Z", "location": "https://x/Users/2819c223" }
        });
        let mut user = SourceObject::user("2819c223");
        flatten_into(&mut user, resource.as_object().unwrap());
        let mut got: Vec<(&str, Vec<&str>)> =
            user.attributes().map(|(n, v)| (n, v.iter().map(String::as_str).collect())).collect();
        got.sort();
        let mut want: Vec<(&str, Vec<&str>)> = vec![
            ("active", vec!["true"]),
            ("emails", vec!["bjensen@example.com", "babs@jensen.org"]),
            ("emails.primary", vec!["bjensen@example.com"]),
            ("entitlements", vec!["a", "b"]),
            ("id", vec!["2819c223"]),
            ("meta.lastModified", vec!["2011-05-13T04:42:34Z"]),
            ("name.familyName", vec!["Jensen"]),
            ("name.givenName", vec!["Barbara"]),
            ("department", vec!["Tour Operations"]),
            ("manager.displayName", vec!["John"]),
            ("manager.value", vec!["26118915"]),
            ("userName", vec!["bjensen"]),
            ("x-logins", vec!["42"]),
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn times_compare_as_instants() {
        assert_eq!(compare_times("2024-05-01T10:00:00.5Z", "2024-05-01T10:00:00Z"), Ordering::Greater);
        assert_eq!(compare_times("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00Z"), Ordering::Equal);
        assert_eq!(compare_times("2024-05-01T10:00:00-00:30", "2024-05-01T10:29:59.999Z"), Ordering::Greater);
        assert_eq!(compare_times("2024-03-01T00:00:00Z", "2024-02-29T23:59:59Z"), Ordering::Greater);
        assert_eq!(instant("1970-01-02T00:00:00Z"), Some((86_400, 0)));
        assert_eq!(instant("2024-05-01T10:00:00.123Z").map(|i| i.1), Some(123_000_000));
        for bad in ["yesterday", "2024-05-01T10:00:00", "2024-05-01T10:00:00.Z", "2024-05-01T1a:00:00Z"] {
            assert_eq!(instant(bad), None, "{bad}");
        }
    }
}
