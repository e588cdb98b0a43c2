//! Real-time LDAP: an RFC 4533 stream per source (users and groups, each with
//! its own cookie) feeding a buffer; each burst of changes becomes a run that
//! reads the buffer instead of the directory.
//!
//! Events stay in the buffer until the run that used them is applied; the
//! cookies written with that run are the ones that came with those events, so
//! a crash replays from the last applied cookie: nothing missed, nothing
//! applied twice (an applied change read again is "no change").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::config::{Config, LdapSourceConfig};
use crate::source::ldap::syncrepl::{self, SyncEvent};
use crate::source::ldap::{LdapSource, client};
use crate::source::{Delta, EntryKind, ReadSummary, Sink, Source, SourceError, SourceItem};

pub use crate::source::ldap::syncrepl::{GROUPS_COOKIE, USERS_COOKIE};

/// One stream's (users' or groups') pending changes.
#[derive(Default, Debug)]
struct Pending {
    /// uuid → (sequence, latest item)
    changed: BTreeMap<String, (u64, SourceItem)>,
    deleted: BTreeMap<String, u64>,
    /// Collected during a present phase.
    present: BTreeSet<String>,
    /// A finished present phase: what was there (everything else is gone), at sequence.
    present_done: Option<(u64, BTreeSet<String>)>,
    cookie: Option<(u64, Vec<u8>)>,
    refreshed: bool,
}

#[derive(Default, Debug)]
pub struct Buffer {
    users: Pending,
    groups: Pending,
    seq: u64,
    pub last_event: Option<Instant>,
    /// Set by the stream thread: why it is not connected (for health).
    pub stream_error: Option<String>,
}

impl Buffer {
    fn pending(&mut self, kind: EntryKind) -> &mut Pending {
        match kind {
            EntryKind::User => &mut self.users,
            EntryKind::Group => &mut self.groups,
        }
    }

    fn apply(&mut self, kind: EntryKind, event: SyncEvent) {
        self.seq += 1;
        let seq = self.seq;
        self.last_event = Some(Instant::now());
        let p = self.pending(kind);
        match event {
            SyncEvent::Changed { uuid, item } => {
                p.deleted.remove(&uuid);
                p.present.insert(uuid.clone());
                p.changed.insert(uuid, (seq, item));
            }
            SyncEvent::Present { uuid } => {
                p.present.insert(uuid);
            }
            SyncEvent::Deleted { uuid } => {
                p.changed.remove(&uuid);
                p.deleted.insert(uuid, seq);
            }
            SyncEvent::IdSet { uuids, deleted } => {
                for uuid in uuids {
                    if deleted {
                        p.changed.remove(&uuid);
                        p.deleted.insert(uuid, seq);
                    } else {
                        p.present.insert(uuid);
                    }
                }
            }
            SyncEvent::RefreshDone { present_phase } => {
                if present_phase {
                    p.present_done = Some((seq, std::mem::take(&mut p.present)));
                }
                p.present.clear();
                p.refreshed = true;
            }
            SyncEvent::Cookie(c) => p.cookie = Some((seq, c)),
        }
    }

    /// Both streams have finished their refresh: runs may start.
    pub fn ready(&self) -> bool {
        self.users.refreshed && self.groups.refreshed
    }

    /// Whether [`Buffer::take`] needs the stored anchors: a refresh ended
    /// with a list of what is present.
    pub fn needs_stored_anchors(&self) -> bool {
        self.users.present_done.is_some() || self.groups.present_done.is_some()
    }

    pub fn has_work(&self) -> bool {
        let p = |p: &Pending| !p.changed.is_empty() || !p.deleted.is_empty() || p.present_done.is_some();
        self.ready() && (p(&self.users) || p(&self.groups))
    }

    /// What a run takes: everything up to now.
    pub fn take(&self, stored: &BTreeMap<EntryKind, BTreeSet<String>>) -> Batch {
        let mut items = Vec::new();
        let mut deleted = BTreeSet::new();
        for (kind, p) in [(EntryKind::User, &self.users), (EntryKind::Group, &self.groups)] {
            items.extend(p.changed.values().map(|(_, i)| i.clone()));
            deleted.extend(p.deleted.keys().cloned());
            if let Some((_, present)) = &p.present_done {
                for anchor in stored.get(&kind).into_iter().flatten() {
                    if !present.contains(anchor) && !p.changed.contains_key(anchor) {
                        deleted.insert(anchor.clone());
                    }
                }
            }
        }
        let mut state = Vec::new();
        if let Some((_, c)) = &self.users.cookie {
            state.push((USERS_COOKIE.to_string(), STANDARD.encode(c)));
        }
        if let Some((_, c)) = &self.groups.cookie {
            state.push((GROUPS_COOKIE.to_string(), STANDARD.encode(c)));
        }
        Batch { upto: self.seq, items, deleted: deleted.into_iter().collect(), state }
    }

    /// Forgets what the applied run `upto` covered.
    pub fn ack(&mut self, upto: u64) {
        for p in [&mut self.users, &mut self.groups] {
            p.changed.retain(|_, (s, _)| *s > upto);
            p.deleted.retain(|_, s| *s > upto);
            if p.present_done.as_ref().is_some_and(|(s, _)| *s <= upto) {
                p.present_done = None;
            }
        }
    }
}

