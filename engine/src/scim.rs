//! SCIM 2.0 resources (RFC 7643) built from the store, for `--json` output.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde_json::{Map, Value, json};

use crate::model::{Attributes, Stored, is_active};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// Membership graph of a tenant, for direct and nested (indirect) groups.
pub struct Directory<'a> {
    groups: HashMap<&'a str, &'a Stored>,
    /// member id → groups that list it directly
    parents: HashMap<&'a str, Vec<&'a str>>,
    /// group id → direct members
    members: BTreeMap<&'a str, Vec<&'a str>>,
    kinds: HashMap<&'a str, &'static str>,
    /// id → userName / displayName, for member `display` values.
    labels: HashMap<&'a str, &'a str>,
    custom: Option<&'a crate::custom_attrs::Schema>,
}

impl<'a> Directory<'a> {
    pub fn new(users: &'a [Stored], groups: &'a [Stored], memberships: &'a [(String, String)]) -> Self {
        let mut parents: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut members: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (g, m) in memberships {
            parents.entry(m.as_str()).or_default().push(g.as_str());
            members.entry(g.as_str()).or_default().push(m.as_str());
        }
        let mut kinds = HashMap::new();
        for u in users {
            kinds.insert(u.id.as_str(), "User");
        }
        for g in groups {
            kinds.insert(g.id.as_str(), "Group");
        }
        // Built once: group_resource runs per group, and a per-call map made
        // listing a large directory quadratic.
        let labels = users.iter().chain(groups.iter()).map(|o| (o.id.as_str(), o.label())).collect();
        Self {
            groups: groups.iter().map(|g| (g.id.as_str(), g)).collect(),
            parents,
            members,
            kinds,
            labels,
            custom: None,
        }
    }

    /// Types custom attributes per the tenant's schema in user resources.
    pub fn with_custom_schema(mut self, schema: &'a crate::custom_attrs::Schema) -> Self {
        self.custom = Some(schema);
        self
    }

    /// Every group the object belongs to, with `direct` or `indirect`. Cycle-safe.
    pub fn groups_of(&self, id: &str) -> Vec<(&'a Stored, &'static str)> {
        let mut out = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue: VecDeque<(&str, bool)> = VecDeque::new();
        for g in self.parents.get(id).into_iter().flatten() {
            queue.push_back((g, true));
        }
        while let Some((g, direct)) = queue.pop_front() {
            if !seen.insert(g) || g == id {
                continue;
            }
            if let Some(group) = self.groups.get(g) {
                out.push((*group, if direct { "direct" } else { "indirect" }));
            }
            for p in self.parents.get(g).into_iter().flatten() {
                queue.push_back((p, false));
            }
        }
        out.sort_by(|a, b| (a.1, a.0.label()).cmp(&(b.1, b.0.label())));
        out
    }

    pub fn user_resource(&self, u: &Stored) -> Value {
        let mut obj = Map::new();
        obj.insert("schemas".into(), json!([USER_SCHEMA]));
        obj.insert("id".into(), json!(u.id));
        obj.insert("externalId".into(), json!(u.anchor));
        put_attributes(&mut obj, &u.attrs, &["active"]);
        obj.insert("active".into(), json!(is_active(&u.attrs)));
        let groups: Vec<Value> = self
            .groups_of(&u.id)
            .into_iter()
            .map(|(g, t)| json!({ "value": g.id, "display": g.label(), "type": t, "$ref": format!("Groups/{}", g.id) }))
            .collect();
        obj.insert("groups".into(), Value::Array(groups));
        let empty = crate::custom_attrs::Schema::new();
        if let Some(ext) = crate::custom_attrs::scim_extension(self.custom.unwrap_or(&empty), &u.attrs) {
            obj.insert("schemas".into(), json!([USER_SCHEMA, crate::custom_attrs::SCHEMA_URN]));
            obj.insert(crate::custom_attrs::SCHEMA_URN.into(), ext);
        }
        obj.insert("meta".into(), meta("User", u));
        Value::Object(obj)
    }

