//! The admin API: start a sync (or a dry run), read runs and their plans,
//! approve a plan the delete guard-rail blocked, settle quarantine, upload,
//! activate and roll back plugins, manage the tenant's tokens and read its
//! audit trail. Every route is scoped to one tenant and to a role
//! ([`Need`]); every change it makes is an audit record naming the token.
//!
//! [`ROUTES`] documents every route of the API; `/openapi.json` is generated
//! from it, and the integration tests walk it to prove that each documented
//! route exists, needs a token and refuses other tenants' tokens.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use super::tokens::{self, Need};
use super::{Api, Shared, error};
use crate::store::Store;
use crate::sync::{NoProgress, SyncOptions};

/// Largest plugin upload.
const MAX_PLUGIN_BYTES: usize = 32 * 1024 * 1024;

/// One documented route.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    /// `None`: no token needed (health, metrics, this document).
    pub need: Option<Need>,
    pub summary: &'static str,
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// The request body, if any: (content type, description).
    pub body: Option<(&'static str, &'static str)>,
}

const fn route(method: &'static str, path: &'static str, need: Option<Need>, summary: &'static str) -> RouteDoc {
    RouteDoc { method, path, need, summary, query: &[], body: None }
}

pub const ROUTES: &[RouteDoc] = &[
    route("get", "/healthz", None, "200 when every source is healthy, 503 otherwise"),
    route("get", "/metrics", None, "Prometheus metrics"),
    route("get", "/openapi.json", None, "This document"),
    RouteDoc {
        query: &[("after", "sequence number cursor (0: oldest retained)"), ("limit", "1..1000, default 100")],
        ..route("get", "/v1/tenants/{tenant}/events", Some(Need::Read), "The events feed, in order")
    },
    RouteDoc {
        query: &[("offset", "default 0"), ("limit", "1..1000, default 100")],
        ..route("get", "/v1/tenants/{tenant}/users", Some(Need::Read), "Synced users")
    },
    RouteDoc {
        query: &[("offset", "default 0"), ("limit", "1..1000, default 100")],
        ..route("get", "/v1/tenants/{tenant}/groups", Some(Need::Read), "Synced groups")
    },
    route("get", "/v1/tenants/{tenant}/users/{id}", Some(Need::Read), "One synced user"),
    RouteDoc {
        query: &[
            ("dry_run", "true: plan only, write nothing"),
            ("full", "true: read every source whole"),
            ("source", "only this source (repeatable as a comma-separated list)"),
        ],
        ..route(
            "post",
            "/v1/tenants/{tenant}/sync",
            Some(Need::Operate),
            "Run a sync now and return its report and plan (409 when the delete guard-rail blocks it)",
        )
    },
    RouteDoc {
        query: &[("limit", "default 20")],
        ..route("get", "/v1/tenants/{tenant}/runs", Some(Need::Read), "Recent runs")
    },
    route("get", "/v1/tenants/{tenant}/runs/{run}", Some(Need::Read), "One run: status, counts, blocked deletions"),
    route(
        "post",
        "/v1/tenants/{tenant}/runs/{run}/approve",
        Some(Need::Operate),
        "Approve a run the delete guard-rail blocked: sync again, deleting no more than that run planned",
    ),
    route("get", "/v1/tenants/{tenant}/quarantine", Some(Need::Read), "Entries that could not be synced"),
    RouteDoc {
        query: &[("action", "keep (settle a conflict for this entry) or dismiss")],
        ..route(
            "post",
            "/v1/tenants/{tenant}/quarantine/{anchor}/resolve",
            Some(Need::Operate),
            "Settle a quarantined entry",
        )
    },
    route("get", "/v1/tenants/{tenant}/plugins", Some(Need::Read), "Every stored plugin version, and which is active"),
    RouteDoc {
        query: &[
            ("kind", "mapper, custom-attributes, role-assigner or conflict-resolver"),
            ("activate", "false: store without activating (default true)"),
        ],
        body: Some(("application/wasm", "the component")),
        ..route(
            "post",
            "/v1/tenants/{tenant}/plugins",
            Some(Need::Publish),
            "Upload a plugin: validated and stored as the next version",
        )
    },
    route(
        "post",
        "/v1/tenants/{tenant}/plugins/{kind}/{version}/activate",
        Some(Need::Publish),
        "Make a stored version active (an older one rolls back)",
    ),
    route("get", "/v1/tenants/{tenant}/tokens", Some(Need::Admin), "Tokens with access to this tenant"),
    RouteDoc {
        body: Some((
            "application/json",
            "{\"name\": \"…\", \"role\": \"reader|operator|plugin-publisher|admin\", \"expires_in_days\": 90}",
        )),
        ..route(
            "post",
            "/v1/tenants/{tenant}/tokens",
            Some(Need::Admin),
            "Create a token for this tenant; its secret is returned once",
        )
    },
    route("delete", "/v1/tenants/{tenant}/tokens/{id}", Some(Need::Admin), "Revoke a token of this tenant"),
    RouteDoc {
        query: &[("since", "RFC 3339 time")],
        ..route("get", "/v1/tenants/{tenant}/audit", Some(Need::Admin), "The tenant's audit records")
    },
    RouteDoc {
        query: &[("filter", "SCIM filter"), ("startIndex", "1-based"), ("count", "page size")],
        ..route("get", "/scim/v2/{tenant}/Users", Some(Need::Read), "SCIM 2.0 users (read-only provider)")
    },
    route("get", "/scim/v2/{tenant}/Users/{id}", Some(Need::Read), "One SCIM user"),
    RouteDoc {
        query: &[("filter", "SCIM filter"), ("startIndex", "1-based"), ("count", "page size")],
        ..route("get", "/scim/v2/{tenant}/Groups", Some(Need::Read), "SCIM 2.0 groups")
    },
    route("get", "/scim/v2/{tenant}/Groups/{id}", Some(Need::Read), "One SCIM group"),
    route("get", "/scim/v2/{tenant}/ServiceProviderConfig", Some(Need::Read), "SCIM service provider configuration"),
    route("get", "/scim/v2/{tenant}/ResourceTypes", Some(Need::Read), "SCIM resource types"),
    route("get", "/scim/v2/{tenant}/Schemas", Some(Need::Read), "SCIM schemas"),
];

