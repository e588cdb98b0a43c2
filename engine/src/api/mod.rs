//! The HTTP API `roster serve` exposes: the events feed, REST reads and a SCIM
//! 2.0 service provider (read-only) per tenant, plus `/metrics` and
//! `/healthz`. Every tenant route needs a bearer token scoped to that tenant
//! with a reading role; a token for another tenant gets 404, as if the tenant
//! did not exist. Failed authentication is rate-limited per client address
//! and logged as a security event.

pub mod admin;
pub mod scim_filter;
mod tls;
pub mod tokens;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::config::Config;
use crate::model::Stored;
use crate::scim::Directory;
use crate::serve::metrics::Metrics;
use crate::serve::notify::{EventKind, Notifier};
use crate::store::Store;

const SCIM_ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// What the API shares with the rest of `roster serve`.
pub struct Services {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub notifier: Arc<Notifier>,
    /// Runs the API starts use the process-wide plugin host.
    pub host: Arc<crate::plugin_host::PluginHost>,
    /// Held by every run, so an API-started run never overlaps a scheduled one.
    pub locks: Arc<crate::serve::TenantLocks>,
}

pub struct Api {
    config: Arc<Config>,
    store: Mutex<crate::store::BoxStore>,
    metrics: Arc<Metrics>,
    notifier: Arc<Notifier>,
    host: Arc<crate::plugin_host::PluginHost>,
    locks: Arc<crate::serve::TenantLocks>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

type Shared = Arc<Api>;

fn error(status: StatusCode, detail: &str) -> Response {
    (status, [("content-type", "application/json")], json!({ "error": detail }).to_string()).into_response()
}

fn scim_error(status: StatusCode, scim_type: Option<&str>, detail: &str) -> Response {
    let mut body = json!({ "schemas": [SCIM_ERROR], "status": status.as_u16().to_string(), "detail": detail });
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    (status, [("content-type", "application/scim+json")], body.to_string()).into_response()
}

impl Api {
    /// The caller's token, if it may do `need` on the tenant; else the response to send.
    fn authorize(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
        tenant: &str,
        scim: bool,
        need: tokens::Need,
    ) -> Result<crate::store::TokenRecord, Response> {
        let deny = |status: StatusCode, detail: &str| {
            if scim { scim_error(status, None, detail) } else { error(status, detail) }
        };
        if let Ok(mut f) = self.failures.lock() {
            if let Some((since, n)) = f.get(&peer) {
                if since.elapsed() < Duration::from_secs(60) && *n >= self.config.serve.auth_failures_per_minute {
                    return Err(deny(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many failed authentications; try again later",
                    ));
                }
                if since.elapsed() >= Duration::from_secs(60) {
                    f.remove(&peer);
                }
            }
        }
        let secret = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim);
        let checked = match (secret, self.store.lock()) {
            (Some(s), Ok(mut store)) => tokens::check(&mut *store, s).ok().flatten(),
            _ => None,
        };
        let Some((token, role)) = checked else {
            if let Ok(mut f) = self.failures.lock() {
                let e = f.entry(peer).or_insert((Instant::now(), 0));
                e.1 += 1;
            }
            tracing::warn!(%peer, tenant, "API request with a missing, unknown, revoked or expired token");
            self.audit_security(
                tenant,
                &peer.to_string(),
                "authentication failed (missing, unknown, revoked or expired token)",
            );
            self.notifier.send(
                EventKind::Security,
                tenant,
                None,
                format!("API authentication failed from {peer} (missing, unknown, revoked or expired token)"),
            );
            return Err(deny(StatusCode::UNAUTHORIZED, "a valid bearer token is required"));
        };
        // Another tenant's token learns nothing, not even that the tenant exists.
        if !token.tenants.iter().any(|t| t == tenant) || self.config.tenant(tenant).is_none() {
            self.audit_security(tenant, &format!("token:{}", token.id), "token used for a tenant outside its scope");
            return Err(deny(StatusCode::NOT_FOUND, "no such tenant"));
        }
        if !role.may(need) {
            self.audit_security(
                tenant,
                &format!("token:{}", token.id),
                &format!("role {} may not do what needs {}", token.role, need.roles()),
            );
            return Err(deny(
                StatusCode::FORBIDDEN,
                &format!("this token's role ({}) may not do this; it needs one of: {}", token.role, need.roles()),
            ));
        }
        Ok(token)
    }

