//! The `connector` kind: reads users and groups from a system Roster does not
//! know, page by page, through the host's HTTP (see [`crate::http`]).
//!
//! The host calls [`Connector::describe`], then [`Connector::init`] with the
//! source's `[tenant.source.config]` table, then [`Connector::read`] with
//! cursor `None` and each page's `next_cursor` until a page has none. When the
//! connector declares delta support and the host holds the last full read's
//! `delta_token`, it calls [`Connector::read_delta`] instead.
//!
//! ```ignore
//! use roster_plugin_sdk::prelude::*;
//!
//! struct Staff { url: String }
//!
//! impl Connector for Staff {
//!     fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
//!         let url = config.str("url").map_err(|e| vec![e])?.unwrap_or("https://hr.example/staff");
//!         Ok(Staff { url: url.to_string() })
//!     }
//!
//!     fn read(&mut self, _cursor: Option<&str>) -> Result<Page, ReadError> {
//!         let body = http::get(&self.url)?.text().into_owned();
//!         let mut page = Page::new();
//!         for line in body.lines() {
//!             page.push(SourceObject::user(line).attr("userName", line));
//!         }
//!         Ok(page) // no next cursor: the read is complete
//!     }
//!
//!     fn check(&mut self) -> Result<String, ReadError> {
//!         Ok(format!("{} answers", self.url))
//!     }
//! }
//!
//! roster_plugin_sdk::export_connector!(Staff);
//! ```

use std::fmt;

use roster_wire::Packer;

use crate::http::HttpError;
use crate::{Config, ConfigError, EntryKind, raw};

/// A source connector.
///
/// One value of the implementing type lives per plugin instance, created by
/// [`Connector::init`]; export the type with [`export_connector!`]. Calls
/// before a successful `init` answer [`ReadError::Config`].
pub trait Connector: Sized + 'static {
    /// Name, version, capabilities and configuration schema. Called before
    /// `init`, so it cannot depend on the configuration. Defaults to the
    /// crate's package name and version, no delta reads, no schema.
    fn describe() -> ConnectorInfo {
        ConnectorInfo::package()
    }

    /// Validates the configuration and builds the instance. Report every
    /// problem found, not just the first: `roster config check` shows them all.
    fn init(config: &Config) -> Result<Self, Vec<ConfigError>>;

    /// One page of a full read: `cursor` is `None` for the first page, then
    /// the previous page's `next_cursor`. A page without a next cursor ends
    /// the read; its `delta_token`, if any, is where the next delta read starts.
    fn read(&mut self, cursor: Option<&str>) -> Result<Page, ReadError>;

    /// One page of what changed since `token` (objects changed or added,
    /// `deleted` anchors). The default answers [`ReadError::TokenExpired`], so
    /// the host reads everything instead; override it together with
    /// [`ConnectorInfo::with_delta`].
    fn read_delta(&mut self, token: &str, cursor: Option<&str>) -> Result<Page, ReadError> {
        let _ = (token, cursor);
        Err(ReadError::TokenExpired("this connector does not read deltas".into()))
    }

    /// A cheap check that the system answers and the credentials work, for
    /// `roster source test`: one line saying what it found. Defaults to
    /// reading the first page.
    fn check(&mut self) -> Result<String, ReadError> {
        let page = self.read(None)?;
        Ok(format!("the source answers: {} objects on the first page", page.objects.len()))
    }
}

/// What a connector says about itself (see [`Connector::describe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInfo {
    pub name: String,
    pub version: String,
    /// [`Connector::read_delta`] works.
    pub delta: bool,
    /// JSON Schema of the connector's configuration table ("" if none).
    pub config_schema: String,
}