/// The OpenAPI 3.1 document for [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .chain(r.query.iter().map(|(name, description)| {
                json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string" } })
            }))
            .collect();
        let mut op = json!({
            "summary": r.summary,
            "parameters": params,
            "responses": {
                "200": { "description": "OK" },
                "401": { "description": "missing, unknown, revoked or expired token" },
                "403": { "description": "the token's role may not do this" },
                "404": { "description": "no such tenant (or not one of the token's) or object" },
                "429": { "description": "too many failed authentications from this address" },
            },
        });
        match r.need {
            Some(need) => {
                op["security"] = json!([{ "bearer": [] }]);
                op["x-roster-roles"] = json!(need.roles());
            }
            None => op["security"] = json!([]),
        }
        if let Some((content_type, description)) = r.body {
            op["requestBody"] =
                json!({ "required": true, "description": description, "content": { content_type: {} } });
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Roster API", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "paths": paths,
    })
}

pub(super) fn routes(router: Router<Shared>) -> Router<Shared> {
    router
        .route("/openapi.json", get(|| async { ([("content-type", "application/json")], openapi().to_string()) }))
        .route("/v1/tenants/{tenant}/sync", post(trigger_sync))
        .route("/v1/tenants/{tenant}/runs", get(list_runs))
        .route("/v1/tenants/{tenant}/runs/{run}", get(get_run))
        .route("/v1/tenants/{tenant}/runs/{run}/approve", post(approve_run))
        .route("/v1/tenants/{tenant}/quarantine", get(list_quarantine))
        .route("/v1/tenants/{tenant}/quarantine/{anchor}/resolve", post(resolve_quarantine))
        .route(
            "/v1/tenants/{tenant}/plugins",
            get(list_plugins).post(upload_plugin).layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES)),
        )
        .route("/v1/tenants/{tenant}/plugins/{kind}/{version}/activate", post(activate_plugin))
        .route("/v1/tenants/{tenant}/tokens", get(list_tokens).post(create_token))
        .route("/v1/tenants/{tenant}/tokens/{id}", delete(revoke_token))
        .route("/v1/tenants/{tenant}/audit", get(read_audit))
}

