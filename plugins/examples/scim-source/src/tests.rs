//! Native tests against a fake SCIM service provider behind `http::mock`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use roster_plugin_sdk::http::{self, Request, Response};
use serde_json::json;

use super::*;

const BASE: &str = "https://idp.test/scim/v2";

/// A SCIM service provider: users and groups with `meta.lastModified`,
/// at most `cap` resources per page whatever `count` asks, `filter` on
/// `meta.lastModified gt` unless `no_filter` (then HTTP 400).
#[derive(Default)]
struct Fake {
    users: Vec<Value>,
    groups: Vec<Value>,
    cap: usize,
    no_filter: bool,
    /// Every request seen: (url, headers).
    seen: Vec<(String, Vec<(String, String)>)>,
}

impl Fake {
    fn answer(&mut self, request: &Request) -> Response {
        self.seen.push((request.url.clone(), request.headers.clone()));
        let rest = request.url.strip_prefix(BASE).expect("a request under the base URL");
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let query: BTreeMap<&str, String> =
            query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k, decode(v))).collect();
        let all = match path {
            "/ServiceProviderConfig" => {
                return Response::new(200, json!({ "filter": { "supported": !self.no_filter } }).to_string());
            }
            "/Users" => &self.users,
            "/Groups" => &self.groups,
            _ => return Response::new(404, "no such endpoint"),
        };
        let mut matching: Vec<&Value> = all.iter().collect();
        if let Some(filter) = query.get("filter") {
            if self.no_filter {
                return Response::new(400, r#"{"scimType":"invalidFilter","detail":"filter is not supported"}"#);
            }
            let since = filter.strip_prefix("meta.lastModified gt \"").and_then(|f| f.strip_suffix('"')).unwrap();
            matching.retain(|r| compare_times(r["meta"]["lastModified"].as_str().unwrap(), since).is_gt());
        }
        let start: usize = query.get("startIndex").map_or(1, |s| s.parse().unwrap());
        let count: usize = query.get("count").map_or(100, |s| s.parse().unwrap());
        let items: Vec<&Value> = matching.iter().skip(start - 1).take(count.min(self.cap)).copied().collect();
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": matching.len(), "startIndex": start, "itemsPerPage": items.len(), "Resources": items,
        });
        Response::new(200, body.to_string())
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn user(n: u32, modified: &str) -> Value {
    json!({ "id": format!("u{n}"), "userName": format!("user{n}"), "meta": { "lastModified": modified } })
}

/// Installs the fake as this thread's HTTP transport.
fn serve(fake: Fake) -> Rc<RefCell<Fake>> {
    let fake = Rc::new(RefCell::new(fake));
    let served = fake.clone();
    http::mock(move |request| Ok(served.borrow_mut().answer(request)));
    fake
}

