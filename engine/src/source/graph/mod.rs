//! `kind = "azure-ad"`: Microsoft Entra ID (Azure AD) through Microsoft Graph.
//!
//! Reads `/users/delta` and `/groups/delta` (with `members`), following
//! `@odata.nextLink` to the `@odata.deltaLink`, which is kept per source only
//! once the run that used the read is applied; the next run continues from it
//! and reads only what changed. Changed objects may carry only the changed
//! properties, so each is fetched whole (`/users/{id}`); `members@delta`
//! additions and removals update a group's stored memberships;
//! `@removed` objects become deletes (`deleted`) or deactivations (`changed`,
//! Entra ID's soft delete). An expired delta link (`410 Gone`,
//! `syncStateNotFound`) means a full read, which plans deletes only once it
//! is complete.
//!
//! Throttling: 429, 503 and 504 are retried after `Retry-After`, or with
//! exponential backoff and jitter, at most `max_retries` times; the run
//! reports how long it waited. A 401 refreshes the token once.

pub mod auth;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Map, Value};
use tokio::runtime::Runtime;

use crate::config::GraphSourceConfig;
use crate::source::{Delta, EntryKind, MemberRef, ReadSummary, Sink, Source, SourceEntry, SourceError, SourceItem};

use auth::{Credential, Token};

const USER_FIELDS: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "accountEnabled",
    "jobTitle",
    "department",
    "employeeId",
    "onPremisesImmutableId",
    "onPremisesExtensionAttributes",
];
const GROUP_FIELDS: &[&str] = &["id", "displayName", "description", "mail"];
const STATE_USERS: &str = "graph.users_delta";
const STATE_GROUPS: &str = "graph.groups_delta";
/// Permissions a full read needs (application permissions, in the token's `roles`).
const NEEDED_ROLES: &[&str] = &["User.Read.All", "Group.Read.All", "GroupMember.Read.All"];

/// `https://…`, or `http://` to a loopback address only (test servers).
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err("must start with https://".into());
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback { Ok(()) } else { Err("plain http:// is accepted only for a loopback address; use https://".into()) }
}

#[derive(Debug)]
pub struct GraphSource {
    config: GraphSourceConfig,
    credential: Credential,
    http: reqwest::Client,
    runtime: Option<Runtime>,
    token: Option<Token>,
    resume: BTreeMap<String, String>,
}

impl GraphSource {
    pub fn new(config: &GraphSourceConfig, base_dir: &Path, credential: Credential) -> Result<Self, SourceError> {
        let other = |message: String| SourceError::Other { source_name: config.name.clone(), message };
        for url in [&config.authority_url, &config.graph_url] {
            check_url(url).map_err(|why| other(format!("'{url}': {why}")))?;
        }
        let ca_file = config.ca_file.as_ref().map(|p| base_dir.join(p));
        let (tls, _, _) = crate::source::ldap::tls::client_config(ca_file.as_deref(), false).map_err(|e| {
            SourceError::Tls { source_name: config.name.clone(), url: config.graph_url.clone(), message: e.to_string() }
        })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(Duration::from_secs(config.timeout_secs))
            .user_agent(concat!("roster/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { config: config.clone(), credential, http, runtime: None, token: None, resume: BTreeMap::new() })
    }

    fn run<T>(&mut self, f: impl AsyncFnOnce(&mut Session<'_>) -> Result<T, SourceError>) -> Result<T, SourceError> {
        let name = self.config.name.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(SourceError::Other {
                source_name: name,
                message: "internal error: a Graph source was read from inside an async task".into(),
            });
        }
        if self.runtime.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SourceError::Other { source_name: name.clone(), message: format!("runtime: {e}") })?;
            self.runtime = Some(rt);
        }
        let Some(rt) = self.runtime.take() else {
            return Err(SourceError::Other { source_name: name, message: "no runtime".into() });
        };
        let mut session = Session {
            config: &self.config,
            credential: &self.credential,
            http: &self.http,
            token: self.token.take(),
            waited: Duration::ZERO,
            requests: 0,
        };
        let result = rt.block_on(f(&mut session));
        self.token = session.token.take();
        self.runtime = Some(rt);
        result
    }
}

/// One read's connection state: the token, and what the server made us wait.
struct Session<'a> {
    config: &'a GraphSourceConfig,
    credential: &'a Credential,
    http: &'a reqwest::Client,
    token: Option<Token>,
    waited: Duration,
    requests: u64,
}