impl ConnectorInfo {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self { name: name.into(), version: version.into(), delta: false, config_schema: String::new() }
    }

    /// The package name and version of the crate that called
    /// [`export_connector!`] (see [`connector_info!`] for the calling crate's own).
    pub fn package() -> Self {
        let info = crate::PluginInfo::package();
        Self::new(info.name, info.version)
    }

    /// Declares (or not) that [`Connector::read_delta`] works.
    pub fn with_delta(mut self, delta: bool) -> Self {
        self.delta = delta;
        self
    }

    /// The JSON Schema of the configuration table, as JSON text.
    pub fn with_config_schema(mut self, schema: impl Into<String>) -> Self {
        self.config_schema = schema.into();
        self
    }

    pub fn into_raw(self) -> raw::ConnectorInfo {
        raw::ConnectorInfo {
            name: self.name,
            version: self.version,
            capabilities: raw::Capabilities { delta: self.delta },
            config_schema: self.config_schema,
        }
    }
}

/// `ConnectorInfo` with the calling crate's `CARGO_PKG_NAME` and `CARGO_PKG_VERSION`.
#[macro_export]
macro_rules! connector_info {
    () => {
        $crate::connector::ConnectorInfo::new(::core::env!("CARGO_PKG_NAME"), ::core::env!("CARGO_PKG_VERSION"))
    };
}

/// One user or group of the remote system.
///
/// ```
/// use roster_plugin_sdk::prelude::*;
/// let user = SourceObject::user("2819c223")
///     .attr("userName", "bjensen")
///     .attr_all("emails", ["bjensen@example.com", "babs@example.com"])
///     .attr("emails", "b@example.org"); // a name set again gets more values
/// assert_eq!(user.first("userName"), Some("bjensen"));
/// assert_eq!(user.get("emails").unwrap().len(), 3);
///
/// let group = SourceObject::group("e9e30dba").attr("displayName", "Tour Guides").member("2819c223");
/// assert_eq!(group.members, ["2819c223"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceObject {
    /// Immutable identity in the remote system (its id), never a name.
    pub anchor: String,
    /// A distinguished name where the system has one; display only.
    pub dn: Option<String>,
    pub kind: EntryKind,
    /// For groups: the anchors of the direct members (users or groups).
    pub members: Vec<String>,
    attributes: Vec<(String, Vec<String>)>,
}

impl SourceObject {
    pub fn new(kind: EntryKind, anchor: impl Into<String>) -> Self {
        Self { anchor: anchor.into(), dn: None, kind, members: Vec::new(), attributes: Vec::new() }
    }

    pub fn user(anchor: impl Into<String>) -> Self {
        Self::new(EntryKind::User, anchor)
    }

    pub fn group(anchor: impl Into<String>) -> Self {
        Self::new(EntryKind::Group, anchor)
    }

    pub fn dn(mut self, dn: impl Into<String>) -> Self {
        self.dn = Some(dn.into());
        self
    }

    /// Adds a value to an attribute (a name given again gets more values).
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.push_attr(name, value);
        self
    }

    /// Adds several values to an attribute; none leaves it as it was.
    pub fn attr_all<I>(mut self, name: &str, values: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.push_attr_all(name, values);
        self
    }

    /// A direct member (its anchor), for groups.
    pub fn member(mut self, anchor: impl Into<String>) -> Self {
        self.members.push(anchor.into());
        self
    }

    pub fn members<I>(mut self, anchors: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.members.extend(anchors.into_iter().map(Into::into));
        self
    }

    /// [`SourceObject::attr`] in place, for loops.
    pub fn push_attr(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.values_mut(name).push(value.into());
        self
    }

    /// [`SourceObject::attr_all`] in place, for loops.
    pub fn push_attr_all<I>(&mut self, name: &str, values: I) -> &mut Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut values = values.into_iter().map(Into::into).peekable();
        if values.peek().is_some() {
            self.values_mut(name).extend(values);
        }
        self
    }

    fn values_mut(&mut self, name: &str) -> &mut Vec<String> {
        let i = match self.attributes.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.attributes.push((name.to_string(), Vec::new()));
                self.attributes.len() - 1
            }
        };
        &mut self.attributes[i].1
    }

    /// The values of an attribute (exact name).
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// The first value of an attribute.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.first()).map(String::as_str)
    }

    /// Every attribute, in the order first set.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.attributes.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Converts to the WIT record, packing the attributes.
    pub fn into_raw(self) -> raw::SourceObject {
        let mut packer = Packer::with_capacity(self.attributes.iter().map(|(n, v)| n.len() + 8 * v.len() + 64).sum());
        for (name, values) in &self.attributes {
            packer.attr(name, values);
        }
        raw::SourceObject {
            anchor: self.anchor,
            dn: self.dn,
            kind: self.kind.into_raw(),
            attributes: packer.finish(),
            members: self.members,
        }
    }
}

