//! Webhooks: every event of the tenant's outbox that an endpoint subscribes
//! to, POSTed in sequence order (so an update never overtakes its create), at
//! least once; a redelivery carries the same `Idempotency-Key`. Each endpoint
//! has a cursor in the store, so delivery survives restarts, and a thread of
//! its own, so a slow or dead endpoint delays nobody else. A failing endpoint
//! is retried with exponential backoff and jitter; an event that keeps failing
//! for `max_retry_hours` is dead-lettered (`roster webhooks replay`) and the
//! endpoint moves on.
//!
//! Signature: `Roster-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>" with the endpoint's secret>`. Check it, and that `t` is recent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::{Config, Secret, WebhookConfig};
use crate::store::{EventRecord, Store, WebhookState};

/// `t=…,v1=…` for a body sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={timestamp},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Checks a `Roster-Signature` header against a body, in constant time.
pub fn verify(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut signed = t.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    ring::hmac::verify(&key, &signed, &v1).is_ok()
}

fn client() -> Result<reqwest::Client, String> {
    let (tls, _, _) = crate::source::ldap::tls::client_config(None, false).map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| e.to_string())
}

async fn post(
    http: &reqwest::Client,
    hook: &WebhookConfig,
    secret: &Secret,
    event: &EventRecord,
) -> Result<(), String> {
    let body = event.payload.to_string();
    let t = time::OffsetDateTime::now_utc().unix_timestamp();
    let response = http
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("roster-signature", signature(secret.expose().as_bytes(), t, body.as_bytes()))
        .header("roster-event-type", &event.event_type)
        .header("roster-event-sequence", event.seq.to_string())
        .header("idempotency-key", &event.idempotency_key)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {}: {e}", hook.url))?;
    if response.status().is_success() { Ok(()) } else { Err(format!("POST {}: HTTP {}", hook.url, response.status())) }
}

fn backoff(attempts: u32) -> Duration {
    let base = Duration::from_millis(500u64.saturating_mul(1 << attempts.min(10)));
    base.min(Duration::from_secs(600)) + Duration::from_millis(u64::from(crate::util::jitter_ms(250)))
}

/// Delivers one endpoint's events until `stop`, while `active` (this node holds the endpoint).
pub fn deliver(
    config: Arc<Config>,
    tenant: String,
    hook: WebhookConfig,
    active: impl Fn() -> bool,
    stop: Arc<AtomicBool>,
) {
    let name = format!("{tenant}/{}", hook.name);
    let secret = match hook.secret.resolve(&config.base_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(webhook = %name, error = %e, "webhook secret unavailable; not delivering");
            return;
        }
    };
    let (Ok(rt), Ok(http)) = (tokio::runtime::Builder::new_current_thread().enable_all().build(), client()) else {
        tracing::error!(webhook = %name, "cannot start the webhook client");
        return;
    };
    let mut store = match crate::store::open(&config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(webhook = %name, error = %e, "cannot open the store");
            return;
        }
    };
    let max_age = Duration::from_secs(hook.max_retry_hours * 3600);
    let mut wait_until = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if std::time::Instant::now() < wait_until {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if !active() {
            // Another node delivers; the position is read again when this one takes over.
            wait_until = std::time::Instant::now() + Duration::from_millis(200);
            continue;
        }
        let mut state = match store.webhook_state(&tenant, &hook.name) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(webhook = %name, error = %e, "reading delivery state");
                wait_until = std::time::Instant::now() + Duration::from_secs(1);
                continue;
            }
        };
        let events = store.events(&tenant, state.delivered_seq, 100).unwrap_or_default();
        if events.is_empty() {
            wait_until = std::time::Instant::now() + Duration::from_millis(100);
            continue;
        }
        for event in events {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if !hook.wants(&event.event_type) {
                state.delivered_seq = event.seq;
                continue;
            }
            match rt.block_on(post(&http, &hook, &secret, &event)) {
                Ok(()) => {
                    state =
                        WebhookState { delivered_seq: event.seq, attempts: 0, next_attempt_at: None, last_error: None };
                }
                Err(e) => {
                    let age =
                        time::OffsetDateTime::parse(&event.created_at, &time::format_description::well_known::Rfc3339)
                            .map(|t| (time::OffsetDateTime::now_utc() - t).unsigned_abs())
                            .unwrap_or_default();
                    if age > max_age {
                        tracing::error!(webhook = %name, seq = event.seq, error = %e, "event dead-lettered after retrying for max_retry_hours");
                        let _ = store.dead_letter(&tenant, &hook.name, event.seq, &e);
                        state = WebhookState {
                            delivered_seq: event.seq,
                            attempts: 0,
                            next_attempt_at: None,
                            last_error: Some(e),
                        };
                        continue;
                    }
                    state.attempts += 1;
                    let delay = backoff(state.attempts);
                    tracing::warn!(webhook = %name, seq = event.seq, attempts = state.attempts, retry_in_ms = delay.as_millis() as u64, error = %e, "webhook delivery failed; retrying");
                    state.last_error = Some(e);
                    state.next_attempt_at = Some(crate::util::now_rfc3339());
                    wait_until = std::time::Instant::now() + delay;
                    break;
                }
            }
        }
        if let Err(e) = store.set_webhook_state(&tenant, &hook.name, &state) {
            tracing::warn!(webhook = %name, error = %e, "writing delivery state");
        }
    }
}

/// Sends an endpoint's dead letters again, oldest first; those delivered are
/// cleared. Returns (delivered, still failing).
pub fn replay(
    config: &Config,
    tenant: &str,
    hook: &WebhookConfig,
    store: &mut dyn Store,
) -> Result<(usize, usize), String> {
    let secret = hook.secret.resolve(&config.base_dir).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let http = client()?;
    let (mut ok, mut failed) = (0, 0);
    for (seq, _) in store.dead_letters(tenant, &hook.name).map_err(|e| e.to_string())? {
        let Some(event) =
            store.events(tenant, seq - 1, 1).map_err(|e| e.to_string())?.into_iter().find(|e| e.seq == seq)
        else {
            failed += 1;
            continue;
        };
        match rt.block_on(post(&http, hook, &secret, &event)) {
            Ok(()) => {
                store.clear_dead_letter(tenant, &hook.name, seq).map_err(|e| e.to_string())?;
                ok += 1;
            }
            Err(_) => failed += 1,
        }
    }
    Ok((ok, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let sig = signature(b"k", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("t=1700000000,v1="));
        assert!(verify(b"k", &sig, b"{\"a\":1}"));
        assert!(!verify(b"k", &sig, b"{\"a\":2}"));
        assert!(!verify(b"other", &sig, b"{\"a\":1}"));
        assert!(!verify(b"k", "v1=00", b"{\"a\":1}"));
    }
}
