//! Roster's built-in mapping plugin: SCIM attributes computed from source
//! attributes by small expressions written in the tenant's configuration.
//!
//! ```toml
//! user = { userName = "lower(uid)", "name.givenName" = "givenName", displayName = "coalesce(displayName, join(' ', givenName, sn))", email = "lower(mail)" }
//! group = { displayName = "coalesce(displayName, cn)" }
//! skip_user_if = "not(present(mail))"     # optional: truthy → the user is skipped
//! skip_group_if = "starts_with(cn, 'tmp-')" # optional
//! ```
//!
//! * `user` / `group`: SCIM attribute name → expression. A nested table is read
//!   as a dotted name (`name = { givenName = "givenName" }` is
//!   `"name.givenName"`). A table given replaces the defaults entirely; `user`
//!   needs `userName` and `group` needs `displayName`. `externalId` is the
//!   anchor and cannot be mapped.
//! * `skip_user_if` / `skip_group_if`: an expression; when truthy the entry is
//!   skipped, with the expression as the reason.
//! * Any other key is an error.
//!
//! Defaults: users get `userName = lower(coalesce(uid, sAMAccountName,
//! userPrincipalName, mail, cn))`, `name.givenName = givenName`,
//! `name.familyName = coalesce(sn, surname)`, `displayName = coalesce(displayName, join(' ',
//! givenName, sn), cn)`, `email = lower(first(mail))`, `active = active`; groups get
//! `displayName = coalesce(displayName, cn)`.
//!
//! Each mapped attribute gets every non-empty value of its expression (several
//! values make a multi-valued attribute); an expression with no non-empty value
//! leaves the attribute out, except for the required one (`userName`,
//! `displayName` for groups), whose absence makes the entry an error. The
//! language itself is described in [`expr`].
//!
//! Every expression is parsed once, in `init`; errors name the dotted key
//! (`user.displayName`) and the character position in the expression.

pub use roster_expr as expr;

use roster_plugin_sdk::prelude::*;

use crate::expr::Expr;

/// The top-level configuration keys.
pub const KEYS: &[&str] = &["user", "group", "skip_user_if", "skip_group_if"];

/// The user mapping used when the configuration has no `user` table.
pub const DEFAULT_USER: &[(&str, &str)] = &[
    ("userName", "lower(coalesce(uid, sAMAccountName, userPrincipalName, mail, cn))"),
    ("name.givenName", "givenName"),
    ("name.familyName", "coalesce(sn, surname)"),
    ("displayName", "coalesce(displayName, join(' ', givenName, sn), cn)"),
    ("email", "lower(first(mail))"),
    // Sources that know whether an account may sign in say so in `active`
    // (the Active Directory source, from userAccountControl and accountExpires).
    ("active", "active"),
];

/// The group mapping used when the configuration has no `group` table.
pub const DEFAULT_GROUP: &[(&str, &str)] = &[("displayName", "coalesce(displayName, cn)")];

/// One output attribute and the expression computing it.
#[derive(Debug, Clone)]
struct Rule {
    attribute: String,
    expr: Expr,
}

/// The mapping for one kind of entry.
#[derive(Debug, Clone)]
struct KindRules {
    /// The required attribute comes first.
    rules: Vec<Rule>,
    skip_if: Option<(String, Expr)>,
}

/// The compiled configuration: the plugin instance.
#[derive(Debug, Clone)]
pub struct Declarative {
    user: KindRules,
    group: KindRules,
}

impl Declarative {
    /// Checks and compiles the configuration, reporting every problem.
    pub fn compile(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let mut errors = config.unknown_keys(KEYS);
        let user = compile_kind(config, "user", "skip_user_if", "userName", DEFAULT_USER, &mut errors);
        let group = compile_kind(config, "group", "skip_group_if", "displayName", DEFAULT_GROUP, &mut errors);
        if errors.is_empty() { Ok(Self { user, group }) } else { Err(errors) }
    }