/// A Graph request that failed for good.
enum Failure {
    /// 410 Gone / syncStateNotFound: the delta link is no longer valid.
    DeltaExpired,
    Error(SourceError),
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        Failure::Error(e)
    }
}

impl Session<'_> {
    fn err(&self, message: String) -> SourceError {
        SourceError::Other { source_name: self.config.name.clone(), message }
    }

    fn token_endpoint(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.config.authority_url, self.config.tenant_id)
    }

    async fn token(&mut self, force: bool) -> Result<String, SourceError> {
        if !force {
            if let Some(t) = self.token.as_ref().filter(|t| t.fresh()) {
                return Ok(t.value.clone());
            }
        }
        let endpoint = self.token_endpoint();
        let auth = |message: String| SourceError::Auth { source_name: self.config.name.clone(), message };
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", self.config.client_id.clone()),
            ("scope", format!("{}/.default", self.config.graph_url)),
        ];
        form.extend(self.credential.form(&self.config.client_id, &endpoint).map_err(&auth)?);
        let mut attempt = 0;
        let response = loop {
            self.requests += 1;
            let sent = self.http.post(&endpoint).form(&form).send().await;
            match sent {
                Ok(r) if retryable(r.status()) && attempt < self.config.max_retries => {
                    attempt += 1;
                    self.wait(retry_after(&r), attempt).await;
                }
                Ok(r) => break r,
                Err(e) if attempt < self.config.max_retries && (e.is_connect() || e.is_timeout()) => {
                    attempt += 1;
                    self.wait(None, attempt).await;
                }
                Err(e) => return Err(self.transport_error(&endpoint, e)),
            }
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let description = body["error_description"].as_str().unwrap_or("").lines().next().unwrap_or("").to_string();
            let code = body["error"].as_str().unwrap_or("error");
            let hint = if description.contains("AADSTS7000215") {
                " — the client secret is wrong (use the secret's value, not its id)"
            } else if description.contains("AADSTS700016") {
                " — no application with this client_id in the tenant"
            } else if description.contains("AADSTS90002") {
                " — tenant_id names no tenant"
            } else if description.contains("AADSTS700027") || description.contains("AADSTS7000274") {
                " — the certificate is not registered for the application, or client_key does not match it"
            } else {
                ""
            };
            return Err(auth(format!(
                "the token endpoint {endpoint} refused app '{}' in tenant '{}': HTTP {} {code}: {description}{hint}",
                self.config.client_id,
                self.config.tenant_id,
                status.as_u16()
            )));
        }
        let value =
            body["access_token"].as_str().ok_or_else(|| auth("the token response has no access_token".into()))?;
        let token = Token::new(value.to_string(), body["expires_in"].as_u64().unwrap_or(3600));
        self.token = Some(token);
        Ok(value.to_string())
    }

    fn transport_error(&self, url: &str, e: reqwest::Error) -> SourceError {
        let chain = {
            let mut s = e.to_string();
            let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(&e);
            while let Some(c) = cur {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cur = c.source();
            }
            s
        };
        if chain.contains("certificate") || chain.contains("InvalidCertificate") || chain.contains("UnknownIssuer") {
            return SourceError::Tls {
                source_name: self.config.name.clone(),
                url: url.to_string(),
                message: format!("{chain} (set ca_file to the CA that signs the server's certificate)"),
            };
        }
        if e.is_connect() {
            return SourceError::Connect {
                source_name: self.config.name.clone(),
                url: url.to_string(),
                message: chain,
            };
        }
        self.err(format!("request to {url} failed: {chain}"))
    }

    async fn wait(&mut self, retry_after: Option<Duration>, attempt: u32) {
        let backoff = Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6)));
        // Jitter from the clock: retries of many tenants do not line up.
        let jitter = Duration::from_millis(
            u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_millis())
                    .unwrap_or(0),
            ) % 250,
        );
        let delay = retry_after.unwrap_or(backoff + jitter).min(Duration::from_secs(120));
        tracing::info!(source = %self.config.name, delay_ms = delay.as_millis() as u64, attempt, "Graph asked us to wait; retrying");
        tokio::time::sleep(delay).await;
        self.waited += delay;
    }

    /// GET with the bearer token: retries throttling and outages, refreshes
    /// the token once on 401.
    async fn get(&mut self, url: &str) -> Result<Value, Failure> {
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            let token = self.token(false).await?;
            self.requests += 1;
            let sent = self.http.get(url).bearer_auth(&token).header("Prefer", "odata.maxpagesize=999").send().await;
            let response = match sent {
                Ok(r) => r,
                Err(e) if attempt < self.config.max_retries && (e.is_connect() || e.is_timeout()) => {
                    attempt += 1;
                    self.wait(None, attempt).await;
                    continue;
                }
                Err(e) => return Err(self.transport_error(url, e).into()),
            };
            let status = response.status();
            if retryable(status) {
                if attempt < self.config.max_retries {
                    attempt += 1;
                    self.wait(retry_after(&response), attempt).await;
                    continue;
                }
                return Err(self
                    .err(format!(
                        "Graph kept answering HTTP {} to {url} after {} retries; the read is incomplete",
                        status.as_u16(),
                        self.config.max_retries
                    ))
                    .into());
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                self.token(true).await?;
                continue;
            }
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(body);
            }
            let code = body["error"]["code"].as_str().unwrap_or("");
            if status == StatusCode::GONE || code == "syncStateNotFound" || code == "resyncRequired" {
                return Err(Failure::DeltaExpired);
            }
            let message = body["error"]["message"].as_str().unwrap_or("");
            let hint = match status {
                StatusCode::FORBIDDEN => format!(
                    " — the application lacks a permission; grant {} (application permissions) with admin consent",
                    NEEDED_ROLES.join(", ")
                ),
                StatusCode::UNAUTHORIZED => " — the token was refused even after a refresh".to_string(),
                _ => String::new(),
            };
            return Err(self.err(format!("GET {url}: HTTP {} {code}: {message}{hint}", status.as_u16())).into());
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1.0/{path}", self.config.graph_url)
    }

    fn user_select(&self) -> String {
        let mut fields: Vec<&str> = USER_FIELDS.to_vec();
        fields.extend(self.config.extension_attributes.iter().map(String::as_str));
        fields.join(",")
    }
}

