//! A source connector for any SCIM 2.0 service provider (RFC 7643/7644):
//! reads `Users`, then `Groups`, page by page with `startIndex`/`count`, and
//! reads deltas with `filter=meta.lastModified gt "TOKEN"`. See README.md.
//!
//! Cursor: `PHASE:START[:NEWEST]`, e.g. `users:101` or
//! `groups:1:2024-05-01T10:00:00Z` (`PHASE` is `users` or `groups`, `START`
//! the 1-based `startIndex` of the next page, `NEWEST` the highest
//! `meta.lastModified` seen so far). The delta token is that highest
//! `meta.lastModified`, as the service provider wrote it.
//!
//! Credentials are the host's business: it adds them to every request. This
//! connector never sets `Authorization`.

mod flatten;

use std::cmp::Ordering;

use roster_plugin_sdk::http::{Request, Response};
use roster_plugin_sdk::prelude::*;
use serde_json::Value;

pub use flatten::{ENTERPRISE_USER, compare_times, flatten_into};

const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,"required":["base_url"],"properties":{"base_url":{"type":"string","format":"uri","description":"The SCIM root: resources are base_url/Users and base_url/Groups"},"page_size":{"type":"integer","minimum":1,"maximum":1000,"default":100,"description":"count per request"},"groups":{"type":"boolean","default":true,"description":"read Groups too"}}}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Users,
    Groups,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Users => "users",
            Phase::Groups => "groups",
        }
    }

    fn endpoint(self) -> &'static str {
        match self {
            Phase::Users => "Users",
            Phase::Groups => "Groups",
        }
    }

    fn kind(self) -> EntryKind {
        match self {
            Phase::Users => EntryKind::User,
            Phase::Groups => EntryKind::Group,
        }
    }
}

/// Where a read stands (see the crate docs for the text form).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    phase: Phase,
    start: u64,
    newest: Option<String>,
}

impl Cursor {
    fn first() -> Self {
        Cursor { phase: Phase::Users, start: 1, newest: None }
    }

    fn parse(text: &str) -> Result<Self, ReadError> {
        let bad = || ReadError::Protocol(format!("not a cursor of this connector: '{text}'"));
        let mut parts = text.splitn(3, ':');
        let phase = match parts.next() {
            Some("users") => Phase::Users,
            Some("groups") => Phase::Groups,
            _ => return Err(bad()),
        };
        let start = parts.next().and_then(|s| s.parse().ok()).filter(|&s| s >= 1).ok_or_else(bad)?;
        Ok(Cursor { phase, start, newest: parts.next().map(str::to_string) })
    }

    fn encode(&self) -> String {
        match &self.newest {
            Some(newest) => format!("{}:{}:{newest}", self.phase.name(), self.start),
            None => format!("{}:{}", self.phase.name(), self.start),
        }
    }
}

pub struct Scim {
    base: String,
    page_size: u32,
    groups: bool,
}

impl Connector for Scim {
    fn describe() -> ConnectorInfo {
        roster_plugin_sdk::connector_info!().with_delta(true).with_config_schema(SCHEMA)
    }

    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let mut errors = config.unknown_keys(&["base_url", "page_size", "groups"]);
        let base = match setting(config.str("base_url"), &mut errors) {
            Some(url) if absolute_http_url(url) => Some(url.trim_end_matches('/').to_string()),
            Some(url) => {
                let message = format!("expected the absolute http(s) URL of the SCIM root, found '{url}'");
                errors.push(ConfigError::new("base_url", message));
                None
            }
            None if config.get("base_url").is_none() => {
                errors.push(ConfigError::new("base_url", "required: the SCIM root, e.g. https://idp.example/scim/v2"));
                None
            }
            None => None,
        };
        let page_size = match setting(config.integer("page_size"), &mut errors) {
            None => 100,
            Some(n @ 1..=1000) => n as u32,
            Some(n) => {
                errors.push(ConfigError::new("page_size", format!("must be between 1 and 1000, found {n}")));
                100
            }
        };
        let groups = setting(config.bool("groups"), &mut errors);
        match base {
            Some(base) if errors.is_empty() => Ok(Scim { base, page_size, groups: groups.unwrap_or(true) }),
            _ => Err(errors),
        }
    }

    fn read(&mut self, cursor: Option<&str>) -> Result<Page, ReadError> {
        let cursor = match cursor {
            None => {
                log::info!("full read of {}", self.base);
                Cursor::first()
            }
            Some(text) => Cursor::parse(text)?,
        };
        self.page(cursor, None)
    }

    // A SCIM filter on meta.lastModified cannot see deletions: a delta read
    // returns changed and new objects only. Deleted ones are found by the
    // host's periodic full reads.
    fn read_delta(&mut self, token: &str, cursor: Option<&str>) -> Result<Page, ReadError> {
        let cursor = match cursor {
            None => {
                log::info!("delta read of {} since {token}", self.base);
                Cursor::first()
            }
            Some(text) => Cursor::parse(text)?,
        };
        self.page(cursor, Some(token))
    }

    fn check(&mut self) -> Result<String, ReadError> {
        let url = format!("{}/ServiceProviderConfig", self.base);
        let response = get(&url)?;
        let filter = if response.status == 404 {
            "unknown (no ServiceProviderConfig)"
        } else {
            match json(&url, &response)?.pointer("/filter/supported").and_then(Value::as_bool) {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            }
        };
        let url = format!("{}/Users?startIndex=1&count=1", self.base);
        let total = total_results(&url, &json(&url, &get(&url)?)?)?;
        Ok(format!("SCIM service provider answers: {total} users (filter supported: {filter})"))
    }
}