    /// Maps one entry.
    pub fn map_entry(&self, entry: &Entry<'_>) -> MapResult {
        let kind = match entry.kind() {
            EntryKind::User => &self.user,
            EntryKind::Group => &self.group,
        };
        let attrs = entry.attrs();
        if let Some((key, cond)) = &kind.skip_if
            && cond.is_true(attrs)
        {
            return MapResult::skip(format!("{key} matched: {cond}"));
        }
        let mut out = Output::for_entry(entry);
        for (i, rule) in kind.rules.iter().enumerate() {
            let values = rule.expr.eval(attrs);
            let mut values = values.iter().filter(|v| !v.is_empty()).peekable();
            if values.peek().is_none() {
                if i == 0 {
                    return MapResult::error(format!(
                        "{} is empty: expression '{}' gave no value",
                        rule.attribute, rule.expr
                    ));
                }
                continue;
            }
            out.set_all(&rule.attribute, values);
        }
        out.finish()
    }
}

impl Mapper for Declarative {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        Self::compile(config)
    }

    fn map(&mut self, entry: &Entry<'_>) -> MapResult {
        self.map_entry(entry)
    }
}

roster_plugin_sdk::export_mapper!(Declarative);

fn compile_expr(key: &str, source: &str, errors: &mut Vec<ConfigError>) -> Option<Expr> {
    expr::parse(source).map_err(|e| errors.push(ConfigError::new(key, e.message).at(e.position))).ok()
}

fn compile_kind(
    config: &Config,
    table_key: &str,
    skip_key: &str,
    required: &str,
    defaults: &[(&str, &str)],
    errors: &mut Vec<ConfigError>,
) -> KindRules {
    let mut rules = Vec::new();
    match config.get(table_key) {
        None => {
            for (attribute, source) in defaults {
                let key = format!("{table_key}.{attribute}");
                if let Some(expr) = compile_expr(&key, source, errors) {
                    rules.push(Rule { attribute: attribute.to_string(), expr });
                }
            }
        }
        Some(ConfigValue::Table(table)) => {
            let before = errors.len();
            collect_rules(table_key, "", table, &mut rules, errors);
            let has_required = rules.iter().any(|r| r.attribute.eq_ignore_ascii_case(required));
            // Don't claim it is missing when it is there but did not parse.
            let failed_required =
                errors[before..].iter().any(|e| e.key.eq_ignore_ascii_case(&format!("{table_key}.{required}")));
            if !has_required && !failed_required {
                errors.push(ConfigError::new(
                    table_key,
                    format!("'{required}' is required: add {required} = \"<expression>\""),
                ));
            }
        }
        Some(other) => errors.push(ConfigError::new(
            table_key,
            format!("expected a table of SCIM attribute = \"expression\", found {}", other.type_name()),
        )),
    }
    // The required attribute first: `map_entry` checks it before anything else.
    if let Some(i) = rules.iter().position(|r| r.attribute.eq_ignore_ascii_case(required)) {
        let rule = rules.remove(i);
        rules.insert(0, rule);
    }
    let skip_if = match config.get(skip_key) {
        None => None,
        Some(ConfigValue::Text(source)) => compile_expr(skip_key, source, errors).map(|e| (skip_key.to_string(), e)),
        Some(other) => {
            errors.push(ConfigError::new(
                skip_key,
                format!("expected an expression string, found {}", other.type_name()),
            ));
            None
        }
    };
    KindRules { rules, skip_if }
}