/// An object the connector saw but could not read; the host quarantines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub anchor: Option<String>,
    pub kind: Option<EntryKind>,
    pub reason: String,
}

impl Rejected {
    pub fn new(reason: impl Into<String>) -> Self {
        Self { anchor: None, kind: None, reason: reason.into() }
    }

    pub fn anchor(mut self, anchor: impl Into<String>) -> Self {
        self.anchor = Some(anchor.into());
        self
    }

    pub fn kind(mut self, kind: EntryKind) -> Self {
        self.kind = Some(kind);
        self
    }

    pub fn into_raw(self) -> raw::Rejected {
        raw::Rejected { anchor: self.anchor, kind: self.kind.map(EntryKind::into_raw), reason: self.reason }
    }
}

/// One page of a read.
///
/// ```
/// use roster_plugin_sdk::prelude::*;
/// let mut page = Page::new().with_next_cursor("users:101");
/// page.push(SourceObject::user("1").attr("userName", "a"));
/// page.reject(Rejected::new("resource without id").kind(EntryKind::User));
/// assert!(!page.is_last());
/// let last = Page::of([SourceObject::user("2")]).with_delta_token("2024-05-01T10:00:00Z");
/// assert!(last.is_last());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub objects: Vec<SourceObject>,
    pub rejected: Vec<Rejected>,
    /// Delta reads: anchors of objects deleted since the token.
    pub deleted: Vec<String>,
    /// Where the next page starts; `None` ends the read.
    pub next_cursor: Option<String>,
    /// On the last page: where the next delta read starts.
    pub delta_token: Option<String>,
}

impl Page {
    /// An empty last page.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn of(objects: impl IntoIterator<Item = SourceObject>) -> Self {
        Self { objects: objects.into_iter().collect(), ..Self::default() }
    }

    pub fn push(&mut self, object: SourceObject) -> &mut Self {
        self.objects.push(object);
        self
    }

    pub fn reject(&mut self, rejected: Rejected) -> &mut Self {
        self.rejected.push(rejected);
        self
    }

    /// Delta reads: an object deleted since the token.
    pub fn delete(&mut self, anchor: impl Into<String>) -> &mut Self {
        self.deleted.push(anchor.into());
        self
    }

    pub fn with_next_cursor(mut self, cursor: impl Into<String>) -> Self {
        self.next_cursor = Some(cursor.into());
        self
    }

    pub fn with_delta_token(mut self, token: impl Into<String>) -> Self {
        self.delta_token = Some(token.into());
        self
    }

    /// No next cursor: this page ends the read.
    pub fn is_last(&self) -> bool {
        self.next_cursor.is_none()
    }

    /// Converts to the WIT record, packing every object's attributes.
    pub fn into_raw(self) -> raw::Page {
        raw::Page {
            objects: self.objects.into_iter().map(SourceObject::into_raw).collect(),
            rejected: self.rejected.into_iter().map(Rejected::into_raw).collect(),
            deleted: self.deleted,
            next_cursor: self.next_cursor,
            delta_token: self.delta_token,
        }
    }
}

/// Why a read (or check) failed. The whole read fails: a read that does not
/// reach its last page plans no deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The connector's configuration cannot work.
    Config(String),
    /// The remote system refused the credentials.
    Auth(String),
    /// A request failed (the host's [`HttpError`], or an unexpected status).
    Http(String),
    /// The remote system answered something the connector cannot read.
    Protocol(String),
    /// The delta token is no longer valid: the host reads everything again.
    TokenExpired(String),
}

