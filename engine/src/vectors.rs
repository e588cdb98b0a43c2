//! Test vectors for the plugin kinds after the mapper: what a plugin author
//! ships beside a custom-attributes, role-assigner or conflict-resolver plugin
//! (`NAME.vectors.json`), run at upload like a mapper's. Each is an input and
//! the output the plugin must give for it.
//!
//! ```json
//! [{ "name": "badge from employeeNumber",
//!    "entry": { "anchor": "a1", "kind": "user", "attributes": { "employeeNumber": "42" } },
//!    "mapped": { "userName": "jdoe" },
//!    "expect": { "attributes": { "badge": "B-42" } } }]
//! ```
//! ```json
//! [{ "user": { "anchor": "u1", "attributes": { "userName": "jdoe" } },
//!    "groups": [{ "anchor": "g1", "name": "admins", "depth": 1 }],
//!    "expect": { "roles": ["admin"] } }]
//! ```
//! ```json
//! [{ "conflict": { "kind": "duplicate-key", "key": "userName", "value": "jdoe",
//!                  "claimants": [{ "source": "hr", "anchor": "a1", "stored_since": "2024-01-01T00:00:00Z" },
//!                                { "source": "hr", "anchor": "a2" }] },
//!    "expect": { "keep": 0 } }]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::model::Attributes;
use crate::plugin_host::{
    Claimant, ConflictInput, ConflictKindInput, DecisionOutput, GroupInput, MappedUserInput, PluginError,
    PluginInstance, PluginKind, RoleOutcome, UserGroupsInput,
};
use crate::registry::{OneOrMany, VectorEntry};

