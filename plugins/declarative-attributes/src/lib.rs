//! Roster's built-in custom-attributes plugin.
//!
//! The tenant declares each custom attribute in TOML; `from` is optional:
//!
//! ```toml
//! [tenant.custom_attributes.costCenter]
//! type = "string"
//! required = true
//! from = "departmentNumber"          # an expression over source attributes
//!
//! [tenant.custom_attributes.started]
//! type = "timestamp"
//! from = "createTimestamp"
//! ```
//!
//! The host passes the declarations as the schema and every `from` as the
//! configuration (`NAME = "expression"`). For each declared attribute the
//! value is the expression's non-empty values, or, without `from`, whatever
//! the mapper set as `custom.NAME`. Values are then brought to canonical form
//! by type: integers trimmed and in decimal, booleans from
//! `true/false/yes/no/1/0` (any case), timestamps from RFC 3339 (any offset)
//! or LDAP GeneralizedTime (`20240131120000Z`) to RFC 3339 UTC. A value that
//! does not fit, a required attribute without a value or several values for a
//! single-valued one is an error naming the attribute.

pub mod normalise;

use std::collections::BTreeMap;

use roster_expr::Expr;
use roster_plugin_sdk::prelude::*;

pub struct Declarative {
    /// Each declared attribute with its `from` expression, if it has one
    /// (looked up once here, not per user).
    attributes: Vec<(AttributeDecl, Option<Expr>)>,
    /// `custom.NAME`, where the mapper may have set a value without `from`.
    mapped_names: Vec<String>,
}

impl Declarative {
    pub fn compile(config: &Config, schema: &[AttributeDecl]) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut rules = BTreeMap::new();
        for key in config.keys() {
            if !schema.iter().any(|d| d.name == key) {
                let hint = roster_plugin_sdk::suggest(key, schema.iter().map(|d| d.name.as_str()))
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                errors.push(ConfigError::new(key, format!("'{key}' is not a declared custom attribute{hint}")));
                continue;
            }
            match config.str(key) {
                Ok(Some(source)) => match roster_expr::parse(source) {
                    Ok(expr) => {
                        rules.insert(key.to_string(), expr);
                    }
                    Err(e) => errors.push(ConfigError::new(key, e.message).at(e.position)),
                },
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let attributes: Vec<(AttributeDecl, Option<Expr>)> =
            schema.iter().map(|d| (d.clone(), rules.remove(&d.name))).collect();
        let mapped_names = schema.iter().map(|d| format!("custom.{}", d.name)).collect();
        Ok(Self { attributes, mapped_names })
    }

    pub fn compute_user(&self, user: &MappedUser<'_>) -> Result<Vec<(String, Vec<String>)>, String> {
        let mut out = Vec::with_capacity(self.attributes.len());
        for ((decl, rule), mapped_name) in self.attributes.iter().zip(&self.mapped_names) {
            let raw: Vec<String> = match rule {
                Some(expr) => expr
                    .eval(user.entry.attrs())
                    .into_iter()
                    .filter(|v| !v.is_empty())
                    .map(|v| v.into_owned())
                    .collect(),
                None => user
                    .mapped
                    .get(mapped_name)
                    .map(|a| a.values().map(|v| String::from_utf8_lossy(v).into_owned()).collect())
                    .unwrap_or_default(),
            };
            if raw.is_empty() {
                if decl.required {
                    let from = match rule {
                        Some(e) => format!("expression '{e}' gave no value"),
                        None => format!("the mapper set no custom.{} and it has no `from`", decl.name),
                    };
                    return Err(format!("custom attribute '{}' is required but {from}", decl.name));
                }
                continue;
            }
            if !decl.multi_valued && raw.len() > 1 {
                return Err(format!(
                    "custom attribute '{}' is single-valued but got {} values: {raw:?}",
                    decl.name,
                    raw.len()
                ));
            }
            let mut values = Vec::with_capacity(raw.len());
            for v in &raw {
                let canonical = normalise::value(decl.ty, v)
                    .map_err(|why| format!("custom attribute '{}': value {v:?} {why}", decl.name))?;
                values.push(canonical);
            }
            out.push((decl.name.clone(), values));
        }
        Ok(out)
    }
}

impl CustomAttributes for Declarative {
    fn init(config: &Config, schema: &[AttributeDecl]) -> Result<Self, Vec<ConfigError>> {
        Self::compile(config, schema)
    }

