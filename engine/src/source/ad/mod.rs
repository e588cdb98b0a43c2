//! `kind = "active-directory"`: Active Directory (and Samba's AD DC) over
//! LDAPS or StartTLS, in AD's dialect, on top of the LDAP source's connection,
//! TLS and error handling.
//!
//! What it adds to `kind = "ldap"`:
//! - **Identity** is `objectGUID`, turned from 16 bytes into its canonical
//!   text form; `objectGUID` and `objectSid` values reach mappers as text.
//! - **Activity**: a synthesised `active` attribute (`true`/`false`) from
//!   `userAccountControl` (ACCOUNTDISABLE) and `accountExpires`.
//! - **What is a user**: people, not computers (`objectCategory=person`), and
//!   no `isCriticalSystemObject` objects, unless asked.
//! - **Paging** at ≤ 1000 (AD's MaxPageSize) and **range retrieval** of
//!   `member` (`member;range=0-1499`, then the next ranges by base searches),
//!   always requested, so a group of any size is read whole on a real AD even
//!   where Samba would have returned everything at once.
//! - **Primary groups**: a user's `primaryGroupID` counts as membership of the
//!   group whose `objectSid` ends in that RID (AD does not list it in `member`).
//! - **Incremental reads**: `uSNChanged` above the high-water mark of the last
//!   applied run, kept with the DC's `invocationId`; deletes come from
//!   tombstones (Show Deleted control, `isDeleted=TRUE`). A different DC (or a
//!   restored one, whose `highestCommittedUSN` went backwards) means a full read.
//!
//! Nested groups are plain group → group memberships; the engine expands them
//! host-side (cycle-safe) for scope and roles, so it works on every server.

pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use ldap3::Scope;
use ldap3::asn1::StructureTag;
use ldap3::controls::RawControl;

use crate::config::{AdSourceConfig, Secret};
use crate::source::ldap::LdapSource;
use crate::source::ldap::client::{self, Endpoint};
use crate::source::ldap::entry::{self, EntryRules, RawEntry};
use crate::source::{Delta, EntryKind, MemberRef, ReadSummary, Sink, Source, SourceError, SourceItem};

/// LDAP_SERVER_SHOW_DELETED_OID: return tombstones.
const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";
/// LDAP_SERVER_DIRSYNC_OID, reported by `source test`.
const DIRSYNC_OID: &str = "1.2.840.113556.1.4.841";
/// Values per range request: what Windows AD hands out by default (MaxValRange).
pub const MEMBER_RANGE_STEP: u64 = 1500;
/// State keys kept per source between runs.
const STATE_INVOCATION_ID: &str = "ad.invocation_id";
const STATE_USN: &str = "ad.usn";

/// Reads users and groups from Active Directory.
#[derive(Debug)]
pub struct AdSource {
    config: AdSourceConfig,
    inner: LdapSource,
    resume: BTreeMap<String, String>,
}

impl AdSource {
    pub fn new(config: &AdSourceConfig, base_dir: &Path, password: Option<Secret>) -> Result<Self, SourceError> {
        let inner = LdapSource::new(&config.ldap, base_dir, password)?;
        Ok(Self { config: config.clone(), inner, resume: BTreeMap::new() })
    }

    fn user_filter(&self) -> String {
        let mut parts = vec![self.config.ldap.user_filter.clone()];
        if !self.config.include_computers {
            parts.push("(!(objectClass=computer))".into());
        }
        if !self.config.include_system_objects {
            parts.push("(!(isCriticalSystemObject=TRUE))".into());
        }
        and(&parts)
    }

    fn group_filter(&self) -> String {
        let mut parts = vec![self.config.ldap.group_filter.clone()];
        if !self.config.include_system_objects {
            parts.push("(!(isCriticalSystemObject=TRUE))".into());
        }
        and(&parts)
    }
}

fn and(parts: &[String]) -> String {
    if parts.len() == 1 { parts[0].clone() } else { format!("(&{})", parts.concat()) }
}

