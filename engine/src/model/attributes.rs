//! Mapped attributes, packed: one allocation per object.
//!
//! A full sync holds every object's attributes at once (desired state, then
//! the plan). As a `BTreeMap<String, Vec<String>>` a typical user (nine
//! single-valued attributes, ≈ 190 bytes of text) took over a kilobyte in five
//! dozen allocations, the map's node alone 544 bytes; 100,000 users made it
//! the largest part of the run's peak memory. Packed, the same user is its
//! text plus about thirty bytes.
//!
//! The layout is private. Entries are sorted by key (byte order, as the map
//! was), keys are unique, and each is
//! `len(key) key count (len(value) value)*` with lengths as LEB128. Because the
//! encoding is canonical, equal attributes are equal bytes, and `==` is a
//! `memcmp`. The layout is also `roster-wire`'s (names and values as
//! length-prefixed bytes), so [`Attributes::packed`] is what a plugin is
//! handed without re-encoding. Absent and empty are the same to readers (`get` of an empty list
//! and of a missing key both say "no values"), but an empty list that was put
//! in is kept, so serialized output is what it was.

use std::collections::BTreeMap;
use std::fmt;

/// Mapped attributes: SCIM path → values.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Attributes {
    buf: Box<[u8]>,
}

/// The values of one attribute, borrowed from its [`Attributes`].
#[derive(Clone, Copy)]
pub struct Values<'a> {
    raw: &'a [u8],
    count: usize,
}

/// Lengths are `roster-wire`'s varints, so [`Attributes::packed`] is a
/// buffer a plugin parses.
fn put_len(buf: &mut Vec<u8>, n: usize) {
    roster_wire::put_varint(buf, n as u64);
}

/// Reads a length at `*pos`. The buffer is only ever written by this module,
/// so it is well formed; a short read yields 0 rather than a panic.
fn take_len(buf: &[u8], pos: &mut usize) -> usize {
    match buf.get(*pos..).and_then(roster_wire::get_varint) {
        Some((n, used)) => {
            *pos += used;
            usize::try_from(n).unwrap_or(0)
        }
        None => {
            *pos = buf.len();
            0
        }
    }
}

fn take_str<'a>(buf: &'a [u8], pos: &mut usize) -> &'a str {
    let len = take_len(buf, pos);
    let bytes = buf.get(*pos..*pos + len).unwrap_or(&[]);
    *pos += len;
    // Only `&str` is ever written, so this never fails.
    std::str::from_utf8(bytes).unwrap_or_default()
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_len(buf, s.len());
    buf.extend_from_slice(s.as_bytes());
}

/// Skips `count` values starting at `*pos`.
fn skip_values(buf: &[u8], pos: &mut usize, count: usize) {
    for _ in 0..count {
        let len = take_len(buf, pos);
        *pos += len;
    }
}

/// Collects entries in any order; a key given twice keeps the last values,
/// as inserting into a map would.
#[derive(Default)]
pub struct Builder {
    scratch: Vec<u8>,
    values: Vec<u8>,
    /// (key, the entry's byte range in `scratch`)
    entries: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl Builder {
    pub fn push<V, S>(&mut self, key: &str, values: V)
    where
        V: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let start = self.scratch.len();
        put_len(&mut self.scratch, key.len());
        let key_start = self.scratch.len();
        self.scratch.extend_from_slice(key.as_bytes());
        let key_end = self.scratch.len();
        // The count goes before the values: write them after a placeholder
        // and move them once the count is known (rarely more than one).
        self.values.clear();
        let mut count = 0usize;
        for v in values {
            put_str(&mut self.values, v.as_ref());
            count += 1;
        }
        put_len(&mut self.scratch, count);
        self.scratch.extend_from_slice(&self.values);
        self.entries.push((key_start..key_end, start..self.scratch.len()));
    }

    pub fn finish(mut self) -> Attributes {
        let scratch = &self.scratch;
        let key = |r: &std::ops::Range<usize>| &scratch[r.clone()];
        let sorted = self.entries.windows(2).all(|w| key(&w[0].0) < key(&w[1].0));
        if !sorted {
            // Stable, so among equal keys the last pushed is last; keep it.
            self.entries.sort_by(|a, b| key(&a.0).cmp(key(&b.0)));
            let mut kept: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> =
                Vec::with_capacity(self.entries.len());
            for e in self.entries.drain(..) {
                match kept.last_mut() {
                    Some(last) if key(&last.0) == key(&e.0) => *last = e,
                    _ => kept.push(e),
                }
            }
            self.entries = kept;
            let mut buf = Vec::with_capacity(self.entries.iter().map(|e| e.1.len()).sum());
            for (_, range) in &self.entries {
                buf.extend_from_slice(&scratch[range.clone()]);
            }
            return Attributes { buf: buf.into_boxed_slice() };
        }
        Attributes { buf: self.scratch.into_boxed_slice() }
    }
}

