//! What each subcommand does.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::{
    AuditAction, Cli, Command, ConfigAction, EventsAction, ListAction, PluginAction, QuarantineAction, RunsAction,
    SourceAction, TokenAction, UsersAction, WebhooksAction, exit,
};
use crate::config::{Config, TenantConfig};
use crate::model::Stored;
use crate::plugin_host::{PluginError, PluginHost, short_hash};
use crate::registry::{self, RegistryError};
use crate::scim::Directory;
use crate::store::sqlite::SqliteStore;
use crate::store::{BoxStore, Store, StoreError};
use crate::sync::{self, NoProgress, Progress, RunStatus, SyncError, SyncOptions};

pub fn run(cli: &Cli) -> Result<u8> {
    // Scaffolding needs no configuration.
    if let Command::Plugin { action: PluginAction::New { kind, name } } = &cli.command {
        return new_plugin_cmd(kind, name);
    }
    // So does trying a plugin out.
    if let Command::Plugin {
        action: PluginAction::Test { file, input, plugin_config, kind, schema, timeout_ms, memory_mb, json },
    } = &cli.command
    {
        let opts = crate::authoring::TestOptions {
            file: file.clone(),
            input: input.clone(),
            plugin_config: plugin_config.clone(),
            schema: schema.clone(),
            kind: kind.clone(),
            timeout_ms: *timeout_ms,
            memory_mb: *memory_mb,
        };
        return plugin_test_cmd(&opts, *json);
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::CONFIG);
        }
    };
    match &cli.command {
        Command::Serve { listen, node_id } => serve_cmd(config, listen.clone(), node_id.clone()),
        Command::Token { action } => token_cmd(&config, action),
        Command::Audit { action: AuditAction::Verify } => match open_store(&config)?.audit_verify() {
            Ok(n) => {
                println!("audit trail intact: {n} records, hash chain verified");
                Ok(exit::OK)
            }
            Err(e) => {
                eprintln!("error: audit trail tampered: {e}");
                Ok(exit::FAILURE)
            }
        },
        Command::Audit { action: AuditAction::Export { tenant: id, since } } => {
            // "*" holds security events aimed at names that are no tenant.
            if id != "*" {
                if let Err(code) = tenant(&config, id) {
                    return Ok(code);
                }
            }
            if let Some(s) = since {
                if time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_err() {
                    eprintln!("error: --since '{s}': expected an RFC 3339 time such as 2026-11-01T00:00:00Z");
                    return Ok(exit::CONFIG);
                }
            }
            let records = open_store(&config)?.audit_records(Some(id), since.as_deref())?;
            let mut out = std::io::stdout().lock();
            for r in &records {
                use std::io::Write;
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
            Ok(exit::OK)
        }
        Command::Events { action: EventsAction::List { tenant: id, after, limit, json } } => {
            if let Err(code) = tenant(&config, id) {
                return Ok(code);
            }
            let events = open_store(&config)?.events(id, *after, *limit)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                for e in &events {
                    println!(
                        "{:>6}  {:<22} {:<38} v{:<4} {}",
                        e.seq, e.event_type, e.object_id, e.version, e.created_at
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Webhooks { action } => {
            let id = match action {
                WebhooksAction::Status { tenant } | WebhooksAction::Replay { tenant, .. } => tenant,
            };
            let t = match tenant(&config, id) {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            let mut store = open_store(&config)?;
            match action {
                WebhooksAction::Status { .. } => {
                    for h in &t.webhooks {
                        let st = store.webhook_state(id, &h.name)?;
                        let dead = store.dead_letters(id, &h.name)?;
                        println!(
                            "{:<16} {:<40} delivered through #{}  attempts {}  dead letters {}{}",
                            h.name,
                            h.url,
                            st.delivered_seq,
                            st.attempts,
                            dead.len(),
                            st.last_error.map(|e| format!("  last error: {e}")).unwrap_or_default()
                        );
                    }
                    Ok(exit::OK)
                }
                WebhooksAction::Replay { endpoint, .. } => {
                    let Some(hook) = t.webhooks.iter().find(|h| h.name == *endpoint) else {
                        eprintln!("error: tenant '{id}' has no webhook named '{endpoint}'");
                        return Ok(exit::CONFIG);
                    };
                    let (ok, failed) =
                        crate::delivery::webhooks::replay(&config, id, hook, &mut store).map_err(anyhow::Error::msg)?;
                    println!(
                        "tenant '{id}', webhook '{endpoint}': {ok} dead letters delivered, {failed} still failing"
                    );
                    Ok(if failed == 0 { exit::OK } else { exit::FAILURE })
                }
            }
        }
        Command::Sync { tenant, dry_run, allow_deletes, full, show_plan, json } => {
            sync_cmd(&config, tenant.as_deref(), *dry_run, *allow_deletes, *full, *show_plan, *json)
        }
        Command::Users { action: UsersAction::List { tenant, json } } => users_cmd(&config, tenant, *json),
        Command::Users { action: UsersAction::Edit { tenant, anchor, set, by } } => {
            users_edit_cmd(&config, tenant, anchor, set, by)
        }
        Command::Groups { action: ListAction::List { tenant, json } } => groups_cmd(&config, tenant, *json),
        Command::Quarantine { action: QuarantineAction::List { tenant, json } } => {
            quarantine_cmd(&config, tenant, *json)
        }
        Command::Quarantine { action: QuarantineAction::Resolve { tenant, anchor, keep, .. } } => {
            resolve_cmd(&config, tenant, anchor, *keep)
        }
        Command::Runs { action: RunsAction::List { tenant, json } } => runs_cmd(&config, tenant, *json),
        Command::Runs { action: RunsAction::Approve { tenant, run } } => approve_cmd(&config, tenant, *run),
        Command::Config { action: ConfigAction::Check } => check_cmd(&config),
        Command::Status { tenant, json } => status_cmd(&config, tenant.as_deref(), *json),
        Command::Plugin { action } => plugin_cmd(&config, action),
        Command::Explain { tenant: id, key } => explain_cmd(&config, id, key),
        Command::Source { action: SourceAction::Test { tenant, source } } => source_test_cmd(&config, tenant, source),
    }
}

/// Who ran an admin command, for the audit trail.
fn cli_actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

fn open_store(config: &Config) -> Result<BoxStore> {
    crate::store::open(config).context("opening the store")
}

fn plugin_host(config: &Config) -> Result<PluginHost> {
    PluginHost::new(Some(config.store_dir().join("plugin-cache"))).map_err(anyhow::Error::msg)
}

fn tenant<'a>(config: &'a Config, id: &str) -> Result<&'a TenantConfig, u8> {
    config.tenant(id).ok_or_else(|| {
        let known: Vec<&str> = config.tenants.iter().map(|t| t.id.as_str()).collect();
        eprintln!("error: {}: no tenant '{id}' (tenants: {})", config.path.display(), known.join(", "));
        exit::CONFIG
    })
}

struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn entries(&self, source: &str, count: u64) {
        if let Some(b) = &self.0 {
            b.set_message(format!("{source}: {count} entries"));
            b.tick();
        }
    }
}

fn sync_cmd(
    config: &Config,
    only: Option<&str>,
    dry_run: bool,
    allow_deletes: bool,
    full: bool,
    show_plan: bool,
    json: bool,
) -> Result<u8> {
    let tenants: Vec<&TenantConfig> = match only {
        Some(id) => match tenant(config, id) {
            Ok(t) => vec![t],
            Err(code) => return Ok(code),
        },
        None => config.tenants.iter().collect(),
    };
    if tenants.is_empty() {
        eprintln!("error: {}: no [[tenant]] configured", config.path.display());
        return Ok(exit::CONFIG);
    }
    let mut store = open_store(config)?;
    let host = plugin_host(config)?;
    let opts = SyncOptions { dry_run, allow_deletes, full, ..SyncOptions::new("cli") };
    let mut worst = exit::OK;
    let mut reports = Vec::new();
    for t in tenants {
        let bar = Bar(std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_prefix(t.id.clone());
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        }));
        let result = sync::sync_tenant(config, t, &mut store, &host, &opts, &bar);
        if let Some(b) = &bar.0 {
            b.finish_and_clear();
        }
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                let code = match &e {
                    SyncError::Plugin(PluginError::Config { .. } | PluginError::Load { .. })
                    | SyncError::Setup { .. } => exit::CONFIG,
                    SyncError::PluginDisabled { .. } => exit::ABORTED,
                    _ => exit::FAILURE,
                };
                eprintln!("error: {e}");
                eprintln!("{}: sync failed", t.id);
                worst = worst.max(code);
                continue;
            }
        };
        if dry_run || show_plan {
            print!("{}", report.plan.render());
            for (kind, p) in &report.plugins {
                println!("  plugin {kind:<18} {p}");
            }
        }
        let c = report.counts;
        let quarantined: u64 = report.sources.iter().map(|s| s.quarantined).sum();
        let skipped: u64 = report.sources.iter().map(|s| s.skipped).sum();
        let not_remapped: u64 = report.sources.iter().map(|s| s.not_remapped).sum();
        // Only when it happened: most runs read incrementally and never see it.
        let not_remapped =
            if not_remapped > 0 { format!(", unchanged and not mapped again {not_remapped}") } else { String::new() };
        let read: u64 = report.sources.iter().map(|s| s.read.users + s.read.groups).sum();
        let (code, verdict) = match &report.status {
            RunStatus::Applied => (exit::OK, "applied".to_string()),
            RunStatus::NoChanges => (exit::OK, "no changes".to_string()),
            RunStatus::DryRun => (exit::OK, "dry run, nothing written".to_string()),
            RunStatus::Blocked(b) => {
                eprintln!("error: tenant '{}': {b}", t.id);
                (exit::GUARDRAIL, "BLOCKED by the delete guard-rail".to_string())
            }
            RunStatus::Aborted(reason) => {
                eprintln!("error: tenant '{}': {reason}", t.id);
                (exit::ABORTED, "ABORTED before apply".to_string())
            }
            RunStatus::Partial(errors) => {
                for e in errors {
                    eprintln!("error: {e}");
                }
                (exit::PARTIAL, "PARTIAL: read incomplete, changes applied without deletes".to_string())
            }
        };
        // The one summary line, always.
        eprintln!(
            "{}: {verdict}: read {read}, created {}, updated {}, deleted {}, memberships +{} -{}, skipped {skipped}, quarantined {quarantined}{not_remapped} ({} ms{})",
            t.id,
            c.creates,
            c.updates,
            c.deletes,
            c.members_added,
            c.members_removed,
            report.elapsed_ms,
            report.run_id.map(|id| format!(", run {id}")).unwrap_or_default(),
        );
        if json {
            reports.push(report.to_json());
        }
        worst = worst.max(code);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(worst)
}