impl ReadError {
    pub fn message(&self) -> &str {
        match self {
            ReadError::Config(m)
            | ReadError::Auth(m)
            | ReadError::Http(m)
            | ReadError::Protocol(m)
            | ReadError::TokenExpired(m) => m,
        }
    }

    pub fn into_raw(self) -> raw::ReadError {
        match self {
            ReadError::Config(m) => raw::ReadError::Config(m),
            ReadError::Auth(m) => raw::ReadError::Auth(m),
            ReadError::Http(m) => raw::ReadError::Http(m),
            ReadError::Protocol(m) => raw::ReadError::Protocol(m),
            ReadError::TokenExpired(m) => raw::ReadError::TokenExpired(m),
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            ReadError::Config(_) => "configuration",
            ReadError::Auth(_) => "authentication",
            ReadError::Http(_) => "http",
            ReadError::Protocol(_) => "protocol",
            ReadError::TokenExpired(_) => "delta token expired",
        };
        write!(f, "{what}: {}", self.message())
    }
}

impl std::error::Error for ReadError {}

/// `ReadError::Http` with the error's text (`refused: <the host's message>`).
impl From<HttpError> for ReadError {
    fn from(e: HttpError) -> Self {
        ReadError::Http(e.to_string())
    }
}

/// Exports a [`Connector`] as the component's `describe`, `init`, `read`,
/// `read-delta` and `check`.
///
/// ```ignore
/// roster_plugin_sdk::export_connector!(MyConnector);
/// // or, to report another name or version than the crate's to ConnectorInfo::package():
/// roster_plugin_sdk::export_connector!(MyConnector, name = "acme-hr", version = "2.1.0");
/// ```
///
/// Use it once per plugin crate. It only generates code when compiling for
/// WebAssembly; natively (unit tests) it just checks that the type is a `Connector`.
#[macro_export]
macro_rules! export_connector {
    ($ty:ty $(,)?) => {
        $crate::export_connector!(
            $ty,
            name = ::core::env!("CARGO_PKG_NAME"),
            version = ::core::env!("CARGO_PKG_VERSION")
        );
    };
    ($ty:ty, name = $name:expr, version = $version:expr $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static __ROSTER_INSTANCE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct __RosterGuest;

            impl $crate::raw::Guest for __RosterGuest {
                fn describe() -> $crate::raw::ConnectorInfo {
                    $crate::connector::__private::describe::<$ty>($name, $version)
                }

                fn init(
                    config: $crate::raw::Config,
                ) -> ::core::result::Result<(), ::std::vec::Vec<$crate::raw::ConfigError>> {
                    $crate::connector::__private::init::<$ty>(&__ROSTER_INSTANCE, config, $name, $version)
                }

                fn read(
                    cursor: ::core::option::Option<::std::string::String>,
                ) -> ::core::result::Result<$crate::raw::Page, $crate::raw::ReadError> {
                    $crate::connector::__private::read::<$ty>(&__ROSTER_INSTANCE, cursor)
                }

                fn read_delta(
                    token: ::std::string::String,
                    cursor: ::core::option::Option<::std::string::String>,
                ) -> ::core::result::Result<$crate::raw::Page, $crate::raw::ReadError> {
                    $crate::connector::__private::read_delta::<$ty>(&__ROSTER_INSTANCE, token, cursor)
                }

                fn check() -> ::core::result::Result<::std::string::String, $crate::raw::ReadError> {
                    $crate::connector::__private::check::<$ty>(&__ROSTER_INSTANCE)
                }
            }

    $crate::bindings::__export_world!(__RosterGuest with_types_in $crate::bindings);
        };

        // Natively: only check the type (and keep it from looking unused).
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _ = <$ty as $crate::connector::Connector>::describe;
            let _ = <$ty as $crate::connector::Connector>::init;
            let _ = <$ty as $crate::connector::Connector>::read;
            let _ = <$ty as $crate::connector::Connector>::read_delta;
            let _ = <$ty as $crate::connector::Connector>::check;
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use super::{Connector, Page, ReadError};
    use crate::__private::Instance;
    use crate::{PluginInfo, raw};

    pub fn describe<C: Connector>(name: &'static str, version: &'static str) -> raw::ConnectorInfo {
        crate::PACKAGE.with(|p| p.set((name, version)));
        C::describe().into_raw()
    }

    pub fn init<C: Connector>(
        instance: &'static Instance<C>,
        config: raw::Config,
        name: &'static str,
        version: &'static str,
    ) -> Result<(), Vec<raw::ConfigError>> {
        crate::__private::init(instance, config, name, version, C::init, |_| PluginInfo::new(name, version)).map(drop)
    }

    pub fn read<C: Connector>(
        instance: &'static Instance<C>,
        cursor: Option<String>,
    ) -> Result<raw::Page, raw::ReadError> {
        with(instance, |c| c.read(cursor.as_deref())).map(Page::into_raw).map_err(ReadError::into_raw)
    }

    pub fn read_delta<C: Connector>(
        instance: &'static Instance<C>,
        token: String,
        cursor: Option<String>,
    ) -> Result<raw::Page, raw::ReadError> {
        with(instance, |c| c.read_delta(&token, cursor.as_deref())).map(Page::into_raw).map_err(ReadError::into_raw)
    }

    pub fn check<C: Connector>(instance: &'static Instance<C>) -> Result<String, raw::ReadError> {
        with(instance, C::check).map_err(ReadError::into_raw)
    }

    /// Runs `call` on the live instance, or answers `ReadError::Config` before
    /// a successful `init`.
    fn with<C: Connector, T>(
        instance: &'static Instance<C>,
        call: impl FnOnce(&mut C) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        instance.with(|cell| match cell.borrow_mut().as_mut() {
            Some(connector) => call(connector),
            None => Err(ReadError::Config(crate::__private::NOT_INITIALISED.into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::http;
    use roster_wire::Attrs;

    /// Reads `pages` pages of one user each from a mocked HTTP endpoint.
    struct Counting {
        pages: u32,
    }

    impl Connector for Counting {
        fn describe() -> ConnectorInfo {
            crate::connector_info!().with_delta(true).with_config_schema("{}")
        }

        fn init(config: &Config) -> Result<Self, Vec<ConfigError>> {
            let mut errors = config.unknown_keys(&["pages"]);
            let pages = config.integer("pages").unwrap_or_else(|e| {
                errors.push(e);
                None
            });
            if errors.is_empty() { Ok(Counting { pages: pages.unwrap_or(2) as u32 }) } else { Err(errors) }
        }

        fn read(&mut self, cursor: Option<&str>) -> Result<Page, ReadError> {
            let n: u32 = cursor.map_or(Ok(0), str::parse).map_err(|e| ReadError::Protocol(format!("cursor: {e}")))?;
            let body = http::Request::get(format!("https://x.test/users/{n}")).header("Accept", "text/plain").send()?;
            let user = SourceObject::user(format!("u{n}")).attr("userName", body.text()).dn(format!("uid=u{n}"));
            let page = Page::of([user]);
            Ok(if n + 1 < self.pages {
                page.with_next_cursor((n + 1).to_string())
            } else {
                page.with_delta_token("t1")
            })
        }

        fn check(&mut self) -> Result<String, ReadError> {
            Ok("fine".into())
        }
    }

    thread_local! {
        static INSTANCE: RefCell<Option<Counting>> = const { RefCell::new(None) };
    }

    fn config(nodes: Vec<raw::ConfigValue>) -> raw::Config {
        raw::Config { nodes }
    }

    #[test]
    fn glue_refuses_calls_before_init_then_reads_pages() {
        http::mock(|req| {
            assert_eq!(req.headers, [("Accept".to_string(), "text/plain".to_string())]);
            let n = req.url.rsplit('/').next().unwrap();
            Ok(http::Response::new(200, format!("user{n}")))
        });
        let before = __private::read::<Counting>(&INSTANCE, None).unwrap_err();
        assert!(matches!(&before, raw::ReadError::Config(m) if m.contains("before a successful init")), "{before:?}");
        assert!(matches!(__private::check::<Counting>(&INSTANCE), Err(raw::ReadError::Config(_))));

        let info = __private::describe::<Counting>("counting", "9.9.9");
        assert_eq!(
            (info.name.as_str(), info.capabilities.delta, info.config_schema.as_str()),
            ("roster-plugin-sdk", true, "{}")
        );

        let bad = __private::init::<Counting>(
            &INSTANCE,
            config(vec![raw::ConfigValue::Table(vec![("pagez".into(), 1)]), raw::ConfigValue::Integer(3)]),
            "counting",
            "9.9.9",
        )
        .unwrap_err();
        assert_eq!(bad[0].message, "unknown key 'pagez' (did you mean 'pages'?)");

        __private::init::<Counting>(&INSTANCE, config(vec![]), "counting", "9.9.9").unwrap();
        let first = __private::read::<Counting>(&INSTANCE, None).unwrap();
        assert_eq!(first.next_cursor.as_deref(), Some("1"));
        let user = &first.objects[0];
        assert_eq!((user.anchor.as_str(), user.dn.as_deref()), ("u0", Some("uid=u0")));
        assert_eq!(Attrs::parse(&user.attributes).unwrap().get("userName").unwrap().first(), Some(&b"user0"[..]));
        let last = __private::read::<Counting>(&INSTANCE, Some("1".into())).unwrap();
        assert_eq!((last.next_cursor, last.delta_token.as_deref()), (None, Some("t1")));

        // The default read_delta sends the host back to a full read.
        let delta = __private::read_delta::<Counting>(&INSTANCE, "t1".into(), None).unwrap_err();
        assert!(matches!(delta, raw::ReadError::TokenExpired(_)));
        assert!(matches!(
            __private::read::<Counting>(&INSTANCE, Some("x".into())),
            Err(raw::ReadError::Protocol(m)) if m.starts_with("cursor:")
        ));

        http::mock(|_| Err(http::HttpError::Refused("host 'x.test' is not in allow_hosts".into())));
        let refused = __private::read::<Counting>(&INSTANCE, None).unwrap_err();
        assert!(matches!(&refused, raw::ReadError::Http(m) if m == "refused: host 'x.test' is not in allow_hosts"));
        http::unmock();
        assert!(
            matches!(__private::read::<Counting>(&INSTANCE, None), Err(raw::ReadError::Http(m)) if m.starts_with("transport: no host"))
        );
    }

    #[test]
    fn source_objects_merge_repeated_names_and_pack_them() {
        let mut group = SourceObject::group("g1").attr("displayName", "Staff").members(["u1", "u2"]);
        group.push_attr_all("tags", Vec::<String>::new()).push_attr_all("tags", ["a", "b"]).push_attr("tags", "c");
        assert!(group.get("nothing").is_none());
        let raw = group.into_raw();
        assert_eq!(raw.members, ["u1", "u2"]);
        let attrs = Attrs::parse(&raw.attributes).unwrap();
        assert_eq!(attrs.len(), 2, "tags packed once");
        assert_eq!(attrs.get("tags").unwrap().values().collect::<Vec<_>>(), [b"a", b"b", b"c"]);

        let rejected = Rejected::new("no id").kind(EntryKind::User).into_raw();
        assert_eq!(
            (rejected.anchor, rejected.kind, rejected.reason.as_str()),
            (None, Some(raw::EntryKind::User), "no id")
        );
    }

    #[test]
    fn errors_display_their_kind() {
        assert_eq!(ReadError::Auth("401".into()).to_string(), "authentication: 401");
        assert_eq!(
            ReadError::from(HttpError::Timeout("after 30 s".into())),
            ReadError::Http("timeout: after 30 s".into())
        );
        let response = http::Response {
            status: 500,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: "an   error\nwith lines".into(),
        };
        assert_eq!(response.header("Content-Type"), Some("text/plain"));
        assert_eq!(response.excerpt(8), "an error…");
        assert!(!response.is_success());
    }
}