fn ok_json(status: StatusCode, body: &Value) -> Response {
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

/// `{"data": …}` from one store read, or the error response.
fn read_data<T: serde::Serialize>(
    api: &Api,
    read: impl FnOnce(&mut dyn crate::store::Store) -> Result<T, crate::store::StoreError>,
) -> Response {
    let result = match api.store.lock() {
        Ok(mut s) => read(&mut **s),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store unavailable"),
    };
    match result {
        Ok(v) => ok_json(StatusCode::OK, &json!({ "data": v })),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| matches!(v.as_str(), "true" | "1" | "yes"))
}

impl Api {
    /// Records an admin action: which token, which route, what came of it.
    fn audit_admin(&self, tenant: &str, token: &crate::store::TokenRecord, route: &str, detail: Value) {
        let mut detail = detail;
        detail["route"] = json!(route);
        if let Ok(mut store) = self.store.lock() {
            if let Err(e) = store.audit(tenant, "admin", &format!("token:{}", token.id), &detail) {
                tracing::error!(tenant, error = %e, "could not record an admin action in the audit trail");
            }
        }
    }

    /// Runs a sync of the tenant on this thread, holding the tenant's run lock.
    fn run_sync(&self, tenant: &str, opts: &SyncOptions) -> Result<crate::sync::RunReport, String> {
        let t = self.config.tenant(tenant).ok_or("no such tenant")?;
        let lock = self.locks.get(tenant);
        let _held = lock.map(|l| l.lock());
        let mut store = crate::store::open(&self.config).map_err(|e| e.to_string())?;
        crate::sync::sync_tenant(&self.config, t, &mut store, &self.host, opts, &NoProgress).map_err(|e| e.to_string())
    }
}

/// Runs a sync off the async runtime and turns its report into a response.
async fn sync_response(api: Shared, tenant: String, opts: SyncOptions) -> (StatusCode, Value) {
    let result = tokio::task::spawn_blocking(move || api.run_sync(&tenant, &opts)).await;
    match result {
        Ok(Ok(report)) => {
            let status = match report.status {
                crate::sync::RunStatus::Blocked(_) => StatusCode::CONFLICT,
                crate::sync::RunStatus::Aborted(_) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::OK,
            };
            (status, report.to_json())
        }
        Ok(Err(e)) => (StatusCode::BAD_GATEWAY, json!({ "error": e })),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": format!("the run did not finish: {e}") })),
    }
}

async fn trigger_sync(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let token = match api.authorize(&headers, peer.ip(), &tenant, false, Need::Operate) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut opts = SyncOptions::new(&format!("api:{}", token.id));
    opts.dry_run = flag(&q, "dry_run");
    opts.full = flag(&q, "full");
    if let Some(sources) = q.get("source") {
        let names: Vec<String> = sources.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        let known =
            api.config.tenant(&tenant).map(|t| t.sources.iter().map(|s| s.name().to_string()).collect::<Vec<_>>());
        if let Some(unknown) = names.iter().find(|n| !known.as_ref().is_some_and(|k| k.contains(n))) {
            return error(StatusCode::BAD_REQUEST, &format!("tenant '{tenant}' has no source named '{unknown}'"));
        }
        opts.only_sources = Some(names);
    }
    let dry_run = opts.dry_run;
    let (status, body) = sync_response(api.clone(), tenant.clone(), opts).await;
    api.audit_admin(
        &tenant,
        &token,
        "POST /v1/tenants/{tenant}/sync",
        json!({ "action": "sync", "dry_run": dry_run, "http_status": status.as_u16(), "run_id": body["run_id"], "status": body["status"] }),
    );
    ok_json(status, &body)
}

async fn list_runs(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer.ip(), &tenant, false, Need::Read) {
        return r;
    }
    let limit: u32 = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(20).clamp(1, 1000);
    read_data(&api, |s| s.runs(&tenant, limit))
}

fn find_run(api: &Api, tenant: &str, run: &str) -> Result<crate::store::RunRecord, Response> {
    let id: i64 = run.parse().map_err(|_| error(StatusCode::NOT_FOUND, "no such run"))?;
    let run = match api.store.lock() {
        Ok(mut s) => s.run(tenant, id),
        Err(_) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "store unavailable")),
    };
    run.map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such run"))
}

async fn get_run(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((tenant, run)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer.ip(), &tenant, false, Need::Read) {
        return r;
    }
    match find_run(&api, &tenant, &run) {
        Ok(r) => ok_json(StatusCode::OK, &json!(r)),
        Err(r) => r,
    }
}