fn users_cmd(config: &Config, id: &str, json: bool) -> Result<u8> {
    if let Err(code) = tenant(config, id) {
        return Ok(code);
    }
    let (users, groups, memberships) = load_tenant(config, id)?;
    let schema = config.tenant(id).map(|t| t.custom_attributes.clone()).unwrap_or_default();
    let dir = Directory::new(&users, &groups, &memberships).with_custom_schema(&schema);
    if json {
        let resources: Vec<_> = users.iter().map(|u| dir.user_resource(u)).collect();
        println!("{}", serde_json::to_string_pretty(&list_response(resources))?);
        return Ok(exit::OK);
    }
    println!("{:<28} {:<32} {:<36} {:<7} {}", "USERNAME", "DISPLAY NAME", "EMAIL", "ACTIVE", "GROUPS");
    for u in &users {
        let first = |k: &str| u.attrs.first(k).unwrap_or("");
        let email = if first("email").is_empty() { first("emails") } else { first("email") };
        println!(
            "{:<28} {:<32} {:<36} {:<7} {}",
            first("userName"),
            first("displayName"),
            email,
            crate::model::is_active(&u.attrs),
            dir.groups_of(&u.id).len()
        );
    }
    eprintln!("{} users", users.len());
    Ok(exit::OK)
}