    /// Security events go to the audit trail of the tenant they aimed at; a
    /// name that is no configured tenant is recorded under "*" so a caller
    /// cannot mint tenant rows by guessing.
    fn audit_security(&self, tenant: &str, actor: &str, what: &str) {
        let recorded = if self.config.tenant(tenant).is_some() { tenant } else { "*" };
        let detail = json!({ "action": "api.auth", "outcome": what, "requested_tenant": tenant.chars().take(64).collect::<String>() });
        if let Ok(mut store) = self.store.lock() {
            if let Err(e) = store.audit(recorded, "security", actor, &detail) {
                tracing::error!(error = %e, "could not record a security event in the audit trail");
            }
        }
    }

    fn directory(&self, tenant: &str) -> Result<(Vec<Stored>, Vec<Stored>, Vec<(String, String)>), Response> {
        let mut store = self.store.lock().map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "store unavailable"))?;
        let users = store.users(tenant).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
        let groups = store.groups(tenant).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
        let memberships =
            store.memberships(tenant).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
        Ok((users, groups, memberships))
    }
}

fn param<T: std::str::FromStr>(q: &HashMap<String, String>, k: &str) -> Option<T> {
    q.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).and_then(|(_, v)| v.parse().ok())
}

async fn events(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer.ip(), &tenant, false, tokens::Need::Read) {
        return r;
    }
    let after: i64 = param(&q, "after").unwrap_or(0);
    let limit: u32 = param::<u32>(&q, "limit").unwrap_or(100).clamp(1, 1000);
    let events = match api.store.lock() {
        Ok(mut s) => s.events(&tenant, after, limit),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store unavailable"),
    };
    match events {
        Ok(list) => {
            let next = list.last().map(|e| e.seq).unwrap_or(after);
            let data: Vec<Value> = list.into_iter().map(|e| e.payload).collect();
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                json!({ "data": data, "next_cursor": next }).to_string(),
            )
                .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn rest_list(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((tenant, collection)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer.ip(), &tenant, false, tokens::Need::Read) {
        return r;
    }
    let (users, groups, memberships) = match api.directory(&tenant) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let schema = api.config.tenant(&tenant).map(|t| t.custom_attributes.clone()).unwrap_or_default();
    let dir = Directory::new(&users, &groups, &memberships).with_custom_schema(&schema);
    let all: Vec<Value> = match collection.as_str() {
        "users" => users.iter().map(|u| dir.user_resource(u)).collect(),
        "groups" => groups.iter().map(|g| dir.group_resource(g)).collect(),
        _ => return error(StatusCode::NOT_FOUND, "no such collection"),
    };
    let offset: usize = param(&q, "offset").unwrap_or(0);
    let limit: usize = param::<usize>(&q, "limit").unwrap_or(100).clamp(1, 1000);
    let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    let next = (offset + page.len() < all.len()).then_some(offset + page.len());
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        json!({ "data": page, "total": all.len(), "next_offset": next }).to_string(),
    )
        .into_response()
}

async fn rest_user(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer.ip(), &tenant, false, tokens::Need::Read) {
        return r;
    }
    let (users, groups, memberships) = match api.directory(&tenant) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let schema = api.config.tenant(&tenant).map(|t| t.custom_attributes.clone()).unwrap_or_default();
    let dir = Directory::new(&users, &groups, &memberships).with_custom_schema(&schema);
    match users.iter().find(|u| u.id == id) {
        Some(u) => {
            (StatusCode::OK, [("content-type", "application/json")], dir.user_resource(u).to_string()).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such user"),
    }
}

// ------------------------------------------------------------------ SCIM

fn scim_json(status: StatusCode, v: Value, etag: Option<String>) -> Response {
    let mut r = (status, [("content-type", "application/scim+json")], v.to_string()).into_response();
    if let Some(e) = etag.and_then(|e| e.parse().ok()) {
        r.headers_mut().insert("etag", e);
    }
    r
}

