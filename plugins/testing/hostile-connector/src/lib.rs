//! A misbehaving source connector, for testing how the host contains
//! connectors.
//!
//! Configuration (`[tenant.source.config]`), unknown keys refused:
//!
//! * `behaviour` (required):
//!   - `"fetch"`: `read(None)` sends `GET url`; on an answer it returns one
//!     user (anchor `u1`, `userName` = `fetched`, `status` = the HTTP status)
//!     and no next cursor; on an `http-error` it fails with
//!     `ReadError::Http("<variant>: <the host's message>")`, e.g.
//!     `refused: …`. `check` does the same GET and answers `HTTP <status>`.
//!   - `"set-authorization"`: as `fetch`, with an `Authorization: Bearer
//!     stolen` header the host must refuse.
//!   - `"env"`: one user `u1` whose `env` lists every `KEY=VALUE` of
//!     `std::env::vars()` (absent when there are none) and `env_count` their
//!     number. (No file probes: a component importing `wasi:filesystem` is
//!     refused at load, see `secret-reader`.)
//!   - `"spin"`: `read` (and `check`) busy-loop forever.
//!   - `"panic-on-page"`: pages of 10 users (anchors and `userName`
//!     `p{page}-{i}`, i in 0..10), cursor = the next page number (the first
//!     page is 0); panics when asked for page `pages`, so the read never
//!     completes.
//!   - `"users"`: `count` users in pages of 100: anchors `u{i}` (i from 0),
//!     `userName` `user{i}`, `displayName` `User {i}`; cursor = the next
//!     index.
//! * `url`: for `fetch` and `set-authorization` (required there).
//! * `pages`: for `panic-on-page`, default 3.
//! * `count`: for `users`, default 0.
//!
//! No delta reads (the SDK's default `read_delta` answers token-expired).

use std::hint::black_box;

use roster_plugin_sdk::http::Request;
use roster_plugin_sdk::prelude::*;

const BEHAVIOURS: &[&str] = &["fetch", "set-authorization", "env", "spin", "panic-on-page", "users"];

struct Hostile {
    behaviour: String,
    url: String,
    pages: u64,
    count: u64,
}

impl Connector for Hostile {
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let mut errors = config.unknown_keys(&["behaviour", "url", "pages", "count"]);
        let mut text = |key: &str| {
            config.str(key).map(|v| v.map(str::to_string)).unwrap_or_else(|e| {
                errors.push(e);
                None
            })
        };
        let behaviour = text("behaviour");
        let url = text("url");
        let mut int = |key: &str, default: u64| match config.integer(key) {
            Ok(None) => default,
            Ok(Some(v)) if v >= 0 => v as u64,
            Ok(Some(v)) => {
                errors.push(ConfigError::new(key, format!("{v} is negative")));
                default
            }
            Err(e) => {
                errors.push(e);
                default
            }
        };
        let pages = int("pages", 3);
        let count = int("count", 0);
        match behaviour.as_deref() {
            Some(b) if BEHAVIOURS.contains(&b) => {}
            Some(b) => errors.push(ConfigError::new(
                "behaviour",
                format!("unknown behaviour '{b}'; expected one of: {}", BEHAVIOURS.join(", ")),
            )),
            None if config.get("behaviour").is_none() => errors.push(ConfigError::new("behaviour", "required")),
            None => {}
        }
        let needs_url = matches!(behaviour.as_deref(), Some("fetch" | "set-authorization"));
        if needs_url && url.is_none() && config.get("url").is_none() {
            errors.push(ConfigError::new("url", "required for this behaviour"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let behaviour = behaviour.unwrap_or_default();
        log::info!("hostile-connector: behaviour '{behaviour}'");
        Ok(Hostile { behaviour, url: url.unwrap_or_default(), pages, count })
    }

    fn read(&mut self, cursor: Option<&str>) -> Result<Page, ReadError> {
        let number = |c: Option<&str>| -> Result<u64, ReadError> {
            c.map_or(Ok(0), |c| c.parse().map_err(|_| ReadError::Protocol(format!("bad cursor '{c}'"))))
        };
        match self.behaviour.as_str() {
            "fetch" | "set-authorization" if cursor.is_none() => {
                let status = self.fetch()?;
                Ok(Page::of([SourceObject::user("u1").attr("userName", "fetched").attr("status", status.to_string())]))
            }
            "env" if cursor.is_none() => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                let user = SourceObject::user("u1").attr("userName", "env").attr("env_count", vars.len().to_string());
                Ok(Page::of([user.attr_all("env", vars)]))
            }
            "spin" => spin(),
            "panic-on-page" => {
                let page = number(cursor)?;
                if page >= self.pages {
                    panic!("hostile-connector: panic on page {page}");
                }
                let users = (0..10).map(|i| format!("p{page}-{i}")).map(|a| SourceObject::user(&a).attr("userName", a));
                Ok(Page::of(users).with_next_cursor((page + 1).to_string()))
            }
            "users" => {
                let start = number(cursor)?.min(self.count);
                let end = (start + 100).min(self.count);
                let page = Page::of((start..end).map(|i| {
                    SourceObject::user(format!("u{i}"))
                        .attr("userName", format!("user{i}"))
                        .attr("displayName", format!("User {i}"))
                }));
                Ok(if end < self.count { page.with_next_cursor(end.to_string()) } else { page })
            }
            // A cursor for a one-page behaviour: nothing more.
            _ => Ok(Page::new()),
        }
    }

    fn check(&mut self) -> Result<String, ReadError> {
        match self.behaviour.as_str() {
            "fetch" | "set-authorization" => Ok(format!("HTTP {}", self.fetch()?)),
            "spin" => spin(),
            b => Ok(format!("hostile-connector: behaviour '{b}'")),
        }
    }
}

impl Hostile {
    /// GET `url` (with the forbidden header for `set-authorization`): the status,
    /// or the host's error as `ReadError::Http("<variant>: <message>")`.
    fn fetch(&self) -> Result<u16, ReadError> {
        let mut request = Request::get(&self.url);
        if self.behaviour == "set-authorization" {
            request = request.header("Authorization", "Bearer stolen");
        }
        Ok(request.send()?.status)
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

roster_plugin_sdk::export_connector!(Hostile);
