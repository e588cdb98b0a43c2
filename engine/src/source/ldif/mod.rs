//! `kind = "ldif"`: RFC 2849 content records from a file.
//!
//! The file is read as a stream (see [`parser::LdifReader`]); each record is
//! classified by its objectClass values as a user, a group, or neither (OUs, the
//! suffix entry, service accounts), and the users and groups are handed to the sink
//! as they are read.

pub mod parser;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::config::LdifSourceConfig;
use crate::source::{EntryKind, MemberRef, ReadSummary, Sink, Source, SourceEntry, SourceError, SourceItem};

use parser::{LdifError, LdifReader, LdifRecord};

/// Reads users and groups from an LDIF file.
#[derive(Debug, Clone)]
pub struct LdifSource {
    config: LdifSourceConfig,
    /// `config.path` resolved against the configuration file's directory.
    path: PathBuf,
}

impl LdifSource {
    /// `base_dir` is the directory of the configuration file; a relative `path`
    /// is relative to it. The file is not opened until [`Source::read`].
    pub fn new(config: &LdifSourceConfig, base_dir: &Path) -> Result<Self, SourceError> {
        let other = |message: String| SourceError::Other { source_name: config.name.clone(), message };
        if config.anchor.trim().is_empty() {
            return Err(other("anchor must name an attribute".into()));
        }
        if config.user_object_classes.is_empty() && config.group_object_classes.is_empty() {
            return Err(other(
                "user_object_classes and group_object_classes are both empty, so no entry could be read".into(),
            ));
        }
        Ok(Self { config: config.clone(), path: base_dir.join(&config.path) })
    }

    /// The file this source reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parse_error(&self, e: LdifError) -> SourceError {
        match e {
            LdifError::Io { source, .. } => SourceError::File {
                source_name: self.config.name.clone(),
                path: self.path.display().to_string(),
                message: source.to_string(),
            },
            e @ LdifError::Syntax { .. } => SourceError::Parse {
                source_name: self.config.name.clone(),
                path: self.path.display().to_string(),
                line: e.line(),
                message: e.message(),
            },
        }
    }

    /// What a record is, by its objectClass values.
    fn classify(&self, record: &LdifRecord) -> Classified {
        let classes = record.values("objectClass").unwrap_or_default();
        let has =
            |wanted: &[String]| classes.iter().any(|c| wanted.iter().any(|w| w.as_bytes().eq_ignore_ascii_case(c)));
        match (has(&self.config.user_object_classes), has(&self.config.group_object_classes)) {
            (true, false) => Classified::Kind(EntryKind::User),
            (false, true) => Classified::Kind(EntryKind::Group),
            (true, true) => Classified::Both,
            (false, false) => Classified::Neither,
        }
    }

    /// Turns a user or group record into an item: an entry, or a rejection with the reason.
    fn to_item(&self, record: LdifRecord, kind: EntryKind) -> SourceItem {
        let anchor_name = &self.config.anchor;
        let reject = |record: &LdifRecord, anchor: Option<String>, reason: String| SourceItem::Rejected {
            dn: Some(record.dn.clone()),
            anchor,
            kind: Some(kind),
            reason,
        };
        let anchor = match record.values(anchor_name).and_then(|v| v.first()) {
            None => {
                return reject(
                    &record,
                    None,
                    format!("{kind} '{}' (line {}) has no {anchor_name} attribute", record.dn, record.line),
                );
            }
            Some(v) => match std::str::from_utf8(v) {
                Ok(s) if !s.trim().is_empty() => s.to_string(),
                Ok(_) => {
                    return reject(
                        &record,
                        None,
                        format!("{kind} '{}' (line {}) has an empty {anchor_name}", record.dn, record.line),
                    );
                }
                // TODO(binary anchors): an objectGUID-style anchor needs a GUID string form;
                // the AD source will bring it. Until then a binary anchor is quarantined.
                Err(_) => {
                    return reject(
                        &record,
                        None,
                        format!(
                            "{kind} '{}' (line {}): {anchor_name} is binary; kind = \"ldif\" needs a text anchor",
                            record.dn, record.line
                        ),
                    );
                }
            },
        };

        let mut members = Vec::new();
        if kind == EntryKind::Group {
            for attr in &self.config.member_attributes {
                for value in record.values(attr).unwrap_or_default() {
                    match std::str::from_utf8(value) {
                        Ok(dn) => members.push(MemberRef::Dn(dn.to_string())),
                        // A member we cannot name would silently drop out of the group.
                        Err(_) => {
                            return reject(
                                &record,
                                Some(anchor),
                                format!(
                                    "group '{}' (line {}): a {attr} value is not UTF-8 text, so it is not a DN",
                                    record.dn, record.line
                                ),
                            );
                        }
                    }
                }
            }
        }

        SourceItem::Entry(SourceEntry { anchor, dn: Some(record.dn), kind, attrs: record.attrs, members })
    }
}