static STOP_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static RELOAD_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP_REQUESTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

extern "C" fn on_reload_signal(_: libc::c_int) {
    RELOAD_REQUESTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// `roster serve`. SIGTERM/SIGINT stop it gracefully. SIGHUP reloads the
/// configuration file: it is validated while the service carries on; a file
/// that loads replaces the running one (runs in progress finish first, streams
/// resume from their stored cookies, the API keeps its address), a file that
/// does not is refused and the service keeps its configuration. Both are audited.
fn serve_cmd(config: Config, listen: Option<String>, node_id: Option<String>) -> Result<u8> {
    use crate::serve::reload::{self, Snapshot};
    use std::sync::atomic::Ordering::SeqCst;
    // SAFETY: the handlers only store to atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_reload_signal as *const () as libc::sighandler_t);
    }
    // The snapshot keeps the file's TOML so a reload can say what changed;
    // `config` was loaded a moment earlier from the same file.
    let mut current = Snapshot::load(&config.path).context("reading the configuration again")?;
    reload::audit_load(&mut open_store(&current.config)?, &current, "serve");
    let mut listen = listen;
    let process_node_id = crate::serve::cluster::default_node_id();
    loop {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let relay_stop = stop.clone();
        let running = current.clone();
        let (tx, rx) = std::sync::mpsc::channel::<Snapshot>();
        let relay = std::thread::spawn(move || {
            // Ends with the service too: a service that failed (bad listen
            // address, TLS files) returns without any signal.
            while !STOP_REQUESTED.load(SeqCst) && !relay_stop.load(SeqCst) {
                if RELOAD_REQUESTED.swap(false, SeqCst) {
                    match Snapshot::load(&running.config.path) {
                        Ok(next) => {
                            tracing::info!(path = %running.config.path.display(), "configuration reloaded: restarting the service with it");
                            let _ = tx.send(next);
                            relay_stop.store(true, SeqCst);
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "configuration reload refused; the service keeps its configuration");
                            match crate::store::open(&running.config) {
                                Ok(mut store) => reload::audit_refused(&mut store, &running, &e, "serve:SIGHUP"),
                                Err(se) => {
                                    tracing::error!(error = %se, "cannot open the store to audit the refused reload")
                                }
                            }
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            relay_stop.store(true, SeqCst);
        });
        let mut config = current.config.clone();
        // One name for the whole process, reloads included: its leases stay its own.
        config.serve.node_id =
            Some(node_id.clone().or(config.serve.node_id.clone()).unwrap_or_else(|| process_node_id.clone()));
        let bound = crate::serve::run(config, listen.clone(), stop.clone()).map_err(anyhow::Error::msg);
        stop.store(true, SeqCst);
        let _ = relay.join();
        let bound = bound?;
        let Ok(next) = rx.try_recv() else { break };
        reload::audit_applied(&mut open_store(&next.config)?, &current, &next, "serve:SIGHUP");
        // Keep the bound port (`--listen 127.0.0.1:0` included) unless the file moved the API.
        if listen.is_some() || next.config.serve.listen == current.config.serve.listen {
            listen = Some(bound.to_string());
        } else {
            listen = None;
        }
        current = next;
    }
    println!("roster serve: stopped");
    Ok(exit::OK)
}

fn token_cmd(config: &Config, action: &TokenAction) -> Result<u8> {
    use crate::api::tokens;
    let mut store = open_store(config)?;
    match action {
        TokenAction::Create { name, tenants, role, expires_in_days } => {
            let Some(role) = tokens::Role::parse(role) else {
                eprintln!("error: role '{role}' is not one of admin, operator, reader, plugin-publisher");
                return Ok(exit::CONFIG);
            };
            for t in tenants {
                if let Err(code) = tenant(config, t) {
                    return Ok(code);
                }
            }
            let expires = expires_in_days
                .map(|d| time::OffsetDateTime::now_utc() + time::Duration::days(d))
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
            let (record, secret) = tokens::create(&mut store, name, tenants, role, expires)?;
            for t in &record.tenants {
                let detail = serde_json::json!({ "action": "token.create", "token": record.id, "name": record.name, "role": record.role, "expires_at": record.expires_at });
                store.audit(t, "admin", &cli_actor(), &detail)?;
            }
            eprintln!(
                "token {} ({}) for {}; the secret is shown once:",
                record.id,
                record.role,
                record.tenants.join(", ")
            );
            println!("{secret}");
            Ok(exit::OK)
        }
        TokenAction::List { json } => {
            let all = store.tokens()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                for t in all {
                    println!(
                        "{:<18} {:<20} {:<16} {:<30} {}",
                        t.id,
                        t.name,
                        t.role,
                        t.tenants.join(","),
                        if t.revoked_at.is_some() { "revoked" } else { t.expires_at.as_deref().unwrap_or("no expiry") }
                    );
                }
            }
            Ok(exit::OK)
        }
        TokenAction::Revoke { id } => {
            let scope = store.tokens()?.into_iter().find(|t| t.id == *id).map(|t| t.tenants).unwrap_or_default();
            if store.revoke_token(id)? {
                for t in &scope {
                    store.audit(
                        t,
                        "admin",
                        &cli_actor(),
                        &serde_json::json!({ "action": "token.revoke", "token": id }),
                    )?;
                }
                println!("token {id} revoked");
                Ok(exit::OK)
            } else {
                eprintln!("error: no live token {id}");
                Ok(exit::FAILURE)
            }
        }
    }
}

fn users_edit_cmd(config: &Config, id: &str, anchor: &str, set: &[String], by: &str) -> Result<u8> {
    if let Err(code) = tenant(config, id) {
        return Ok(code);
    }
    let mut store = open_store(config)?;
    let users = store.users(id)?;
    let Some(user) = users.iter().find(|u| u.anchor == anchor) else {
        eprintln!("error: tenant '{id}': no synced user has anchor '{anchor}' (see `roster users list`)");
        return Ok(exit::FAILURE);
    };
    for pair in set {
        let Some((attribute, value)) = pair.split_once('=') else {
            eprintln!("error: --set '{pair}': expected ATTRIBUTE=VALUE");
            return Ok(exit::CONFIG);
        };
        let attribute = attribute.trim();
        if attribute.is_empty() || attribute == "externalId" {
            eprintln!("error: --set '{pair}': '{attribute}' cannot be edited");
            return Ok(exit::CONFIG);
        }
        if config.tenant(id).is_some_and(|t| t.privacy.is_sensitive(attribute)) {
            eprintln!(
                "error: --set '{attribute}=…': '{attribute}' is a sensitive attribute of tenant '{id}' ([tenant.privacy]); Roster keeps only a digest of it and cannot take it from the application"
            );
            return Ok(exit::CONFIG);
        }
        let value: Vec<String> = if value.is_empty() { Vec::new() } else { vec![value.to_string()] };
        let edit = crate::store::AppEdit {
            object_id: user.id.clone(),
            attribute: attribute.to_string(),
            base: user.attrs.get(attribute).map(|v| v.to_vec()).unwrap_or_default(),
            value,
            recorded_at: crate::util::now_rfc3339(),
            recorded_by: by.to_string(),
        };
        store.record_app_edit(id, &edit)?;
        let detail = serde_json::json!({ "action": "user.edit", "externalId": anchor, "id": user.id, "attribute": attribute, "value": edit.value, "was": edit.base, "by": by });
        store.audit(id, "admin", &cli_actor(), &detail)?;
        println!(
            "tenant '{id}': {anchor} {attribute} = {:?} recorded (was {:?}); the next run applies it",
            edit.value, edit.base
        );
    }
    Ok(exit::OK)
}

fn groups_cmd(config: &Config, id: &str, json: bool) -> Result<u8> {
    if let Err(code) = tenant(config, id) {
        return Ok(code);
    }
    let (users, groups, memberships) = load_tenant(config, id)?;
    let dir = Directory::new(&users, &groups, &memberships);
    if json {
        let resources: Vec<_> = groups.iter().map(|g| dir.group_resource(g)).collect();
        println!("{}", serde_json::to_string_pretty(&list_response(resources))?);
        return Ok(exit::OK);
    }
    let mut direct: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (g, _) in &memberships {
        *direct.entry(g.as_str()).or_default() += 1;
    }
    println!("{:<40} {:>8}  {}", "DISPLAY NAME", "MEMBERS", "DN");
    for g in &groups {
        println!(
            "{:<40} {:>8}  {}",
            g.label(),
            direct.get(g.id.as_str()).copied().unwrap_or(0),
            g.dn.as_deref().unwrap_or("")
        );
    }
    eprintln!("{} groups", groups.len());
    Ok(exit::OK)
}

type Memberships = Vec<(String, String)>;

fn load_tenant(config: &Config, id: &str) -> Result<(Vec<Stored>, Vec<Stored>, Memberships)> {
    let mut store = open_store(config)?;
    Ok((store.users(id)?, store.groups(id)?, store.memberships(id)?))
}

fn list_response(resources: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

fn quarantine_cmd(config: &Config, id: &str, json: bool) -> Result<u8> {
    if let Err(code) = tenant(config, id) {
        return Ok(code);
    }
    let mut store = open_store(config)?;
    let items = store.quarantine(id)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(exit::OK);
    }
    for q in &items {
        let it = &q.item;
        println!(
            "{} {} [{}] {}\n    stage: {}  first seen: {}  last seen: {} (run {})\n    reason: {}{}",
            it.source,
            it.kind.map(|k| k.as_str()).unwrap_or("entry"),
            it.anchor.as_deref().unwrap_or("no anchor"),
            it.dn.as_deref().unwrap_or(""),
            it.stage,
            q.first_seen,
            q.last_seen,
            q.run_id,
            it.reason,
            it.plugin.as_deref().map(|p| format!("\n    plugin: {p}")).unwrap_or_default(),
        );
    }
    eprintln!("{} quarantined entries", items.len());
    Ok(exit::OK)
}

fn status_cmd(config: &Config, only: Option<&str>, json: bool) -> Result<u8> {
    if let Some(id) = only {
        if let Err(code) = tenant(config, id) {
            return Ok(code);
        }
    }
    let mut store = open_store(config)?;
    // Who works on what (`roster serve` nodes sharing the store): live leases only.
    let leases: BTreeMap<String, String> =
        store.leases()?.into_iter().filter(|l| !l.expired).map(|l| (l.resource, l.owner)).collect();
    let lease_ms = i64::try_from(config.serve.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let nodes = store.nodes(lease_ms)?;
    let mut rows = Vec::new();
    for t in config.tenants.iter().filter(|t| only.is_none_or(|id| id == t.id)) {
        let last_run = store.runs(&t.id, 1)?.into_iter().next();
        let quarantine = store.quarantine(&t.id)?;
        for s in &t.sources {
            let state = store.source_states(&t.id, s.name())?;
            let last_complete = state.get("last_complete_sync").cloned();
            let quarantined = quarantine.iter().filter(|q| q.item.source == s.name()).count();
            let sync = t.source_sync.get(s.name()).cloned().unwrap_or_default();
            let next_run = sync
                .cron
                .as_deref()
                .or(sync.reconcile_cron.as_deref())
                .and_then(|c| crate::serve::schedule::parse(c).ok())
                .and_then(|c| crate::serve::schedule::next_after(&c, chrono::Local::now()))
                .map(|t| t.to_rfc3339());
            // How old the stored position of an incremental source is: cookie, delta link, USN.
            let position =
                ["syncrepl.users_cookie", "graph.users_delta", "ad.usn"].iter().any(|k| state.contains_key(*k));
            rows.push(serde_json::json!({
                "tenant": t.id,
                "source": s.name(),
                "kind": s.kind(),
                "mode": sync.mode.as_str(),
                // What `roster serve` made of the mode (a realtime LDAP source
                // on a server without syncprov polls instead).
                "running_as": state.get("serve.mode"),
                "health": state.get("serve.health").cloned().unwrap_or_else(|| "-".into()),
                "last_error": state.get("serve.last_error").filter(|_| state.get("serve.health").is_some_and(|h| h != "ok")),
                "next_run": next_run,
                "incremental_position_since": if position { last_complete.clone() } else { None },
                "last_complete_sync": last_complete,
                "last_run": last_run.as_ref().map(|r| serde_json::json!({"id": r.id, "status": r.status, "started_at": r.started_at})),
                "quarantined": quarantined,
                "owner": leases.get(&crate::serve::cluster::source_resource(&t.id, s.name())),
            }));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(exit::OK);
    }
    println!(
        "{:<16} {:<16} {:<16} {:<8} {:<8} {:<32} {:<22} {}",
        "TENANT", "SOURCE", "KIND", "MODE", "HEALTH", "LAST COMPLETE SYNC", "LAST RUN", "QUARANTINED"
    );
    for r in &rows {
        let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        let last = r["last_run"]
            .as_object()
            .map(|o| format!("{} ({})", o["id"], o["status"].as_str().unwrap_or("")))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:<16} {:<16} {:<8} {:<8} {:<32} {:<22} {}",
            s("tenant"),
            s("source"),
            s("kind"),
            s("mode"),
            s("health"),
            s("last_complete_sync"),
            last,
            r["quarantined"]
        );
        if let Some(running) = r["running_as"].as_str().filter(|m| Some(*m) != r["mode"].as_str()) {
            println!("    running as: {running}");
        }
        if let Some(next) = r["next_run"].as_str() {
            println!("    next run: {next}");
        }
        if let Some(e) = r["last_error"].as_str() {
            println!("    last error: {e}");
        }
        if let Some(owner) = r["owner"].as_str() {
            println!("    worked on by node: {owner}");
        }
    }
    let live: Vec<_> = nodes.iter().filter(|n| n.alive).collect();
    if !live.is_empty() {
        println!("\nNODES ({} alive)", live.len());
        for n in live {
            let held: Vec<&str> = leases.iter().filter(|(_, o)| **o == n.node).map(|(r, _)| r.as_str()).collect();
            println!(
                "{:<32} {:<40} holds {}",
                n.node,
                n.info,
                if held.is_empty() { "-".into() } else { held.join(", ") }
            );
        }
    }
    Ok(exit::OK)
}

fn resolve_cmd(config: &Config, id: &str, anchor: &str, keep: bool) -> Result<u8> {
    let t = match tenant(config, id) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let mut store = open_store(config)?;
    let resolution = if keep { crate::admin::Resolution::Keep } else { crate::admin::Resolution::Dismiss };
    match crate::admin::resolve_quarantine(t, &mut store, anchor, resolution, &cli_actor()) {
        Ok(message) => {
            println!("{message}");
            Ok(exit::OK)
        }
        Err(e @ crate::admin::AdminError::NotQuarantined { .. }) => {
            eprintln!("error: {e} (see `roster quarantine list`)");
            Ok(exit::FAILURE)
        }
        Err(e @ (crate::admin::AdminError::NotAConflict { .. } | crate::admin::AdminError::NotBlocked { .. })) => {
            eprintln!("error: {e}");
            Ok(exit::CONFIG)
        }
        Err(crate::admin::AdminError::Store(e)) => Err(e.into()),
    }
}

/// `roster runs approve`: the CLI side of `POST /v1/tenants/{t}/runs/{run}/approve`,
/// with the same rule (only the blocked run's deletions) and the same audit record.
fn approve_cmd(config: &Config, id: &str, run: i64) -> Result<u8> {
    let t = match tenant(config, id) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let mut store = open_store(config)?;
    let Some(record) = store.run(id, run)? else {
        eprintln!("error: tenant '{id}': no run {run} (roster runs list --tenant {id})");
        return Ok(exit::CONFIG);
    };
    let approved = match crate::admin::approvable_deletes(&record) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::CONFIG);
        }
    };
    let host = plugin_host(config)?;
    let actor = cli_actor();
    let mut opts = SyncOptions::new(&actor);
    opts.approved_deletes = Some(approved.clone());
    let result = sync::sync_tenant(config, t, &mut store, &host, &opts, &NoProgress);
    let (code, new_run, status, message) = match &result {
        Ok(report) => match &report.status {
            RunStatus::Applied | RunStatus::NoChanges => {
                if let Some(by) = report.run_id {
                    store.mark_run_approved(record.id, by)?;
                }
                let c = report.counts;
                let new_run = report.run_id.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
                (
                    exit::OK,
                    serde_json::json!(report.run_id),
                    "applied",
                    format!(
                        "tenant '{id}': run {run} approved; run {new_run} applied {} created, {} updated, {} deleted",
                        c.creates, c.updates, c.deletes
                    ),
                )
            }
            RunStatus::Blocked(_) => (
                exit::GUARDRAIL,
                serde_json::json!(report.run_id),
                "blocked",
                format!(
                    "error: tenant '{id}': {}",
                    crate::admin::plan_changed_message(record.id, &serde_json::json!(report.run_id))
                ),
            ),
            other => (
                exit::FAILURE,
                serde_json::json!(report.run_id),
                other.as_str(),
                format!("error: tenant '{id}': run {} {}", report.run_id.unwrap_or_default(), other.as_str()),
            ),
        },
        Err(e) => (exit::FAILURE, serde_json::Value::Null, "failed", format!("error: {e}")),
    };
    let detail = serde_json::json!({ "action": "plan.approve", "approved_run": record.id, "approved_deletes": approved.len(), "run_id": new_run, "status": status });
    store.audit(id, "admin", &actor, &detail)?;
    if code == exit::OK {
        println!("{message}")
    } else {
        eprintln!("{message}")
    }
    Ok(code)
}