fn retryable(status: StatusCode) -> bool {
    matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
}

fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Graph JSON → source attributes: scalars as text, arrays as several values,
/// objects flattened with dots (`onPremisesExtensionAttributes.extensionAttribute1`).
fn attributes(obj: &Map<String, Value>) -> Vec<(String, Vec<Vec<u8>>)> {
    fn push(out: &mut Vec<(String, Vec<Vec<u8>>)>, name: String, v: &Value) {
        match v {
            Value::Null => {}
            Value::String(s) => out.push((name, vec![s.clone().into_bytes()])),
            Value::Bool(b) => out.push((name, vec![b.to_string().into_bytes()])),
            Value::Number(n) => out.push((name, vec![n.to_string().into_bytes()])),
            Value::Array(items) => {
                let values: Vec<Vec<u8>> = items
                    .iter()
                    .filter_map(|i| match i {
                        Value::String(s) => Some(s.clone().into_bytes()),
                        Value::Null | Value::Object(_) | Value::Array(_) => None,
                        other => Some(other.to_string().into_bytes()),
                    })
                    .collect();
                if !values.is_empty() {
                    out.push((name, values));
                }
            }
            Value::Object(m) => {
                for (k, v) in m {
                    push(out, format!("{name}.{k}"), v);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (k, v) in obj {
        if k.starts_with('@') || k.contains('@') {
            continue;
        }
        push(&mut out, k.clone(), v);
    }
    out
}

/// A member reference: its Graph id, and whether it is a user (not a group, device…).
type Member = (String, bool);

fn member_refs(obj: &Map<String, Value>) -> (Vec<Member>, Vec<Member>) {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for m in obj.get("members@delta").and_then(Value::as_array).into_iter().flatten() {
        let Some(id) = m["id"].as_str() else { continue };
        let is_user = m["@odata.type"].as_str().is_none_or(|t| t.eq_ignore_ascii_case("#microsoft.graph.user"));
        let member = (id.to_string(), is_user);
        if m.get("@removed").is_some() { removed.push(member) } else { added.push(member) }
    }
    (added, removed)
}

/// What one resource's delta round found.
#[derive(Default)]
struct Round {
    /// Full objects (full round), or changed objects' ids (incremental).
    objects: Vec<Map<String, Value>>,
    deleted: Vec<String>,
    soft_deleted: Vec<String>,
    /// Group id → members added / removed (accumulated across pages).
    added: HashMap<String, Vec<Member>>,
    removed: HashMap<String, Vec<Member>>,
    delta_link: String,
}

async fn round(s: &mut Session<'_>, start: &str) -> Result<Round, Failure> {
    let mut out = Round::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut url = start.to_string();
    loop {
        let page = s.get(&url).await?;
        for item in page["value"].as_array().into_iter().flatten() {
            let Some(obj) = item.as_object() else { continue };
            let Some(id) = obj.get("id").and_then(Value::as_str) else { continue };
            if let Some(removed) = obj.get("@removed") {
                if removed["reason"] == "changed" {
                    out.soft_deleted.push(id.to_string());
                } else {
                    out.deleted.push(id.to_string());
                }
                continue;
            }
            let (added, removed) = member_refs(obj);
            out.added.entry(id.to_string()).or_default().extend(added);
            out.removed.entry(id.to_string()).or_default().extend(removed);
            // A group may appear on several pages (members split across them):
            // keep one object, with the properties merged.
            match seen.get(id) {
                Some(&i) => {
                    for (k, v) in obj {
                        out.objects[i].insert(k.clone(), v.clone());
                    }
                }
                None => {
                    seen.insert(id.to_string(), out.objects.len());
                    out.objects.push(obj.clone());
                }
            }
        }
        if let Some(next) = page["@odata.nextLink"].as_str() {
            url = next.to_string();
            continue;
        }
        match page["@odata.deltaLink"].as_str() {
            Some(link) => {
                out.delta_link = link.to_string();
                return Ok(out);
            }
            None => {
                return Err(s
                    .err(format!("a delta page from {url} has neither @odata.nextLink nor @odata.deltaLink"))
                    .into());
            }
        }
    }
}

impl Source for GraphSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn resume(&mut self, state: &BTreeMap<String, String>) {
        self.resume = state.clone();
    }

    fn check(&mut self) -> Result<String, SourceError> {
        self.run(async |s| {
            let started = Instant::now();
            s.token(true).await?;
            let roles = s.token.as_ref().map(Token::roles).unwrap_or_default();
            let mut lines = vec![format!(
                "token: acquired from {} for app '{}' in {} ms",
                s.token_endpoint(),
                s.config.client_id,
                started.elapsed().as_millis()
            )];
            let missing: Vec<&str> = NEEDED_ROLES.iter().copied().filter(|r| !roles.iter().any(|x| x == r)).collect();
            lines.push(if roles.is_empty() {
                "permissions: the token lists no application roles (grant User.Read.All, Group.Read.All, GroupMember.Read.All)".into()
            } else if missing.is_empty() {
                format!("permissions: {}", roles.join(", "))
            } else {
                format!("permissions: {} — MISSING {}", roles.join(", "), missing.join(", "))
            });
            for (what, path) in [("users", "users/delta?$select=id"), ("groups", "groups/delta?$select=id")] {
                let url = s.url(path);
                lines.push(match s.get(&url).await {
                    Ok(_) => format!("delta queries on {what}: supported"),
                    Err(Failure::DeltaExpired) => format!("delta queries on {what}: answered 410 Gone"),
                    Err(Failure::Error(e)) => format!("delta queries on {what}: FAILED ({e})"),
                });
            }
            Ok(lines.join("\n"))
        })
    }

    fn read(&mut self, sink: &mut dyn Sink) -> Result<ReadSummary, SourceError> {
        let resume = if self.config.incremental { self.resume.clone() } else { BTreeMap::new() };
        let name = self.config.name.clone();
        let anchor_attr = self.config.anchor.clone();
        let filter = self.config.user_attribute_filter.clone();
        let started = Instant::now();
        let result = self.run(async |s| {
            let users_link = resume.get(STATE_USERS).cloned();
            let groups_link = resume.get(STATE_GROUPS).cloned();
            let incremental = users_link.is_some() && groups_link.is_some();
            let user_start = s.url(&format!("users/delta?$select={}", s.user_select()));
            let group_start = s.url(&format!("groups/delta?$select={},members", GROUP_FIELDS.join(",")));
            let rounds = if incremental {
                let u = round(s, users_link.as_deref().unwrap_or(&user_start)).await;
                let g = match &u {
                    Ok(_) => Some(round(s, groups_link.as_deref().unwrap_or(&group_start)).await),
                    Err(_) => None,
                };
                match (u, g) {
                    (Ok(u), Some(Ok(g))) => Some((u, g)),
                    (Err(Failure::DeltaExpired), _) | (_, Some(Err(Failure::DeltaExpired))) => {
                        tracing::warn!(source = %name, "the delta link expired (410 Gone); reading everything again");
                        None
                    }
                    (Err(Failure::Error(e)), _) | (_, Some(Err(Failure::Error(e)))) => return Err(e),
                    (Ok(_), None) => None,
                }
            } else {
                None
            };
            let (users, groups, incremental) = match rounds {
                Some((u, g)) => (u, g, true),
                None => {
                    let u = round(s, &user_start).await.map_err(expired_mid_full)?;
                    let g = round(s, &group_start).await.map_err(expired_mid_full)?;
                    (u, g, false)
                }
            };
            // Incremental rounds may carry only changed properties: fetch each changed object whole.
            let mut user_objects = Vec::new();
            let mut group_objects = Vec::new();
            let mut deleted = users.deleted.clone();
            deleted.extend(groups.deleted.iter().cloned());
            deleted.extend(groups.soft_deleted.iter().cloned());
            if incremental {
                let select = s.user_select();
                for obj in &users.objects {
                    let Some(id) = obj.get("id").and_then(Value::as_str) else { continue };
                    match s.get(&s.url(&format!("users/{id}?$select={select}"))).await {
                        Ok(Value::Object(full)) => user_objects.push(full),
                        Ok(_) => {}
                        Err(Failure::Error(SourceError::Other { message, .. })) if message.contains("HTTP 404") => {
                            deleted.push(id.to_string())
                        }
                        Err(Failure::Error(e)) => return Err(e),
                        Err(Failure::DeltaExpired) => return Err(s.err(format!("user {id}: 410 Gone"))),
                    }
                }
                for obj in &groups.objects {
                    let Some(id) = obj.get("id").and_then(Value::as_str) else { continue };
                    match s.get(&s.url(&format!("groups/{id}?$select={}", GROUP_FIELDS.join(",")))).await {
                        Ok(Value::Object(full)) => group_objects.push(full),
                        Ok(_) => {}
                        Err(Failure::Error(SourceError::Other { message, .. })) if message.contains("HTTP 404") => {
                            deleted.push(id.to_string())
                        }
                        Err(Failure::Error(e)) => return Err(e),
                        Err(Failure::DeltaExpired) => return Err(s.err(format!("group {id}: 410 Gone"))),
                    }
                }
            } else {
                user_objects = users.objects;
                group_objects = groups.objects;
            }
            // Members are referred to by Graph id; users may be anchored on
            // something else. Users of this read answer for themselves; others
            // (an incremental read's new members) are looked up once each.
            let mut anchor_of: HashMap<String, Option<String>> = user_objects
                .iter()
                .filter_map(|o| {
                    let id = o.get("id").and_then(Value::as_str)?;
                    Some((id.to_string(), o.get(&anchor_attr).and_then(Value::as_str).map(str::to_string)))
                })
                .collect();
            if anchor_attr != "id" && incremental {
                let wanted: BTreeSet<String> = groups
                    .added
                    .values()
                    .chain(groups.removed.values())
                    .flatten()
                    .filter(|(id, is_user)| *is_user && !anchor_of.contains_key(id))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in wanted {
                    let anchor = match s.get(&s.url(&format!("users/{id}?$select=id,{anchor_attr}"))).await {
                        Ok(v) => v.get(&anchor_attr).and_then(Value::as_str).map(str::to_string),
                        Err(_) => None,
                    };
                    anchor_of.insert(id, anchor);
                }
            }
            let member_anchor = |(id, is_user): &Member| -> Option<String> {
                if !*is_user || anchor_attr == "id" {
                    return Some(id.clone());
                }
                anchor_of.get(id).cloned().flatten()
            };
            let mut summary = ReadSummary { waited_ms: 0, ..ReadSummary::default() };
            let mut partial_groups = Vec::new();
            let mut removed_members = Vec::new();
            for obj in user_objects {
                let id = obj.get("id").and_then(Value::as_str).unwrap_or("").to_string();
                let anchor = obj.get(&anchor_attr).and_then(Value::as_str).map(str::to_string);
                let mut attrs = attributes(&obj);
                if !passes(&filter, &attrs) {
                    // Out of scope: on an incremental read, a user that stopped
                    // matching goes like a deleted one.
                    if let (true, Some(a)) = (incremental, anchor.as_ref()) {
                        deleted.push(a.clone());
                    }
                    continue;
                }
                if let Some(enabled) = obj.get("accountEnabled").and_then(Value::as_bool) {
                    attrs.push(("active".into(), vec![enabled.to_string().into_bytes()]));
                }
                let label = obj.get("userPrincipalName").and_then(Value::as_str).unwrap_or(&id).to_string();
                let item = match anchor.filter(|a| !a.is_empty()) {
                    Some(anchor) => {
                        summary.users += 1;
                        SourceItem::Entry(SourceEntry {
                            anchor,
                            dn: None,
                            kind: EntryKind::User,
                            attrs,
                            members: Vec::new(),
                        })
                    }
                    None => {
                        summary.rejected += 1;
                        SourceItem::Rejected {
                            dn: Some(label.clone()),
                            anchor: None,
                            kind: Some(EntryKind::User),
                            reason: format!("user '{label}' ({id}) has no {anchor_attr} (the configured anchor)"),
                        }
                    }
                };
                sink.item(item).map_err(|m| SourceError::Stopped { source_name: name.clone(), message: m })?;
            }
            for obj in group_objects {
                let id = obj.get("id").and_then(Value::as_str).unwrap_or("").to_string();
                let mut unique = BTreeSet::new();
                let members: Vec<MemberRef> = groups
                    .added
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter_map(&member_anchor)
                    .filter(|a| unique.insert(a.clone()))
                    .map(MemberRef::Anchor)
                    .collect();
                if incremental {
                    partial_groups.push(id.clone());
                    for m in groups.removed.get(&id).into_iter().flatten() {
                        if let Some(a) = member_anchor(m) {
                            removed_members.push((id.clone(), a));
                        }
                    }
                }
                summary.groups += 1;
                let item = SourceItem::Entry(SourceEntry {
                    anchor: id,
                    dn: None,
                    kind: EntryKind::Group,
                    attrs: attributes(&obj),
                    members,
                });
                sink.item(item).map_err(|m| SourceError::Stopped { source_name: name.clone(), message: m })?;
            }
            if incremental {
                summary.delta = Some(Delta {
                    deleted,
                    since: "the delta links of the last applied run".into(),
                    deactivated: users.soft_deleted.clone(),
                    partial_groups,
                    removed_members,
                    present: Vec::new(),
                });
            }
            summary.state = vec![(STATE_USERS.into(), users.delta_link), (STATE_GROUPS.into(), groups.delta_link)];
            summary.requests = s.requests;
            summary.waited_ms = s.waited.as_millis() as u64;
            Ok(summary)
        });
        if let Ok(summary) = &result {
            tracing::info!(
                source = %name,
                mode = if summary.delta.is_some() { "incremental" } else { "full" },
                users = summary.users,
                groups = summary.groups,
                requests = summary.requests,
                waited_ms = summary.waited_ms,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Microsoft Graph read complete"
            );
        }
        result
    }
}

/// Whether a user's attributes pass `user_attribute_filter`.
fn passes(filter: &BTreeMap<String, Vec<String>>, attrs: &[(String, Vec<Vec<u8>>)]) -> bool {
    filter.iter().all(|(name, wanted)| {
        attrs.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).flat_map(|(_, v)| v).any(|v| {
            let v = String::from_utf8_lossy(v);
            wanted.iter().any(|w| w.eq_ignore_ascii_case(&v))
        })
    })
}

fn expired_mid_full(f: Failure) -> SourceError {
    match f {
        Failure::Error(e) => e,
        Failure::DeltaExpired => SourceError::Other {
            source_name: String::new(),
            message: "Graph answered 410 Gone during a full read; try again".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_for_loopback() {
        assert!(check_url("https://graph.microsoft.com").is_ok());
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        assert!(check_url("http://[::1]:80/x").is_ok());
        assert!(check_url("http://localhost").is_ok());
        assert!(check_url("http://graph.example.com").is_err());
        assert!(check_url("ftp://x").is_err());
    }

    #[test]
    fn json_becomes_attributes() {
        let obj: Map<String, Value> = serde_json::from_str(
            r#"{"id":"1","accountEnabled":false,"businessPhones":["1","2"],"onPremisesExtensionAttributes":{"extensionAttribute1":"cc","extensionAttribute2":null},"mail":null,"@odata.type":"x"}"#,
        )
        .expect("json");
        let a = attributes(&obj);
        let get = |n: &str| a.iter().find(|(k, _)| k == n).map(|(_, v)| v.len());
        assert_eq!(get("accountEnabled"), Some(1));
        assert_eq!(get("businessPhones"), Some(2));
        assert_eq!(get("onPremisesExtensionAttributes.extensionAttribute1"), Some(1));
        assert_eq!(get("onPremisesExtensionAttributes.extensionAttribute2"), None);
        assert_eq!(get("mail"), None);
        assert_eq!(get("@odata.type"), None);
    }
}