/// `attributes` / `excludedAttributes` (top-level names; id and schemas always stay).
fn project(mut v: Value, q: &HashMap<String, String>) -> Value {
    let list = |k: &str| -> Option<Vec<String>> {
        q.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().rsplit(':').next().unwrap_or("").split('.').next().unwrap_or("").to_lowercase())
                .collect()
        })
    };
    if let Value::Object(m) = &mut v {
        if let Some(keep) = list("attributes") {
            m.retain(|k, _| k == "id" || k == "schemas" || keep.contains(&k.to_lowercase()));
        } else if let Some(drop) = list("excludedAttributes") {
            m.retain(|k, _| k == "id" || k == "schemas" || !drop.contains(&k.to_lowercase()));
        }
    }
    v
}

async fn scim_list(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((tenant, resource)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer.ip(), &tenant, true, tokens::Need::Read) {
        return r;
    }
    match resource.as_str() {
        "ServiceProviderConfig" => return scim_json(StatusCode::OK, service_provider_config(), None),
        "ResourceTypes" => return scim_json(StatusCode::OK, resource_types(&tenant), None),
        "Schemas" => {
            let custom = api.config.tenant(&tenant).map(|t| t.custom_attributes.clone()).unwrap_or_default();
            return scim_json(StatusCode::OK, schemas(&custom), None);
        }
        "Users" | "Groups" => {}
        _ => return scim_error(StatusCode::NOT_FOUND, None, "no such resource type"),
    }
    let (users, groups, memberships) = match api.directory(&tenant) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let schema = api.config.tenant(&tenant).map(|t| t.custom_attributes.clone()).unwrap_or_default();
    let dir = Directory::new(&users, &groups, &memberships).with_custom_schema(&schema);
    let mut all: Vec<Value> = if resource == "Users" {
        users.iter().map(|u| dir.user_resource(u)).collect()
    } else {
        groups.iter().map(|g| dir.group_resource(g)).collect()
    };
    if let Some((_, f)) = q.iter().find(|(k, _)| k.eq_ignore_ascii_case("filter")) {
        match scim_filter::parse(f) {
            Ok(filter) => all.retain(|r| scim_filter::matches(&filter, r)),
            Err(e) => return scim_error(StatusCode::BAD_REQUEST, Some("invalidFilter"), &format!("filter: {e}")),
        }
    }
    if let Some((_, by)) = q.iter().find(|(k, _)| k.eq_ignore_ascii_case("sortBy")) {
        let path: Vec<String> = by.split('.').map(str::to_string).collect();
        let key = |v: &Value| -> String {
            let mut cur = v;
            for p in &path {
                cur = match cur
                    .as_object()
                    .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(p)).map(|(_, x)| x))
                {
                    Some(x) => x,
                    None => return String::new(),
                };
            }
            match cur {
                Value::String(s) => s.to_lowercase(),
                other => other.to_string(),
            }
        };
        all.sort_by_key(key);
        if q.iter().any(|(k, v)| k.eq_ignore_ascii_case("sortOrder") && v.eq_ignore_ascii_case("descending")) {
            all.reverse();
        }
    }
    let total = all.len();
    let start: usize = param::<usize>(&q, "startIndex").unwrap_or(1).max(1);
    let count: usize = param::<usize>(&q, "count").unwrap_or(100).min(1000);
    let page: Vec<Value> = all.into_iter().skip(start - 1).take(count).map(|r| project(r, &q)).collect();
    scim_json(
        StatusCode::OK,
        json!({ "schemas": [LIST], "totalResults": total, "startIndex": start, "itemsPerPage": page.len(), "Resources": page }),
        None,
    )
}

