//! Turning a search result entry into a [`SourceEntry`].
//!
//! We walk the BER structure ourselves instead of calling
//! `ldap3::SearchEntry::construct`: `construct` panics on malformed input, and it
//! sorts values into `attrs`/`bin_attrs` by whether they happen to be valid UTF-8,
//! which loses the order of attributes (HashMap) and of mixed values, and puts a
//! binary value that happens to be valid UTF-8 among the text ones. Here every
//! value stays the exact bytes the server sent, in the server's order, and a
//! malformed entry becomes a [`SourceItem::Rejected`] instead of a crash.

use ldap3::asn1::{StructureTag, TagClass};

use crate::source::{EntryKind, MemberRef, SourceEntry, SourceItem};

/// What the conversion needs from the source's configuration.
#[derive(Debug, Clone)]
pub struct EntryRules {
    pub anchor: String,
    pub member_attributes: Vec<String>,
}

/// A decoded SearchResultEntry: the DN and the attributes in server order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub dn: String,
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

/// Decodes a SearchResultEntry (`[APPLICATION 4] SEQUENCE { objectName, attributes }`).
/// `None` means the server sent something that is not one.
pub fn decode(tag: StructureTag) -> Option<RawEntry> {
    if tag.class != TagClass::Application {
        return None;
    }
    let mut parts = tag.match_id(4)?.expect_constructed()?.into_iter();
    let dn_bytes = parts.next()?.expect_primitive()?;
    // RFC 4511 says LDAPDN is UTF-8; a server that sends otherwise still gets its
    // entry read, with the DN shown lossily (identity is the anchor, not the DN).
    let dn = String::from_utf8(dn_bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let mut attrs: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for partial in parts.next()?.expect_constructed()? {
        let mut pa = partial.expect_constructed()?.into_iter();
        let name = String::from_utf8(pa.next()?.expect_primitive()?).ok()?;
        let values = pa
            .next()?
            .expect_constructed()?
            .into_iter()
            .map(StructureTag::expect_primitive)
            .collect::<Option<Vec<Vec<u8>>>>()?;
        // A server may split one attribute over several PartialAttributes; keep one list.
        match attrs.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            Some((_, existing)) => existing.extend(values),
            None => attrs.push((name, values)),
        }
    }
    Some(RawEntry { dn, attrs })
}

/// Turns a decoded entry of a known kind into an item for the sink.
pub fn to_item(raw: RawEntry, kind: EntryKind, rules: &EntryRules) -> SourceItem {
    let reject = |raw: &RawEntry, anchor: Option<String>, reason: String| SourceItem::Rejected {
        dn: Some(raw.dn.clone()),
        anchor,
        kind: Some(kind),
        reason,
    };
    let anchor_name = &rules.anchor;
    let first = raw.attrs.iter().find(|(n, _)| n.eq_ignore_ascii_case(anchor_name)).and_then(|(_, v)| v.first());
    let anchor = match first {
        None => {
            return reject(
                &raw,
                None,
                format!("{kind} '{}' has no {anchor_name} attribute (is it readable by the bind account?)", raw.dn),
            );
        }
        Some(v) => match std::str::from_utf8(v) {
            Ok(s) if !s.trim().is_empty() => s.to_string(),
            Ok(_) => return reject(&raw, None, format!("{kind} '{}' has an empty {anchor_name}", raw.dn)),
            // TODO(binary anchors): objectGUID and similar binary anchors need a GUID
            // string form; the AD source handles them. Until then such an entry is
            // quarantined rather than given an anchor that might not be stable.
            Err(_) => {
                return reject(
                    &raw,
                    None,
                    format!(
                        "{kind} '{}': {anchor_name} is binary; kind = \"ldap\" needs a text anchor such as entryUUID",
                        raw.dn
                    ),
                );
            }
        },
    };

    let mut members = Vec::new();
    if kind == EntryKind::Group {
        for attr in &rules.member_attributes {
            // Active Directory hands out large groups in ranges (`member;range=0-1499`);
            // reading only the first range would silently shrink the group.
            let ranged = raw.attrs.iter().any(|(n, _)| {
                n.len() > attr.len()
                    && n[..attr.len()].eq_ignore_ascii_case(attr)
                    && n[attr.len()..].to_ascii_lowercase().starts_with(";range=")
            });
            if ranged {
                return reject(
                    &raw,
                    Some(anchor),
                    format!(
                        "group '{}': the server sent {attr} in ranges (Active Directory range retrieval), which kind = \"ldap\" does not follow; the membership would be incomplete",
                        raw.dn
                    ),
                );
            }
            let values = raw.attrs.iter().find(|(n, _)| n.eq_ignore_ascii_case(attr)).map(|(_, v)| v.as_slice());
            for value in values.unwrap_or_default() {
                match std::str::from_utf8(value) {
                    Ok(dn) => members.push(MemberRef::Dn(dn.to_string())),
                    Err(_) => {
                        return reject(
                            &raw,
                            Some(anchor),
                            format!("group '{}': a {attr} value is not UTF-8 text, so it is not a DN", raw.dn),
                        );
                    }
                }
            }
        }
    }

    SourceItem::Entry(SourceEntry { anchor, dn: Some(raw.dn), kind, attrs: raw.attrs, members })
}