fn attrs(m: &BTreeMap<String, OneOrMany>) -> Attributes {
    m.iter().map(|(k, v)| (k.clone(), v.clone().into_vec())).collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomVector {
    #[serde(default)]
    name: Option<String>,
    entry: VectorEntry,
    /// The mapper's output for the entry (what the plugin receives as `mapped`).
    #[serde(default)]
    mapped: BTreeMap<String, OneOrMany>,
    expect: CustomExpectation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum CustomExpectation {
    Attributes(BTreeMap<String, OneOrMany>),
    Error(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesVector {
    #[serde(default)]
    name: Option<String>,
    user: VectorUser,
    #[serde(default)]
    groups: Vec<VectorGroup>,
    expect: RolesExpectation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorUser {
    anchor: String,
    #[serde(default)]
    attributes: BTreeMap<String, OneOrMany>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorGroup {
    anchor: String,
    #[serde(default)]
    dn: Option<String>,
    name: String,
    #[serde(default = "direct")]
    depth: u32,
}

fn direct() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum RolesExpectation {
    Roles(Vec<String>),
    Error(String),
}

/// A conflict as JSON, for resolver vectors and `roster plugin test`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictJson {
    kind: String,
    key: String,
    value: String,
    claimants: Vec<ClaimantJson>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimantJson {
    source: String,
    anchor: String,
    #[serde(default)]
    dn: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    stored_since: Option<String>,
    #[serde(default)]
    chosen_by_admin: bool,
}

impl ConflictJson {
    pub fn into_input(self) -> Result<ConflictInput, String> {
        let kind = match self.kind.as_str() {
            "duplicate-key" => ConflictKindInput::DuplicateKey,
            "same-person" => ConflictKindInput::SamePerson,
            "app-edit" => ConflictKindInput::AppEdit,
            other => return Err(format!("kind '{other}' (expected duplicate-key, same-person or app-edit)")),
        };
        Ok(ConflictInput {
            kind,
            key: self.key,
            value: self.value,
            claimants: self
                .claimants
                .into_iter()
                .map(|k| Claimant {
                    source: k.source,
                    anchor: k.anchor,
                    dn: k.dn,
                    attributes: attrs(&k.attributes),
                    stored_since: k.stored_since,
                    chosen_by_admin: k.chosen_by_admin,
                })
                .collect(),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverVector {
    #[serde(default)]
    name: Option<String>,
    conflict: ConflictJson,
    expect: DecisionExpectation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum DecisionExpectation {
    Keep(usize),
    /// `true`, or a text the reason must contain.
    Quarantine(serde_json::Value),
    Rename(Vec<String>),
    Merge {
        primary: usize,
        attributes: BTreeMap<String, OneOrMany>,
    },
}

/// The vectors of one plugin, by kind.
pub enum KindVectors {
    CustomAttributes(Vec<CustomVector>),
    RoleAssigner(Vec<RolesVector>),
    ConflictResolver(Vec<ResolverVector>),
}

impl KindVectors {
    pub fn len(&self) -> usize {
        match self {
            KindVectors::CustomAttributes(v) => v.len(),
            KindVectors::RoleAssigner(v) => v.len(),
            KindVectors::ConflictResolver(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the vectors file of a plugin of `kind` (not a mapper).
pub fn load(path: &Path, kind: PluginKind) -> Result<KindVectors, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let at = |e: serde_json::Error| format!("line {}, column {}: {e}", e.line(), e.column());
    Ok(match kind {
        PluginKind::CustomAttributes => KindVectors::CustomAttributes(serde_json::from_str(&text).map_err(at)?),
        PluginKind::RoleAssigner => KindVectors::RoleAssigner(serde_json::from_str(&text).map_err(at)?),
        PluginKind::ConflictResolver => KindVectors::ConflictResolver(serde_json::from_str(&text).map_err(at)?),
        PluginKind::Mapper => return Err("mapper vectors are read by registry::load_vectors".into()),
        PluginKind::Connector => return Err("connectors have no test vectors; test them against a server".into()),
    })
}

/// Runs the vectors; one line per failure.
pub fn run(instance: &mut PluginInstance, vectors: &KindVectors) -> Result<Vec<String>, PluginError> {
    let mut failures = Vec::new();
    let label = |name: &Option<String>, i: usize| name.clone().unwrap_or_else(|| format!("vector {}", i + 1));
    let call_failed = |e: PluginError, failures: &mut Vec<String>, l: String| -> Result<(), PluginError> {
        match e {
            PluginError::Call { failure, .. } => {
                failures.push(format!("  {l}: the plugin {failure}"));
                Ok(())
            }
            e => Err(e),
        }
    };
    match vectors {
        KindVectors::CustomAttributes(vs) => {
            for (i, v) in vs.iter().enumerate() {
                let entry = v.entry.to_source_entry();
                let mapped = attrs(&v.mapped);
                let input = MappedUserInput { entry: &entry, mapped: &mapped };
                let got = match instance.compute(std::slice::from_ref(&input)) {
                    Ok(mut r) => r.pop(),
                    Err(e) => {
                        call_failed(e, &mut failures, label(&v.name, i))?;
                        continue;
                    }
                };
                let ok = match (&v.expect, &got) {
                    (CustomExpectation::Attributes(want), Some(Ok(have))) => attrs(want) == *have,
                    (CustomExpectation::Error(text), Some(Err(message))) => message.contains(text.as_str()),
                    _ => false,
                };
                if !ok {
                    failures.push(format!("  {}: expected {:?}, got {got:?}", label(&v.name, i), v.expect));
                }
            }
        }
        KindVectors::RoleAssigner(vs) => {
            for (i, v) in vs.iter().enumerate() {
                let groups: Vec<GroupInput> = v
                    .groups
                    .iter()
                    .map(|g| GroupInput { anchor: g.anchor.clone(), dn: g.dn.clone(), name: g.name.clone() })
                    .collect();
                let user_attrs = attrs(&v.user.attributes);
                let user = UserGroupsInput {
                    anchor: &v.user.anchor,
                    attributes: &user_attrs,
                    groups: v.groups.iter().enumerate().map(|(n, g)| (n as u32, g.depth)).collect(),
                };
                let got = match instance.assign(&groups, std::slice::from_ref(&user)) {
                    Ok(mut r) => r.pop(),
                    Err(e) => {
                        call_failed(e, &mut failures, label(&v.name, i))?;
                        continue;
                    }
                };
                let ok = match (&v.expect, &got) {
                    (RolesExpectation::Roles(want), Some(RoleOutcome::Roles(have))) => want == have,
                    (RolesExpectation::Error(text), Some(RoleOutcome::Error(message))) => {
                        message.contains(text.as_str())
                    }
                    _ => false,
                };
                if !ok {
                    failures.push(format!("  {}: expected {:?}, got {got:?}", label(&v.name, i), v.expect));
                }
            }
        }
        KindVectors::ConflictResolver(vs) => {
            for (i, v) in vs.iter().enumerate() {
                let conflict = match v.conflict.clone().into_input() {
                    Ok(c) => c,
                    Err(e) => {
                        failures.push(format!("  {}: {e}", label(&v.name, i)));
                        continue;
                    }
                };
                let got = match instance.resolve(std::slice::from_ref(&conflict)) {
                    Ok(mut r) => r.pop(),
                    Err(e) => {
                        call_failed(e, &mut failures, label(&v.name, i))?;
                        continue;
                    }
                };
                let ok = match (&v.expect, &got) {
                    (DecisionExpectation::Keep(want), Some(DecisionOutput::Keep(have))) => want == have,
                    (DecisionExpectation::Quarantine(want), Some(DecisionOutput::Quarantine(reason))) => match want {
                        serde_json::Value::String(text) => reason.contains(text.as_str()),
                        serde_json::Value::Bool(b) => *b,
                        _ => false,
                    },
                    (DecisionExpectation::Rename(want), Some(DecisionOutput::Rename(have))) => want == have,
                    (
                        DecisionExpectation::Merge { primary, attributes },
                        Some(DecisionOutput::Merge { primary: p, attributes: a }),
                    ) => primary == p && attrs(attributes) == *a,
                    _ => false,
                };
                if !ok {
                    failures.push(format!("  {}: expected {:?}, got {got:?}", label(&v.name, i), v.expect));
                }
            }
        }
    }
    Ok(failures)
}
