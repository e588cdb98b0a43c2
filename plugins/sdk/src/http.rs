//! Outbound HTTP for connectors, through the host (the `http` import).
//!
//! The host is the only network a connector has. It checks each request
//! against the source's allowlist, adds the source's credentials itself, paces
//! and retries, follows no redirects and caps the response size. A connector
//! never sees a secret and must not set `Authorization`, `Cookie`, `Host` or
//! `Proxy-*` headers: the host refuses such a request.
//!
//! ```no_run
//! use roster_plugin_sdk::prelude::*;
//!
//! fn total_users(base: &str) -> Result<String, ReadError> {
//!     let response = http::Request::get(format!("{base}/Users?count=1"))
//!         .header("Accept", "application/scim+json")
//!         .send()?; // an HttpError becomes ReadError::Http
//!     if !response.is_success() {
//!         return Err(ReadError::Http(format!("HTTP {}: {}", response.status, response.excerpt(200))));
//!     }
//!     Ok(response.text().into_owned())
//! }
//! ```
//!
//! Outside WebAssembly (native unit tests) there is no host: requests go to
//! the function installed with [`mock`], or fail with [`HttpError::Transport`].

use std::borrow::Cow;
use std::fmt;

/// One request. Build it with [`Request::get`] (or [`Request::new`] for
/// another method) and send it with [`Request::send`] or [`send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// GET, POST, PUT, PATCH, DELETE or HEAD.
    pub method: String,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self { method: method.into(), url: url.into(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header (names are case-insensitive; a repeated name is sent twice).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the request and waits for the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        send(self)
    }

    #[cfg(target_arch = "wasm32")]
    fn into_raw(self) -> crate::raw::HttpRequest {
        crate::raw::HttpRequest { method: self.method, url: self.url, headers: self.headers, body: self.body }
    }
}

/// A complete response. Any status is a response: check [`Response::is_success`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, as the host delivers them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with this status and body and no headers (for tests).
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: Vec::new(), body: body.into() }
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// At most `max_chars` characters of the body on one line, for error messages.
    pub fn excerpt(&self, max_chars: usize) -> String {
        let text = self.text();
        let mut out: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some((cut, _)) = out.char_indices().nth(max_chars) {
            out.truncate(cut);
            out.push('…');
        }
        out
    }

    #[cfg(target_arch = "wasm32")]
    fn from_raw(raw: crate::raw::HttpResponse) -> Self {
        Self { status: raw.status, headers: raw.headers, body: raw.body }
    }
}

/// Why the host sent no request or got no complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host would not send it (allowlist, private address, plain http, a
    /// header the host owns); the message says which rule.
    Refused(String),
    /// No complete answer before the deadline.
    Timeout(String),
    /// The response was larger than the source allows.
    TooLarge(String),
    /// Connection, TLS or protocol failure, after the host's retries.
    Transport(String),
}

impl HttpError {
    /// The host's message, without the variant.
    pub fn message(&self) -> &str {
        match self {
            HttpError::Refused(m) | HttpError::Timeout(m) | HttpError::TooLarge(m) | HttpError::Transport(m) => m,
        }
    }

    /// `refused`, `timeout`, `too-large` or `transport`, as in the WIT.
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::Refused(_) => "refused",
            HttpError::Timeout(_) => "timeout",
            HttpError::TooLarge(_) => "too-large",
            HttpError::Transport(_) => "transport",
        }
    }

    #[cfg(target_arch = "wasm32")]
    fn from_raw(raw: crate::raw::HttpError) -> Self {
        use crate::raw::HttpError as R;
        match raw {
            R::Refused(m) => HttpError::Refused(m),
            R::Timeout(m) => HttpError::Timeout(m),
            R::TooLarge(m) => HttpError::TooLarge(m),
            R::Transport(m) => HttpError::Transport(m),
        }
    }
}

/// `refused: <the host's message>` (and so on for each variant).
impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl std::error::Error for HttpError {}

/// Sends one request through the host and waits for the whole response.
pub fn send(request: Request) -> Result<Response, HttpError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::raw::http_send(&request.into_raw()).map(Response::from_raw).map_err(HttpError::from_raw)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        native::send(request)
    }
}

/// `GET url` with no extra headers.
pub fn get(url: impl Into<String>) -> Result<Response, HttpError> {
    send(Request::get(url))
}

/// Native unit tests only: answers every request of this thread with
/// `transport` instead of a host (replacing any earlier mock).
///
/// ```
/// use roster_plugin_sdk::prelude::*;
/// http::mock(|request| Ok(http::Response::new(200, format!("you asked for {}", request.url))));
/// assert_eq!(http::get("https://x.test/a").unwrap().text(), "you asked for https://x.test/a");
/// ```
#[cfg(not(target_arch = "wasm32"))]
pub fn mock(transport: impl FnMut(&Request) -> Result<Response, HttpError> + 'static) {
    native::MOCK.with(|m| *m.borrow_mut() = Some(Box::new(transport)));
}

/// Native unit tests only: removes this thread's mock.
#[cfg(not(target_arch = "wasm32"))]
pub fn unmock() {
    native::MOCK.with(|m| m.borrow_mut().take());
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::RefCell;

    use super::{HttpError, Request, Response};

    type Transport = Box<dyn FnMut(&Request) -> Result<Response, HttpError>>;

    thread_local! {
        pub(super) static MOCK: RefCell<Option<Transport>> = const { RefCell::new(None) };
    }

    pub(super) fn send(request: Request) -> Result<Response, HttpError> {
        // Taken out while it runs, so a mock may itself send (to another mock: none).
        let Some(mut transport) = MOCK.with(|m| m.borrow_mut().take()) else {
            return Err(HttpError::Transport(format!(
                "no host outside WebAssembly: {} {} not sent (install http::mock in native tests)",
                request.method, request.url
            )));
        };
        let result = transport(&request);
        MOCK.with(|m| {
            m.borrow_mut().get_or_insert(transport);
        });
        result
    }
}
