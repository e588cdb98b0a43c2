//! Typed custom attributes: the tenant declares them in TOML, the mapper
//! produces them as `custom.<name>`, and every value is checked against the
//! declaration before it can reach the store.
//!
//! A value that does not fit is an error naming the attribute and the entry;
//! the entry is quarantined like any other mapping failure. In SCIM output the
//! attributes appear under [`SCHEMA_URN`], typed (numbers as numbers,
//! booleans as booleans, timestamps as RFC 3339 strings).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::Attributes;

/// The SCIM extension schema custom attributes are published under.
pub const SCHEMA_URN: &str = "urn:roster:params:scim:schemas:extension:custom:2.0:User";
/// Mapped attribute names with this prefix are custom attributes.
pub const PREFIX: &str = "custom.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttrType {
    String,
    Integer,
    Boolean,
    /// Several strings; the same as `string` with `multi_valued = true`.
    List,
    /// RFC 3339, or LDAP GeneralizedTime (`20240131120000Z`), stored as RFC 3339.
    Timestamp,
}

/// `[tenant.custom_attributes.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttrSchema {
    #[serde(rename = "type")]
    pub ty: AttrType,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub multi_valued: bool,
}

pub type Schema = BTreeMap<String, AttrSchema>;

/// Checks and normalises the custom attributes of a mapped user in place.
/// `Err` names the attribute; the caller adds the entry.
pub fn check(schema: &Schema, attrs: &mut Attributes) -> Result<(), String> {
    for name in attrs.keys().filter_map(|k| k.strip_prefix(PREFIX)) {
        if !schema.contains_key(name) {
            return Err(format!(
                "custom attribute '{name}' is not declared in [tenant.custom_attributes] (declared: {})",
                if schema.is_empty() {
                    "none".to_string()
                } else {
                    schema.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ));
        }
    }
    for (name, decl) in schema {
        let key = format!("{PREFIX}{name}");
        let Some(values) = attrs.get_mut(&key) else {
            if decl.required {
                return Err(format!("custom attribute '{name}' is required but the mapping gave no value"));
            }
            continue;
        };
        let multi = decl.multi_valued || decl.ty == AttrType::List;
        if !multi && values.len() > 1 {
            return Err(format!(
                "custom attribute '{name}' is single-valued but got {} values: {values:?}",
                values.len()
            ));
        }
        for v in values.iter_mut() {
            *v = normalise(decl.ty, v).map_err(|why| format!("custom attribute '{name}': value {v:?} {why}"))?;
        }
    }
    Ok(())
}

fn normalise(ty: AttrType, v: &str) -> Result<String, String> {
    let t = v.trim();
    match ty {
        AttrType::String | AttrType::List => Ok(v.to_string()),
        AttrType::Integer => t.parse::<i64>().map(|n| n.to_string()).map_err(|_| "is not an integer".into()),
        AttrType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok("true".into()),
            "false" | "no" | "0" => Ok("false".into()),
            _ => Err("is not a boolean (true/false)".into()),
        },
        AttrType::Timestamp => timestamp(t).ok_or_else(|| "is not a timestamp (RFC 3339 or 20240131120000Z)".into()),
    }
}

fn timestamp(t: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(dt) = time::OffsetDateTime::parse(t, &Rfc3339) {
        return dt.to_offset(time::UtcOffset::UTC).format(&Rfc3339).ok();
    }
    // LDAP GeneralizedTime, UTC: YYYYMMDDHHMMSS[.fff]Z
    let digits = t.strip_suffix('Z')?.split('.').next()?;
    if digits.len() != 14 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits[r].parse::<u32>().ok();
    let month = time::Month::try_from(n(4..6)? as u8).ok()?;
    let date = time::Date::from_calendar_date(n(0..4)? as i32, month, n(6..8)? as u8).ok()?;
    let time = time::Time::from_hms(n(8..10)? as u8, n(10..12)? as u8, n(12..14)? as u8).ok()?;
    time::PrimitiveDateTime::new(date, time).assume_utc().format(&Rfc3339).ok()
}

/// The extension object for SCIM output, typed per the schema; `None` when the
/// user has no custom attributes.
pub fn scim_extension(schema: &Schema, attrs: &Attributes) -> Option<Value> {
    let mut out = Map::new();
    for (key, values) in attrs {
        let Some(name) = key.strip_prefix(PREFIX) else { continue };
        let decl = schema.get(name);
        let ty = decl.map(|d| d.ty).unwrap_or(AttrType::String);
        let typed = |v: &String| -> Value {
            match ty {
                AttrType::Integer => v.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(v.clone())),
                AttrType::Boolean => Value::Bool(v == "true"),
                _ => Value::from(v.clone()),
            }
        };
        let multi = decl.is_some_and(|d| d.multi_valued || d.ty == AttrType::List) || values.len() > 1;
        let value = if multi { Value::Array(values.iter().map(typed).collect()) } else { values.first().map(typed)? };
        out.insert(name.to_string(), value);
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        toml::from_str(
            r#"
costCenter = { type = "string", required = true }
headcount = { type = "integer" }
remote = { type = "boolean" }
started = { type = "timestamp" }
skills = { type = "list" }
"#,
        )
        .expect("schema")
    }

    fn attrs(pairs: &[(&str, &[&str])]) -> Attributes {
        pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn values_are_checked_and_normalised() {
        let mut a = attrs(&[
            ("custom.costCenter", &["CC-1"]),
            ("custom.headcount", &[" 12 "]),
            ("custom.remote", &["YES"]),
            ("custom.started", &["20240131120000Z"]),
            ("custom.skills", &["rust", "ldap"]),
        ]);
        check(&schema(), &mut a).expect("fits");
        assert_eq!(a["custom.headcount"], vec!["12"]);
        assert_eq!(a["custom.remote"], vec!["true"]);
        assert_eq!(a["custom.started"], vec!["2024-01-31T12:00:00Z"]);
        let ext = scim_extension(&schema(), &a).expect("extension");
        assert_eq!(ext["headcount"], 12);
        assert_eq!(ext["remote"], true);
        assert_eq!(ext["skills"], serde_json::json!(["rust", "ldap"]));
    }

    #[test]
    fn misfits_name_the_attribute() {
        let s = schema();
        let err =
            check(&s, &mut attrs(&[("custom.costCenter", &["x"]), ("custom.headcount", &["many"])])).expect_err("int");
        assert!(err.contains("'headcount'") && err.contains("not an integer"), "{err}");
        let err = check(&s, &mut attrs(&[])).expect_err("required");
        assert!(err.contains("'costCenter' is required"), "{err}");
        let err = check(&s, &mut attrs(&[("custom.costCenter", &["a", "b"])])).expect_err("single");
        assert!(err.contains("single-valued"), "{err}");
        let err = check(&s, &mut attrs(&[("custom.costCenter", &["a"]), ("custom.shoeSize", &["44"])]))
            .expect_err("undeclared");
        assert!(err.contains("'shoeSize' is not declared"), "{err}");
        let err = check(&s, &mut attrs(&[("custom.costCenter", &["a"]), ("custom.started", &["yesterday"])]))
            .expect_err("ts");
        assert!(err.contains("not a timestamp"), "{err}");
    }
}
