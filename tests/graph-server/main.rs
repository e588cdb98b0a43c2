//! A Microsoft Graph and identity-platform test server, for Roster's
//! `kind = "azure-ad"` tests. A separate process on 127.0.0.1 that follows the
//! documented protocol closely enough that a connector passing against it
//! would work against Microsoft:
//!
//! - `POST /{tenant}/oauth2/v2.0/token`: client credentials with a client
//!   secret, or a client assertion (an RS256 JWT signed with the app's
//!   certificate key, `x5t` thumbprint, `aud` = the token endpoint). Wrong
//!   credentials get `401 invalid_client` with the AADSTS codes Microsoft uses;
//!   an unknown tenant `400` with AADSTS90002. Access tokens are JWT-shaped,
//!   carry the app's `roles` and expire.
//! - `GET /v1.0/users/delta`, `GET /v1.0/groups/delta`: `$select`, paging by
//!   `@odata.nextLink` (skip token), a final `@odata.deltaLink`; later rounds
//!   return only changes: changed objects with `id` and the changed
//!   properties, `@removed` objects (`deleted` or `changed` = soft-deleted),
//!   `members@delta` with additions and `@removed` removals. Delta tokens can
//!   be expired (`410 Gone`, code `syncStateNotFound`).
//! - `GET /v1.0/users/{id}`, `GET /v1.0/groups/{id}` with `$select`.
//! - Faults: the next N requests answer `429` with `Retry-After`, or `503`.
//!
//! Tests drive it through `/_admin/*` (JSON), which is not part of Graph.
//!
//! Usage: roster-graph-test-server --tenant T --client-id C --client-secret S
//!        [--certificate cert.pem] [--users N] [--groups M] [--page-size P]
//!        [--token-lifetime SECS]
//! Prints `listening on http://127.0.0.1:PORT` on stdout once ready.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    User,
    Group,
}

impl Kind {
    fn odata_type(self) -> &'static str {
        match self {
            Kind::User => "#microsoft.graph.user",
            Kind::Group => "#microsoft.graph.group",
        }
    }
}

#[derive(Clone, Debug)]
struct Obj {
    kind: Kind,
    props: Map<String, Value>,
    members: BTreeSet<(Kind, String)>,
    /// None: live; Some(reason): deleted ("deleted") or soft-deleted ("changed").
    removed: Option<&'static str>,
}

#[derive(Clone, Debug)]
enum Change {
    Props(Vec<String>),
    MemberAdd(Kind, String),
    MemberRemove(Kind, String),
    Removed,
}

#[derive(Default)]
struct Faults {
    throttle: u32,
    retry_after: u64,
    unavailable: u32,
}

struct Server {
    tenant: String,
    client_id: String,
    client_secret: String,
    /// The app certificate's public key (SubjectPublicKeyInfo DER) and SHA-1 thumbprint.
    cert: Option<(Vec<u8>, Vec<u8>)>,
    roles: Vec<String>,
    token_lifetime: u64,
    page_size: usize,
    objects: BTreeMap<String, Obj>,
    log: Vec<(u64, Kind, String, Change)>,
    seq: u64,
    /// Delta tokens issued at or before this sequence number are expired.
    expired_before: u64,
    tokens: BTreeMap<String, u64>,
    faults: Faults,
    /// Request log: (method, path and query), for tests that count requests.
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Server>>;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": { "date": "2026-11-28T00:00:00", "request-id": "00000000-0000-0000-0000-000000000000" }
        }
    });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

