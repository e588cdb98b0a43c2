//! Notifications: failures, recoveries, guard-rail blocks and security events
//! (TLS or authentication failures) to the configured channels — a signed
//! JSON webhook and email over SMTP with STARTTLS. Sent from a thread of
//! their own so a slow channel never holds up a sync; the same event for the
//! same source is sent once per `dedup_minutes`, and a recovery only after a
//! failure was reported.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, NotifyConfig, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Failure,
    Recovery,
    GuardrailBlocked,
    Security,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub tenant: String,
    pub source: Option<String>,
    pub message: String,
    pub at: String,
}

enum Channel {
    Webhook { url: String, secret: Secret, dedup: Duration },
    Smtp(SmtpChannel),
}

struct SmtpChannel {
    server: String,
    from: String,
    to: Vec<String>,
    starttls: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    username: Option<String>,
    password: Option<Secret>,
    dedup: Duration,
}

pub struct Notifier {
    tx: Mutex<Option<Sender<Event>>>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Notifier {
    pub fn new(config: &Config) -> Result<Arc<Self>, String> {
        let mut channels = Vec::new();
        for n in &config.notify {
            match n {
                NotifyConfig::Webhook { url, secret, dedup_minutes } => {
                    crate::source::graph::check_url(url).map_err(|e| format!("[[notify]] webhook url '{url}': {e}"))?;
                    let secret =
                        secret.resolve(&config.base_dir).map_err(|e| format!("[[notify]] webhook secret: {e}"))?;
                    channels.push(Channel::Webhook {
                        url: url.clone(),
                        secret,
                        dedup: Duration::from_secs(dedup_minutes * 60),
                    });
                }
                NotifyConfig::Smtp { server, from, to, starttls, ca_file, username, password, dedup_minutes } => {
                    let host = server.rsplit_once(':').map(|(h, _)| h).unwrap_or(server);
                    let loopback =
                        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                    if !starttls && !loopback {
                        return Err(format!(
                            "[[notify]] smtp '{server}': starttls = false is accepted only for a loopback server"
                        ));
                    }
                    let tls = if *starttls {
                        let ca = ca_file.as_ref().map(|p| config.base_dir.join(p));
                        let (cfg, _, _) = crate::source::ldap::tls::client_config(ca.as_deref(), false)
                            .map_err(|e| format!("[[notify]] smtp TLS: {e}"))?;
                        Some(cfg)
                    } else {
                        None
                    };
                    let password = match password {
                        Some(p) => {
                            Some(p.resolve(&config.base_dir).map_err(|e| format!("[[notify]] smtp password: {e}"))?)
                        }
                        None => None,
                    };
                    channels.push(Channel::Smtp(SmtpChannel {
                        server: server.clone(),
                        from: from.clone(),
                        to: to.clone(),
                        starttls: *starttls,
                        tls,
                        username: username.clone(),
                        password,
                        dedup: Duration::from_secs(dedup_minutes * 60),
                    }));
                }
            }
        }
        let (tx, rx) = channel::<Event>();
        let handle = std::thread::Builder::new()
            .name("roster-notify".into())
            .spawn(move || deliver(rx, channels))
            .map_err(|e| format!("cannot start the notification thread: {e}"))?;
        Ok(Arc::new(Self { tx: Mutex::new(Some(tx)), handle: Mutex::new(Some(handle)) }))
    }

    pub fn send(&self, kind: EventKind, tenant: &str, source: Option<&str>, message: String) {
        let event = Event {
            kind,
            tenant: tenant.to_string(),
            source: source.map(str::to_string),
            message,
            at: crate::util::now_rfc3339(),
        };
        if let Ok(g) = self.tx.lock() {
            if let Some(tx) = g.as_ref() {
                let _ = tx.send(event);
            }
        }
    }

    /// Delivers what is queued, then stops the thread.
    pub fn close(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        if let Some(h) = self.handle.lock().ok().and_then(|mut g| g.take()) {
            let _ = h.join();
        }
    }
}

fn deliver(rx: Receiver<Event>, channels: Vec<Channel>) {
    // (channel, event kind, tenant, source) → when last sent
    let mut sent: HashMap<(usize, EventKind, String, Option<String>), Instant> = HashMap::new();
    // (tenant, source) that had a failure reported: recovery is worth saying only then.
    let mut failing: HashMap<(String, Option<String>), bool> = HashMap::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
    // Webhooks are verified against the system roots; without any, only a
    // loopback http:// receiver can be reached, and deliveries say why not.
    let http = crate::source::ldap::tls::client_config(None, false).ok().and_then(|(tls, _, _)| {
        reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(Duration::from_secs(10))
            .build()
            .ok()
    });
    for event in rx {
        let key = (event.tenant.clone(), event.source.clone());
        match event.kind {
            EventKind::Recovery => {
                if !failing.remove(&key).unwrap_or(false) {
                    continue;
                }
            }
            EventKind::Failure | EventKind::Security => {
                failing.insert(key, true);
            }
            EventKind::GuardrailBlocked => {}
        }
        for (i, channel) in channels.iter().enumerate() {
            let dedup = match channel {
                Channel::Webhook { dedup, .. } => *dedup,
                Channel::Smtp(s) => s.dedup,
            };
            let k = (i, event.kind, event.tenant.clone(), event.source.clone());
            if event.kind != EventKind::Recovery && sent.get(&k).is_some_and(|t| t.elapsed() < dedup) {
                tracing::debug!(tenant = %event.tenant, kind = ?event.kind, "notification suppressed (sent recently)");
                continue;
            }
            let result = match channel {
                Channel::Webhook { url, secret, .. } => match (&rt, &http) {
                    (Some(rt), Some(http)) => rt.block_on(webhook(http, url, secret, &event)),
                    _ => Err("no HTTP client".into()),
                },
                Channel::Smtp(s) => smtp(s, &event),
            };
            match result {
                Ok(()) => {
                    sent.insert(k, Instant::now());
                }
                Err(e) => tracing::warn!(tenant = %event.tenant, error = %e, "notification could not be delivered"),
            }
        }
    }
}

async fn webhook(http: &reqwest::Client, url: &str, secret: &Secret, event: &Event) -> Result<(), String> {
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes());
    let signature = hex::encode(ring::hmac::sign(&key, &body).as_ref());
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-roster-signature", format!("sha256={signature}"))
        .header(
            "x-roster-event",
            serde_json::to_value(event.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if response.status().is_success() { Ok(()) } else { Err(format!("POST {url}: HTTP {}", response.status())) }
}

fn smtp(c: &SmtpChannel, event: &Event) -> Result<(), String> {
    let tcp = TcpStream::connect(&c.server).map_err(|e| format!("SMTP {}: {e}", c.server))?;
    tcp.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let host = c.server.rsplit_once(':').map(|(h, _)| h).unwrap_or(&c.server).to_string();
    let mut s = Smtp::Plain(BufReader::new(tcp));
    s.expect(220)?;
    s.command("EHLO roster.localhost", 250)?;
    if c.starttls {
        s.command("STARTTLS", 220)?;
        let Smtp::Plain(reader) = s else { return Err("already TLS".into()) };
        let tcp = reader.into_inner();
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let cfg = c.tls.clone().ok_or("no TLS configuration")?;
        let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
        s = Smtp::Tls(BufReader::new(rustls::StreamOwned::new(conn, tcp)));
        s.command("EHLO roster.localhost", 250)?;
    }
    if let (Some(user), Some(password)) = (&c.username, &c.password) {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{}", password.expose()));
        s.command(&format!("AUTH PLAIN {token}"), 235)?;
    }
    s.command(&format!("MAIL FROM:<{}>", c.from), 250)?;
    for to in &c.to {
        s.command(&format!("RCPT TO:<{to}>"), 250)?;
    }
    s.command("DATA", 354)?;
    let subject = format!(
        "[roster] {:?}: tenant {}{}",
        event.kind,
        event.tenant,
        event.source.as_deref().map(|s| format!(", source {s}")).unwrap_or_default()
    );
    let body = format!(
        "From: <{}>\r\nTo: {}\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n\r\n{}\r\n.",
        c.from,
        c.to.iter().map(|t| format!("<{t}>")).collect::<Vec<_>>().join(", "),
        event.message.replace("\n.", "\n.."),
        event.at
    );
    s.command(&body, 250)?;
    let _ = s.command("QUIT", 221);
    Ok(())
}

enum Smtp {
    Plain(BufReader<TcpStream>),
    Tls(BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Smtp {
    fn expect(&mut self, code: u16) -> Result<(), String> {
        loop {
            let mut line = String::new();
            let n = match self {
                Smtp::Plain(r) => r.read_line(&mut line),
                Smtp::Tls(r) => r.read_line(&mut line),
            }
            .map_err(|e| format!("SMTP read: {e}"))?;
            if n == 0 {
                return Err("SMTP server closed the connection".into());
            }
            let got: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            return if got == code { Ok(()) } else { Err(format!("SMTP: expected {code}, got {}", line.trim_end())) };
        }
    }

    fn command(&mut self, line: &str, code: u16) -> Result<(), String> {
        let data = format!("{line}\r\n");
        match self {
            Smtp::Plain(r) => r.get_mut().write_all(data.as_bytes()),
            Smtp::Tls(r) => r.get_mut().write_all(data.as_bytes()),
        }
        .map_err(|e| format!("SMTP write: {e}"))?;
        self.expect(code)
    }
}