/// A run's share of the buffer.
#[derive(Debug, Clone)]
pub struct Batch {
    pub upto: u64,
    items: Vec<SourceItem>,
    deleted: Vec<String>,
    state: Vec<(String, String)>,
}

/// The buffered changes as a source, for one run.
pub struct BufferedSource {
    pub name: String,
    pub batch: Batch,
}

impl Source for BufferedSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn read(&mut self, sink: &mut dyn Sink) -> Result<ReadSummary, SourceError> {
        let mut summary = ReadSummary::default();
        // A run reads its batch once: hand the items over instead of copying them.
        for item in std::mem::take(&mut self.batch.items) {
            match &item {
                SourceItem::Entry(e) if e.kind == EntryKind::User => summary.users += 1,
                SourceItem::Entry(_) => summary.groups += 1,
                SourceItem::Rejected { .. } => summary.rejected += 1,
            }
            sink.item(item).map_err(|m| SourceError::Stopped { source_name: self.name.clone(), message: m })?;
        }
        summary.delta = Some(Delta {
            deleted: self.batch.deleted.clone(),
            since: "the realtime stream (RFC 4533)".into(),
            ..Delta::default()
        });
        summary.state = self.batch.state.clone();
        Ok(summary)
    }
}

/// Keeps the two persistent searches of a source running until `stop`,
/// reconnecting with backoff; `notify` is called after each burst of events.
pub fn stream(
    config: &Config,
    source: &LdapSourceConfig,
    cookies: (Option<Vec<u8>>, Option<Vec<u8>>),
    buffer: Arc<Mutex<Buffer>>,
    stop: Arc<AtomicBool>,
    notify: impl Fn() + Send + Sync + 'static,
) -> Result<std::thread::JoinHandle<()>, SourceError> {
    let password = match &source.bind_password {
        Some(r) => Some(r.resolve(&config.base_dir).map_err(|e| SourceError::Other {
            source_name: source.name.clone(),
            message: format!("bind_password: {e}"),
        })?),
        None => None,
    };
    let ldap = LdapSource::new(source, &config.base_dir, password)?;
    let endpoint = ldap.endpoint().clone();
    let rules = ldap.rules().clone();
    let source = source.clone();
    let notify = Arc::new(notify);
    let handle = std::thread::Builder::new()
        .name(format!("roster-rt-{}", source.name))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(source = %source.name, error = %e, "cannot start the realtime runtime");
                    return;
                }
            };
            let group_base = source.group_base.clone().unwrap_or_else(|| source.user_base.clone());
            let mut cookies = cookies;
            let mut backoff = Duration::from_millis(500);
            while !stop.load(Ordering::Relaxed) {
                let run = async {
                    let mut users = client::connect(&endpoint).await?;
                    let mut groups = client::connect(&endpoint).await?;
                    let on = |kind: EntryKind| {
                        let buffer = buffer.clone();
                        let notify = notify.clone();
                        move |event: SyncEvent| {
                            let wake = matches!(
                                event,
                                SyncEvent::Changed { .. }
                                    | SyncEvent::Deleted { .. }
                                    | SyncEvent::IdSet { deleted: true, .. }
                                    | SyncEvent::RefreshDone { .. }
                            );
                            if let Ok(mut b) = buffer.lock() {
                                b.stream_error = None;
                                b.apply(kind, event);
                            }
                            if wake {
                                notify();
                            }
                        }
                    };
                    let (mut on_users, mut on_groups) = (on(EntryKind::User), on(EntryKind::Group));
                    let (u, g) = tokio::join!(
                        syncrepl::persist(
                            &mut users.ldap,
                            &endpoint,
                            &source.user_base,
                            &source.user_filter,
                            EntryKind::User,
                            &rules,
                            cookies.0.clone(),
                            &stop,
                            &mut on_users
                        ),
                        syncrepl::persist(
                            &mut groups.ldap,
                            &endpoint,
                            &group_base,
                            &source.group_filter,
                            EntryKind::Group,
                            &rules,
                            cookies.1.clone(),
                            &stop,
                            &mut on_groups
                        ),
                    );
                    users.abort();
                    groups.abort();
                    u.and(g)
                };
                match rt.block_on(run) {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(source = %source.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "realtime stream lost; reconnecting");
                        if let Ok(mut b) = buffer.lock() {
                            b.stream_error = Some(e.to_string());
                            // Resume from the newest cookie received: older events are still buffered.
                            cookies = (
                                b.users.cookie.as_ref().map(|(_, c)| c.clone()).or(cookies.0.take()),
                                b.groups.cookie.as_ref().map(|(_, c)| c.clone()).or(cookies.1.take()),
                            );
                        }
                        notify();
                        let until = Instant::now() + backoff;
                        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        })
        .map_err(|e| SourceError::Other { source_name: String::new(), message: format!("cannot start a thread: {e}") })?;
    Ok(handle)
}

pub fn decode_cookie(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}