fn runs_cmd(config: &Config, id: &str, json: bool) -> Result<u8> {
    if let Err(code) = tenant(config, id) {
        return Ok(code);
    }
    let mut store = open_store(config)?;
    let runs = store.runs(id, 50)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(exit::OK);
    }
    for r in &runs {
        println!(
            "run {:<5} {:<10} {:<8} started {} finished {}  {}",
            r.id,
            r.status,
            r.trigger,
            r.started_at,
            r.finished_at.as_deref().unwrap_or("-"),
            r.summary.get("counts").map(|c| c.to_string()).unwrap_or_default()
        );
    }
    Ok(exit::OK)
}

fn source_test_cmd(config: &Config, id: &str, name: &str) -> Result<u8> {
    let t = match tenant(config, id) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let Some(source_cfg) = t.sources.iter().find(|s| s.name() == name) else {
        let known: Vec<&str> = t.sources.iter().map(|s| s.name()).collect();
        eprintln!(
            "error: {}: tenant '{id}' has no source '{name}' (sources: {})",
            config.path.display(),
            known.join(", ")
        );
        return Ok(exit::CONFIG);
    };
    let host = plugin_host(config)?;
    let mut source = match sync::open_source(config, t, source_cfg, &host) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::CONFIG);
        }
    };
    match source.check() {
        Ok(report) => {
            println!("tenant '{id}', source '{name}' ({}): OK", source_cfg.kind());
            for line in report.lines() {
                println!("  {line}");
            }
            Ok(exit::OK)
        }
        Err(e) => {
            eprintln!("error: tenant '{id}': {e}");
            Ok(exit::FAILURE)
        }
    }
}

