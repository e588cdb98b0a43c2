//! RFC 4533 content synchronization. refreshAndPersist ([`persist`], for
//! `roster serve`): one long-lived search that first replays what changed
//! since a cookie (everything without one), then streams each change as the
//! server commits it. refreshOnly ([`refresh_only`], for `roster sync`): what
//! changed since a cookie, then the search ends with a new cookie.
//!
//! ldap3 parses the sync controls but panics on malformed input; every parse
//! here is contained, and a malformed message ends the stream with an error
//! (the caller reconnects from its last cookie) instead of taking Roster down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ldap3::controls::{Control, ControlParser, EntryState, RefreshMode, SyncInfo, SyncRequest, SyncState};
use ldap3::{Ldap, Scope};

use super::client::Endpoint;
use super::entry::{self, EntryRules};
use crate::source::{EntryKind, SourceError, SourceItem};

const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
/// e-syncRefreshRequired: the cookie is too old for the server to say what
/// changed; read everything.
const SYNC_REFRESH_REQUIRED: u32 = 4096;

/// Source state keys: where each search's content synchronization continues.
pub const USERS_COOKIE: &str = "syncrepl.users_cookie";
pub const GROUPS_COOKIE: &str = "syncrepl.groups_cookie";

/// How a refreshOnly search ended.
#[derive(Debug)]
pub enum Refreshed {
    /// The changes were delivered. `present`: the server used the present
    /// phase, and these are all the entries still there (the rest are gone).
    Done { cookie: Option<Vec<u8>>, deleted: Vec<String>, present: Option<std::collections::HashSet<String>> },
    /// The server cannot say what changed since the cookie (or will not, for
    /// this account: a size limit): read everything instead.
    ReadEverything(String),
}

/// One refreshOnly search: every entry added or changed since `cookie` goes
/// to `on_item`; deletions and the new cookie come back.
#[allow(clippy::too_many_arguments)]
pub async fn refresh_only(
    ldap: &mut Ldap,
    ep: &Endpoint,
    base: &str,
    scope: Scope,
    filter: &str,
    kind: EntryKind,
    rules: &EntryRules,
    cookie: Option<Vec<u8>>,
    attrs: Vec<String>,
    on_item: &mut dyn FnMut(SourceItem) -> Result<(), SourceError>,
) -> Result<Refreshed, SourceError> {
    let request = SyncRequest { mode: RefreshMode::RefreshOnly, cookie, reload_hint: false };
    let control: ldap3::controls::RawControl = ldap3::controls::MakeCritical::critical(request).into();
    ldap.with_controls(vec![control]);
    let mut stream =
        ldap.streaming_search(base, scope, filter, attrs).await.map_err(|e| ep.ctx.search_failed(base, e))?;
    let mut cookie = None;
    let mut deleted = Vec::new();
    let mut present = std::collections::HashSet::new();
    let mut entries = 0u64;
    loop {
        let entry = match stream.next().await {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => return Err(ep.ctx.search_failed(base, e)),
        };
        if entry.is_intermediate() {
            let info = contained("sync info", || ldap3::controls::parse_syncinfo(entry))
                .map_err(|m| ep.ctx.search(base, format!("malformed sync info message ({m})")))?;
            match info {
                SyncInfo::NewCookie(c) => cookie = Some(c),
                SyncInfo::RefreshPresent { cookie: c, .. } | SyncInfo::RefreshDelete { cookie: c, .. } => {
                    cookie = c.or(cookie);
                }
                SyncInfo::SyncIdSet { cookie: c, refresh_deletes, sync_uuids } => {
                    let uuids = sync_uuids.iter().filter_map(|u| uuid_text(u));
                    if refresh_deletes {
                        deleted.extend(uuids);
                    } else {
                        present.extend(uuids);
                    }
                    cookie = c.or(cookie);
                }
            }
            continue;
        }
        if entry.is_ref() {
            continue;
        }
        entries += 1;
        let (state, uuid) = sync_state(&entry, ep, base)?;
        match state.state {
            EntryState::Present => {
                present.insert(uuid);
            }
            EntryState::Delete => deleted.push(uuid),
            EntryState::Add | EntryState::Modify => {
                present.insert(uuid);
                on_item(entry::convert(entry.0, kind, rules))?;
            }
        }
        if let Some(c) = state.cookie {
            cookie = Some(c);
        }
    }
    let result = stream.finish().await;
    match result.rc {
        0 => {}
        SYNC_REFRESH_REQUIRED => {
            return Ok(Refreshed::ReadEverything("the server needs a full refresh (e-syncRefreshRequired)".into()));
        }
        // sizeLimitExceeded: the account may not list that many changes at once.
        4 => return Ok(Refreshed::ReadEverything(format!("size limit exceeded after {entries} entries"))),
        _ => return Err(ep.ctx.search_result(base, &result, entries)),
    }
    let done = result
        .ctrls
        .iter()
        .find_map(|Control(_, raw)| (raw.ctype == SYNC_DONE_OID).then_some(raw.val.clone()))
        .flatten();
    let mut refresh_deletes = false;
    if let Some(val) = done {
        let done = contained("sync done", || <ldap3::controls::SyncDone as ControlParser>::parse(&val))
            .map_err(|m| ep.ctx.search(base, format!("malformed Sync Done control ({m})")))?;
        cookie = done.cookie.or(cookie);
        refresh_deletes = done.refresh_deletes;
    }
    // Without refreshDeletes the server used the present phase: what it did
    // not list is gone.
    Ok(Refreshed::Done { cookie, deleted, present: (!refresh_deletes).then_some(present) })
}