fn aad_error(status: StatusCode, error: &str, description: &str, codes: &[u32]) -> Response {
    let body = json!({
        "error": error,
        "error_description": description,
        "error_codes": codes,
        "timestamp": "2026-11-28 00:00:00Z",
        "trace_id": "00000000-0000-0000-0000-000000000000",
        "correlation_id": "00000000-0000-0000-0000-000000000000",
    });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

// ----------------------------------------------------------------- data

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn uuid_from(rng: &mut Rng) -> String {
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

const FIRST: &[&str] = &["Ada", "Bea", "Cyd", "Dan", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kai", "Lea"];
const LAST: &[&str] = &["Moss", "Nash", "Orr", "Pike", "Quinn", "Reed", "Shaw", "Tate", "Vance", "West"];

fn seed(server: &mut Server, users: usize, groups: usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut user_ids = Vec::with_capacity(users);
    for i in 0..users {
        let id = uuid_from(&mut rng);
        let (f, l) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()]);
        let upn = format!("{}.{}{}@contoso.test", f.to_lowercase(), l.to_lowercase(), i);
        let mut p = Map::new();
        p.insert("id".into(), json!(id));
        p.insert("userPrincipalName".into(), json!(upn));
        p.insert("displayName".into(), json!(format!("{f} {l} {i}")));
        p.insert("givenName".into(), json!(f));
        p.insert("surname".into(), json!(l));
        p.insert("mail".into(), json!(upn));
        p.insert("accountEnabled".into(), json!(true));
        p.insert("jobTitle".into(), json!(if i % 7 == 0 { "Manager" } else { "Engineer" }));
        p.insert("department".into(), json!(format!("D-{:02}", i % 20)));
        p.insert("onPremisesImmutableId".into(), json!(STANDARD.encode(format!("imm-{i}"))));
        p.insert("employeeId".into(), json!(format!("{:06}", 100_000 + i)));
        p.insert(
            "onPremisesExtensionAttributes".into(),
            json!({ "extensionAttribute1": format!("cc-{}", i % 13), "extensionAttribute2": null }),
        );
        p.insert("extension_0a1b2c3d4e5f_costCenter".into(), json!(format!("CC{}", i % 9)));
        server.objects.insert(id.clone(), Obj { kind: Kind::User, props: p, members: BTreeSet::new(), removed: None });
        user_ids.push(id);
    }
    let mut group_ids: Vec<String> = Vec::new();
    for j in 0..groups {
        let id = uuid_from(&mut rng);
        let mut p = Map::new();
        p.insert("id".into(), json!(id));
        p.insert("displayName".into(), json!(format!("team-{j:03}")));
        p.insert("description".into(), json!(format!("Team {j}")));
        p.insert("mail".into(), json!(format!("team-{j:03}@contoso.test")));
        let mut members = BTreeSet::new();
        if !user_ids.is_empty() {
            let size = 5 + (rng.next() % 40) as usize;
            for _ in 0..size {
                members.insert((Kind::User, user_ids[(rng.next() % user_ids.len() as u64) as usize].clone()));
            }
        }
        // Every tenth group nests the one before it.
        if j % 10 == 9 {
            if let Some(prev) = group_ids.last() {
                members.insert((Kind::Group, prev.clone()));
            }
        }
        server.objects.insert(id.clone(), Obj { kind: Kind::Group, props: p, members, removed: None });
        group_ids.push(id);
    }
}

// ----------------------------------------------------------------- auth

fn issue_token(s: &mut Server) -> Value {
    let exp = now() + s.token_lifetime;
    let header = URL_SAFE_NO_PAD.encode(json!({"typ": "JWT", "alg": "none"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(
        json!({
            "aud": "https://graph.microsoft.com",
            "iss": format!("https://sts.windows.net/{}/", s.tenant),
            "appid": s.client_id,
            "tid": s.tenant,
            "roles": s.roles,
            "exp": exp,
            "jti": s.seq.to_string() + &s.tokens.len().to_string(),
        })
        .to_string(),
    );
    let token = format!("{header}.{payload}.test-signature-{}", s.tokens.len());
    s.tokens.insert(token.clone(), exp);
    json!({ "token_type": "Bearer", "expires_in": s.token_lifetime, "ext_expires_in": s.token_lifetime, "access_token": token })
}

fn check_assertion(s: &Server, assertion: &str, endpoint: &str) -> Result<(), String> {
    let Some((public_key, thumbprint)) = &s.cert else {
        return Err("AADSTS700027: no certificate is registered for the application".into());
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return Err("AADSTS50027: JWT token is invalid or malformed".into());
    }
    let decode =
        |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| "AADSTS50027: JWT token is invalid or malformed".to_string());
    let header: Value = serde_json::from_slice(&decode(parts[0])?).map_err(|_| "AADSTS50027: malformed header")?;
    let claims: Value = serde_json::from_slice(&decode(parts[1])?).map_err(|_| "AADSTS50027: malformed claims")?;
    if header["alg"] != "RS256" {
        return Err("AADSTS5002738: the client assertion must be signed with RS256".into());
    }
    let x5t = header["x5t"].as_str().and_then(|t| URL_SAFE_NO_PAD.decode(t).ok());
    if x5t.as_deref() != Some(thumbprint.as_slice()) {
        return Err("AADSTS700027: the certificate with identifier used to sign the client assertion is not registered on application".into());
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let signature = decode(parts[2])?;
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public_key);
    key.verify(signed.as_bytes(), &signature)
        .map_err(|_| "AADSTS7000274: Key was found, but use of the key to verify the signature failed".to_string())?;
    if claims["aud"] != endpoint {
        return Err(format!("AADSTS700016: the assertion audience must be the token endpoint {endpoint}"));
    }
    if claims["iss"] != s.client_id.as_str() || claims["sub"] != s.client_id.as_str() {
        return Err("AADSTS700021: client assertion application identifier doesn't match 'client_id' parameter".into());
    }
    let t = now();
    if claims["exp"].as_u64().is_none_or(|e| e < t) || claims["nbf"].as_u64().is_some_and(|n| n > t + 300) {
        return Err("AADSTS700024: client assertion is not within its valid time range".into());
    }
    Ok(())
}

async fn token(State(st): State<Shared>, Path(tenant): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = st.lock().expect("state");
    s.requests.push(format!("POST /{tenant}/oauth2/v2.0/token"));
    if let Some(r) = fault(&mut s) {
        return r;
    }
    if tenant != s.tenant {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID"),
            &[90002],
        );
    }
    let form: BTreeMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let endpoint = format!("http://{host}/{tenant}/oauth2/v2.0/token");
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: unsupported grant type",
            &[70003],
        );
    }
    if !form.get("scope").is_some_and(|sc| sc.ends_with("/.default")) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier",
            &[1002012],
        );
    }
    if form.get("client_id") != Some(&s.client_id) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            &format!(
                "AADSTS700016: Application with identifier '{}' was not found in the directory '{tenant}'",
                form.get("client_id").map(String::as_str).unwrap_or("")
            ),
            &[700016],
        );
    }
    let ok = match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(secret), None) => {
            if *secret == s.client_secret {
                Ok(())
            } else {
                Err("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID".to_string())
            }
        }
        (None, Some(assertion)) => {
            if form.get("client_assertion_type").map(String::as_str)
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                Err("AADSTS700023: client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into())
            } else {
                check_assertion(&s, assertion, &endpoint)
            }
        }
        _ => Err("AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'".into()),
    };
    match ok {
        Ok(()) => {
            let t = issue_token(&mut s);
            (StatusCode::OK, [("content-type", "application/json")], t.to_string()).into_response()
        }
        Err(description) => {
            let code: u32 = description
                .strip_prefix("AADSTS")
                .and_then(|r| r.split(':').next())
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            aad_error(StatusCode::UNAUTHORIZED, "invalid_client", &description, &[code])
        }
    }
}