/// Reads `attribute = "expression"` pairs, flattening nested tables into
/// dotted attribute names.
fn collect_rules(
    table_key: &str,
    prefix: &str,
    table: &std::collections::BTreeMap<String, ConfigValue>,
    rules: &mut Vec<Rule>,
    errors: &mut Vec<ConfigError>,
) {
    for (name, value) in table {
        let attribute = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        let key = format!("{table_key}.{attribute}");
        if attribute.trim().is_empty() {
            errors.push(ConfigError::new(key, "empty attribute name"));
            continue;
        }
        if attribute.eq_ignore_ascii_case("externalId") {
            errors.push(ConfigError::new(key, "externalId is the entry's anchor and cannot be mapped"));
            continue;
        }
        match value {
            ConfigValue::Text(source) => {
                if let Some(expr) = compile_expr(&key, source, errors) {
                    rules.push(Rule { attribute, expr });
                }
            }
            ConfigValue::Table(sub) => collect_rules(table_key, &attribute, sub, rules, errors),
            other => errors
                .push(ConfigError::new(key, format!("expected an expression string, found {}", other.type_name()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use roster_plugin_sdk::roster_wire::Packer;

    use super::*;

    fn text(s: &str) -> ConfigValue {
        ConfigValue::Text(s.to_string())
    }

    fn table(pairs: &[(&str, ConfigValue)]) -> ConfigValue {
        ConfigValue::Table(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn config(pairs: &[(&str, ConfigValue)]) -> Config {
        Config::from_value(table(pairs))
    }

    fn errors(c: &Config) -> Vec<(String, Option<u32>, String)> {
        Declarative::compile(c)
            .expect_err("config should be rejected")
            .into_iter()
            .map(|e| (e.key, e.position, e.message))
            .collect()
    }

    /// Maps one entry and returns the result, with mapped attributes decoded.
    fn run(
        d: &Declarative,
        kind: EntryKind,
        attrs: &[(&str, &[&str])],
    ) -> Result<BTreeMap<String, Vec<String>>, MapResult> {
        let mut p = Packer::new();
        for (n, v) in attrs {
            p.attr(n, v);
        }
        let buf = p.finish();
        let entry = Entry::new("anchor-1", Some("uid=x,dc=example"), kind, &buf).unwrap();
        match d.map_entry(&entry) {
            MapResult::Mapped(m) => {
                assert_eq!(m.kind, kind, "kind is copied from the entry");
                let decoded = m.attrs().unwrap();
                Ok(decoded
                    .iter()
                    .map(|a| {
                        let vals = a.values().map(|v| String::from_utf8(v.to_vec()).unwrap());
                        (a.name.to_string(), vals.collect())
                    })
                    .collect())
            }
            other => Err(other),
        }
    }

    fn map_of(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn defaults_map_ldap_and_active_directory_users_and_groups() {
        let d = Declarative::compile(&Config::empty()).unwrap();
        let ldap = run(
            &d,
            EntryKind::User,
            &[
                ("uid", &["JMüller"]),
                ("givenName", &["Jürgen"]),
                ("sn", &["Müller"]),
                ("mail", &["J.Mueller@Example.COM", "jm@example.com"]),
            ],
        )
        .unwrap();
        assert_eq!(
            ldap,
            map_of(&[
                ("userName", &["jmüller"]),
                ("name.givenName", &["Jürgen"]),
                ("name.familyName", &["Müller"]),
                ("displayName", &["Jürgen Müller"]),
                ("email", &["j.mueller@example.com"]),
            ])
        );
        let ad =
            run(&d, EntryKind::User, &[("sAMAccountName", &["ÉVA"]), ("cn", &["Éva"]), ("displayName", &["Éva K."])])
                .unwrap();
        assert_eq!(ad, map_of(&[("userName", &["éva"]), ("displayName", &["Éva K."])]));

        let group = run(&d, EntryKind::Group, &[("cn", &["staff"])]).unwrap();
        assert_eq!(group, map_of(&[("displayName", &["staff"])]));
    }

    #[test]
    fn required_attributes_missing_make_an_error_result() {
        let d = Declarative::compile(&Config::empty()).unwrap();
        assert_eq!(
            run(&d, EntryKind::Group, &[("member", &["uid=a"])]),
            Err(MapResult::error("displayName is empty: expression 'coalesce(displayName, cn)' gave no value"))
        );
        let d = Declarative::compile(&config(&[("user", table(&[("userName", text("lower(uid)"))]))])).unwrap();
        assert_eq!(
            run(&d, EntryKind::User, &[("cn", &["x"])]),
            Err(MapResult::error("userName is empty: expression 'lower(uid)' gave no value"))
        );
    }

    #[test]
    fn configured_tables_replace_the_defaults_and_allow_multi_values() {
        let c = config(&[
            (
                "user",
                table(&[
                    ("userName", text("lower(uid)")),
                    ("name.givenName", text("givenName")),
                    ("displayName", text("coalesce(displayName, join(' ', givenName, sn))")),
                    ("emails", text("lower(mail)")),
                    ("active", text("if(eq(employeeType, 'former'), 'false', 'true')")),
                ]),
            ),
            ("group", table(&[("displayName", text("upper(cn)"))])),
        ]);
        let d = Declarative::compile(&c).unwrap();
        let user = run(
            &d,
            EntryKind::User,
            &[("uid", &["JDoe"]), ("sn", &["Doe"]), ("mail", &["A@x.org", "b@X.org"]), ("cn", &["ignored"])],
        )
        .unwrap();
        assert_eq!(
            user,
            map_of(&[
                ("userName", &["jdoe"]),
                ("displayName", &["Doe"]),
                ("emails", &["a@x.org", "b@x.org"]),
                ("active", &["true"]),
            ])
        );
        let group = run(&d, EntryKind::Group, &[("cn", &["ünits"])]).unwrap();
        assert_eq!(group, map_of(&[("displayName", &["ÜNITS"])]));
    }

    #[test]
    fn nested_tables_become_dotted_attribute_names() {
        let c = config(&[(
            "user",
            table(&[("userName", text("uid")), ("name", table(&[("familyName", text("upper(sn)"))]))]),
        )]);
        let d = Declarative::compile(&c).unwrap();
        let user = run(&d, EntryKind::User, &[("uid", &["a"]), ("sn", &["b"])]).unwrap();
        assert_eq!(user, map_of(&[("userName", &["a"]), ("name.familyName", &["B"])]));
    }

    #[test]
    fn skip_conditions() {
        let c =
            config(&[("skip_user_if", text("not(present(mail))")), ("skip_group_if", text("starts_with(cn, 'tmp-')"))]);
        let d = Declarative::compile(&c).unwrap();
        assert_eq!(
            run(&d, EntryKind::User, &[("uid", &["a"])]),
            Err(MapResult::skip("skip_user_if matched: not(present(mail))"))
        );
        assert!(run(&d, EntryKind::User, &[("uid", &["a"]), ("mail", &["a@x"])]).is_ok());
        assert_eq!(
            run(&d, EntryKind::Group, &[("cn", &["tmp-1"])]),
            Err(MapResult::skip("skip_group_if matched: starts_with(cn, 'tmp-')"))
        );
        assert!(run(&d, EntryKind::Group, &[("cn", &["staff"])]).is_ok());
        // A user-side condition does not apply to groups.
        assert!(run(&d, EntryKind::Group, &[("cn", &["x"])]).is_ok());
    }

    #[test]
    fn expression_errors_name_the_dotted_key_and_position() {
        let c = config(&[(
            "user",
            table(&[
                ("userName", text("lower(uid)")),
                ("displayName", text("coalesce(displayName, coalese(cn, uid))")),
                ("name", table(&[("givenName", text("lower(givenName"))])),
            ]),
        )]);
        assert_eq!(
            errors(&c),
            vec![
                (
                    "user.displayName".to_string(),
                    Some(22),
                    "unknown function 'coalese' (did you mean 'coalesce'?)".to_string()
                ),
                (
                    "user.name.givenName".to_string(),
                    Some(15),
                    "missing ')' to close 'lower(' opened at position 0".to_string()
                ),
            ]
        );
        let c = config(&[("skip_group_if", text("eq(cn)"))]);
        assert_eq!(
            errors(&c),
            vec![("skip_group_if".to_string(), Some(0), "eq() takes exactly 2 arguments, got 1".to_string())]
        );
    }

    #[test]
    fn structural_config_errors() {
        let c = config(&[("usr", table(&[])), ("group", text("cn")), ("skip_user_if", ConfigValue::Boolean(true))]);
        let errs = errors(&c);
        let keys: Vec<_> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(keys, ["usr", "skip_user_if", "group"]);
        assert_eq!(errs[0].2, "unknown key 'usr' (did you mean 'user'?)");
        assert_eq!(errs[1].2, "expected an expression string, found boolean");
        assert!(errs[2].2.contains("expected a table"), "{}", errs[2].2);

        let c = config(&[(
            "user",
            table(&[("displayName", text("cn")), ("externalId", text("uid")), ("active", ConfigValue::Integer(1))]),
        )]);
        let errs = errors(&c);
        assert_eq!(errs.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["user.active", "user.externalId", "user"]);
        assert!(errs[2].2.contains("'userName' is required"), "{}", errs[2].2);

        // A userName that fails to parse is not also reported as missing.
        let c = config(&[("user", table(&[("userName", text("lower("))]))]);
        assert_eq!(errors(&c).len(), 1);

        let not_a_table = Config::from_value(text("x"));
        assert_eq!(errors(&not_a_table)[0].2, "expected a table, found string");
    }

    #[test]
    fn defaults_compile() {
        for (_, src) in DEFAULT_USER.iter().chain(DEFAULT_GROUP) {
            expr::parse(src).unwrap();
        }
    }
}