async fn scim_get(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((tenant, resource, id)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.authorize(&headers, peer.ip(), &tenant, true, tokens::Need::Read) {
        return r;
    }
    let custom = api.config.tenant(&tenant).map(|t| t.custom_attributes.clone()).unwrap_or_default();
    let meta_list = match resource.as_str() {
        "ResourceTypes" => Some(resource_types(&tenant)),
        "Schemas" => Some(schemas(&custom)),
        _ => None,
    };
    if let Some(list) = meta_list {
        return match list["Resources"].as_array().and_then(|r| r.iter().find(|x| x["id"] == id.as_str())) {
            Some(one) => scim_json(StatusCode::OK, one.clone(), None),
            None => scim_error(StatusCode::NOT_FOUND, None, &format!("{id} not found")),
        };
    }
    let (users, groups, memberships) = match api.directory(&tenant) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let schema = custom;
    let dir = Directory::new(&users, &groups, &memberships).with_custom_schema(&schema);
    let found = match resource.as_str() {
        "Users" => users.iter().find(|u| u.id == id).map(|u| dir.user_resource(u)),
        "Groups" => groups.iter().find(|g| g.id == id).map(|g| dir.group_resource(g)),
        _ => None,
    };
    let Some(resource) = found else {
        return scim_error(StatusCode::NOT_FOUND, None, &format!("{id} not found"));
    };
    let etag = resource["meta"]["version"].as_str().map(str::to_string);
    if let (Some(tag), Some(inm)) = (&etag, headers.get("if-none-match").and_then(|h| h.to_str().ok())) {
        if inm.split(',').any(|t| t.trim() == tag) {
            return (StatusCode::NOT_MODIFIED, [("etag", tag.as_str())]).into_response();
        }
    }
    scim_json(StatusCode::OK, project(resource, &q), etag)
}

async fn scim_write(Path((_tenant, resource)): Path<(String, String)>) -> Response {
    if matches!(resource.as_str(), "ServiceProviderConfig" | "ResourceTypes" | "Schemas") {
        return scim_error(StatusCode::METHOD_NOT_ALLOWED, None, "read-only endpoint");
    }
    scim_error(
        StatusCode::FORBIDDEN,
        Some("mutability"),
        "this SCIM service provider is read-only: the directory is the source of truth",
    )
}

fn service_provider_config() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/roster/roster/blob/main/docs/delivery.md",
        "patch": { "supported": false },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": 1000 },
        "changePassword": { "supported": false },
        "sort": { "supported": true },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken", "name": "Bearer token", "primary": true,
            "description": "A Roster API token (roster token create) scoped to this tenant"
        }],
        "meta": { "resourceType": "ServiceProviderConfig", "location": "/ServiceProviderConfig" }
    })
}

fn resource_types(tenant: &str) -> Value {
    let rt = |name: &str, endpoint: &str, schema: &str, ext: Option<&str>| {
        let mut v = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": name, "name": name, "endpoint": endpoint, "schema": schema,
            "meta": { "resourceType": "ResourceType", "location": format!("/scim/v2/{tenant}/ResourceTypes/{name}") }
        });
        if let Some(e) = ext {
            v["schemaExtensions"] = json!([{ "schema": e, "required": false }]);
        }
        v
    };
    let list = vec![
        rt("User", "/Users", crate::scim::USER_SCHEMA, Some(crate::custom_attrs::SCHEMA_URN)),
        rt("Group", "/Groups", crate::scim::GROUP_SCHEMA, None),
    ];
    json!({ "schemas": [LIST], "totalResults": 2, "startIndex": 1, "itemsPerPage": 2, "Resources": list })
}

fn schemas(custom: &crate::custom_attrs::Schema) -> Value {
    let attr = |name: &str, ty: &str, multi: bool| {
        json!({ "name": name, "type": ty, "multiValued": multi, "required": name == "userName" || name == "displayName" && false,
                "caseExact": false, "mutability": "readOnly", "returned": "default", "uniqueness": if name == "userName" { "server" } else { "none" } })
    };
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": crate::scim::USER_SCHEMA, "name": "User", "description": "User Account",
        "attributes": [attr("userName", "string", false), attr("displayName", "string", false), attr("active", "boolean", false),
                       attr("emails", "complex", true), attr("groups", "complex", true), attr("roles", "complex", true), attr("name", "complex", false)],
        "meta": { "resourceType": "Schema", "location": format!("/Schemas/{}", crate::scim::USER_SCHEMA) }
    });
    let group = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": crate::scim::GROUP_SCHEMA, "name": "Group", "description": "Group",
        "attributes": [attr("displayName", "string", false), attr("members", "complex", true)],
        "meta": { "resourceType": "Schema", "location": format!("/Schemas/{}", crate::scim::GROUP_SCHEMA) }
    });
    let ext_attrs: Vec<Value> = custom
        .iter()
        .map(|(name, d)| {
            let ty = match d.ty {
                crate::custom_attrs::AttrType::Integer => "integer",
                crate::custom_attrs::AttrType::Boolean => "boolean",
                crate::custom_attrs::AttrType::Timestamp => "dateTime",
                _ => "string",
            };
            json!({ "name": name, "type": ty, "multiValued": d.multi_valued || d.ty == crate::custom_attrs::AttrType::List,
                    "required": d.required, "caseExact": false, "mutability": "readOnly", "returned": "default", "uniqueness": "none" })
        })
        .collect();
    let extension = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": crate::custom_attrs::SCHEMA_URN, "name": "RosterCustomAttributes",
        "description": "The tenant's typed custom attributes",
        "attributes": ext_attrs,
        "meta": { "resourceType": "Schema", "location": format!("/Schemas/{}", crate::custom_attrs::SCHEMA_URN) }
    });
    json!({ "schemas": [LIST], "totalResults": 3, "startIndex": 1, "itemsPerPage": 3, "Resources": [user, group, extension] })
}