    fn compute(&mut self, user: &MappedUser<'_>) -> Result<Vec<(String, Vec<String>)>, String> {
        self.compute_user(user)
    }
}

roster_plugin_sdk::export_custom_attributes!(Declarative);

#[cfg(test)]
mod tests {
    use super::*;
    use roster_plugin_sdk::custom_attributes::AttributeType;
    use roster_plugin_sdk::{Attrs, ConfigValue};

    fn decl(name: &str, ty: AttributeType, required: bool) -> AttributeDecl {
        AttributeDecl { name: name.into(), ty, required, multi_valued: ty == AttributeType::List }
    }

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::from_value(ConfigValue::Table(
            pairs.iter().map(|(k, v)| (k.to_string(), ConfigValue::Text(v.to_string()))).collect(),
        ))
    }

    #[test]
    fn expressions_and_mapper_values_are_typed() {
        let schema = [
            decl("costCenter", AttributeType::String, true),
            decl("headcount", AttributeType::Integer, false),
            decl("remote", AttributeType::Boolean, false),
            decl("started", AttributeType::Timestamp, false),
            decl("skills", AttributeType::List, false),
        ];
        let p = Declarative::compile(
            &config(&[("costCenter", "upper(departmentNumber)"), ("started", "createTimestamp")]),
            &schema,
        )
        .expect("compiles");
        let source = roster_wire::pack([
            ("departmentNumber", ["cc-7"].as_slice()),
            ("createTimestamp", ["20240131120000Z"].as_slice()),
        ]);
        let mapped = roster_wire::pack([
            ("custom.headcount", [" 12 "].as_slice()),
            ("custom.remote", ["YES"].as_slice()),
            ("custom.skills", ["rust", "ldap"].as_slice()),
        ]);
        let entry = Entry::new("a1", None, EntryKind::User, &source).expect("entry");
        let user = MappedUser { entry, mapped: Attrs::parse(&mapped).expect("mapped") };
        let out: BTreeMap<_, _> = p.compute_user(&user).expect("computes").into_iter().collect();
        assert_eq!(out["costCenter"], ["CC-7"]);
        assert_eq!(out["headcount"], ["12"]);
        assert_eq!(out["remote"], ["true"]);
        assert_eq!(out["started"], ["2024-01-31T12:00:00Z"]);
        assert_eq!(out["skills"], ["rust", "ldap"]);
    }

    #[test]
    fn misfits_and_bad_config_name_the_attribute() {
        let schema = [decl("headcount", AttributeType::Integer, true)];
        let p = Declarative::compile(&config(&[("headcount", "employeeCount")]), &schema).expect("compiles");
        let source = roster_wire::pack([("employeeCount", ["many"].as_slice())]);
        let empty = roster_wire::pack::<&str, &str>([]);
        let user = MappedUser {
            entry: Entry::new("a1", None, EntryKind::User, &source).expect("entry"),
            mapped: Attrs::parse(&empty).expect("mapped"),
        };
        let err = p.compute_user(&user).expect_err("not an integer");
        assert!(err.contains("'headcount'") && err.contains("not an integer"), "{err}");

        let errors = Declarative::compile(&config(&[("headcont", "x"), ("headcount", "lower(")]), &schema)
            .err()
            .expect("rejected");
        assert!(errors.iter().any(|e| e.key == "headcont" && e.message.contains("did you mean 'headcount'")));
        assert!(errors.iter().any(|e| e.key == "headcount" && e.position.is_some()));
    }
}