/// The DC's identity and high-water mark, read before anything else.
#[derive(Debug, Clone)]
struct DcState {
    invocation_id: String,
    highest_usn: u64,
    default_nc: String,
    controls: Vec<String>,
    dns_host_name: String,
}

async fn dc_state(ldap: &mut ldap3::Ldap, ep: &Endpoint) -> Result<DcState, SourceError> {
    let attrs = ["highestCommittedUSN", "dsServiceName", "defaultNamingContext", "supportedControl", "dnsHostName"]
        .map(String::from)
        .to_vec();
    let dse = client::search_entries(ldap, ep, "", Scope::Base, "(objectClass=*)", attrs, Vec::new())
        .await?
        .and_then(|mut v| v.pop())
        .ok_or_else(|| ep.ctx.other("the root DSE could not be read"))?;
    let text = |name: &str| -> Vec<String> {
        dse.attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.iter().map(|x| String::from_utf8_lossy(x).into_owned()).collect())
            .unwrap_or_default()
    };
    let highest_usn = text("highestCommittedUSN").first().and_then(|v| v.parse().ok()).ok_or_else(|| {
        ep.ctx.other("the root DSE has no highestCommittedUSN: is this an Active Directory domain controller? (use kind = \"ldap\" for other servers)")
    })?;
    let service =
        text("dsServiceName").into_iter().next().ok_or_else(|| ep.ctx.other("the root DSE has no dsServiceName"))?;
    let settings = client::search_entries(
        ldap,
        ep,
        &service,
        Scope::Base,
        "(objectClass=*)",
        vec!["invocationId".into()],
        Vec::new(),
    )
    .await?
    .and_then(|mut v| v.pop());
    let invocation_id = settings
        .as_ref()
        .and_then(|s| s.attrs.iter().find(|(n, _)| n.eq_ignore_ascii_case("invocationId")))
        .and_then(|(_, v)| v.first())
        .and_then(|v| wire::guid(v))
        .ok_or_else(|| {
            ep.ctx.other(format!("cannot read invocationId of '{service}' (the DC's identity for incremental reads)"))
        })?;
    Ok(DcState {
        invocation_id,
        highest_usn,
        default_nc: text("defaultNamingContext").into_iter().next().unwrap_or_default(),
        controls: text("supportedControl"),
        dns_host_name: text("dnsHostName").into_iter().next().unwrap_or_default(),
    })
}

/// Rewrites AD's binary attributes as text and adds `active` for users.
fn normalise(raw: &mut RawEntry, kind: EntryKind, now: i64) {
    for (name, values) in raw.attrs.iter_mut() {
        if name.eq_ignore_ascii_case("objectGUID") {
            for v in values.iter_mut() {
                if let Some(g) = wire::guid(v) {
                    *v = g.into_bytes();
                }
            }
        } else if name.eq_ignore_ascii_case("objectSid") {
            for v in values.iter_mut() {
                if let Some(s) = wire::sid(v) {
                    *v = s.into_bytes();
                }
            }
        }
    }
    if kind == EntryKind::User {
        let first = |n: &str| {
            raw.attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .and_then(|(_, v)| v.first())
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let active = wire::is_active(first("userAccountControl").as_deref(), first("accountExpires").as_deref(), now);
        raw.attrs.retain(|(k, _)| !k.eq_ignore_ascii_case("active"));
        raw.attrs.push(("active".into(), vec![active.to_string().into_bytes()]));
    }
}

fn first_text(raw: &RawEntry, name: &str) -> Option<String> {
    raw.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// `member;range=0-1499` → (start, Some(1499)); `member;range=1500-*` → (1500, None).
fn parse_range(attr: &str) -> Option<(u64, Option<u64>)> {
    let (name, range) = attr.split_once(';')?;
    if !name.eq_ignore_ascii_case("member") {
        return None;
    }
    let range = range.strip_prefix("range=").or_else(|| range.strip_prefix("Range="))?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, if end == "*" { None } else { Some(end.parse().ok()?) }))
}