impl Attributes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Number of attributes (a walk: this is not a hot path).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Attributes in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { buf: &self.buf, pos: 0 }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    pub fn get(&self, key: &str) -> Option<Values<'_>> {
        for (k, v) in self.iter() {
            match k.cmp(key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Some(v),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }

    /// The first value of `key`, if it has one.
    pub fn first(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.first())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `values`, replacing what it had.
    pub fn insert(&mut self, key: &str, values: Vec<String>) {
        let mut out =
            Vec::with_capacity(self.buf.len() + key.len() + values.iter().map(|v| v.len() + 2).sum::<usize>() + 4);
        let mut placed = false;
        let put_new = |out: &mut Vec<u8>| {
            put_str(out, key);
            put_len(out, values.len());
            for v in &values {
                put_str(out, v);
            }
        };
        for (range, k) in self.entry_ranges() {
            match k.cmp(key) {
                std::cmp::Ordering::Less => out.extend_from_slice(&self.buf[range]),
                std::cmp::Ordering::Equal => {
                    put_new(&mut out);
                    placed = true;
                }
                std::cmp::Ordering::Greater => {
                    if !placed {
                        put_new(&mut out);
                        placed = true;
                    }
                    out.extend_from_slice(&self.buf[range]);
                }
            }
        }
        if !placed {
            put_new(&mut out);
        }
        self.buf = out.into_boxed_slice();
    }

    /// Removes `key`; says whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.buf.len();
        self.retain(|k, _| k != key);
        self.buf.len() != before
    }

    /// Keeps the attributes for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, Values<'_>) -> bool) {
        let ranges: Vec<(std::ops::Range<usize>, bool)> = {
            let mut v = Vec::new();
            let mut pos = 0;
            let buf = &self.buf;
            while pos < buf.len() {
                let start = pos;
                let k = take_str(buf, &mut pos);
                let count = take_len(buf, &mut pos);
                let values_start = pos;
                skip_values(buf, &mut pos, count);
                let values = Values { raw: &buf[values_start..pos], count };
                v.push((start..pos, keep(k, values)));
            }
            v
        };
        if ranges.iter().all(|(_, k)| *k) {
            return;
        }
        let mut out = Vec::with_capacity(self.buf.len());
        for (range, kept) in ranges {
            if kept {
                out.extend_from_slice(&self.buf[range]);
            }
        }
        self.buf = out.into_boxed_slice();
    }

    /// An owned, editable copy, for the few callers that rewrite values.
    pub fn to_map(&self) -> BTreeMap<String, Vec<String>> {
        self.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
    }

    /// Each entry's byte range and key.
    fn entry_ranges(&self) -> impl Iterator<Item = (std::ops::Range<usize>, &str)> {
        let buf = &self.buf;
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= buf.len() {
                return None;
            }
            let start = pos;
            let k = take_str(buf, &mut pos);
            let count = take_len(buf, &mut pos);
            skip_values(buf, &mut pos, count);
            Some((start..pos, k))
        })
    }

    /// The packed form, in `roster-wire`'s encoding.
    pub fn packed(&self) -> &[u8] {
        &self.buf
    }

    /// Heap bytes held (for tests and diagnostics).
    pub fn heap_size(&self) -> usize {
        self.buf.len()
    }
}

pub struct Iter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, Values<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let k = take_str(self.buf, &mut self.pos);
        let count = take_len(self.buf, &mut self.pos);
        let start = self.pos;
        skip_values(self.buf, &mut self.pos, count);
        Some((k, Values { raw: self.buf.get(start..self.pos).unwrap_or(&[]), count }))
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a str, Values<'a>);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Attributes {
    type Item = (String, Vec<String>);
    type IntoIter = std::vec::IntoIter<(String, Vec<String>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect::<Vec<_>>().into_iter()
    }
}

impl<K, V, S> FromIterator<(K, V)> for Attributes
where
    K: AsRef<str>,
    V: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut b = Builder::default();
        for (k, v) in iter {
            b.push(k.as_ref(), v);
        }
        b.finish()
    }
}

impl From<BTreeMap<String, Vec<String>>> for Attributes {
    fn from(map: BTreeMap<String, Vec<String>>) -> Self {
        map.into_iter().collect()
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl serde::Serialize for Attributes {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of attribute name to a list of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                let mut b = Builder::default();
                while let Some((k, v)) =
                    map.next_entry::<std::borrow::Cow<'de, str>, Vec<std::borrow::Cow<'de, str>>>()?
                {
                    b.push(&k, v);
                }
                Ok(b.finish())
            }
        }
        d.deserialize_map(Visit)
    }
}

impl<'a> Values<'a> {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> ValuesIter<'a> {
        ValuesIter { raw: self.raw, pos: 0, left: self.count }
    }

    pub fn first(&self) -> Option<&'a str> {
        self.iter().next()
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }

    pub fn join(&self, sep: &str) -> String {
        self.iter().collect::<Vec<_>>().join(sep)
    }

    pub fn contains(&self, value: &str) -> bool {
        self.iter().any(|v| v == value)
    }
}

