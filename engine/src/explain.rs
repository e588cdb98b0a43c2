//! `roster explain`: one entry's way through the pipeline, for an admin asking
//! "why does this user look like that?" — its source attributes, whether it is
//! in scope, what the mapper made of it, what is stored, and any quarantine.

use std::fmt::Write as _;

use crate::config::{Config, TenantConfig};
use crate::dn::normalize_dn;
use crate::model::object_id;
use crate::plugin_host::{MapOutcome, PluginError, PluginHost};
use crate::plugin_host::{MappedUserInput, PluginKind};
use crate::scope::OuScope;
use crate::source::{SourceEntry, SourceItem};
use crate::store::Store;
use crate::sync::{SyncError, instantiate, instantiate_mapper, open_source};

/// Builds the report for the entry whose anchor or DN is `key`.
/// `Ok(None)`: no source of the tenant has such an entry.
pub fn explain(
    config: &Config,
    tenant: &TenantConfig,
    host: &PluginHost,
    store: &mut dyn Store,
    key: &str,
) -> Result<Option<String>, SyncError> {
    let wanted_dn = normalize_dn(key);
    for source_cfg in &tenant.sources {
        let mut source = open_source(config, tenant, source_cfg, host)?;
        let mut found: Option<SourceItem> = None;
        let mut sink = |item: SourceItem| -> Result<(), String> {
            let hit = match &item {
                SourceItem::Entry(e) => {
                    e.anchor == key || e.dn.as_deref().is_some_and(|d| normalize_dn(d) == wanted_dn)
                }
                SourceItem::Rejected { anchor, dn, .. } => {
                    anchor.as_deref() == Some(key) || dn.as_deref().is_some_and(|d| normalize_dn(d) == wanted_dn)
                }
            };
            if hit {
                found = Some(item);
                return Err("found".into());
            }
            Ok(())
        };
        let read = source.read(&mut sink);
        let Some(item) = found else {
            if let Err(e) = read {
                return Err(SyncError::Source { tenant: tenant.id.clone(), source: e });
            }
            continue;
        };
        let mut out = String::new();
        let entry = match item {
            SourceItem::Rejected { dn, anchor, reason, .. } => {
                let _ = writeln!(
                    out,
                    "Entry {} in source '{}' ({})",
                    dn.as_deref().unwrap_or("(no DN)"),
                    source_cfg.name(),
                    source_cfg.kind()
                );
                let _ = writeln!(out, "  anchor: {}", anchor.as_deref().unwrap_or("(none)"));
                let _ = writeln!(out, "Rejected by the source: {reason}");
                quarantine_section(&mut out, store, tenant, source_cfg.name(), anchor.as_deref())?;
                return Ok(Some(out));
            }
            SourceItem::Entry(e) => e,
        };
        header(&mut out, &entry, source_cfg.name(), source_cfg.kind(), &tenant.privacy);
        let scope = source_cfg.scope();
        let in_ou = OuScope::new(&scope).map(|s| s.contains(entry.dn.as_deref())).unwrap_or(false);
        let _ = writeln!(
            out,
            "Scope: {}{}",
            if in_ou { "in scope" } else { "OUT OF SCOPE: not under any of scope_ous" },
            if scope.groups.is_empty() {
                ""
            } else {
                " (group scope is decided on the whole directory; see `roster users list`)"
            }
        );

        let mut mapper = instantiate_mapper(config, tenant, host, store)?;
        let _ = writeln!(out, "Mapper: plugin {}", mapper.identity());
        let outcome = match mapper.map_batch(&[&entry]) {
            Ok(mut v) if !v.is_empty() => Some(v.remove(0)),
            Ok(_) => None,
            Err(PluginError::Call { failure, .. }) => {
                let _ = writeln!(out, "  FAILED: the plugin {failure}");
                None
            }
            Err(e) => return Err(e.into()),
        };
        match &outcome {
            Some(MapOutcome::Mapped { kind, attrs }) => {
                let _ = writeln!(out, "  mapped {kind}:");
                for (k, v) in attrs {
                    if tenant.privacy.is_sensitive(k) {
                        let _ = writeln!(out, "    {k}: <{} value(s), sensitive: stored as a digest>", v.len());
                    } else {
                        let _ = writeln!(out, "    {k}: {}", show(v));
                    }
                }
            }
            Some(MapOutcome::Skip(reason)) => {
                let _ = writeln!(out, "  SKIPPED: {reason}");
            }
            Some(MapOutcome::Error(message)) => {
                let _ = writeln!(out, "  ERROR: {message}");
            }
            None => {}
        }

        let mut outcome = outcome;
        if let Some(MapOutcome::Mapped { kind: crate::source::EntryKind::User, attrs }) = &mut outcome {
            if crate::sync::stage_active(tenant, store, PluginKind::CustomAttributes)? {
                let mut custom = instantiate(config, tenant, host, store, PluginKind::CustomAttributes)?;
                let _ = writeln!(out, "Custom attributes: plugin {}", custom.identity());
                let input = MappedUserInput { entry: &entry, mapped: attrs };
                let result = custom.compute(std::slice::from_ref(&input)).map(|mut r| r.pop());
                let checked = match result {
                    Ok(Some(Ok(values))) => {
                        crate::custom_attrs::validate(&tenant.custom_attributes, &values).map(|()| values)
                    }
                    Ok(Some(Err(e))) => Err(e),
                    Ok(None) => Err("no result".into()),
                    Err(e) => Err(e.to_string()),
                };
                match checked {
                    Ok(values) => {
                        attrs.retain(|k, _| !k.starts_with(crate::custom_attrs::PREFIX));
                        for (k, v) in values {
                            let _ = writeln!(out, "    {k}: {}", show(&v));
                            attrs.insert(&format!("{}{k}", crate::custom_attrs::PREFIX), v);
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(out, "  ERROR (the entry is quarantined): {e}");
                    }
                }
            }
            if crate::sync::stage_active(tenant, store, PluginKind::RoleAssigner)? {
                let mut roles = instantiate(config, tenant, host, store, PluginKind::RoleAssigner)?;
                let _ = writeln!(out, "Roles: plugin {}, over the stored group memberships", roles.identity());
                // The user as mapped now, in the membership graph as last stored.
                let id = object_id(&tenant.id, source_cfg.name(), entry.kind, &entry.anchor);
                let mut graph: std::collections::HashMap<String, crate::model::Desired> = store
                    .groups(&tenant.id)?
                    .into_iter()
                    .map(|g| {
                        let d = crate::model::Desired {
                            id: g.id.clone(),
                            kind: g.kind,
                            source: g.source,
                            anchor: g.anchor,
                            dn: g.dn,
                            attrs: g.attrs,
                        };
                        (g.id, d)
                    })
                    .collect();
                graph.insert(
                    id.clone(),
                    crate::model::Desired {
                        id: id.clone(),
                        kind: crate::source::EntryKind::User,
                        source: source_cfg.name().to_string(),
                        anchor: entry.anchor.clone(),
                        dn: entry.dn.clone(),
                        attrs: attrs.clone(),
                    },
                );
                let memberships: crate::diff::Memberships = store
                    .memberships(&tenant.id)?
                    .into_iter()
                    .filter(|(g, m)| graph.contains_key(g) && (graph.contains_key(m)))
                    .collect();
                match crate::roles::assign(&mut roles, 1, &mut graph, &memberships) {
                    Ok(failed) if failed.is_empty() => {
                        let assigned =
                            graph.get(&id).and_then(|u| u.attrs.get("roles")).map(|v| v.to_vec()).unwrap_or_default();
                        let _ = writeln!(
                            out,
                            "    roles: {}",
                            if assigned.is_empty() { "(none)".into() } else { show(&assigned) }
                        );
                        if !assigned.is_empty() {
                            attrs.insert("roles", assigned);
                        }
                    }
                    Ok(failed) => {
                        for (_, why) in failed {
                            let _ = writeln!(out, "  ERROR (the entry is quarantined): {why}");
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }

        let id = object_id(&tenant.id, source_cfg.name(), entry.kind, &entry.anchor);
        let snapshot = store.snapshot(&tenant.id, source_cfg.name())?;
        match snapshot.objects.get(&id) {
            Some(stored) => {
                let _ = writeln!(out, "Stored: id {id}, version {}, updated {}", stored.version, stored.updated_at);
                if let Some(MapOutcome::Mapped { attrs, .. }) = &outcome {
                    let keys: std::collections::BTreeSet<&str> = stored.attrs.keys().chain(attrs.keys()).collect();
                    let mut differs = false;
                    if stored.dn != entry.dn {
                        differs = true;
                        let _ = writeln!(
                            out,
                            "  dn: {:?} → {:?} (next run)",
                            stored.dn.as_deref().unwrap_or(""),
                            entry.dn.as_deref().unwrap_or("")
                        );
                    }
                    for k in keys {
                        let old = stored.attrs.get(k).map(|v| v.to_vec()).unwrap_or_default();
                        let new = attrs.get(k).map(|v| v.to_vec()).unwrap_or_default();
                        if tenant.privacy.is_sensitive(k) {
                            // The store holds a digest; the mapper's output is clear text.
                            let digest: Vec<String> =
                                new.iter().map(|x| crate::config::PrivacyConfig::digest(&id, k, x)).collect();
                            if old != digest {
                                differs = true;
                                let _ = writeln!(out, "  {k}: <sensitive> changes (next run)");
                            }
                            continue;
                        }
                        if old != new {
                            differs = true;
                            let _ = writeln!(out, "  {k}: {} → {} (next run)", show(&old), show(&new));
                        }
                    }
                    if !differs {
                        let _ = writeln!(out, "  in sync with the source");
                    }
                } else {
                    for (k, v) in &stored.attrs {
                        let _ = writeln!(out, "    {k}: {}", show(v));
                    }
                }
            }
            None => {
                let _ = writeln!(out, "Stored: not in the store (id would be {id})");
            }
        }
        if tenant.privacy.keep_raw_attributes {
            match store.raw_attributes(&tenant.id, &id)? {
                Some((attrs, read_at)) => {
                    let _ = writeln!(
                        out,
                        "Raw source attributes kept ([tenant.privacy] keep_raw_attributes), read {read_at}:"
                    );
                    let parsed: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(&attrs).unwrap_or_default();
                    for (k, v) in parsed {
                        let values: Vec<String> = v
                            .as_array()
                            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                            .unwrap_or_default();
                        let _ = writeln!(out, "    {k}: {}", show(&values));
                    }
                }
                None => {
                    let _ = writeln!(out, "Raw source attributes: none kept yet (the next applied run keeps them)");
                }
            }
        }
        quarantine_section(&mut out, store, tenant, source_cfg.name(), Some(&entry.anchor))?;
        return Ok(Some(out));
    }
    Ok(None)
}

fn header(out: &mut String, e: &SourceEntry, source: &str, kind: &str, privacy: &crate::config::PrivacyConfig) {
    let _ = writeln!(out, "Entry {} in source '{source}' ({kind})", e.dn.as_deref().unwrap_or("(no DN)"));
    let _ = writeln!(out, "  anchor: {}", e.anchor);
    let _ = writeln!(out, "  kind: {}", e.kind);
    let _ = writeln!(out, "Source attributes:");
    let mut attrs: Vec<&(String, Vec<Vec<u8>>)> = e.attrs.iter().collect();
    attrs.sort_by_key(|(n, _)| n.to_ascii_lowercase());
    for (name, values) in attrs {
        if privacy.is_sensitive(name) {
            let _ = writeln!(out, "  {name}: <{} value(s), not shown>", values.len());
            continue;
        }
        for v in values {
            match std::str::from_utf8(v) {
                Ok(s) => {
                    let _ = writeln!(out, "  {name}: {s}");
                }
                Err(_) => {
                    let _ = writeln!(out, "  {name}: <{} bytes of binary data>", v.len());
                }
            }
        }
    }
    if !e.members.is_empty() {
        let _ = writeln!(out, "  ({} member references)", e.members.len());
    }
}

fn quarantine_section(
    out: &mut String,
    store: &mut dyn Store,
    tenant: &TenantConfig,
    source: &str,
    anchor: Option<&str>,
) -> Result<(), SyncError> {
    let records = store.quarantine(&tenant.id)?;
    let hit =
        records.iter().find(|q| q.item.source == source && anchor.is_some() && q.item.anchor.as_deref() == anchor);
    match hit {
        Some(q) => {
            let _ = writeln!(
                out,
                "Quarantine: since {} (last seen {}, run {}), stage {}: {}",
                q.first_seen, q.last_seen, q.run_id, q.item.stage, q.item.reason
            );
        }
        None => {
            let _ = writeln!(out, "Quarantine: not quarantined");
        }
    }
    Ok(())
}

fn show<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> String {
    let v: Vec<String> = values.into_iter().map(|s| format!("{:?}", s.as_ref())).collect();
    match v.len() {
        0 => "(none)".into(),
        1 => v.concat(),
        _ => format!("[{}]", v.join(", ")),
    }
}