/// Takes the ranged `member` values out of an entry: (values, next start if more remain).
fn take_member_range(raw: &mut RawEntry) -> (Vec<Vec<u8>>, Option<u64>) {
    let mut values = Vec::new();
    let mut next = None;
    let mut plain = None;
    raw.attrs.retain_mut(|(name, v)| {
        if let Some((_, end)) = parse_range(name) {
            values.append(v);
            next = end.map(|e| e + 1);
            false
        } else if name.eq_ignore_ascii_case("member") {
            // A server that ignores the range request sends everything at once.
            plain = Some(std::mem::take(v));
            false
        } else {
            true
        }
    });
    if let Some(p) = plain {
        values.extend(p);
    }
    (values, next)
}

/// What the reader collects on its way through users and groups.
#[derive(Default)]
struct Progress {
    summary: ReadSummary,
    /// Users by primary group: (domain SID, RID) → user anchors.
    primary: HashMap<(String, u32), Vec<String>>,
}

impl Source for AdSource {
    fn name(&self) -> &str {
        &self.config.ldap.name
    }

    fn resume(&mut self, state: &BTreeMap<String, String>) {
        self.resume = state.clone();
    }

    fn check(&mut self) -> Result<String, SourceError> {
        let mut report = self.inner.check()?;
        let endpoint = self.inner.endpoint().clone();
        let base = self.config.ldap.user_base.clone();
        let user_filter = self.user_filter();
        let lines = self.inner.run(async move {
            let mut session = client::connect(&endpoint).await?;
            let result = async {
                let dc = dc_state(&mut session.ldap, &endpoint).await?;
                let sample = client::search_entries(
                    &mut session.ldap,
                    &endpoint,
                    &base,
                    Scope::Subtree,
                    &user_filter,
                    vec!["objectGUID".into()],
                    Vec::new(),
                )
                .await;
                let tombstones = client::search_entries(
                    &mut session.ldap,
                    &endpoint,
                    &dc.default_nc,
                    Scope::Subtree,
                    "(&(isDeleted=TRUE)(objectClass=user))",
                    vec!["objectGUID".into()],
                    vec![RawControl { ctype: SHOW_DELETED_OID.into(), crit: true, val: None }],
                )
                .await;
                Ok::<_, SourceError>((dc, sample, tombstones))
            }
            .await;
            match &result {
                Ok(_) => session.close().await,
                Err(_) => session.abort(),
            }
            let (dc, sample, tombstones) = result?;
            let mut lines = vec![format!(
                "domain controller: {} (invocationId {}), highestCommittedUSN {}",
                if dc.dns_host_name.is_empty() { "(unnamed)" } else { &dc.dns_host_name },
                dc.invocation_id,
                dc.highest_usn
            )];
            lines.push(match sample {
                Ok(Some(found)) => format!("read access: {} user objects visible under user_base", found.len()),
                Ok(None) => "read access: user_base NOT FOUND".into(),
                Err(e) => format!("read access: FAILED ({e})"),
            });
            lines.push(match tombstones {
                Ok(_) => "incremental reads: uSNChanged + tombstones (Show Deleted control) available".into(),
                Err(e) => {
                    format!("incremental reads: tombstones NOT readable ({e}); every run will read the whole directory")
                }
            });
            lines.push(format!(
                "DirSync control: {}",
                if dc.controls.iter().any(|c| c == DIRSYNC_OID) {
                    "advertised (not needed: Roster uses uSNChanged)"
                } else {
                    "not advertised"
                }
            ));
            Ok(lines)
        })?;
        for l in lines {
            report.push('\n');
            report.push_str(&l);
        }
        Ok(report)
    }

