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
    /// An expression over source attributes (the built-in plugin's language);
    /// without it the value is whatever the mapper set as `custom.<name>`.
    #[serde(default)]
    pub from: Option<String>,
}

pub type Schema = BTreeMap<String, AttrSchema>;

/// What the custom-attributes plugin is told about the declarations.
pub fn decls(schema: &Schema) -> Vec<crate::plugin_host::AttributeDecl> {
    use crate::plugin_host::{AttributeDecl, AttributeType};
    schema
        .iter()
        .map(|(name, d)| AttributeDecl {
            name: name.clone(),
            ty: match d.ty {
                AttrType::String => AttributeType::String,
                AttrType::Integer => AttributeType::Integer,
                AttrType::Boolean => AttributeType::Boolean,
                AttrType::List => AttributeType::List,
                AttrType::Timestamp => AttributeType::Timestamp,
            },
            required: d.required,
            multi_valued: d.multi_valued || d.ty == AttrType::List,
        })
        .collect()
}

/// The built-in plugin's configuration: `NAME = "expression"` for every
/// attribute declared with `from`.
pub fn builtin_config(schema: &Schema) -> toml::Table {
    schema
        .iter()
        .filter_map(|(name, d)| d.from.as_ref().map(|f| (name.clone(), toml::Value::String(f.clone()))))
        .collect()
}

/// Mapper output must not carry custom attributes the tenant did not declare.
pub fn undeclared(schema: &Schema, attrs: &Attributes) -> Option<String> {
    let name = attrs.keys().filter_map(|k| k.strip_prefix(PREFIX)).find(|n| !schema.contains_key(*n))?;
    Some(format!(
        "custom attribute '{name}' is not declared in [tenant.custom_attributes] (declared: {})",
        if schema.is_empty() { "none".to_string() } else { schema.keys().cloned().collect::<Vec<_>>().join(", ") }
    ))
}

/// Checks a custom-attributes plugin's output for one user against the
/// declarations: every name declared, required ones present, one value for a
/// single-valued attribute, every value in canonical form. The host does not
/// trust a plugin to have done it. `Err` names the attribute; the caller adds
/// the entry.
pub fn validate(schema: &Schema, output: &Attributes) -> Result<(), String> {
    for (name, values) in output {
        let Some(decl) = schema.get(name) else {
            return Err(format!(
                "the plugin returned custom attribute '{name}', which is not declared in [tenant.custom_attributes]"
            ));
        };
        let multi = decl.multi_valued || decl.ty == AttrType::List;
        if !multi && values.len() > 1 {
            return Err(format!(
                "custom attribute '{name}' is single-valued but got {} values: {values:?}",
                values.len()
            ));
        }
        for v in values {
            canonical(decl.ty, v).map_err(|why| format!("custom attribute '{name}': value {v:?} {why}"))?;
        }
    }
    for (name, decl) in schema {
        if decl.required && output.get(name).is_none_or(|v| v.is_empty()) {
            return Err(format!("custom attribute '{name}' is required but has no value"));
        }
    }
    Ok(())
}

fn canonical(ty: AttrType, v: &str) -> Result<(), &'static str> {
    match ty {
        AttrType::String | AttrType::List => Ok(()),
        AttrType::Integer => match v.parse::<i64>() {
            Ok(n) if n.to_string() == v => Ok(()),
            _ => Err("is not an integer in canonical form (decimal, no spaces or leading zeros)"),
        },
        AttrType::Boolean => match v {
            "true" | "false" => Ok(()),
            _ => Err("is not a boolean (true or false)"),
        },
        AttrType::Timestamp => {
            use time::format_description::well_known::Rfc3339;
            match time::OffsetDateTime::parse(v, &Rfc3339) {
                Ok(t) if t.offset().is_utc() && v.ends_with('Z') => Ok(()),
                _ => Err("is not an RFC 3339 timestamp in UTC (2024-01-31T12:00:00Z)"),
            }
        }
    }
}

/// The extension object for SCIM output, typed per the schema; `None` when the
/// user has no custom attributes.
pub fn scim_extension(schema: &Schema, attrs: &Attributes) -> Option<Value> {
    let mut out = Map::new();
    for (key, values) in attrs {
        let Some(name) = key.strip_prefix(PREFIX) else { continue };
        let decl = schema.get(name);
        let ty = decl.map(|d| d.ty).unwrap_or(AttrType::String);
        let typed = |v: &str| -> Value {
            match ty {
                AttrType::Integer => v.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(v)),
                AttrType::Boolean => Value::Bool(v == "true"),
                _ => Value::from(v),
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
        pairs.iter().map(|(k, v)| (*k, v.iter().copied())).collect()
    }

    #[test]
    fn canonical_values_pass_and_publish_typed() {
        let a = attrs(&[
            ("costCenter", &["CC-1"]),
            ("headcount", &["12"]),
            ("remote", &["true"]),
            ("started", &["2024-01-31T12:00:00Z"]),
            ("skills", &["rust", "ldap"]),
        ]);
        validate(&schema(), &a).expect("fits");
        let stored: Attributes = a.into_iter().map(|(k, v)| (format!("{PREFIX}{k}"), v)).collect();
        let ext = scim_extension(&schema(), &stored).expect("extension");
        assert_eq!(ext["headcount"], 12);
        assert_eq!(ext["remote"], true);
        assert_eq!(ext["skills"], serde_json::json!(["rust", "ldap"]));
    }

    #[test]
    fn misfits_name_the_attribute() {
        let s = schema();
        let err = validate(&s, &attrs(&[("costCenter", &["x"]), ("headcount", &["many"])])).expect_err("int");
        assert!(err.contains("'headcount'") && err.contains("not an integer"), "{err}");
        let err = validate(&s, &attrs(&[("costCenter", &["x"]), ("headcount", &[" 12"])])).expect_err("not canonical");
        assert!(err.contains("canonical"), "{err}");
        let err = validate(&s, &attrs(&[])).expect_err("required");
        assert!(err.contains("'costCenter' is required"), "{err}");
        let err = validate(&s, &attrs(&[("costCenter", &["a", "b"])])).expect_err("single");
        assert!(err.contains("single-valued"), "{err}");
        let err = validate(&s, &attrs(&[("costCenter", &["a"]), ("shoeSize", &["44"])])).expect_err("undeclared");
        assert!(err.contains("'shoeSize', which is not declared"), "{err}");
        let err = validate(&s, &attrs(&[("costCenter", &["a"]), ("started", &["2024-01-31T12:00:00+01:00"])]))
            .expect_err("ts");
        assert!(err.contains("UTC"), "{err}");
        assert!(undeclared(&s, &attrs(&[("custom.shoeSize", &["44"])])).is_some_and(|e| e.contains("shoeSize")));
        assert!(undeclared(&s, &attrs(&[("custom.headcount", &["1"])])).is_none());
    }
}