/// Decodes and converts one entry; never panics, whatever the server sent.
pub fn convert(tag: StructureTag, kind: EntryKind, rules: &EntryRules) -> SourceItem {
    let malformed = |why: String| SourceItem::Rejected {
        dn: None,
        anchor: None,
        kind: Some(kind),
        reason: format!("the server sent a malformed {kind} entry ({why}); it cannot be read"),
    };
    // `decode` uses only Option-returning accessors, but this is the boundary where
    // untrusted server bytes become our data: contain any panic here, as the
    // engine's rule for ldap3 parsing says.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(tag).map(|raw| to_item(raw, kind, rules)))) {
        Ok(Some(item)) => item,
        Ok(None) => malformed("not a SearchResultEntry".into()),
        Err(panic) => malformed(panic_message(&panic)),
    }
}

/// The text of a caught panic, for messages.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::PL;

    fn prim(bytes: &[u8]) -> StructureTag {
        StructureTag { class: TagClass::Universal, id: 4, payload: PL::P(bytes.to_vec()) }
    }

    fn cons(id: u64, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag { class: TagClass::Universal, id, payload: PL::C(inner) }
    }

    fn entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> StructureTag {
        let attrs = attrs
            .iter()
            .map(|(n, vs)| cons(16, vec![prim(n.as_bytes()), cons(17, vs.iter().map(|v| prim(v)).collect())]))
            .collect();
        StructureTag { class: TagClass::Application, id: 4, payload: PL::C(vec![prim(dn.as_bytes()), cons(16, attrs)]) }
    }

    fn rules() -> EntryRules {
        EntryRules { anchor: "entryUUID".into(), member_attributes: vec!["member".into(), "uniqueMember".into()] }
    }

    #[test]
    fn user_keeps_all_values_as_bytes_in_order() {
        let guidish: &[u8] = &[0x41, 0xff, 0x00, 0x42];
        let tag = entry(
            "uid=jdoe,ou=people,dc=example,dc=com",
            &[
                ("objectClass", &[b"top", b"inetOrgPerson"]),
                ("cn", &["Jöhn".as_bytes()]),
                ("photo", &[guidish, b"text"]),
                ("entryUUID", &[b"0b9d6e7a-1111-2222-3333-444455556666"]),
            ],
        );
        let SourceItem::Entry(e) = convert(tag, EntryKind::User, &rules()) else { panic!("entry expected") };
        assert_eq!(e.anchor, "0b9d6e7a-1111-2222-3333-444455556666");
        assert_eq!(e.dn.as_deref(), Some("uid=jdoe,ou=people,dc=example,dc=com"));
        assert_eq!(
            e.attrs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["objectClass", "cn", "photo", "entryUUID"]
        );
        assert_eq!(e.values("PHOTO").expect("photo"), &[guidish.to_vec(), b"text".to_vec()]);
        assert_eq!(e.first_str("cn"), Some("Jöhn"));
        assert!(e.members.is_empty());
    }

    #[test]
    fn missing_anchor_is_rejected_with_dn_and_attribute() {
        let tag = entry("uid=x,dc=example,dc=com", &[("uid", &[b"x"])]);
        let SourceItem::Rejected { dn, reason, kind, .. } = convert(tag, EntryKind::User, &rules()) else {
            panic!("rejection expected")
        };
        assert_eq!(dn.as_deref(), Some("uid=x,dc=example,dc=com"));
        assert_eq!(kind, Some(EntryKind::User));
        assert!(reason.contains("uid=x,dc=example,dc=com") && reason.contains("entryUUID"), "{reason}");
    }

    #[test]
    fn binary_anchor_is_rejected() {
        let tag = entry("cn=x,dc=y", &[("entryUUID", &[&[0xff, 0xfe]])]);
        assert!(matches!(convert(tag, EntryKind::User, &rules()), SourceItem::Rejected { .. }));
    }

    #[test]
    fn group_members_come_from_member_attributes() {
        let tag = entry(
            "cn=staff,ou=groups,dc=example,dc=com",
            &[
                ("entryUUID", &[b"g-1"]),
                ("member", &[b"uid=a,dc=x", b"uid=b,dc=x"]),
                ("uniqueMember", &[b"uid=c,dc=x#'0101'B"]),
            ],
        );
        let SourceItem::Entry(e) = convert(tag, EntryKind::Group, &rules()) else { panic!("entry expected") };
        assert_eq!(
            e.members,
            vec![
                MemberRef::Dn("uid=a,dc=x".into()),
                MemberRef::Dn("uid=b,dc=x".into()),
                MemberRef::Dn("uid=c,dc=x#'0101'B".into()),
            ]
        );
    }

    #[test]
    fn ranged_members_are_rejected_not_truncated() {
        let tag = entry("cn=big,dc=x", &[("entryUUID", &[b"g-2"]), ("member;range=0-1499", &[b"uid=a,dc=x"])]);
        let SourceItem::Rejected { reason, anchor, .. } = convert(tag, EntryKind::Group, &rules()) else {
            panic!("rejection expected")
        };
        assert_eq!(anchor.as_deref(), Some("g-2"));
        assert!(reason.contains("range"), "{reason}");
    }

    #[test]
    fn malformed_entries_are_rejected_not_panics() {
        let not_entry = StructureTag { class: TagClass::Application, id: 5, payload: PL::C(vec![]) };
        assert!(matches!(convert(not_entry, EntryKind::User, &rules()), SourceItem::Rejected { .. }));
        let truncated = StructureTag { class: TagClass::Application, id: 4, payload: PL::C(vec![prim(b"cn=x")]) };
        assert!(matches!(convert(truncated, EntryKind::User, &rules()), SourceItem::Rejected { .. }));
        let primitive_values = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![prim(b"cn=x"), cons(16, vec![cons(16, vec![prim(b"cn"), prim(b"oops")])])]),
        };
        assert!(matches!(convert(primitive_values, EntryKind::User, &rules()), SourceItem::Rejected { .. }));
    }
}
