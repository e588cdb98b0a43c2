//! Distinguished names (RFC 4514), parsed so they can be compared semantically.
//!
//! Servers spell the same DN differently: slapd writes `cn=Müller\2C José`,
//! `\23hashtag`, `Trailing Space\20`; Samba writes `CN=Müller\, José`, `\#hashtag`,
//! `Trailing Space\ `. Comparing raw strings would make a member DN from one
//! spelling miss the entry it names. [`Dn::normalized`] gives one canonical key
//! for all spellings. Identity is still the anchor; DNs are for display, scope and
//! resolving `member` values.
//!
//! The parser is deliberately lenient where servers and admins are (spaces around
//! `,` and `=` as in RFC 2253/1779 style, unescaped `=`, `;`, `<`, `>`, `"` inside
//! values, `\` before any character) and strict where a mistake would change the
//! meaning (a dangling `\`, a half hex escape, invalid UTF-8, an empty attribute type).

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Why a string is not a DN. `position` is a byte offset into the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DN '{input}' at byte {position}: {message}")]
pub struct DnError {
    pub input: String,
    pub position: usize,
    pub message: String,
}

/// One `type=value` pair of an RDN.
#[derive(Debug, Clone)]
pub struct Ava {
    attr_type: String,
    value: AvaValue,
}

#[derive(Debug, Clone)]
enum AvaValue {
    /// The unescaped value.
    Text(String),
    /// RFC 4514 `#hexstring` form (BER encoding), kept as lowercase hex digits.
    Ber(String),
}

impl Ava {
    /// The attribute type as written (`CN`, `cn`, `2.5.4.3`).
    pub fn attr_type(&self) -> &str {
        &self.attr_type
    }

    /// The unescaped value. For the rare `#hexstring` (BER) form this is `#` and the hex digits.
    pub fn value(&self) -> String {
        match &self.value {
            AvaValue::Text(s) => s.clone(),
            AvaValue::Ber(hex) => format!("#{hex}"),
        }
    }

    fn normalized(&self) -> String {
        let mut out = self.attr_type.to_ascii_lowercase();
        out.push('=');
        match &self.value {
            // caseIgnoreMatch is right for the naming attributes directories use
            // (cn, ou, dc, uid, o, l); a case-exact naming attribute is vanishingly rare.
            AvaValue::Text(s) => escape_value(&s.to_lowercase(), &mut out),
            AvaValue::Ber(hex) => {
                out.push('#');
                out.push_str(hex);
            }
        }
        out
    }

    fn write_display(&self, out: &mut String) {
        out.push_str(&self.attr_type);
        out.push('=');
        match &self.value {
            AvaValue::Text(s) => escape_value(s, out),
            AvaValue::Ber(hex) => {
                out.push('#');
                out.push_str(hex);
            }
        }
    }
}

/// A relative distinguished name: one or more AVAs joined by `+`.
#[derive(Debug, Clone)]
pub struct Rdn {
    avas: Vec<Ava>,
}

impl Rdn {
    pub fn avas(&self) -> &[Ava] {
        &self.avas
    }

    /// Canonical key of this RDN; AVA order inside a multi-valued RDN is not significant.
    pub fn normalized(&self) -> String {
        let mut parts: Vec<String> = self.avas.iter().map(Ava::normalized).collect();
        parts.sort();
        parts.join("+")
    }
}

/// A parsed DN. `rdns()[0]` is the leftmost (most specific) RDN; the empty DN
/// (the root DSE) has none.
///
/// Equality and hashing follow [`Dn::normalized`], so two spellings of one DN are equal.
#[derive(Debug, Clone)]
pub struct Dn {
    rdns: Vec<Rdn>,
}

impl Dn {
    /// Parses an RFC 4514 DN string.
    pub fn parse(input: &str) -> Result<Dn, DnError> {
        Parser { input, bytes: input.as_bytes(), pos: 0 }.parse_dn()
    }

    /// The empty DN (root DSE).
    pub fn root() -> Dn {
        Dn { rdns: Vec::new() }
    }

    pub fn rdns(&self) -> &[Rdn] {
        &self.rdns
    }

    pub fn is_root(&self) -> bool {
        self.rdns.is_empty()
    }

    /// The canonical key: attribute types lowercased, values unescaped, lowercased and
    /// re-escaped one way, AVAs of a multi-valued RDN sorted, RDNs joined by `,`.
    pub fn normalized(&self) -> String {
        self.rdns.iter().map(Rdn::normalized).collect::<Vec<_>>().join(",")
    }