    fn read(&mut self, sink: &mut dyn Sink) -> Result<ReadSummary, SourceError> {
        let endpoint = self.inner.endpoint().clone();
        let config = self.config.clone();
        let user_filter = self.user_filter();
        let group_filter = self.group_filter();
        let resume = self.resume.clone();
        let name = config.ldap.name.clone();
        let started = Instant::now();
        tracing::info!(source = %name, url = %endpoint.url, transport = %self.inner.describe_transport(), "reading Active Directory");
        let mut sink_panic = None;
        let result = self.inner.run(async {
            let mut session = client::connect(&endpoint).await?;
            let result = read_ad(
                &mut session.ldap,
                &endpoint,
                &config,
                &user_filter,
                &group_filter,
                &resume,
                sink,
                &mut sink_panic,
            )
            .await;
            match &result {
                Ok(_) => session.close().await,
                Err(_) => session.abort(),
            }
            result
        });
        if let Some(panic) = sink_panic {
            std::panic::resume_unwind(panic);
        }
        let summary = result?;
        tracing::info!(
            source = %name,
            mode = if summary.delta.is_some() { "incremental" } else { "full" },
            users = summary.users,
            groups = summary.groups,
            deleted = summary.delta.as_ref().map(|d| d.deleted.len()).unwrap_or(0),
            pages = summary.requests,
            range_requests = summary.range_requests,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Active Directory read complete"
        );
        Ok(summary)
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_ad(
    ldap: &mut ldap3::Ldap,
    ep: &Endpoint,
    config: &AdSourceConfig,
    user_filter: &str,
    group_filter: &str,
    resume: &BTreeMap<String, String>,
    sink: &mut dyn Sink,
    sink_panic: &mut Option<Box<dyn std::any::Any + Send>>,
) -> Result<ReadSummary, SourceError> {
    let source_name = config.ldap.name.clone();
    let dc = dc_state(ldap, ep).await?;
    // Incremental only from the same DC, and only forward: a restored DC's
    // USNs went back and would hide changes.
    let since = match (config.incremental, resume.get(STATE_INVOCATION_ID), resume.get(STATE_USN)) {
        (true, Some(inv), Some(usn)) if *inv == dc.invocation_id => match usn.parse::<u64>() {
            Ok(u) if u <= dc.highest_usn => Some(u),
            _ => {
                tracing::warn!(source = %source_name, stored = %usn, highest = dc.highest_usn, "the DC's highestCommittedUSN is below the stored one (restored?); reading everything");
                None
            }
        },
        (true, Some(inv), Some(_)) => {
            tracing::info!(source = %source_name, stored = %inv, current = %dc.invocation_id, "another (or a restored) domain controller; reading everything");
            None
        }
        _ => None,
    };
    let changed = |filter: &str| match since {
        Some(u) => format!("(&{filter}(uSNChanged>={}))", u + 1),
        None => filter.to_string(),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let rules = EntryRules { anchor: "objectGUID".into(), member_attributes: vec!["member".into()] };
    let mut progress = Progress::default();
    let page_size = config.ldap.page_size.min(crate::config::AD_MAX_PAGE_SIZE);
    progress.summary.page_size = page_size as u64;

    let emit = |item: SourceItem,
                summary: &mut ReadSummary,
                sink: &mut dyn Sink,
                sink_panic: &mut Option<Box<dyn std::any::Any + Send>>|
     -> Result<(), SourceError> {
        match &item {
            SourceItem::Entry(e) if e.kind == EntryKind::User => summary.users += 1,
            SourceItem::Entry(_) => summary.groups += 1,
            SourceItem::Rejected { reason, .. } => {
                summary.rejected += 1;
                tracing::warn!(source = %source_name, %reason, "entry rejected");
            }
        }
        let stopped = |message: String| SourceError::Stopped { source_name: source_name.clone(), message };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.item(item))) {
            Ok(result) => result.map_err(stopped),
            Err(panic) => {
                *sink_panic = Some(panic);
                Err(stopped("the consumer panicked".into()))
            }
        }
    };

    // Users.
    {
        let summary = &mut progress.summary;
        let primary = &mut progress.primary;
        let mut on_entry = |tag: StructureTag| -> Result<(), SourceError> {
            let item = match decode(tag) {
                Some(mut raw) => {
                    normalise(&mut raw, EntryKind::User, now);
                    if let (Some(sid), Some(rid)) = (first_text(&raw, "objectSid"), first_text(&raw, "primaryGroupID"))
                    {
                        if let (Some((domain, _)), Ok(rid), Some(anchor)) =
                            (wire::split_rid(&sid), rid.trim().parse::<u32>(), first_text(&raw, "objectGUID"))
                        {
                            primary.entry((domain.to_string(), rid)).or_default().push(anchor);
                        }
                    }
                    entry::to_item(raw, EntryKind::User, &rules)
                }
                None => malformed(EntryKind::User),
            };
            emit(item, summary, sink, sink_panic)
        };
        let stats = client::paged_search(
            ldap,
            ep,
            &config.ldap.user_base,
            &changed(user_filter),
            vec!["*".into()],
            page_size,
            &mut on_entry,
        )
        .await?;
        summary.requests += stats.pages;
    }

    // Groups: `member` always in ranges; groups with more ranges wait until the
    // paged search is over, then their remaining ranges are read one by one.
    let group_base = config.ldap.group_base.clone().unwrap_or_else(|| config.ldap.user_base.clone());
    let first_range = format!("member;range=0-{}", MEMBER_RANGE_STEP - 1);
    let mut unfinished: Vec<(RawEntry, Vec<Vec<u8>>, u64)> = Vec::new();
    {
        let summary = &mut progress.summary;
        let primary = &progress.primary;
        let unfinished = &mut unfinished;
        let mut on_entry = |tag: StructureTag| -> Result<(), SourceError> {
            let Some(mut raw) = decode(tag) else {
                return emit(malformed(EntryKind::Group), summary, sink, sink_panic);
            };
            normalise(&mut raw, EntryKind::Group, now);
            let (members, next) = take_member_range(&mut raw);
            match next {
                Some(start) => {
                    unfinished.push((raw, members, start));
                    Ok(())
                }
                None => emit(group_item(raw, members, primary, &rules), summary, sink, sink_panic),
            }
        };
        let stats = client::paged_search(
            ldap,
            ep,
            &group_base,
            &changed(group_filter),
            vec!["*".into(), first_range],
            page_size,
            &mut on_entry,
        )
        .await?;
        summary.requests += stats.pages;
    }
    for (raw, mut members, mut start) in unfinished {
        loop {
            let attr = format!("member;range={start}-{}", start + MEMBER_RANGE_STEP - 1);
            tracing::debug!(source = %config.ldap.name, group = %raw.dn, range = %attr, "range retrieval");
            progress.summary.range_requests += 1;
            progress.summary.requests += 1;
            let got = client::search_entries(ldap, ep, &raw.dn, Scope::Base, "(objectClass=*)", vec![attr], Vec::new())
                .await?
                .and_then(|mut v| v.pop());
            let Some(mut part) = got else {
                return Err(ep
                    .ctx
                    .search(&raw.dn, "the group disappeared during range retrieval; the read is incomplete"));
            };
            let (more, next) = take_member_range(&mut part);
            if more.is_empty() && next.is_some() {
                return Err(ep.ctx.search(&raw.dn, "range retrieval returned no values; the read is incomplete"));
            }
            members.extend(more);
            match next {
                Some(n) => start = n,
                None => break,
            }
        }
        let item = group_item(raw, members, &progress.primary, &rules);
        emit(item, &mut progress.summary, sink, sink_panic)?;
    }

    // Deletes, for an incremental read: tombstones changed since the mark.
    if let Some(usn) = since {
        let tombstones = client::search_entries(
            ldap,
            ep,
            &dc.default_nc,
            Scope::Subtree,
            &format!("(&(isDeleted=TRUE)(uSNChanged>={}))", usn + 1),
            vec!["objectGUID".into(), "objectClass".into()],
            vec![RawControl { ctype: SHOW_DELETED_OID.into(), crit: true, val: None }],
        )
        .await?
        .unwrap_or_default();
        progress.summary.requests += 1;
        let deleted: Vec<String> = tombstones
            .iter()
            .filter_map(|t| t.attrs.iter().find(|(n, _)| n.eq_ignore_ascii_case("objectGUID")))
            .filter_map(|(_, v)| v.first().and_then(|g| wire::guid(g)))
            .collect();
        progress.summary.delta = Some(Delta {
            deleted,
            since: format!("uSNChanged > {usn} on DC {}", dc.invocation_id),
            ..Delta::default()
        });
    }
    progress.summary.state =
        vec![(STATE_INVOCATION_ID.into(), dc.invocation_id.clone()), (STATE_USN.into(), dc.highest_usn.to_string())];
    Ok(progress.summary)
}

fn decode(tag: StructureTag) -> Option<RawEntry> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry::decode(tag))).ok().flatten()
}