    pub fn group_resource(&self, g: &Stored) -> Value {
        let mut obj = Map::new();
        obj.insert("schemas".into(), json!([GROUP_SCHEMA]));
        obj.insert("id".into(), json!(g.id));
        obj.insert("externalId".into(), json!(g.anchor));
        put_attributes(&mut obj, &g.attrs, &[]);
        let members: Vec<Value> = self
            .members
            .get(g.id.as_str())
            .into_iter()
            .flatten()
            .map(|m| {
                let kind = self.kinds.get(m).copied().unwrap_or("User");
                json!({ "value": m, "display": self.labels.get(m).copied().unwrap_or(""), "type": kind, "$ref": format!("{kind}s/{m}") })
            })
            .collect();
        obj.insert("members".into(), Value::Array(members));
        obj.insert("meta".into(), meta("Group", g));
        Value::Object(obj)
    }
}

fn meta(resource_type: &str, o: &Stored) -> Value {
    json!({
        "resourceType": resource_type,
        "created": o.created_at,
        "lastModified": o.updated_at,
        "version": format!("W/\"{}\"", o.version),
    })
}

/// Mapped attributes → SCIM JSON. Dotted paths become sub-objects (`name.givenName`);
/// `email`/`emails` become the multi-valued `emails` with the first one primary.
/// A SCIM resource body from mapped attributes, for pushing to an
/// application: core attributes only (custom attributes, groups and
/// memberships travel separately).
pub fn push_body(schema: &str, anchor: &str, attrs: &Attributes) -> Value {
    let mut obj = Map::new();
    obj.insert("schemas".into(), json!([schema]));
    obj.insert("externalId".into(), json!(anchor));
    put_attributes(&mut obj, attrs, &["active"]);
    if schema == USER_SCHEMA {
        obj.insert("active".into(), json!(crate::model::is_active(attrs)));
    }
    Value::Object(obj)
}

fn put_attributes(obj: &mut Map<String, Value>, attrs: &Attributes, skip: &[&str]) {
    let mut emails: Vec<String> = Vec::new();
    for (k, v) in attrs {
        if skip.contains(&k) || v.is_empty() {
            continue;
        }
        match k {
            "email" | "emails" => {
                for e in v {
                    if !emails.iter().any(|have| have == e) {
                        emails.push(e.to_string());
                    }
                }
            }
            "id" | "externalId" | "schemas" | "meta" | "groups" | "members" => {}
            _ if k.starts_with(crate::custom_attrs::PREFIX) => {}
            "roles" => {
                let list: Vec<Value> =
                    v.iter().enumerate().map(|(i, r)| json!({ "value": r, "primary": i == 0 })).collect();
                obj.insert("roles".into(), Value::Array(list));
            }
            _ => {
                let value = if v.len() == 1 { json!(v.first()) } else { json!(v) };
                let mut parts = k.split('.');
                let head = parts.next().unwrap_or(k);
                let rest: Vec<&str> = parts.collect();
                if rest.is_empty() {
                    obj.insert(head.to_string(), value);
                } else {
                    let mut cur = obj.entry(head.to_string()).or_insert_with(|| Value::Object(Map::new()));
                    for (i, part) in rest.iter().enumerate() {
                        if !cur.is_object() {
                            *cur = Value::Object(Map::new());
                        }
                        let Value::Object(m) = cur else { break };
                        if i + 1 == rest.len() {
                            m.insert(part.to_string(), value.clone());
                            break;
                        }
                        cur = m.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
                    }
                }
            }
        }
    }
    if !emails.is_empty() {
        let list: Vec<Value> =
            emails.iter().enumerate().map(|(i, e)| json!({ "value": e, "type": "work", "primary": i == 0 })).collect();
        obj.insert("emails".into(), Value::Array(list));
    }
}