    /// True if `self` equals `base` or lies below it. Everything is within the root DN.
    pub fn is_within(&self, base: &Dn) -> bool {
        if base.rdns.len() > self.rdns.len() {
            return false;
        }
        let offset = self.rdns.len() - base.rdns.len();
        self.rdns[offset..].iter().zip(&base.rdns).all(|(a, b)| a.normalized() == b.normalized())
    }

    /// The DN one level up; `None` for the root DN.
    pub fn parent(&self) -> Option<Dn> {
        if self.rdns.is_empty() {
            return None;
        }
        Some(Dn { rdns: self.rdns[1..].to_vec() })
    }
}

impl PartialEq for Dn {
    fn eq(&self, other: &Self) -> bool {
        self.rdns.len() == other.rdns.len() && self.normalized() == other.normalized()
    }
}

impl Eq for Dn {}

impl Hash for Dn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.normalized().hash(state);
    }
}

/// RFC 4514 string form with the original case and canonical escaping.
impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            for (j, ava) in rdn.avas.iter().enumerate() {
                if j > 0 {
                    out.push('+');
                }
                ava.write_display(&mut out);
            }
        }
        f.write_str(&out)
    }
}

impl std::str::FromStr for Dn {
    type Err = DnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dn::parse(s)
    }
}

/// The normalized key of a DN string; for input that is not a DN, the trimmed,
/// lowercased input, so callers can still compare it consistently.
/// DN → id, looked up the way directories compare DNs. Member values almost
/// always spell a DN exactly as the entry's own DN, so the exact spelling is
/// tried first and DNs are parsed and normalized only on the first miss
/// (parsing every DN of a large directory on every run is a large share of
/// the pipeline's time).
#[derive(Debug, Default)]
pub struct DnIndex {
    /// DN as spelled → the id, with when the insert that set it came and
    /// whether it was one that replaces. Each DN and id is held once: a
    /// directory's worth of them is a visible share of a full sync's peak.
    exact: HashMap<String, Slot>,
    inserts: u32,
    /// Normalized DN → the winning slot among the spellings that are not
    /// already normalized. A spelling that is its own normal form is found
    /// in `exact` by the normalized key, so it is not copied here: in a
    /// directory whose DNs are spelled canonically (slapd's, our generator's)
    /// this stays nearly empty, where it was a second copy of every DN and id
    /// (16 MB at 100,000 users) built by one dangling member reference.
    normalized: Option<HashMap<String, Slot>>,
}

#[derive(Debug, Clone)]
struct Slot {
    id: String,
    order: u32,
    replaces: bool,
}

impl Slot {
    /// Whether `self` wins over `other` for the same DN, as replaying their
    /// inserts in order would decide: the last replacing insert wins, else
    /// the first of the others.
    fn beats(&self, other: &Slot) -> bool {
        match (self.replaces, other.replaces) {
            (true, true) => self.order > other.order,
            (true, false) => true,
            (false, true) => false,
            (false, false) => self.order < other.order,
        }
    }
}

impl DnIndex {
    /// Maps `dn` to `id`, replacing an earlier id of the same DN.
    pub fn insert(&mut self, dn: &str, id: &str) {
        let order = self.next_order();
        self.exact.insert(dn.to_string(), Slot { id: id.to_string(), order, replaces: true });
    }

    /// Maps `dn` to `id` unless the DN already has one.
    pub fn insert_if_absent(&mut self, dn: &str, id: &str) {
        let order = self.next_order();
        if !self.exact.contains_key(dn) {
            self.exact.insert(dn.to_string(), Slot { id: id.to_string(), order, replaces: false });
        }
    }

    fn next_order(&mut self) -> u32 {
        self.normalized = None;
        self.inserts = self.inserts.wrapping_add(1);
        self.inserts
    }

    pub fn get(&mut self, dn: &str) -> Option<&String> {
        if self.exact.contains_key(dn) {
            return self.exact.get(dn).map(|slot| &slot.id);
        }
        let exact = &self.exact;
        let respelled = self.normalized.get_or_insert_with(|| {
            // Spellings of one DN compete as their inserts did; each
            // spelling's own winner stands for all its inserts, which gives
            // the same answer as replaying every insert.
            let mut map: HashMap<String, Slot> = HashMap::new();
            for (dn, slot) in exact {
                let key = normalize_dn(dn);
                if key == *dn {
                    continue;
                }
                match map.get_mut(&key) {
                    Some(held) if !slot.beats(held) => {}
                    Some(held) => *held = slot.clone(),
                    None => {
                        map.insert(key, slot.clone());
                    }
                }
            }
            map
        });
        let key = normalize_dn(dn);
        match (exact.get(&key), respelled.get(&key)) {
            (Some(canonical), Some(other)) => Some(if canonical.beats(other) { &canonical.id } else { &other.id }),
            (Some(only), None) | (None, Some(only)) => Some(&only.id),
            (None, None) => None,
        }
    }
}