fn authorize(s: &Server, headers: &HeaderMap) -> Option<Response> {
    let Some(token) =
        headers.get("authorization").and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer "))
    else {
        return Some(graph_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", "Access token is empty."));
    };
    match s.tokens.get(token) {
        Some(exp) if *exp > now() => None,
        Some(_) => Some(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
        )),
        None => Some(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        )),
    }
}

fn fault(s: &mut Server) -> Option<Response> {
    if s.faults.throttle > 0 {
        s.faults.throttle -= 1;
        let body = json!({"error": {"code": "TooManyRequests", "message": "Too many requests"}}).to_string();
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("content-type", "application/json".to_string()), ("retry-after", s.faults.retry_after.to_string())],
                body,
            )
                .into_response(),
        );
    }
    if s.faults.unavailable > 0 {
        s.faults.unavailable -= 1;
        return Some(graph_error(StatusCode::SERVICE_UNAVAILABLE, "serviceNotAvailable", "Service Unavailable"));
    }
    None
}

// ----------------------------------------------------------------- delta

fn select_list(q: &BTreeMap<String, String>, kind: Kind) -> Vec<String> {
    match q.get("$select") {
        Some(sel) => sel.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        None => match kind {
            Kind::User => ["displayName", "givenName", "surname", "jobTitle", "mail", "userPrincipalName"]
                .map(String::from)
                .to_vec(),
            Kind::Group => ["displayName", "description", "mail", "members"].map(String::from).to_vec(),
        },
    }
}