async fn approve_run(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((tenant, run)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let token = match api.authorize(&headers, peer.ip(), &tenant, false, Need::Operate) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let record = match find_run(&api, &tenant, &run) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let approved = match crate::admin::approvable_deletes(&record) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::CONFLICT, &e.to_string()),
    };
    let mut opts = SyncOptions::new(&format!("api:{}", token.id));
    opts.approved_deletes = Some(approved.clone());
    let (status, mut body) = sync_response(api.clone(), tenant.clone(), opts).await;
    if status == StatusCode::OK {
        if let (Some(by), Ok(mut store)) = (body["run_id"].as_i64(), api.store.lock()) {
            if let Err(e) = store.mark_run_approved(record.id, by) {
                tracing::error!(tenant, error = %e, "could not mark run {} approved", record.id);
            }
        }
    }
    if status == StatusCode::CONFLICT {
        body["error"] = json!(crate::admin::plan_changed_message(record.id, &body["run_id"]));
    }
    api.audit_admin(
        &tenant,
        &token,
        "POST /v1/tenants/{tenant}/runs/{run}/approve",
        json!({ "action": "plan.approve", "approved_run": record.id, "approved_deletes": approved.len(), "http_status": status.as_u16(), "run_id": body["run_id"], "status": body["status"] }),
    );
    ok_json(status, &body)
}

async fn list_quarantine(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer.ip(), &tenant, false, Need::Read) {
        return r;
    }
    read_data(&api, |s| s.quarantine(&tenant))
}

async fn resolve_quarantine(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((tenant, anchor)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let token = match api.authorize(&headers, peer.ip(), &tenant, false, Need::Operate) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let resolution = match q.get("action").map(String::as_str) {
        Some("keep") => crate::admin::Resolution::Keep,
        Some("dismiss") => crate::admin::Resolution::Dismiss,
        _ => return error(StatusCode::BAD_REQUEST, "action must be keep or dismiss"),
    };
    let Some(t) = api.config.tenant(&tenant) else { return error(StatusCode::NOT_FOUND, "no such tenant") };
    let result = match api.store.lock() {
        Ok(mut s) => crate::admin::resolve_quarantine(t, &mut *s, &anchor, resolution, &format!("token:{}", token.id)),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store unavailable"),
    };
    match result {
        Ok(message) => ok_json(StatusCode::OK, &json!({ "result": message })),
        Err(e @ crate::admin::AdminError::NotQuarantined { .. }) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ (crate::admin::AdminError::NotAConflict { .. } | crate::admin::AdminError::NotBlocked { .. })) => {
            error(StatusCode::CONFLICT, &e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn list_plugins(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer.ip(), &tenant, false, Need::Read) {
        return r;
    }
    read_data(&api, |s| s.plugins(&tenant))
}

async fn upload_plugin(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match api.authorize(&headers, peer.ip(), &tenant, false, Need::Publish) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(kind) = q.get("kind").cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "kind is required (mapper, custom-attributes, role-assigner, conflict-resolver)",
        );
    };
    let activate = q.get("activate").is_none_or(|v| v != "false");
    let api2 = api.clone();
    let (tenant2, actor) = (tenant.clone(), format!("token:{}", token.id));
    let result = tokio::task::spawn_blocking(move || -> Result<Result<Value, String>, String> {
        let api = api2;
        let t = api.config.tenant(&tenant2).ok_or("no such tenant")?;
        // The registry validates from a file: write the upload beside the
        // store, readable by us only, and remove it whatever happens.
        let dir = api.config.store_dir().join("uploads");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join(format!("{}.wasm", uuid::Uuid::new_v4()));
        std::fs::write(&path, &body).map_err(|e| e.to_string())?;
        let mut store = crate::store::open(&api.config).map_err(|e| e.to_string())?;
        let added = crate::registry::add(t, &api.host, &mut store, &kind, &path, None, activate, &actor);
        let _ = std::fs::remove_file(&path);
        Ok(added.map(|a| {
            json!({ "kind": a.record.kind, "name": a.record.name, "plugin_version": a.record.plugin_version, "version": a.record.version,
                    "sha256": a.record.sha256, "size": a.record.size, "activated": a.activated, "vectors_run": a.vectors_run })
        })
        .map_err(|e| e.to_string()))
    })
    .await;
    let (status, body) = match result {
        Ok(Ok(Ok(added))) => (StatusCode::CREATED, added),
        Ok(Ok(Err(rejected))) => {
            (StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": format!("plugin rejected: {rejected}") }))
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": e })),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": e.to_string() })),
    };
    let mut detail = json!({ "action": "plugin.add", "http_status": status.as_u16() });
    if status == StatusCode::CREATED {
        detail["plugin"] = body.clone();
    } else {
        detail["error"] = body["error"].clone();
    }
    api.audit_admin(&tenant, &token, "POST /v1/tenants/{tenant}/plugins", detail);
    ok_json(status, &body)
}