pub fn normalize_dn(input: &str) -> String {
    match Dn::parse(input) {
        Ok(dn) => dn.normalized(),
        Err(_) => input.trim().to_lowercase(),
    }
}

/// Escapes a value the one canonical way: the RFC 4514 specials with a backslash,
/// a leading `#` or space and a trailing space as `\23`/`\20`, NUL as `\00`.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\23"),
            ' ' if i == 0 || i == last => out.push_str("\\20"),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, position: usize, message: impl Into<String>) -> DnError {
        DnError { input: self.input.to_string(), position, message: message.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn parse_dn(mut self) -> Result<Dn, DnError> {
        let mut rdns = Vec::new();
        if self.input.trim().is_empty() {
            return Ok(Dn { rdns });
        }
        loop {
            let mut avas = vec![self.parse_ava()?];
            let more = loop {
                match self.peek() {
                    Some(b'+') => {
                        self.pos += 1;
                        avas.push(self.parse_ava()?);
                    }
                    Some(b',') => {
                        self.pos += 1;
                        break true;
                    }
                    None => break false,
                    Some(_) => return Err(self.err(self.pos, "expected ',' or '+' after a value")),
                }
            };
            rdns.push(Rdn { avas });
            if !more {
                return Ok(Dn { rdns });
            }
            if self.peek().is_none() {
                return Err(self.err(self.pos, "empty RDN after ','"));
            }
        }
    }

    fn parse_ava(&mut self) -> Result<Ava, DnError> {
        self.skip_spaces();
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
                self.pos += 1;
            } else {
                break;
            }
        }
        let attr_type = &self.input[start..self.pos];
        if attr_type.is_empty() {
            return Err(self.err(start, "expected an attribute type"));
        }
        if !attr_type.as_bytes()[0].is_ascii_alphabetic() && !attr_type.as_bytes()[0].is_ascii_digit() {
            return Err(self.err(start, format!("attribute type '{attr_type}' must start with a letter or digit")));
        }
        self.skip_spaces();
        if self.peek() != Some(b'=') {
            return Err(self.err(self.pos, format!("expected '=' after attribute type '{attr_type}'")));
        }
        self.pos += 1;
        self.skip_spaces();
        let value = self.parse_value()?;
        Ok(Ava { attr_type: attr_type.to_string(), value })
    }

    fn parse_value(&mut self) -> Result<AvaValue, DnError> {
        if self.peek() == Some(b'#') {
            // `#hexstring` is the BER form; anything else starting with an unescaped `#`
            // is taken literally (lenient: some tools forget to escape it).
            let start = self.pos + 1;
            let mut end = start;
            while end < self.bytes.len() && self.bytes[end].is_ascii_hexdigit() {
                end += 1;
            }
            let mut after = end;
            while after < self.bytes.len() && self.bytes[after] == b' ' {
                after += 1;
            }
            let terminated = matches!(self.bytes.get(after), None | Some(b',') | Some(b'+'));
            if end > start && (end - start).is_multiple_of(2) && terminated {
                self.pos = after;
                return Ok(AvaValue::Ber(self.input[start..end].to_ascii_lowercase()));
            }
        }
        let value_start = self.pos;
        let mut bytes: Vec<u8> = Vec::new();
        // Length of `bytes` up to and including the last escaped byte: unescaped
        // trailing spaces after it are insignificant, escaped ones are part of the value.
        let mut keep = 0usize;
        while let Some(b) = self.peek() {
            match b {
                b',' | b'+' => break,
                b'\\' => {
                    let at = self.pos;
                    self.pos += 1;
                    let Some(next) = self.peek() else {
                        return Err(self.err(at, "'\\' at the end of the DN escapes nothing"));
                    };
                    if next.is_ascii_hexdigit() {
                        let second = self.bytes.get(self.pos + 1).copied();
                        match second {
                            Some(s) if s.is_ascii_hexdigit() => {
                                bytes.push(hex_val(next) << 4 | hex_val(s));
                                self.pos += 2;
                            }
                            _ => {
                                return Err(
                                    self.err(at, "'\\' must be followed by two hex digits or a special character")
                                );
                            }
                        }
                    } else {
                        // `\` + any other character stands for that character (`\,`, `\ `,
                        // `\#` from Samba; a multibyte character is copied whole).
                        let ch_len = utf8_len(next);
                        let end = (self.pos + ch_len).min(self.bytes.len());
                        bytes.extend_from_slice(&self.bytes[self.pos..end]);
                        self.pos = end;
                    }
                    keep = bytes.len();
                }
                _ => {
                    bytes.push(b);
                    self.pos += 1;
                }
            }
        }
        let mut end = bytes.len();
        while end > keep && bytes[end - 1] == b' ' {
            end -= 1;
        }
        bytes.truncate(end);
        String::from_utf8(bytes)
            .map(AvaValue::Text)
            .map_err(|_| self.err(value_start, "value is not valid UTF-8 after unescaping"))
    }
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Length of the UTF-8 sequence a leading byte starts (1 for ASCII or a stray byte).
fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dn_index_finds_exact_and_equivalent_spellings_and_keeps_the_first_when_asked() {
        let mut index = super::DnIndex::default();
        index.insert("uid=ann,ou=People,dc=example,dc=com", "ann");
        index.insert_if_absent("UID=Ann, ou=people,dc=example,dc=com", "stale");
        assert_eq!(index.get("uid=ann,ou=People,dc=example,dc=com").map(String::as_str), Some("ann"));
        assert_eq!(index.get("uid=ANN,OU=people,DC=example,DC=com").map(String::as_str), Some("ann"));
        assert_eq!(index.get("uid=ann,ou=people,dc=example,dc=com").map(String::as_str), Some("ann"));
        index.insert("uid=bob,ou=people,dc=example,dc=com", "bob");
        assert_eq!(
            index.get("UID=bob,ou=people,dc=example,dc=com").map(String::as_str),
            Some("bob"),
            "rebuilt after an insert"
        );
        assert_eq!(index.get("uid=carol,ou=people,dc=example,dc=com"), None);
    }

    /// The index keeps each spelling's winning insert only; its answers are
    /// those of replaying every insert in order.
    #[test]
    fn dn_index_answers_as_a_replay_of_every_insert() {
        let spellings = ["uid=a,dc=x", "UID=A,DC=X", "uid=a, dc=x", "uid=b,dc=x"];
        // Both kinds of spelling compete: one already in normal form (found
        // under its normalized key) and others that are not.
        assert_eq!(super::normalize_dn(spellings[0]), spellings[0]);
        assert_ne!(super::normalize_dn(spellings[1]), spellings[1]);
        let mut state: u64 = 7;
        for _ in 0..200 {
            let mut index = super::DnIndex::default();
            let mut history: Vec<(&str, String, bool)> = Vec::new();
            for step in 0..6 {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let dn = spellings[(state >> 33) as usize % spellings.len()];
                let replaces = (state >> 40) % 2 == 0;
                let id = format!("id{step}");
                if replaces {
                    index.insert(dn, &id);
                } else {
                    index.insert_if_absent(dn, &id);
                }
                history.push((dn, id, replaces));
            }
            for probe in spellings.iter().chain(&["Uid=A,Dc=x", "uid=B,dc=X", "uid=c,dc=x"]) {
                let replay = |key: &dyn Fn(&str) -> String| {
                    let mut winner: Option<&String> = None;
                    for (dn, id, replaces) in &history {
                        if key(dn) == key(probe) && (*replaces || winner.is_none()) {
                            winner = Some(id);
                        }
                    }
                    winner.cloned()
                };
                let exact = replay(&|d| d.to_string());
                let expected = exact.or_else(|| replay(&|d| super::normalize_dn(d)));
                assert_eq!(index.get(probe).cloned(), expected, "{probe} after {history:?}");
            }
        }
    }

    use super::*;

    fn n(s: &str) -> String {
        Dn::parse(s).unwrap_or_else(|e| panic!("{e}")).normalized()
    }

    #[test]
    fn slapd_and_samba_spellings_normalize_alike() {
        let pairs = [
            ("cn=Müller\\2C José,ou=people,dc=example,dc=com", "CN=Müller\\, José,OU=People,DC=example,DC=com"),
            ("cn=\\23hashtag,dc=example,dc=com", "CN=\\#hashtag,DC=example,DC=com"),
            ("cn=Trailing Space\\20,dc=example,dc=com", "CN=Trailing Space\\ ,DC=example,DC=com"),
            ("cn=R\\2BD,dc=x", "CN=R\\+D,DC=x"),
            ("cn=\\22Quote\\22 \\3CSemi\\3E\\3B,dc=x", "CN=\\\"Quote\\\" \\<Semi\\>\\3B,DC=x"),
            ("cn=Back\\5CSlash,dc=x", "CN=Back\\\\Slash,DC=x"),
        ];
        for (slapd, samba) in pairs {
            assert_eq!(n(slapd), n(samba), "{slapd} vs {samba}");
        }
        assert_eq!(
            n("cn=Müller\\2C José,ou=people,dc=example,dc=com"),
            "cn=müller\\, josé,ou=people,dc=example,dc=com"
        );
        assert_eq!(n("cn=\\23hashtag"), "cn=\\23hashtag");
        assert_eq!(n("cn=Trailing Space\\20"), "cn=trailing space\\20");
    }

    #[test]
    fn utf8_multibyte_hex_escapes() {
        // ü is C3 BC, é is C3 A9.
        let dn = Dn::parse("cn=M\\C3\\BCller Jos\\c3\\a9,dc=x").expect("parses");
        assert_eq!(dn.rdns()[0].avas()[0].value(), "Müller José");
        assert_eq!(dn, Dn::parse("CN=müller josé,DC=X").expect("parses"));
        let err = Dn::parse("cn=\\C3,dc=x").expect_err("lone lead byte");
        assert!(err.message.contains("UTF-8"), "{err}");
    }

    #[test]
    fn spaces_around_separators_are_insignificant_but_escaped_ones_are_kept() {
        assert_eq!(n("cn = John Smith , ou=People,  dc=example"), "cn=john smith,ou=people,dc=example");
        assert_eq!(n("cn=\\ lead"), "cn=\\20lead");
        assert_ne!(n("cn=x\\20"), n("cn=x"));
        assert_eq!(n("cn=x\\20 "), n("cn=x\\ "));
    }

    #[test]
    fn multi_valued_rdns_compare_regardless_of_order() {
        let a = Dn::parse("cn=John+uid=jsmith,dc=x").expect("parses");
        let b = Dn::parse("UID=JSmith+CN=john,dc=x").expect("parses");
        assert_eq!(a, b);
        assert_eq!(a.rdns()[0].avas().len(), 2);
        assert_eq!(a.normalized(), "cn=john+uid=jsmith,dc=x");
    }

    #[test]
    fn is_within_and_parent() {
        let user = Dn::parse("uid=a,ou=People,dc=example,dc=com").expect("parses");
        let people = Dn::parse("OU=people, DC=Example, DC=com").expect("parses");
        let groups = Dn::parse("ou=groups,dc=example,dc=com").expect("parses");
        assert!(user.is_within(&people));
        assert!(people.is_within(&people));
        assert!(!people.is_within(&user));
        assert!(!user.is_within(&groups));
        assert!(user.is_within(&Dn::root()));
        assert_eq!(user.parent().expect("has parent"), people);
        assert!(Dn::root().parent().is_none());
        // A suffix of the string is not a suffix of the DN.
        let tricky = Dn::parse("ou=x\\,ou=people,dc=example,dc=com").expect("parses");
        assert_eq!(tricky.rdns().len(), 3);
    }

    #[test]
    fn ber_hexstring_form() {
        let dn = Dn::parse("1.3.6.1.4.1.1466.0=#04024869,dc=x").expect("parses");
        assert_eq!(dn.normalized(), "1.3.6.1.4.1.1466.0=#04024869,dc=x");
        // Not hex: taken literally.
        assert_eq!(n("cn=#tag,dc=x"), "cn=\\23tag,dc=x");
    }

    #[test]
    fn errors_and_the_fallback() {
        assert!(Dn::parse("cn=x\\").is_err());
        assert!(Dn::parse("cn=x\\4").is_err());
        assert!(Dn::parse("=x,dc=y").is_err());
        assert!(Dn::parse("cn=x,").is_err());
        assert!(Dn::parse("cnx,dc=y").is_err());
        assert_eq!(n("cn=ends with comma\\,"), "cn=ends with comma\\,");
        assert!(Dn::parse("").expect("root").is_root());
        assert_eq!(normalize_dn("  Not A DN  "), "not a dn");
        assert_eq!(normalize_dn("CN=A,DC=B"), "cn=a,dc=b");
    }

    #[test]
    fn display_round_trips() {
        for s in ["cn=Müller\\, José,ou=people,dc=example,dc=com", "cn=\\23x\\20,dc=y", "cn=a+uid=b,dc=c"] {
            let dn = Dn::parse(s).expect("parses");
            let again = Dn::parse(&dn.to_string()).expect("display parses");
            assert_eq!(dn, again, "{s} -> {dn}");
        }
    }
}