fn malformed(kind: EntryKind) -> SourceItem {
    SourceItem::Rejected {
        dn: None,
        anchor: None,
        kind: Some(kind),
        reason: format!("the server sent a malformed {kind} entry; it cannot be read"),
    }
}

/// A group with all its `member` values, plus the users whose primary group it is.
fn group_item(
    mut raw: RawEntry,
    members: Vec<Vec<u8>>,
    primary: &HashMap<(String, u32), Vec<String>>,
    rules: &EntryRules,
) -> SourceItem {
    let by_primary = first_text(&raw, "objectSid")
        .and_then(|sid| wire::split_rid(&sid).map(|(d, r)| (d.to_string(), r)))
        .and_then(|key| primary.get(&key).cloned())
        .unwrap_or_default();
    if !members.is_empty() {
        raw.attrs.push(("member".into(), members));
    }
    match entry::to_item(raw, EntryKind::Group, rules) {
        SourceItem::Entry(mut e) => {
            e.members.extend(by_primary.into_iter().map(MemberRef::Anchor));
            SourceItem::Entry(e)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_collect() {
        assert_eq!(parse_range("member;range=0-1499"), Some((0, Some(1499))));
        assert_eq!(parse_range("member;range=1500-*"), Some((1500, None)));
        assert_eq!(parse_range("cn;range=0-1"), None);
        let mut raw = RawEntry {
            dn: "CN=g".into(),
            attrs: vec![
                ("cn".into(), vec![b"g".to_vec()]),
                ("member;range=0-1".into(), vec![b"a".to_vec(), b"b".to_vec()]),
            ],
        };
        let (values, next) = take_member_range(&mut raw);
        assert_eq!(values.len(), 2);
        assert_eq!(next, Some(2));
        assert_eq!(raw.attrs.len(), 1, "the ranged attribute is taken out");
    }

    #[test]
    fn filters_leave_out_computers_and_system_objects_unless_asked() {
        let cfg: AdSourceConfig =
            toml::from_str("name = \"ad\"\nurl = \"ldaps://127.0.0.1\"\nuser_base = \"DC=example,DC=test\"\n")
                .expect("config");
        let src = AdSource::new(&cfg, Path::new("."), None).expect("source");
        assert_eq!(
            src.user_filter(),
            "(&(&(objectCategory=person)(objectClass=user))(!(objectClass=computer))(!(isCriticalSystemObject=TRUE)))"
        );
        let cfg = AdSourceConfig { include_computers: true, include_system_objects: true, ..cfg };
        let src = AdSource::new(&cfg, Path::new("."), None).expect("source");
        assert_eq!(src.user_filter(), "(&(objectCategory=person)(objectClass=user))");
    }
}