fn scim(settings: &[(&str, ConfigValue)]) -> Result<Scim, Vec<ConfigError>> {
    let mut table = BTreeMap::from([("base_url".to_string(), ConfigValue::Text(format!("{BASE}/")))]);
    table.extend(settings.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Scim::init(&Config::from_value(ConfigValue::Table(table)))
}

/// Every page of a read.
#[derive(Debug, Default)]
struct Read {
    /// The cursor of each call (`None` for the first).
    cursors: Vec<Option<String>>,
    anchors: Vec<String>,
    rejected: Vec<String>,
    token: Option<String>,
}

fn read_all(scim: &mut Scim, delta: Option<&str>) -> Result<Read, ReadError> {
    let mut read = Read::default();
    let mut cursor: Option<String> = None;
    loop {
        read.cursors.push(cursor.clone());
        let page = match delta {
            Some(token) => scim.read_delta(token, cursor.as_deref())?,
            None => scim.read(cursor.as_deref())?,
        };
        read.anchors.extend(page.objects.iter().map(|o| o.anchor.clone()));
        read.rejected.extend(page.rejected.iter().map(|r| r.reason.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(Read { token: page.delta_token, ..read }),
        }
    }
}

#[test]
fn full_read_pages_users_then_groups_and_returns_the_newest_time_as_token() {
    let mut users: Vec<Value> = (1..=5).map(|n| user(n, &format!("2024-05-0{n}T10:00:00Z"))).collect();
    users[2]["meta"]["lastModified"] = json!("2024-06-01T12:00:00+02:00"); // the newest, with an offset
    users.push(json!({ "userName": "ghost" }));
    let groups = vec![
        json!({ "id": "g1", "displayName": "Staff", "members": [{ "value": "u1" }, { "value": "u2" }],
                "meta": { "lastModified": "2024-05-01T00:00:00Z" } }),
        json!({ "id": "g2", "displayName": "Empty", "members": [] }),
    ];
    let fake = serve(Fake { users, groups, cap: 1000, ..Fake::default() });
    let mut scim = scim(&[("page_size", ConfigValue::Integer(2))]).unwrap();

    let Read { cursors, anchors, rejected, token } = read_all(&mut scim, None).unwrap();
    let cursors: Vec<_> = cursors.iter().map(|c| c.as_deref().unwrap_or("-").to_string()).collect();
    assert_eq!(
        cursors,
        [
            "-",
            "users:3:2024-05-02T10:00:00Z",
            "users:5:2024-06-01T12:00:00+02:00",
            "groups:1:2024-06-01T12:00:00+02:00"
        ]
    );
    assert_eq!(anchors, ["u1", "u2", "u3", "u4", "u5", "g1", "g2"]);
    assert_eq!(rejected, ["user without id (ghost)"]);
    assert_eq!(token.as_deref(), Some("2024-06-01T12:00:00+02:00"));

    let fake = fake.borrow();
    assert_eq!(fake.seen[0].0, format!("{BASE}/Users?startIndex=1&count=2"));
    assert_eq!(fake.seen[3].0, format!("{BASE}/Groups?startIndex=1&count=2"));
    for (_, headers) in &fake.seen {
        assert_eq!(headers, &[("Accept".to_string(), "application/scim+json".to_string())]);
    }
}

#[test]
fn groups_carry_members_and_short_pages_do_not_end_the_read() {
    let users = (1..=4).map(|n| user(n, "2024-05-01T10:00:00Z")).collect();
    let groups = vec![json!({ "id": "g1", "displayName": "Staff", "members": [{ "value": "u1" }, { "value": "g9" }] })];
    serve(Fake { users, groups, cap: 1, ..Fake::default() });
    let mut scim = scim(&[("page_size", ConfigValue::Integer(3))]).unwrap();
    let Read { cursors, anchors, .. } = read_all(&mut scim, None).unwrap();
    assert_eq!(anchors, ["u1", "u2", "u3", "u4", "g1"]);
    assert_eq!(cursors.len(), 5, "one request per user, one for the group: {cursors:?}");

    let page = scim.read(Some("groups:1")).unwrap();
    let group = &page.objects[0];
    assert_eq!(group.members, ["u1", "g9"]);
    assert_eq!(group.first("displayName"), Some("Staff"));
    assert!(group.get("members").is_none());
    assert_eq!(page.delta_token, None, "no lastModified seen on this page nor in its cursor");

    let mut without_groups = scim_with_groups(false);
    assert_eq!(read_all(&mut without_groups, None).unwrap().anchors, ["u1", "u2", "u3", "u4"]);
}

fn scim_with_groups(groups: bool) -> Scim {
    scim(&[("groups", ConfigValue::Boolean(groups))]).unwrap()
}

#[test]
fn delta_reads_filter_on_last_modified_and_keep_the_token_when_nothing_changed() {
    let users = vec![user(1, "2024-05-01T10:00:00Z"), user(2, "2024-05-03T10:00:00Z")];
    let groups = vec![json!({ "id": "g1", "members": [], "meta": { "lastModified": "2024-05-02T10:00:00Z" } })];
    let fake = serve(Fake { users, groups, cap: 1000, ..Fake::default() });
    let mut scim = scim(&[]).unwrap();

    let Read { anchors, token, .. } = read_all(&mut scim, Some("2024-05-01T12:00:00Z")).unwrap();
    assert_eq!(anchors, ["u2", "g1"]);
    assert_eq!(token.as_deref(), Some("2024-05-03T10:00:00Z"));
    assert_eq!(
        fake.borrow().seen[0].0,
        format!("{BASE}/Users?startIndex=1&count=100&filter=meta.lastModified%20gt%20%222024-05-01T12%3A00%3A00Z%22")
    );

    let Read { anchors, token, .. } = read_all(&mut scim, Some("2024-05-03T10:00:00Z")).unwrap();
    assert!(anchors.is_empty());
    assert_eq!(token.as_deref(), Some("2024-05-03T10:00:00Z"), "the old token");

    fake.borrow_mut().no_filter = true;
    let err = scim.read_delta("2024-05-03T10:00:00Z", None).unwrap_err();
    assert!(matches!(&err, ReadError::TokenExpired(m) if m.contains("HTTP 400")), "{err}");
    assert_eq!(scim.check().unwrap(), "SCIM service provider answers: 2 users (filter supported: no)");
}

#[test]
fn statuses_map_to_read_errors() {
    let mut scim = scim(&[]).unwrap();
    type Expected = fn(&ReadError) -> bool;
    let cases: [(Response, Expected); 4] = [
        (Response::new(401, "no"), |e| matches!(e, ReadError::Auth(m) if m.ends_with("HTTP 401: no"))),
        (Response::new(403, "forbidden"), |e| matches!(e, ReadError::Auth(_))),
        (
            Response::new(503, "down\n for maintenance"),
            |e| matches!(e, ReadError::Http(m) if m.ends_with("HTTP 503: down for maintenance")),
        ),
        (Response::new(200, "<html>"), |e| matches!(e, ReadError::Protocol(m) if m.contains("not JSON"))),
    ];
    for (response, expected) in cases {
        http::mock(move |_| Ok(response.clone()));
        let err = scim.read(None).unwrap_err();
        assert!(expected(&err), "{err}");
    }
    http::mock(|_| Ok(Response::new(200, r#"{"Resources": []}"#)));
    assert!(matches!(scim.read(None), Err(ReadError::Protocol(m)) if m.contains("no totalResults")));
    http::mock(|_| Err(http::HttpError::Refused("host 'idp.test' is not in allow_hosts".into())));
    assert_eq!(scim.read(None).unwrap_err(), ReadError::Http("refused: host 'idp.test' is not in allow_hosts".into()));
    assert!(matches!(scim.read(Some("users:0")), Err(ReadError::Protocol(_))));
}

#[test]
fn configuration_is_checked_key_by_key() {
    let keys = |r: Result<Scim, Vec<ConfigError>>| r.err().unwrap().into_iter().map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(keys(scim(&[("page_sise", ConfigValue::Integer(5))])), ["page_sise"]);
    assert_eq!(keys(scim(&[("page_size", ConfigValue::Integer(0))])), ["page_size"]);
    assert_eq!(keys(scim(&[("groups", ConfigValue::Text("yes".into()))])), ["groups"]);
    assert_eq!(keys(scim(&[("base_url", ConfigValue::Text("idp.test/scim".into()))])), ["base_url"]);
    assert_eq!(keys(Scim::init(&Config::empty())), ["base_url"]);
    assert_eq!(keys(scim(&[("base_url", ConfigValue::Text("https://".into()))])), ["base_url"]);
    assert_eq!(keys(scim(&[("base_url", ConfigValue::Text(format!("{BASE}?x=1")))])), ["base_url"]);
    let unknown = scim(&[("filter", ConfigValue::Boolean(true))]).err().unwrap();
    assert!(unknown[0].message.starts_with("unknown key 'filter'"), "{}", unknown[0].message);
    let ok = scim(&[("page_size", ConfigValue::Integer(1000))]).unwrap();
    assert_eq!((ok.base.as_str(), ok.page_size, ok.groups), (BASE, 1000, true));
    let info = Scim::describe();
    assert!(info.delta);
    serde_json::from_str::<Value>(&info.config_schema).expect("the schema is JSON");
}

#[test]
fn cursors_round_trip() {
    for text in ["users:1", "groups:101:2024-05-01T10:00:00.5+02:00"] {
        assert_eq!(Cursor::parse(text).unwrap().encode(), text);
    }
    for bad in ["", "users", "users:x", "roles:1", "users:0"] {
        assert!(Cursor::parse(bad).is_err(), "{bad}");
    }
}