fn project(obj: &Obj, select: &[String], only: Option<&BTreeSet<String>>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), obj.props["id"].clone());
    for k in select {
        if k == "members" || k == "id" {
            continue;
        }
        if only.is_some_and(|o| !o.contains(k)) {
            continue;
        }
        m.insert(k.clone(), obj.props.get(k).cloned().unwrap_or(Value::Null));
    }
    m
}

fn member_ref(kind: Kind, id: &str, removed: bool) -> Value {
    let mut m = json!({ "@odata.type": kind.odata_type(), "id": id });
    if removed {
        m["@removed"] = json!({ "reason": "deleted" });
    }
    m
}

/// A delta round's state, carried in the skip/delta token.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    kind: String,
    /// Changes after this sequence number (0 with `full`: everything).
    since: u64,
    until: u64,
    full: bool,
    offset: usize,
    select: Vec<String>,
}

fn encode_cursor(c: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

fn decode_cursor(t: &str) -> Option<Cursor> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(t).ok()?).ok()
}

async fn delta(
    State(st): State<Shared>,
    Path(collection): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = st.lock().expect("state");
    let query = q.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    s.requests.push(format!("GET /v1.0/{collection}/delta?{query}"));
    if let Some(r) = fault(&mut s) {
        return r;
    }
    if let Some(r) = authorize(&s, &headers) {
        return r;
    }
    let kind = match collection.as_str() {
        "users" => Kind::User,
        "groups" => Kind::Group,
        _ => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Resource not found for the segment"),
    };
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1").to_string();
    let cursor = if let Some(t) = q.get("$skiptoken").or_else(|| q.get("$deltatoken")) {
        match decode_cursor(t) {
            Some(c) if c.kind == collection => c,
            _ => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid skip or delta token"),
        }
    } else {
        Cursor {
            kind: collection.clone(),
            since: 0,
            until: s.seq,
            full: true,
            offset: 0,
            select: select_list(&q, kind),
        }
    };
    let is_delta_token = q.contains_key("$deltatoken");
    let gone = || {
        graph_error(
            StatusCode::GONE,
            "syncStateNotFound",
            "The sync state generation is not found. Resync required: restart the delta query without a token.",
        )
    };
    let mut cursor = cursor;
    if is_delta_token {
        if cursor.until < s.expired_before {
            return gone();
        }
        // A delta link starts a new round: the changes since the token's mark.
        cursor = Cursor { since: cursor.until, until: s.seq, full: false, offset: 0, ..cursor };
    } else if !cursor.full && cursor.since < s.expired_before {
        return gone();
    }
    let items: Vec<Value> = if cursor.full {
        s.objects
            .values()
            .filter(|o| o.kind == kind && o.removed.is_none())
            .map(|o| {
                let mut m = project(o, &cursor.select, None);
                if kind == Kind::Group && cursor.select.iter().any(|x| x == "members") {
                    m.insert(
                        "members@delta".into(),
                        Value::Array(o.members.iter().map(|(k, id)| member_ref(*k, id, false)).collect()),
                    );
                }
                Value::Object(m)
            })
            .collect()
    } else {
        // Changes in (since, until], folded per object.
        let mut per: BTreeMap<String, (BTreeSet<String>, Vec<Value>, bool)> = BTreeMap::new();
        for (seq, k, id, change) in &s.log {
            if *k != kind || *seq <= cursor.since || *seq > cursor.until {
                continue;
            }
            let e = per.entry(id.clone()).or_default();
            match change {
                Change::Props(names) => e.0.extend(names.iter().cloned()),
                Change::MemberAdd(mk, mid) => e.1.push(member_ref(*mk, mid, false)),
                Change::MemberRemove(mk, mid) => e.1.push(member_ref(*mk, mid, true)),
                Change::Removed => e.2 = true,
            }
        }
        per.into_iter()
            .filter_map(|(id, (props, members, removed))| {
                let obj = s.objects.get(&id)?;
                if removed || obj.removed.is_some() {
                    let reason = obj.removed.unwrap_or("deleted");
                    return Some(json!({ "id": id, "@removed": { "reason": reason } }));
                }
                let mut m = project(obj, &cursor.select, Some(&props));
                if kind == Kind::Group && !members.is_empty() && cursor.select.iter().any(|x| x == "members") {
                    m.insert("members@delta".into(), Value::Array(members));
                }
                Some(Value::Object(m))
            })
            .collect()
    };
    let page: Vec<Value> = items.iter().skip(cursor.offset).take(s.page_size).cloned().collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("https://graph.microsoft.com/v1.0/$metadata#{collection}(id,{})", cursor.select.join(","))),
    );
    let next_offset = cursor.offset + page.len();
    if next_offset < items.len() {
        let next = Cursor { offset: next_offset, ..cursor };
        body.insert(
            "@odata.nextLink".into(),
            json!(format!("http://{host}/v1.0/{collection}/delta?$skiptoken={}", encode_cursor(&next))),
        );
    } else {
        let done = Cursor { since: cursor.since, until: cursor.until, full: false, offset: 0, ..cursor };
        body.insert(
            "@odata.deltaLink".into(),
            json!(format!("http://{host}/v1.0/{collection}/delta?$deltatoken={}", encode_cursor(&done))),
        );
    }
    body.insert("value".into(), Value::Array(page));
    (StatusCode::OK, [("content-type", "application/json;odata.metadata=minimal")], Value::Object(body).to_string())
        .into_response()
}