enum Classified {
    Kind(EntryKind),
    Both,
    Neither,
}

impl Source for LdifSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn read(&mut self, sink: &mut dyn Sink) -> Result<ReadSummary, SourceError> {
        let file = File::open(&self.path).map_err(|e| SourceError::File {
            source_name: self.config.name.clone(),
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        tracing::info!(source = %self.config.name, path = %self.path.display(), "reading LDIF");
        // One pass over the file: that is the whole "request" count of this source.
        let mut summary = ReadSummary { requests: 1, ..ReadSummary::default() };
        let mut ignored = 0u64;
        let mut reader = LdifReader::new(BufReader::with_capacity(64 * 1024, file));
        while let Some(record) = reader.next_record().map_err(|e| self.parse_error(e))? {
            let item = match self.classify(&record) {
                Classified::Neither => {
                    ignored += 1;
                    tracing::debug!(source = %self.config.name, dn = %record.dn, line = record.line, "not a user or group; ignored");
                    continue;
                }
                Classified::Both => SourceItem::Rejected {
                    reason: format!(
                        "'{}' (line {}) has object classes of both a user and a group",
                        record.dn, record.line
                    ),
                    dn: Some(record.dn),
                    anchor: None,
                    kind: None,
                },
                Classified::Kind(kind) => self.to_item(record, kind),
            };
            match &item {
                SourceItem::Entry(e) if e.kind == EntryKind::User => summary.users += 1,
                SourceItem::Entry(_) => summary.groups += 1,
                SourceItem::Rejected { reason, .. } => {
                    summary.rejected += 1;
                    tracing::warn!(source = %self.config.name, %reason, "entry rejected");
                }
            }
            sink.item(item)
                .map_err(|message| SourceError::Stopped { source_name: self.config.name.clone(), message })?;
        }
        tracing::info!(
            source = %self.config.name,
            users = summary.users,
            groups = summary.groups,
            rejected = summary.rejected,
            ignored,
            "LDIF read complete"
        );
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &str) -> LdifSourceConfig {
        let text = format!("name = \"file\"\npath = \"{path}\"\n");
        toml::from_str(&text).expect("config parses")
    }

    fn read(text: &str) -> (Result<ReadSummary, SourceError>, Vec<SourceItem>) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("dir.ldif"), text).expect("write");
        let mut source = LdifSource::new(&config("dir.ldif"), dir.path()).expect("new");
        let mut items = Vec::new();
        let result = source.read(&mut |item| {
            items.push(item);
            Ok(())
        });
        (result, items)
    }

    const DIRECTORY: &str = "version: 1\n\n\
dn: dc=example,dc=com\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n\n\
dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\n\
dn: uid=jdoe,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: jdoe\ncn: John Doe\n\
entryUUID: 11111111-1111-1111-1111-111111111111\n\n\
dn: cn=M\\C3\\BCller\\2C Jos\\C3\\A9,ou=people,dc=example,dc=com\nobjectClass: INETORGPERSON\n\
cn:: TcO8bGxlciwgSm9zw6k=\nentryUUID: 22222222-2222-2222-2222-222222222222\n\n\
dn: uid=noanchor,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: noanchor\n\n\
dn: cn=staff,ou=groups,dc=example,dc=com\nobjectClass: groupOfNames\ncn: staff\n\
member: uid=jdoe,ou=people,dc=example,dc=com\n\
member: cn=M\\C3\\BCller\\2C Jos\\C3\\A9,ou=people,dc=example,dc=com\n\
entryUUID: 33333333-3333-3333-3333-333333333333\n";

    #[test]
    fn reads_users_groups_and_rejects_entries_without_anchor() {
        let (result, items) = read(DIRECTORY);
        let summary = result.expect("reads");
        assert_eq!(summary, ReadSummary { users: 2, groups: 1, rejected: 1, requests: 1, ..ReadSummary::default() });
        assert_eq!(items.len(), 4);

        let SourceItem::Entry(jdoe) = &items[0] else { panic!("entry expected: {:?}", items[0]) };
        assert_eq!(jdoe.anchor, "11111111-1111-1111-1111-111111111111");
        assert_eq!(jdoe.kind, EntryKind::User);
        assert_eq!(jdoe.first_str("CN"), Some("John Doe"));
        assert!(jdoe.members.is_empty());

        let SourceItem::Entry(muller) = &items[1] else { panic!("entry expected") };
        assert_eq!(muller.first_str("cn"), Some("Müller, José"));

        let SourceItem::Rejected { dn, reason, kind, .. } = &items[2] else { panic!("rejection expected") };
        assert_eq!(dn.as_deref(), Some("uid=noanchor,ou=people,dc=example,dc=com"));
        assert_eq!(*kind, Some(EntryKind::User));
        assert!(reason.contains("uid=noanchor,ou=people,dc=example,dc=com"), "{reason}");
        assert!(reason.contains("entryUUID"), "{reason}");

        let SourceItem::Entry(staff) = &items[3] else { panic!("entry expected") };
        assert_eq!(staff.kind, EntryKind::Group);
        assert_eq!(
            staff.members,
            vec![
                MemberRef::Dn("uid=jdoe,ou=people,dc=example,dc=com".into()),
                MemberRef::Dn("cn=M\\C3\\BCller\\2C Jos\\C3\\A9,ou=people,dc=example,dc=com".into()),
            ]
        );
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let (result, _) = read("version: 1\n\ndn: cn=a,dc=x\nobjectClass: person\nphoto:< file:///x.jpg\n");
        let err = result.expect_err("refused");
        let SourceError::Parse { source_name, path, line, message } = &err else { panic!("{err:?}") };
        assert_eq!(source_name, "file");
        assert!(path.ends_with("dir.ldif"), "{path}");
        assert_eq!(*line, 5);
        assert!(message.contains("URL values (<) are not supported; inline the value"), "{message}");
        assert!(err.to_string().contains("dir.ldif:5:"), "{err}");
    }

    #[test]
    fn missing_file_is_a_file_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut source = LdifSource::new(&config("nope.ldif"), dir.path()).expect("new");
        let err = source.read(&mut |_| Ok(())).expect_err("missing");
        assert!(matches!(err, SourceError::File { .. }), "{err:?}");
    }

    #[test]
    fn a_sink_error_stops_the_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("dir.ldif"), DIRECTORY).expect("write");
        let mut source = LdifSource::new(&config("dir.ldif"), dir.path()).expect("new");
        let mut seen = 0;
        let err = source
            .read(&mut |_| {
                seen += 1;
                Err("aborted".to_string())
            })
            .expect_err("stopped");
        assert!(matches!(err, SourceError::Stopped { .. }), "{err:?}");
        assert_eq!(seen, 1);
    }

    #[test]
    fn crlf_file() {
        let (result, items) = read(&DIRECTORY.replace('\n', "\r\n"));
        assert_eq!(result.expect("reads").users, 2);
        let SourceItem::Entry(jdoe) = &items[0] else { panic!("entry expected") };
        assert_eq!(jdoe.anchor, "11111111-1111-1111-1111-111111111111");
    }
}