fn new_plugin_cmd(kind: &str, name: &str) -> Result<u8> {
    match crate::scaffold::new_plugin(Path::new("."), kind, name) {
        Ok(dir) => {
            println!("created {}: cd {name} && cargo build --release", dir.display());
            Ok(exit::OK)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(exit::CONFIG)
        }
    }
}

fn plugin_test_cmd(opts: &crate::authoring::TestOptions, json: bool) -> Result<u8> {
    use crate::authoring::{AuthoringError, EntryResult};
    let report = match crate::authoring::test_plugin(opts) {
        Ok(r) => r,
        Err(AuthoringError::Host(message)) => anyhow::bail!("cannot start the plugin host: {message}"),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::CONFIG);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(exit::OK);
    }
    let p = &report.plugin;
    println!("plugin '{}' {} (sha256:{}) from {}", p.name, p.version, short_hash(&p.sha256), p.origin);
    let l = &report.limits;
    println!(
        "limits: {} ms per call, {} MiB memory, {} entries per call, {} KiB output per call",
        l.call_timeout_ms, l.memory_mb, l.batch_size, l.output_max_kb
    );
    println!();
    for e in &report.entries {
        let who = match (&e.anchor, &e.dn) {
            (Some(a), Some(dn)) => format!("{a} ({dn})"),
            (Some(a), None) => a.clone(),
            (None, Some(dn)) => dn.clone(),
            (None, None) => "(unnamed entry)".into(),
        };
        match &e.result {
            EntryResult::Mapped { output_kind, attributes } => {
                println!("{who}: mapped {output_kind}");
                for (name, values) in attributes {
                    println!("    {name} = {}", values.join(" | "));
                }
            }
            EntryResult::Skip { reason } => println!("{who}: skipped: {reason}"),
            EntryResult::Error { message } => println!("{who}: error: {message}"),
            EntryResult::Failed { message } => println!("{who}: failed: {message}"),
            EntryResult::Rejected { reason } => println!("{who}: rejected by the reader: {reason}"),
            EntryResult::Decided { decision } => println!("{who}: {decision}"),
        }
    }
    let c = &report.counts;
    let k = &report.cost;
    println!();
    println!(
        "{} entries: {} mapped, {} skipped, {} errors, {} failed, {} rejected",
        c.entries, c.mapped, c.skipped, c.errors, c.failed, c.rejected
    );
    println!(
        "time: load + init {:.1} ms; map {:.3} ms in {} calls, {:.1} µs per entry",
        k.setup_ms, k.map_ms, k.calls, k.per_entry_us
    );
    println!("instructions (fuel): init {}, map {} ({} per entry)", k.fuel_init, k.fuel_map, k.fuel_per_entry);
    println!(
        "peak linear memory: {} bytes ({:.1} MiB)",
        k.peak_memory_bytes,
        k.peak_memory_bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(exit::OK)
}