/// The router, without listening.
pub fn router(services: Services) -> Result<Router, String> {
    let Services { config, metrics, notifier, host, locks } = services;
    let store = crate::store::open(&config).map_err(|e| e.to_string())?;
    let api = Arc::new(Api {
        config,
        store: Mutex::new(store),
        metrics,
        notifier,
        host,
        locks,
        failures: Mutex::new(HashMap::new()),
    });
    let router = Router::new()
        .route(
            "/metrics",
            get(|State(a): State<Shared>| async move {
                ([("content-type", "text/plain; version=0.0.4")], a.metrics.render())
            }),
        )
        .route(
            "/healthz",
            get(|State(a): State<Shared>| async move {
                if a.metrics.all_healthy() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
                }
            }),
        )
        .route("/v1/tenants/{tenant}/events", get(events))
        .route("/v1/tenants/{tenant}/users/{id}", get(rest_user))
        .route("/v1/tenants/{tenant}/{collection}", get(rest_list))
        .route("/scim/v2/{tenant}/{resource}", get(scim_list).post(scim_write))
        .route(
            "/scim/v2/{tenant}/{resource}/{id}",
            get(scim_get)
                .put(|p: Path<(String, String, String)>| async move { scim_write(Path((p.0.0, p.0.1))).await })
                .patch(|p: Path<(String, String, String)>| async move { scim_write(Path((p.0.0, p.0.1))).await })
                .delete(|p: Path<(String, String, String)>| async move { scim_write(Path((p.0.0, p.0.1))).await }),
        );
    Ok(admin::routes(router).with_state(api))
}

/// Serves the API until `stop`: over TLS when `[serve] tls_cert` and
/// `tls_key` are set, else plain HTTP, which is refused on anything but a
/// loopback address.
pub fn serve(
    listen: &str,
    services: Services,
    stop: Arc<AtomicBool>,
) -> Result<(SocketAddr, std::thread::JoinHandle<()>), String> {
    let tls = match (&services.config.serve.tls_cert, &services.config.serve.tls_key) {
        (Some(cert), Some(key)) => {
            let (cert, key) = (services.config.resolve_path(cert), services.config.resolve_path(key));
            Some(tls::server_config(&cert, &key)?)
        }
        (None, None) => None,
        _ => return Err("[serve] tls_cert and tls_key go together: set both or neither".into()),
    };
    let listener = std::net::TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if tls.is_none() && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to serve the API over plain HTTP on {addr}: set [serve] tls_cert and tls_key, or bind it to a loopback address"
        ));
    }
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let app = router(services)?;
    match &tls {
        Some(_) => tracing::info!(%addr, "API over HTTPS"),
        None => {
            tracing::warn!(%addr, "API over plain HTTP, on loopback only (set [serve] tls_cert and tls_key for TLS)")
        }
    }
    let handle = std::thread::Builder::new()
        .name("roster-api".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let shutdown = async move {
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                let make = app.into_make_service_with_connect_info::<SocketAddr>();
                let _ = match tls {
                    Some(config) => {
                        use axum::serve::ListenerExt;
                        let listener = tls::TlsListener::new(listener, config).tap_io(|_| {});
                        axum::serve(listener, make).with_graceful_shutdown(shutdown).await
                    }
                    None => axum::serve(listener, make).with_graceful_shutdown(shutdown).await,
                };
            });
        })
        .map_err(|e| e.to_string())?;
    Ok((addr, handle))
}