pub struct ValuesIter<'a> {
    raw: &'a [u8],
    pos: usize,
    left: usize,
}

impl<'a> Iterator for ValuesIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(take_str(self.raw, &mut self.pos))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for ValuesIter<'_> {}

impl<'a> IntoIterator for Values<'a> {
    type Item = &'a str;
    type IntoIter = ValuesIter<'a>;

    fn into_iter(self) -> ValuesIter<'a> {
        self.iter()
    }
}

impl PartialEq for Values<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.raw == other.raw
    }
}

impl Eq for Values<'_> {}

impl PartialEq<[String]> for Values<'_> {
    fn eq(&self, other: &[String]) -> bool {
        self.count == other.len() && self.iter().zip(other).all(|(a, b)| a == b)
    }
}

impl PartialEq<Vec<String>> for Values<'_> {
    fn eq(&self, other: &Vec<String>) -> bool {
        *self == other[..]
    }
}

impl fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl serde::Serialize for Values<'_> {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    /// A small deterministic generator: no dependency for a test.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
        fn text(&mut self) -> String {
            // Long enough now and then for a two-byte length; non-ASCII too.
            let len = match self.next(10) {
                0 => 130 + self.next(300) as usize,
                _ => self.next(6) as usize,
            };
            (0..len).map(|_| ['a', 'b', 'é', '字', 'z', '.'][self.next(6) as usize]).collect()
        }
    }

    #[test]
    fn behaves_as_the_map_it_replaces_under_random_edits() {
        let mut rng = Lcg(7);
        for _ in 0..300 {
            let mut model: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut packed = Attributes::new();
            for _ in 0..rng.next(20) {
                let key = ["userName", "email", "roles", "custom.x", "", "name.givenName", "é"][rng.next(7) as usize];
                match rng.next(4) {
                    0 => {
                        assert_eq!(packed.remove(key), model.remove(key).is_some());
                    }
                    1 => {
                        let n = rng.next(10) as usize;
                        model.retain(|k, v| k.len() + v.len() != n);
                        packed.retain(|k, v| k.len() + v.len() != n);
                    }
                    _ => {
                        let values: Vec<String> = (0..rng.next(4)).map(|_| rng.text()).collect();
                        model.insert(key.to_string(), values.clone());
                        packed.insert(key, values);
                    }
                }
                assert_eq!(packed.to_map(), model);
                assert_eq!(packed, Attributes::from(model.clone()), "canonical: equal maps are equal bytes");
                assert_eq!(packed.len(), model.len());
                for k in ["userName", "email", "roles", "zzz", ""] {
                    assert_eq!(packed.get(k).map(|v| v.to_vec()), model.get(k).cloned(), "get({k:?})");
                    assert_eq!(packed.first(k), model.get(k).and_then(|v| v.first()).map(String::as_str));
                }
            }
            // What a plugin is handed: roster-wire reads the same buffer.
            let wire = roster_wire::Attrs::parse(packed.packed()).expect("a buffer roster-wire parses");
            let seen: BTreeMap<String, Vec<String>> = wire
                .iter()
                .map(|a| {
                    let values = a.values().map(|v| String::from_utf8(v.to_vec()).expect("UTF-8")).collect();
                    (a.name.to_string(), values)
                })
                .collect();
            assert_eq!(seen, model, "roster-wire's reading of the packed buffer");
            let json = serde_json::to_string(&packed).expect("serialize");
            assert_eq!(json, serde_json::to_string(&model).expect("serialize"), "same JSON as the map");
            let back: Attributes = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, packed);
        }
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_values_and_order_does_not_matter() {
        let a: Attributes = [("b", vec!["1"]), ("a", vec!["2"]), ("b", vec!["3"])].into_iter().collect();
        assert_eq!(a.to_map(), map(&[("a", &["2"]), ("b", &["3"])]));
        let b: Attributes = [("a", vec!["2"]), ("b", vec!["3"])].into_iter().collect();
        assert_eq!(a, b);
    }

    #[test]
    fn a_typical_user_is_one_small_allocation() {
        let user = map(&[
            ("custom.costCenter", &["D-0031"]),
            ("custom.employeeId", &["189490"]),
            ("displayName", &["Jeffrey Martinez"]),
            ("email", &["jmartinez89490@example.com"]),
            ("name.familyName", &["Martinez"]),
            ("name.givenName", &["Jeffrey"]),
            ("roles", &["staff"]),
            ("title", &["Sales Representative"]),
            ("userName", &["jmartinez89490"]),
        ]);
        let text: usize = user.iter().map(|(k, v)| k.len() + v.iter().map(String::len).sum::<usize>()).sum();
        let packed = Attributes::from(user);
        // Three length bytes per single-valued attribute.
        assert_eq!(packed.heap_size(), text + 9 * 3);
    }
}