fn explain_cmd(config: &Config, id: &str, key: &str) -> Result<u8> {
    let t = match tenant(config, id) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let mut store = open_store(config)?;
    let host = plugin_host(config)?;
    match crate::explain::explain(config, t, &host, &mut store, key) {
        Ok(Some(report)) => {
            print!("{report}");
            Ok(exit::OK)
        }
        Ok(None) => {
            eprintln!("error: tenant '{id}': no entry with anchor or DN '{key}' in any source");
            Ok(exit::FAILURE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(exit::FAILURE)
        }
    }
}

fn plugin_cmd(config: &Config, action: &PluginAction) -> Result<u8> {
    match action {
        PluginAction::Add { tenant: id, kind, vectors, no_activate, file } => {
            let t = match tenant(config, id) {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            let mut store = open_store(config)?;
            let host = plugin_host(config)?;
            let who = cli_actor();
            match registry::add(t, &host, &mut store, kind, file, vectors.as_deref(), !no_activate, &who) {
                Ok(added) => {
                    let r = &added.record;
                    let detail = serde_json::json!({ "action": "plugin.add", "kind": r.kind, "name": r.name, "plugin_version": r.plugin_version, "version": r.version, "sha256": r.sha256, "activated": added.activated, "vectors_run": added.vectors_run });
                    store.audit(id, "admin", &who, &detail)?;
                    println!(
                        "tenant '{id}': {} plugin '{}' {} stored as version {} (sha256:{}, {} bytes, {} test vectors passed){}",
                        r.kind,
                        r.name,
                        r.plugin_version,
                        r.version,
                        short_hash(&r.sha256),
                        r.size,
                        added.vectors_run,
                        if added.activated { ", active" } else { ", not activated" }
                    );
                    Ok(exit::OK)
                }
                Err(e @ (RegistryError::Store(_) | RegistryError::Read { .. })) => Err(e.into()),
                Err(e) => {
                    eprintln!("error: tenant '{id}': plugin {} rejected: {e}", file.display());
                    Ok(exit::CONFIG)
                }
            }
        }
        PluginAction::New { kind, name } => new_plugin_cmd(kind, name),
        PluginAction::Test { .. } => Ok(exit::CONFIG), // handled before the config is loaded
        PluginAction::List { tenant: id, json } => {
            if let Err(code) = tenant(config, id) {
                return Ok(code);
            }
            let plugins = open_store(config)?.plugins(id)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&plugins)?);
                return Ok(exit::OK);
            }
            println!(
                "{:<8} {:>7}  {:<24} {:<10} {:<14} {:>9}  {:<30} {}",
                "KIND", "VERSION", "NAME", "PLUGIN VER", "SHA256", "BYTES", "ADDED", "ACTIVE"
            );
            for p in &plugins {
                println!(
                    "{:<8} {:>7}  {:<24} {:<10} {:<14} {:>9}  {:<30} {}",
                    p.kind,
                    p.version,
                    p.name,
                    p.plugin_version,
                    short_hash(&p.sha256),
                    p.size,
                    p.added_at,
                    if p.active { "*" } else { "" }
                );
            }
            Ok(exit::OK)
        }
        PluginAction::Enable { tenant: id, kind } => {
            if let Err(code) = tenant(config, id) {
                return Ok(code);
            }
            let mut store = open_store(config)?;
            store.enable_plugin(id, kind)?;
            store.audit(id, "admin", &cli_actor(), &serde_json::json!({ "action": "plugin.enable", "kind": kind }))?;
            println!("tenant '{id}': {kind} plugins enabled; the next run uses them again");
            Ok(exit::OK)
        }
        PluginAction::Activate { tenant: id, kind, version } => {
            if let Err(code) = tenant(config, id) {
                return Ok(code);
            }
            if crate::plugin_host::PluginKind::parse(kind).is_none() {
                eprintln!("error: {}", RegistryError::UnknownKind(kind.clone()));
                return Ok(exit::CONFIG);
            }
            let mut store = open_store(config)?;
            match store.activate_plugin(id, kind, *version) {
                Ok(()) => {
                    // A deliberate choice of version clears an earlier disablement.
                    store.enable_plugin(id, kind)?;
                    let detail = serde_json::json!({ "action": "plugin.activate", "kind": kind, "version": version });
                    store.audit(id, "admin", &cli_actor(), &detail)?;
                    println!("tenant '{id}': {kind} plugin version {version} is now active");
                    Ok(exit::OK)
                }
                Err(e @ StoreError::NoSuchPlugin { .. }) => {
                    eprintln!("error: {e}");
                    Ok(exit::CONFIG)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

fn check_cmd(config: &Config) -> Result<u8> {
    let host = PluginHost::new(None).map_err(anyhow::Error::msg)?;
    // A check writes nothing: read the registry only if a store already exists.
    let mut store =
        if crate::store::exists(config) { open_store(config)? } else { Box::new(SqliteStore::open_in_memory()?) };
    let mut problems = 0;
    for t in &config.tenants {
        for kind in crate::plugin_host::PluginKind::ALL.into_iter().skip(1) {
            match sync::stage_active(t, &mut store, kind) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    problems += 1;
                    eprintln!("error: {}: {e}", config.path.display());
                    continue;
                }
            }
            match sync::instantiate(config, t, &host, &mut store, kind) {
                Ok(p) => println!("tenant '{}': {kind} {} OK", t.id, p.identity()),
                Err(SyncError::Plugin(PluginError::Config { plugin, errors })) => {
                    for e in errors {
                        problems += 1;
                        let at = e.position.map(|p| format!(", position {p}")).unwrap_or_default();
                        let table = match (t.plugins.get(kind).is_some(), kind) {
                            (true, _) => format!("tenant.plugins.{}.config", kind.config_key()),
                            (false, crate::plugin_host::PluginKind::CustomAttributes) => {
                                "tenant.custom_attributes".into()
                            }
                            (false, crate::plugin_host::PluginKind::RoleAssigner) => "tenant.roles".into(),
                            (false, _) => "tenant.conflicts".into(),
                        };
                        eprintln!(
                            "error: {}: tenant '{}': [{table}] key '{}'{at}: {} (plugin {plugin})",
                            config.path.display(),
                            t.id,
                            e.key,
                            e.message
                        );
                    }
                }
                Err(e) => {
                    problems += 1;
                    eprintln!("error: {}: {e}", config.path.display());
                }
            }
        }
        match sync::instantiate_mapper(config, t, &host, &mut store) {
            Ok(m) => println!("tenant '{}': mapper {} OK", t.id, m.identity()),
            Err(SyncError::Plugin(PluginError::Config { plugin, errors })) => {
                for e in errors {
                    problems += 1;
                    let (table, key) = config_key(t, &e.key);
                    let at = e.position.map(|p| format!(", position {p}")).unwrap_or_default();
                    eprintln!(
                        "error: {}: tenant '{}': [{table}] key '{key}'{at}: {} (plugin {plugin})",
                        config.path.display(),
                        t.id,
                        e.message
                    );
                }
            }
            Err(e) => {
                problems += 1;
                eprintln!("error: {}: {e}", config.path.display());
            }
        }
        for s in &t.sources {
            if let Err(e) = sync::open_source(config, t, s, &host) {
                problems += 1;
                eprintln!("error: {}: {e}", config.path.display());
            }
        }
    }
    if problems > 0 {
        eprintln!("{problems} problem(s) found");
        return Ok(exit::CONFIG);
    }
    println!("{}: OK ({} tenants)", config.path.display(), config.tenants.len());
    Ok(exit::OK)
}

/// Where a built-in mapper key lives in the admin's TOML.
fn config_key<'a>(t: &TenantConfig, key: &'a str) -> (String, &'a str) {
    if t.plugins.mapper.is_some() {
        return ("tenant.plugins.mapper.config".into(), key);
    }
    if let Some(k) = key.strip_prefix("user.") {
        return ("tenant.mapping".into(), k);
    }
    if let Some(k) = key.strip_prefix("group.") {
        return ("tenant.group_mapping".into(), k);
    }
    ("tenant.mapping".into(), key)
}
