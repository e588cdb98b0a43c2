//! The packed attribute encoding that crosses the plugin boundary.
//!
//! Lowering a WIT `list<record { name: string, values: list<string> }>` costs one
//! guest `cabi_realloc` per string; on a 20-attribute entry that is ~6.5 µs per
//! call against ~2.8 µs for a single `list<u8>` (see BENCHMARKS.md). So an entry's
//! attributes travel as one byte buffer in this format, and both sides read it
//! without copying:
//!
//! ```text
//! buffer  := attr*                      (until the end of the buffer)
//! attr    := varint(name_len) name varint(value_count) value*
//! value   := varint(len) bytes          (binary-safe)
//! ```
//!
//! `varint` is unsigned LEB128. Attribute names are UTF-8; values are arbitrary
//! bytes. The format is frozen with WIT package `roster:plugin@0.1.0`.

#![forbid(unsafe_code)]

use std::fmt;

/// Appends attributes to a packed buffer.
#[derive(Default, Debug, Clone)]
pub struct Packer {
    buf: Vec<u8>,
}

impl Packer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(bytes: usize) -> Self {
        Self { buf: Vec::with_capacity(bytes) }
    }

    /// Adds one attribute with all its values.
    pub fn attr<V: AsRef<[u8]>>(&mut self, name: &str, values: &[V]) -> &mut Self {
        self.attr_iter(name, values.len(), values.iter().map(|v| v.as_ref()))
    }

    /// Adds one attribute whose values come from an iterator of known length.
    pub fn attr_iter<'a>(&mut self, name: &str, count: usize, values: impl Iterator<Item = &'a [u8]>) -> &mut Self {
        put_varint(&mut self.buf, name.len() as u64);
        self.buf.extend_from_slice(name.as_bytes());
        put_varint(&mut self.buf, count as u64);
        let mut written = 0usize;
        for v in values {
            put_varint(&mut self.buf, v.len() as u64);
            self.buf.extend_from_slice(v);
            written += 1;
        }
        debug_assert_eq!(written, count, "attr_iter: count does not match the values given");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Packs `(name, values)` pairs in one go.
pub fn pack<'a, N, V>(attrs: impl IntoIterator<Item = (N, &'a [V])>) -> Vec<u8>
where
    N: AsRef<str>,
    V: AsRef<[u8]> + 'a,
{
    let mut p = Packer::new();
    for (name, values) in attrs {
        p.attr(name.as_ref(), values);
    }
    p.finish()
}

/// A malformed packed buffer: where it went wrong and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub offset: usize,
    pub reason: &'static str,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed packed attributes at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for WireError {}

/// One attribute borrowed from a packed buffer.
#[derive(Clone, Copy)]
pub struct Attr<'a> {
    pub name: &'a str,
    count: usize,
    values: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The values, as raw bytes.
    pub fn values(&self) -> Values<'a> {
        Values { rest: self.values, left: self.count }
    }

    /// The first value, if any.
    pub fn first(&self) -> Option<&'a [u8]> {
        self.values().next()
    }
}

impl fmt::Debug for Attr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attr")
            .field("name", &self.name)
            .field("values", &self.values().map(String::from_utf8_lossy).collect::<Vec<_>>())
            .finish()
    }
}

/// The values of one attribute. Validated when the buffer was opened.
#[derive(Clone)]
pub struct Values<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The buffer was validated by `Attrs::parse`, so these cannot fail.
        let (len, used) = get_varint(self.rest).unwrap_or((0, 0));
        let start = used;
        let end = start.saturating_add(len as usize).min(self.rest.len());
        let v = &self.rest[start..end];
        self.rest = &self.rest[end..];
        Some(v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Values<'_> {}

/// A validated, borrowed view of a packed buffer.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    attrs: Vec<Attr<'a>>,
}

impl<'a> Attrs<'a> {
    /// Validates the whole buffer once so that reading it later cannot fail.
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        // Directory entries carry a dozen or two attributes: one allocation
        // up front instead of five as the vector doubles.
        let mut attrs = Vec::with_capacity(if buf.is_empty() { 0 } else { 16 });
        let mut pos = 0usize;
        while pos < buf.len() {
            let (name_len, n) =
                get_varint(&buf[pos..]).ok_or(WireError { offset: pos, reason: "truncated attribute name length" })?;
            pos += n;
            let name_end = checked_end(buf, pos, name_len, "attribute name runs past the end")?;
            let name = std::str::from_utf8(&buf[pos..name_end])
                .map_err(|_| WireError { offset: pos, reason: "attribute name is not UTF-8" })?;
            pos = name_end;
            let (count, n) =
                get_varint(&buf[pos..]).ok_or(WireError { offset: pos, reason: "truncated value count" })?;
            pos += n;
            let values_start = pos;
            for _ in 0..count {
                let (len, n) =
                    get_varint(&buf[pos..]).ok_or(WireError { offset: pos, reason: "truncated value length" })?;
                pos += n;
                pos = checked_end(buf, pos, len, "value runs past the end")?;
            }
            attrs.push(Attr { name, count: count as usize, values: &buf[values_start..pos] });
        }
        Ok(Self { attrs })
    }

    /// Case-insensitive lookup, as LDAP attribute names are.
    pub fn get(&self, name: &str) -> Option<&Attr<'a>> {
        self.attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Attr<'a>> {
        self.attrs.iter()
    }

    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }
}

fn checked_end(buf: &[u8], pos: usize, len: u64, reason: &'static str) -> Result<usize, WireError> {
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|&e| e <= buf.len())
        .ok_or(WireError { offset: pos, reason })?;
    Ok(end)
}

/// Appends `v` as unsigned LEB128, the encoding of every length in the
/// format. Public so the host's own packed types (`Attributes`) write the
/// same bytes a plugin parses, from one definition.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf.push(byte);
            return;
        }
        buf.push(byte | 0x80);
    }
}

/// Reads an unsigned LEB128 number at the start of `buf`: the value and the
/// bytes it took, or `None` when `buf` ends inside it (or it is over ten bytes).
pub fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_binary_values_and_empty_attributes() {
        let guid: &[u8] = &[0x00, 0xff, 0x80, 0x7f];
        let mut p = Packer::new();
        p.attr("cn", &["Müller, José"]);
        p.attr("objectGUID", &[guid]);
        p.attr::<&[u8]>("empty", &[]);
        p.attr("mail", &["a@example.com", "b@example.com"]);
        let buf = p.finish();
        let attrs = Attrs::parse(&buf).expect("valid");
        assert_eq!(attrs.len(), 4);
        assert_eq!(attrs.get("CN").and_then(|a| a.first()), Some("Müller, José".as_bytes()));
        assert_eq!(attrs.get("objectguid").and_then(|a| a.first()), Some(guid));
        assert!(attrs.get("empty").is_some_and(|a| a.is_empty()));
        let mails: Vec<_> = attrs.get("mail").map(|a| a.values().collect()).unwrap_or_default();
        assert_eq!(mails, vec![b"a@example.com".as_slice(), b"b@example.com".as_slice()]);
    }

    #[test]
    fn rejects_truncated_and_oversized_lengths() {
        let mut buf = pack([("uid", ["jdoe"].as_slice())]);
        buf.truncate(buf.len() - 1);
        let err = Attrs::parse(&buf).expect_err("truncated");
        assert_eq!(err.reason, "value runs past the end");
        let bogus = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(Attrs::parse(&bogus).is_err());
        assert!(Attrs::parse(&[0x02, 0xc3, 0x28, 0x00]).is_err(), "non-UTF-8 name");
    }
}