roster_plugin_sdk::export_connector!(Scim);

impl Scim {
    /// One page of `cursor.phase`; `since` makes it a delta read.
    fn page(&self, cursor: Cursor, since: Option<&str>) -> Result<Page, ReadError> {
        let Cursor { phase, start, mut newest } = cursor;
        let mut url = format!("{}/{}?startIndex={start}&count={}", self.base, phase.endpoint(), self.page_size);
        if let Some(token) = since {
            url.push_str("&filter=");
            url.push_str(&encode(&format!("meta.lastModified gt \"{token}\"")));
        }
        let response = get(&url)?;
        if since.is_some() && response.status == 400 {
            return Err(ReadError::TokenExpired(format!(
                "the service provider refused the lastModified filter (HTTP 400: {}); reading everything",
                response.excerpt(200)
            )));
        }
        let list = json(&url, &response)?;
        let total = total_results(&url, &list)?;
        let resources = match list.get("Resources") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(items)) => items.as_slice(),
            Some(_) => return Err(ReadError::Protocol(format!("GET {url}: 'Resources' is not an array"))),
        };
        log::debug!("GET {url}: {} of {total}", resources.len());

        let mut page = Page::new();
        for resource in resources {
            match object(phase.kind(), resource) {
                Ok((object, modified)) => {
                    if let Some(m) = modified
                        && newest.as_deref().is_none_or(|n| compare_times(m, n) == Ordering::Greater)
                    {
                        newest = Some(m.to_string());
                    }
                    page.push(object);
                }
                Err(rejected) => {
                    page.reject(rejected);
                }
            }
        }

        // Advance by what came back, not by what was asked: a provider may
        // return short pages before the end.
        let next = start + resources.len() as u64;
        let next = if !resources.is_empty() && next <= total {
            Cursor { phase, start: next, newest }
        } else if phase == Phase::Users && self.groups {
            Cursor { phase: Phase::Groups, start: 1, newest }
        } else {
            // The last page. Nothing newer in a delta read: keep the old token.
            let token = newest.or_else(|| since.map(str::to_string));
            log::info!("{} read complete; delta token {token:?}", if since.is_some() { "delta" } else { "full" });
            return Ok(match token {
                Some(token) => page.with_delta_token(token),
                None => page,
            });
        };
        Ok(page.with_next_cursor(next.encode()))
    }
}

/// `http(s)://HOST…` without a query or fragment.
fn absolute_http_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.trim_matches('/').is_empty()) && !url.contains(['?', '#'])
}

/// The value of an optional setting; a wrong type is recorded in `errors`.
fn setting<T>(value: Result<Option<T>, ConfigError>, errors: &mut Vec<ConfigError>) -> Option<T> {
    value.unwrap_or_else(|e| {
        errors.push(e);
        None
    })
}

/// A resource → the object and its `meta.lastModified`, or why it cannot be read.
fn object(kind: EntryKind, resource: &Value) -> Result<(SourceObject, Option<&str>), Rejected> {
    let Value::Object(map) = resource else {
        return Err(Rejected::new(format!("a {} that is not a JSON object", kind.as_str())).kind(kind));
    };
    let Some(id) = map.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()) else {
        let name = ["userName", "displayName", "externalId"].iter().find_map(|k| map.get(*k)?.as_str());
        let reason = format!("{} without id ({})", kind.as_str(), name.unwrap_or("no name either"));
        return Err(Rejected::new(reason).kind(kind));
    };
    let mut object = SourceObject::new(kind, id);
    flatten_into(&mut object, map);
    if kind == EntryKind::Group
        && let Some(Value::Array(members)) = map.get("members")
    {
        object.members.extend(members.iter().filter_map(|m| m.get("value")?.as_str()).map(str::to_string));
    }
    Ok((object, map.get("meta").and_then(|m| m.get("lastModified")).and_then(Value::as_str)))
}

fn get(url: &str) -> Result<Response, ReadError> {
    Ok(Request::get(url).header("Accept", "application/scim+json").send()?)
}

/// The body of a 2xx response as JSON; other statuses are errors.
fn json(url: &str, response: &Response) -> Result<Value, ReadError> {
    let status = response.status;
    match status {
        200..=299 => serde_json::from_slice(&response.body)
            .map_err(|e| ReadError::Protocol(format!("GET {url}: the answer is not JSON: {e}"))),
        401 | 403 => Err(ReadError::Auth(format!("GET {url}: HTTP {status}: {}", response.excerpt(200)))),
        _ => Err(ReadError::Http(format!("GET {url}: HTTP {status}: {}", response.excerpt(200)))),
    }
}

fn total_results(url: &str, list: &Value) -> Result<u64, ReadError> {
    list.get("totalResults")
        .and_then(Value::as_u64)
        .ok_or_else(|| ReadError::Protocol(format!("GET {url}: not a SCIM ListResponse (no totalResults)")))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
