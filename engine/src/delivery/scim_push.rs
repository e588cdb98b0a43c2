//! SCIM push: Roster as a SCIM 2.0 client provisioning an application's SCIM
//! endpoint from the tenant's outbox, in sequence order, with the same
//! at-least-once delivery and retries as webhooks.
//!
//! `user.created` → `POST /Users`, `user.updated` → `PUT /Users/{id}`,
//! `*.deleted` → `DELETE`, `group.created` → `POST /Groups`,
//! `group.updated` → `PATCH` (displayName; a PUT would drop members),
//! `group.member_added|removed` → `PATCH /Groups/{id}` on `members`. The
//! application's ids are kept per Roster id; a create that finds the object
//! already there (a retry after a crash) adopts it by `externalId`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::config::{Config, ScimPushConfig, Secret};
use crate::store::{EventRecord, Store, WebhookState};

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct Target {
    base: String,
    token: Option<Secret>,
    http: reqwest::Client,
}

impl Target {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r =
            self.http.request(method, format!("{}/{path}", self.base)).header("content-type", "application/scim+json");
        match &self.token {
            Some(t) => r.bearer_auth(t.expose()),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<(StatusCode, Value), String> {
        let resp = r.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

fn remote_id(store: &mut dyn Store, tenant: &str, target: &str, id: &str) -> Option<String> {
    store.source_state(tenant, &format!("scim-push:{target}"), id).ok().flatten()
}

fn remember(store: &mut dyn Store, tenant: &str, target: &str, id: &str, remote: &str) {
    let _ = store.set_source_state(tenant, &format!("scim-push:{target}"), id, remote);
}

/// Applies one event; `Err` is retried.
async fn apply(t: &Target, store: &mut dyn Store, tenant: &str, name: &str, e: &EventRecord) -> Result<(), String> {
    let p = &e.payload;
    let obj = &p["object"];
    let attrs: crate::model::Attributes = serde_json::from_value(obj["attributes"].clone()).unwrap_or_default();
    let anchor = obj["externalId"].as_str().unwrap_or("");
    let collection = if e.object_kind == "user" { "Users" } else { "Groups" };
    let schema = if e.object_kind == "user" { crate::scim::USER_SCHEMA } else { crate::scim::GROUP_SCHEMA };
    let ok = |s: StatusCode| s.is_success();
    let create = |store: &mut dyn Store| {
        let body = crate::scim::push_body(schema, anchor, &attrs);
        async move {
            let (s, v) = t.send(t.req(reqwest::Method::POST, collection).json(&body)).await?;
            if ok(s) {
                return v["id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "the created resource has no id".to_string());
            }
            if s == StatusCode::CONFLICT {
                // Created before a crash: adopt it.
                let filter = format!("externalId eq \"{}\"", anchor.replace('"', "\\\""));
                let (s2, found) = t.send(t.req(reqwest::Method::GET, collection).query(&[("filter", filter)])).await?;
                if ok(s2) {
                    if let Some(id) = found["Resources"][0]["id"].as_str() {
                        return Ok(id.to_string());
                    }
                }
            }
            let _ = store;
            Err(format!("POST /{collection}: HTTP {s}: {}", v["detail"].as_str().unwrap_or("")))
        }
    };
    match e.event_type.as_str() {
        "user.created" | "group.created" => {
            let id = create(store).await?;
            remember(store, tenant, name, &e.object_id, &id);
        }
        "user.updated" => match remote_id(store, tenant, name, &e.object_id) {
            Some(rid) => {
                let mut body = crate::scim::push_body(schema, anchor, &attrs);
                body["id"] = json!(rid);
                let (s, v) = t.send(t.req(reqwest::Method::PUT, &format!("Users/{rid}")).json(&body)).await?;
                if !ok(s) {
                    return Err(format!("PUT /Users/{rid}: HTTP {s}: {}", v["detail"].as_str().unwrap_or("")));
                }
            }
            None => {
                let id = create(store).await?;
                remember(store, tenant, name, &e.object_id, &id);
            }
        },
        "group.updated" => {
            if let Some(rid) = remote_id(store, tenant, name, &e.object_id) {
                let display = attrs.first("displayName").unwrap_or_default();
                let body = json!({ "schemas": [PATCH_OP], "Operations": [{ "op": "replace", "path": "displayName", "value": display }] });
                let (s, v) = t.send(t.req(reqwest::Method::PATCH, &format!("Groups/{rid}")).json(&body)).await?;
                if !ok(s) {
                    return Err(format!("PATCH /Groups/{rid}: HTTP {s}: {}", v["detail"].as_str().unwrap_or("")));
                }
            }
        }
        "user.deleted" | "group.deleted" => {
            if let Some(rid) = remote_id(store, tenant, name, &e.object_id) {
                let (s, _) = t.send(t.req(reqwest::Method::DELETE, &format!("{collection}/{rid}"))).await?;
                if !ok(s) && s != StatusCode::NOT_FOUND {
                    return Err(format!("DELETE /{collection}/{rid}: HTTP {s}"));
                }
            }
        }
        "group.member_added" | "group.member_removed" => {
            let group = p["group"]["id"].as_str().unwrap_or("");
            let member = p["member"]["id"].as_str().unwrap_or("");
            let (Some(g), Some(m)) = (remote_id(store, tenant, name, group), remote_id(store, tenant, name, member))
            else {
                // The group or member was never pushed (deleted since): nothing to do.
                return Ok(());
            };
            let op = if e.event_type == "group.member_added" {
                json!({ "op": "add", "path": "members", "value": [{ "value": m }] })
            } else {
                json!({ "op": "remove", "path": format!("members[value eq \"{m}\"]") })
            };
            let body = json!({ "schemas": [PATCH_OP], "Operations": [op] });
            let (s, v) = t.send(t.req(reqwest::Method::PATCH, &format!("Groups/{g}")).json(&body)).await?;
            if !ok(s) {
                return Err(format!("PATCH /Groups/{g}: HTTP {s}: {}", v["detail"].as_str().unwrap_or("")));
            }
        }
        // Activation and roles travel with user.updated.
        _ => {}
    }
    Ok(())
}

/// Pushes one target's events until `stop`, while `active` (this node holds the target).
pub fn push(
    config: Arc<Config>,
    tenant: String,
    target: ScimPushConfig,
    active: impl Fn() -> bool,
    stop: Arc<AtomicBool>,
) {
    let name = format!("{tenant}/{}", target.name);
    let token = match &target.token {
        Some(t) => match t.resolve(&config.base_dir) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(target = %name, error = %e, "SCIM push token unavailable; not pushing");
                return;
            }
        },
        None => None,
    };
    let http = match crate::source::ldap::tls::client_config(None, false).ok().and_then(|(tls, _, _)| {
        reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(Duration::from_secs(15))
            .build()
            .ok()
    }) {
        Some(h) => h,
        None => return,
    };
    let t = Target { base: target.url.trim_end_matches('/').to_string(), token, http };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    let Ok(mut store) = crate::store::open(&config) else { return };
    let cursor = format!("scim:{}", target.name);
    let mut wait_until = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if std::time::Instant::now() < wait_until {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if !active() {
            wait_until = std::time::Instant::now() + Duration::from_millis(200);
            continue;
        }
        let mut state = store.webhook_state(&tenant, &cursor).unwrap_or_default();
        let events = store.events(&tenant, state.delivered_seq, 200).unwrap_or_default();
        if events.is_empty() {
            wait_until = std::time::Instant::now() + Duration::from_millis(100);
            continue;
        }
        for e in events {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match rt.block_on(apply(&t, &mut store, &tenant, &target.name, &e)) {
                Ok(()) => state = WebhookState { delivered_seq: e.seq, ..WebhookState::default() },
                Err(err) => {
                    state.attempts += 1;
                    let delay = Duration::from_millis(500u64.saturating_mul(1 << state.attempts.min(10)))
                        .min(Duration::from_secs(600));
                    tracing::warn!(target = %name, seq = e.seq, attempts = state.attempts, error = %err, "SCIM push failed; retrying");
                    state.last_error = Some(err);
                    wait_until = std::time::Instant::now() + delay;
                    break;
                }
            }
        }
        let _ = store.set_webhook_state(&tenant, &cursor, &state);
    }
}