async fn object(
    State(st): State<Shared>,
    Path((collection, id)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = st.lock().expect("state");
    s.requests.push(format!("GET /v1.0/{collection}/{id}"));
    if let Some(r) = fault(&mut s) {
        return r;
    }
    if let Some(r) = authorize(&s, &headers) {
        return r;
    }
    let kind = if collection == "users" { Kind::User } else { Kind::Group };
    match s.objects.get(&id) {
        Some(o) if o.kind == kind && o.removed.is_none() => {
            let mut m = project(o, &select_list(&q, kind), None);
            m.insert(
                "@odata.context".into(),
                json!(format!("https://graph.microsoft.com/v1.0/$metadata#{collection}/$entity")),
            );
            (StatusCode::OK, [("content-type", "application/json")], Value::Object(m).to_string()).into_response()
        }
        _ => graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        ),
    }
}

// ----------------------------------------------------------------- admin

fn record(s: &mut Server, kind: Kind, id: &str, change: Change) {
    s.seq += 1;
    let seq = s.seq;
    s.log.push((seq, kind, id.to_string(), change));
}

async fn admin(State(st): State<Shared>, Path(action): Path<String>, body: Bytes) -> Response {
    let mut s = st.lock().expect("state");
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = req["id"].as_str().unwrap_or("").to_string();
    let ok = |v: Value| (StatusCode::OK, [("content-type", "application/json")], v.to_string()).into_response();
    match action.as_str() {
        "state" => {
            let users: Vec<&String> =
                s.objects.iter().filter(|(_, o)| o.kind == Kind::User && o.removed.is_none()).map(|(k, _)| k).collect();
            let groups: BTreeMap<String, Value> = s
                .objects
                .iter()
                .filter(|(_, o)| o.kind == Kind::Group && o.removed.is_none())
                .map(|(k, o)| (k.clone(), json!({"displayName": o.props["displayName"], "members": o.members.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>()})))
                .collect();
            ok(json!({ "users": users, "groups": groups, "seq": s.seq }))
        }
        "requests" => ok(json!(std::mem::take(&mut s.requests))),
        "update" => {
            let Some(obj) = s.objects.get_mut(&id) else {
                return graph_error(StatusCode::NOT_FOUND, "NotFound", "no such object");
            };
            let kind = obj.kind;
            let mut names = Vec::new();
            for (k, v) in req["set"].as_object().cloned().unwrap_or_default() {
                obj.props.insert(k.clone(), v);
                names.push(k);
            }
            record(&mut s, kind, &id, Change::Props(names));
            ok(json!({"seq": s.seq}))
        }
        "create-user" => {
            let mut p = req["props"].as_object().cloned().unwrap_or_default();
            p.insert("id".into(), json!(id));
            let names: Vec<String> = p.keys().cloned().collect();
            s.objects.insert(id.clone(), Obj { kind: Kind::User, props: p, members: BTreeSet::new(), removed: None });
            record(&mut s, Kind::User, &id, Change::Props(names));
            ok(json!({"seq": s.seq}))
        }
        "delete" | "soft-delete" => {
            let reason = if action == "delete" { "deleted" } else { "changed" };
            let Some(obj) = s.objects.get_mut(&id) else {
                return graph_error(StatusCode::NOT_FOUND, "NotFound", "no such object");
            };
            obj.removed = Some(reason);
            let kind = obj.kind;
            record(&mut s, kind, &id, Change::Removed);
            // A deleted member leaves its groups, as in Entra ID.
            let containing: Vec<String> = s
                .objects
                .iter()
                .filter(|(_, o)| o.members.contains(&(kind, id.clone())))
                .map(|(g, _)| g.clone())
                .collect();
            for g in containing {
                if let Some(o) = s.objects.get_mut(&g) {
                    o.members.remove(&(kind, id.clone()));
                }
                record(&mut s, Kind::Group, &g, Change::MemberRemove(kind, id.clone()));
            }
            ok(json!({"seq": s.seq}))
        }
        "add-member" | "remove-member" => {
            let member = req["member"].as_str().unwrap_or("").to_string();
            let mkind = match s.objects.get(&member) {
                Some(o) => o.kind,
                None => return graph_error(StatusCode::NOT_FOUND, "NotFound", "no such member"),
            };
            let Some(group) = s.objects.get_mut(&id) else {
                return graph_error(StatusCode::NOT_FOUND, "NotFound", "no such group");
            };
            if action == "add-member" {
                group.members.insert((mkind, member.clone()));
                record(&mut s, Kind::Group, &id, Change::MemberAdd(mkind, member));
            } else {
                group.members.remove(&(mkind, member.clone()));
                record(&mut s, Kind::Group, &id, Change::MemberRemove(mkind, member));
            }
            ok(json!({"seq": s.seq}))
        }
        "expire-delta-tokens" => {
            s.expired_before = s.seq + 1;
            // Later changes must not be hidden behind the expiry mark.
            s.seq += 1;
            ok(json!({"seq": s.seq}))
        }
        "expire-access-tokens" => {
            for exp in s.tokens.values_mut() {
                *exp = 0;
            }
            ok(json!({}))
        }
        "faults" => {
            s.faults.throttle = req["throttle"].as_u64().unwrap_or(0) as u32;
            s.faults.retry_after = req["retry_after"].as_u64().unwrap_or(1);
            s.faults.unavailable = req["unavailable"].as_u64().unwrap_or(0) as u32;
            ok(json!({}))
        }
        _ => graph_error(StatusCode::NOT_FOUND, "NotFound", "unknown admin action"),
    }
}