/// What the stream says.
#[derive(Debug)]
pub enum SyncEvent {
    /// An entry added or changed, with its attributes.
    Changed {
        uuid: String,
        item: SourceItem,
    },
    /// An entry that is there, unchanged since the cookie (refresh present phase).
    Present {
        uuid: String,
    },
    Deleted {
        uuid: String,
    },
    /// A syncIdSet: these entries were deleted (`deleted`) or are present.
    IdSet {
        uuids: Vec<String>,
        deleted: bool,
    },
    /// The refresh stage is over; `present_phase`: the server used the present
    /// phase, so whatever it did not list as present is gone.
    RefreshDone {
        present_phase: bool,
    },
    Cookie(Vec<u8>),
}

fn uuid_text(bytes: &[u8]) -> Option<String> {
    uuid::Uuid::from_slice(bytes).ok().map(|u| u.to_string())
}

/// An entry's Sync State control and the entryUUID it names.
fn sync_state(entry: &ldap3::ResultEntry, ep: &Endpoint, base: &str) -> Result<(SyncState, String), SourceError> {
    let state =
        entry.1.iter().find_map(|Control(_, raw)| (raw.ctype == SYNC_STATE_OID).then_some(raw.val.clone())).flatten();
    let Some(state) = state else {
        return Err(ep.ctx.search(base, "an entry came without its Sync State control"));
    };
    let state = contained("sync state", || SyncState::parse(&state))
        .map_err(|m| ep.ctx.search(base, format!("malformed Sync State control ({m})")))?;
    let Some(uuid) = uuid_text(&state.entry_uuid) else {
        return Err(ep.ctx.search(base, "a Sync State control without a 16-byte entryUUID"));
    };
    Ok((state, uuid))
}

fn contained<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|p| format!("{what}: {}", entry::panic_message(&p)))
}

/// Runs the persistent search until `stop` is set (Ok) or the connection
/// fails (Err). `on` gets every event in order.
#[allow(clippy::too_many_arguments)]
pub async fn persist(
    ldap: &mut Ldap,
    ep: &Endpoint,
    base: &str,
    filter: &str,
    kind: EntryKind,
    rules: &EntryRules,
    cookie: Option<Vec<u8>>,
    stop: &AtomicBool,
    on: &mut dyn FnMut(SyncEvent),
) -> Result<(), SourceError> {
    let request = SyncRequest { mode: RefreshMode::RefreshAndPersist, cookie, reload_hint: false };
    let control: ldap3::controls::RawControl = ldap3::controls::MakeCritical::critical(request).into();
    ldap.with_controls(vec![control]);
    let attrs = vec!["*".to_string(), rules.anchor.clone()];
    let mut stream =
        ldap.streaming_search(base, Scope::Subtree, filter, attrs).await.map_err(|e| ep.ctx.search_failed(base, e))?;
    let mut present_phase = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            // The caller drops the connection, which ends the search on the server.
            return Ok(());
        }
        let next = match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Err(_) => continue,
            Ok(n) => n,
        };
        let entry = match next {
            Ok(Some(e)) => e,
            Ok(None) => {
                let result = stream.finish().await;
                if result.rc != 0 {
                    return Err(ep.ctx.search_result(base, &result, 0));
                }
                return Err(ep.ctx.search(base, "the server ended the persistent search"));
            }
            Err(e) => return Err(ep.ctx.search_failed(base, e)),
        };
        if entry.is_intermediate() {
            let info = contained("sync info", || ldap3::controls::parse_syncinfo(entry))
                .map_err(|m| ep.ctx.search(base, format!("malformed sync info message ({m})")))?;
            match info {
                SyncInfo::NewCookie(c) => on(SyncEvent::Cookie(c)),
                SyncInfo::RefreshPresent { cookie, refresh_done } => {
                    present_phase = true;
                    if let Some(c) = cookie {
                        on(SyncEvent::Cookie(c));
                    }
                    if refresh_done {
                        on(SyncEvent::RefreshDone { present_phase });
                    }
                }
                SyncInfo::RefreshDelete { cookie, refresh_done } => {
                    if let Some(c) = cookie {
                        on(SyncEvent::Cookie(c));
                    }
                    if refresh_done {
                        on(SyncEvent::RefreshDone { present_phase });
                    }
                }
                SyncInfo::SyncIdSet { cookie, refresh_deletes, sync_uuids } => {
                    if !refresh_deletes {
                        present_phase = true;
                    }
                    let uuids = sync_uuids.iter().filter_map(|u| uuid_text(u)).collect();
                    on(SyncEvent::IdSet { uuids, deleted: refresh_deletes });
                    if let Some(c) = cookie {
                        on(SyncEvent::Cookie(c));
                    }
                }
            }
            continue;
        }
        if entry.is_ref() {
            continue;
        }
        let (state, uuid) = sync_state(&entry, ep, base)?;
        match state.state {
            EntryState::Present => {
                present_phase = true;
                on(SyncEvent::Present { uuid });
            }
            EntryState::Delete => on(SyncEvent::Deleted { uuid }),
            EntryState::Add | EntryState::Modify => {
                let item = entry::convert(entry.0, kind, rules);
                on(SyncEvent::Changed { uuid, item });
            }
        }
        if let Some(c) = state.cookie {
            on(SyncEvent::Cookie(c));
        }
    }
}