async fn activate_plugin(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((tenant, kind, version)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let token = match api.authorize(&headers, peer.ip(), &tenant, false, Need::Publish) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Ok(version) = version.parse::<i64>() else { return error(StatusCode::NOT_FOUND, "no such plugin version") };
    if crate::plugin_host::PluginKind::parse(&kind).is_none() {
        return error(StatusCode::NOT_FOUND, "no such plugin kind");
    }
    let result = match api.store.lock() {
        Ok(mut s) => s.activate_plugin(&tenant, &kind, version).and_then(|()| s.enable_plugin(&tenant, &kind)),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store unavailable"),
    };
    let (status, body) = match result {
        Ok(()) => (StatusCode::OK, json!({ "result": format!("{kind} plugin version {version} is now active") })),
        Err(e @ crate::store::StoreError::NoSuchPlugin { .. }) => {
            (StatusCode::NOT_FOUND, json!({ "error": e.to_string() }))
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": e.to_string() })),
    };
    api.audit_admin(
        &tenant,
        &token,
        "POST /v1/tenants/{tenant}/plugins/{kind}/{version}/activate",
        json!({ "action": "plugin.activate", "kind": kind, "version": version, "http_status": status.as_u16() }),
    );
    ok_json(status, &body)
}

async fn list_tokens(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer.ip(), &tenant, false, Need::Admin) {
        return r;
    }
    read_data(&api, |s| {
        s.tokens().map(|all| all.into_iter().filter(|t| t.tenants.contains(&tenant)).collect::<Vec<_>>())
    })
}

async fn create_token(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match api.authorize(&headers, peer.ip(), &tenant, false, Need::Admin) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body: expected JSON: {e}")),
    };
    let Some(name) = req.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "body: \"name\" is required");
    };
    let role_name = req.get("role").and_then(Value::as_str).unwrap_or("reader");
    let Some(role) = tokens::Role::parse(role_name) else {
        return error(StatusCode::BAD_REQUEST, "body: \"role\" must be reader, operator, plugin-publisher or admin");
    };
    let expires = req
        .get("expires_in_days")
        .and_then(Value::as_i64)
        .map(|d| time::OffsetDateTime::now_utc() + time::Duration::days(d))
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    let created = match api.store.lock() {
        // A tenant's admin creates tokens for that tenant only.
        Ok(mut s) => tokens::create(&mut *s, name, std::slice::from_ref(&tenant), role, expires),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store unavailable"),
    };
    match created {
        Ok((record, secret)) => {
            api.audit_admin(
                &tenant,
                &token,
                "POST /v1/tenants/{tenant}/tokens",
                json!({ "action": "token.create", "token": record.id, "name": record.name, "role": record.role, "expires_at": record.expires_at }),
            );
            ok_json(StatusCode::CREATED, &json!({ "token": record, "secret": secret }))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn revoke_token(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let token = match api.authorize(&headers, peer.ip(), &tenant, false, Need::Admin) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let result = match api.store.lock() {
        Ok(mut s) => s.tokens().and_then(|all| {
            // Only a token whose every tenant the caller administers: an
            // admin of A cannot cut off a token that also serves B.
            match all.into_iter().find(|t| t.id == id && t.revoked_at.is_none()) {
                Some(t) if t.tenants.iter().all(|x| token.tenants.contains(x)) && t.tenants.contains(&tenant) => {
                    s.revoke_token(&id)
                }
                _ => Ok(false),
            }
        }),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store unavailable"),
    };
    match result {
        Ok(true) => {
            api.audit_admin(
                &tenant,
                &token,
                "DELETE /v1/tenants/{tenant}/tokens/{id}",
                json!({ "action": "token.revoke", "token": id }),
            );
            ok_json(StatusCode::OK, &json!({ "result": format!("token {id} revoked") }))
        }
        Ok(false) => error(StatusCode::NOT_FOUND, "no such live token of this tenant"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn read_audit(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer.ip(), &tenant, false, Need::Admin) {
        return r;
    }
    let since = q.get("since").cloned();
    if let Some(s) = &since {
        if time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_err() {
            return error(StatusCode::BAD_REQUEST, "since: expected an RFC 3339 time");
        }
    }
    read_data(&api, |s| s.audit_records(Some(&tenant), since.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenant_route_needs_a_role_and_the_document_lists_it() {
        let doc = openapi();
        for r in ROUTES {
            if r.path.contains("{tenant}") {
                assert!(r.need.is_some(), "{} {} must need a token", r.method, r.path);
            }
            assert!(doc["paths"][r.path][r.method].is_object(), "{} {} missing from the document", r.method, r.path);
        }
    }
}