// ----------------------------------------------------------------- main

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let need = |n: &str| arg(&args, n).unwrap_or_else(|| panic!("{n} is required"));
    let cert = arg(&args, "--certificate").map(|path| {
        let pem = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("{path} holds no certificate"));
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).expect("a valid certificate");
        let public_key = parsed.public_key().subject_public_key.data.to_vec();
        let thumbprint = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der.as_ref()).as_ref().to_vec();
        (public_key, thumbprint)
    });
    let mut server = Server {
        tenant: need("--tenant"),
        client_id: need("--client-id"),
        client_secret: need("--client-secret"),
        cert,
        roles: arg(&args, "--roles")
            .unwrap_or_else(|| "User.Read.All,Group.Read.All,GroupMember.Read.All".into())
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect(),
        token_lifetime: arg(&args, "--token-lifetime").and_then(|v| v.parse().ok()).unwrap_or(3600),
        page_size: arg(&args, "--page-size").and_then(|v| v.parse().ok()).unwrap_or(200),
        objects: BTreeMap::new(),
        log: Vec::new(),
        seq: 0,
        expired_before: 0,
        tokens: BTreeMap::new(),
        faults: Faults::default(),
        requests: Vec::new(),
    };
    let users = arg(&args, "--users").and_then(|v| v.parse().ok()).unwrap_or(100);
    let groups = arg(&args, "--groups").and_then(|v| v.parse().ok()).unwrap_or(10);
    seed(&mut server, users, groups);
    let state: Shared = Arc::new(Mutex::new(server));
    let app = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/v1.0/{collection}/delta", get(delta))
        .route("/v1.0/{collection}/{id}", get(object))
        .route("/_admin/{action}", post(admin))
        .with_state(state);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        println!("listening on http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // Ends when the test that started it closes our stdin (or dies).
        let stop = async {
            let mut buf = [0u8; 1];
            let mut stdin = tokio::io::stdin();
            let _ = tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await;
        };
        axum::serve(listener, app).with_graceful_shutdown(stop).await.expect("serve");
    });
}
