//! A streaming RFC 2849 reader for content records.
//!
//! It reads one physical line at a time from a [`BufRead`], so a directory dump of
//! any size is read in memory proportional to its largest record. Change records
//! (`changetype:`) and URL values (`attr:< file:///…`) are refused: a sync source
//! is a snapshot of entries, and reading local files named inside a data file
//! would let the file pull in anything the engine can read.

use std::io::BufRead;

use base64::Engine as _;

/// One content record: a DN and its attributes. Attribute names keep the
/// spelling of their first occurrence; later lines for the same attribute
/// (compared case-insensitively, options included) add values to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdifRecord {
    pub dn: String,
    /// 1-based line of the record's `dn:` line.
    pub line: u64,
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl LdifRecord {
    /// Values of an attribute, case-insensitively.
    pub fn values(&self, name: &str) -> Option<&[Vec<u8>]> {
        self.attrs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }
}

/// Why the input is not acceptable LDIF. `line` is 1-based; 0 when no line applies.
#[derive(Debug, thiserror::Error)]
pub enum LdifError {
    #[error("line {line}: {message}")]
    Syntax { line: u64, message: String },
    #[error("read error after line {line}: {source}")]
    Io {
        line: u64,
        #[source]
        source: std::io::Error,
    },
}

impl LdifError {
    pub fn line(&self) -> u64 {
        match self {
            LdifError::Syntax { line, .. } | LdifError::Io { line, .. } => *line,
        }
    }

    /// The message without the line prefix, for callers that print the line themselves.
    pub fn message(&self) -> String {
        match self {
            LdifError::Syntax { message, .. } => message.clone(),
            LdifError::Io { source, .. } => format!("read error: {source}"),
        }
    }
}

/// A line after unfolding, with the number of its first physical line.
enum Logical {
    Blank,
    Line { text: Vec<u8>, line: u64 },
    Eof,
}

/// Streaming reader of content records.
pub struct LdifReader<R: BufRead> {
    input: R,
    /// Physical lines read so far.
    line_no: u64,
    /// One physical line of look-ahead (needed to see whether the next line continues this one).
    pending: Option<(Vec<u8>, u64)>,
    /// Still before the first record, where `version:` is allowed.
    at_start: bool,
    done: bool,
}

impl<R: BufRead> LdifReader<R> {
    pub fn new(input: R) -> Self {
        Self { input, line_no: 0, pending: None, at_start: true, done: false }
    }

    /// Reads one physical line without its line ending (LF or CRLF); `None` at EOF.
    fn physical(&mut self) -> Result<Option<(Vec<u8>, u64)>, LdifError> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        let mut buf = Vec::new();
        let n =
            self.input.read_until(b'\n', &mut buf).map_err(|source| LdifError::Io { line: self.line_no, source })?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        if self.line_no == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
            // A UTF-8 byte-order mark some Windows editors add.
            buf.drain(..3);
        }
        Ok(Some((buf, self.line_no)))
    }

    /// The next unfolded line. Comments (and their folded continuations) are skipped.
    fn logical(&mut self) -> Result<Logical, LdifError> {
        loop {
            let Some((phys, line)) = self.physical()? else {
                return Ok(Logical::Eof);
            };
            if phys.is_empty() {
                return Ok(Logical::Blank);
            }
            match phys[0] {
                b' ' => {
                    // Nothing before it to continue. A line of spaces between records is
                    // harmless; text there means the file was cut or mis-folded.
                    if phys.iter().all(|&b| b == b' ' || b == b'\t') {
                        continue;
                    }
                    return Err(syntax(
                        line,
                        "this line starts with a space (a continuation) but there is no line before it to continue",
                    ));
                }
                b'#' => {
                    self.skip_continuations()?;
                    continue;
                }
                _ => {
                    let mut text = phys;
                    loop {
                        match self.physical()? {
                            Some((next, _)) if next.first() == Some(&b' ') => text.extend_from_slice(&next[1..]),
                            Some(other) => {
                                self.pending = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    return Ok(Logical::Line { text, line });
                }
            }
        }
    }

    fn skip_continuations(&mut self) -> Result<(), LdifError> {
        loop {
            match self.physical()? {
                Some((next, _)) if next.first() == Some(&b' ') => continue,
                Some(other) => {
                    self.pending = Some(other);
                    return Ok(());
                }
                None => return Ok(()),
            }
        }
    }

    /// The next content record, or `None` at the end of the input.
    pub fn next_record(&mut self) -> Result<Option<LdifRecord>, LdifError> {
        if self.done {
            return Ok(None);
        }
        let (first, first_line) = loop {
            match self.logical()? {
                Logical::Blank => continue,
                Logical::Eof => {
                    self.done = true;
                    return Ok(None);
                }
                Logical::Line { text, line } => {
                    if self.at_start && starts_with_attr(&text, "version") {
                        self.at_start = false;
                        let spec = parse_spec(&text, line)?;
                        if spec.value != b"1" {
                            return Err(syntax(
                                line,
                                format!(
                                    "unsupported LDIF version '{}' (only 'version: 1' exists)",
                                    String::from_utf8_lossy(&spec.value)
                                ),
                            ));
                        }
                        continue;
                    }
                    break (text, line);
                }
            }
        };
        self.at_start = false;

        let spec = parse_spec(&first, first_line)?;
        if !spec.name.eq_ignore_ascii_case("dn") {
            return Err(syntax(first_line, format!("a record must start with 'dn:', found '{}:'", spec.name)));
        }
        let dn = String::from_utf8(spec.value).map_err(|_| syntax(first_line, "the DN is not valid UTF-8"))?;

        let mut record = LdifRecord { dn, line: first_line, attrs: Vec::new() };
        let mut first_attr = true;
        loop {
            let (text, line) = match self.logical()? {
                Logical::Blank => break,
                Logical::Eof => {
                    self.done = true;
                    break;
                }
                Logical::Line { text, line } => (text, line),
            };
            if text == b"-" {
                return Err(syntax(
                    line,
                    "'-' belongs to change records; only content records (as written by slapcat or ldapsearch) are supported",
                ));
            }
            let spec = parse_spec(&text, line)?;
            if spec.name.eq_ignore_ascii_case("changetype") || (first_attr && spec.name.eq_ignore_ascii_case("control"))
            {
                return Err(syntax(
                    line,
                    format!(
                        "change records ({}: …) are not supported; only content records (as written by slapcat or ldapsearch) are",
                        spec.name
                    ),
                ));
            }
            if spec.name.eq_ignore_ascii_case("dn") {
                return Err(syntax(
                    line,
                    format!(
                        "a second 'dn:' inside the record that starts on line {}; records must be separated by a blank line",
                        record.line
                    ),
                ));
            }
            first_attr = false;
            match record.attrs.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&spec.name)) {
                Some((_, values)) => values.push(spec.value),
                None => record.attrs.push((spec.name, vec![spec.value])),
            }
        }
        Ok(Some(record))
    }
}

impl<R: BufRead> Iterator for LdifReader<R> {
    type Item = Result<LdifRecord, LdifError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                // After a syntax error the position inside the record is unknown; stop.
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn syntax(line: u64, message: impl Into<String>) -> LdifError {
    LdifError::Syntax { line, message: message.into() }
}

struct Spec {
    name: String,
    value: Vec<u8>,
}

fn starts_with_attr(text: &[u8], name: &str) -> bool {
    text.len() > name.len() && text[..name.len()].eq_ignore_ascii_case(name.as_bytes()) && text[name.len()] == b':'
}

/// Parses `name: value`, `name:: base64` or refuses `name:< url`.
fn parse_spec(text: &[u8], line: u64) -> Result<Spec, LdifError> {
    let Some(colon) = text.iter().position(|&b| b == b':') else {
        return Err(syntax(line, format!("expected 'attribute: value', found '{}'", preview(text))));
    };
    let name = &text[..colon];
    let valid_name = !name.is_empty()
        && name[0].is_ascii_alphanumeric()
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b';');
    if !valid_name {
        return Err(syntax(line, format!("'{}' is not an attribute description", preview(name))));
    }
    // Checked ASCII above.
    let name = String::from_utf8_lossy(name).into_owned();
    let rest = &text[colon + 1..];
    let value = match rest.first() {
        Some(b':') => {
            let encoded: Vec<u8> = rest[1..].iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(&encoded)
                .map_err(|e| syntax(line, format!("the base64 value of '{name}' does not decode: {e}")))?
        }
        Some(b'<') => {
            return Err(syntax(line, format!("URL values (<) are not supported; inline the value of '{name}'")));
        }
        _ => {
            // RFC 2849 FILL: spaces after the colon are not part of the value.
            let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
            rest[start..].to_vec()
        }
    };
    Ok(Spec { name, value })
}

/// A short, printable excerpt of a line for error messages.
fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> Result<Vec<LdifRecord>, LdifError> {
        LdifReader::new(text.as_bytes()).collect()
    }

    fn str_values(r: &LdifRecord, name: &str) -> Vec<String> {
        r.values(name).unwrap_or_default().iter().map(|v| String::from_utf8(v.clone()).expect("utf8")).collect()
    }

    #[test]
    fn version_comments_folding_and_base64() {
        let text = "# a dump\n# folded comment\n  still the comment\nversion: 1\n\n\
dn: uid=jdoe,ou=people,dc=example,dc=com\n\
objectClass: inetOrgPerson\n\
objectClass: person\n\
# a comment inside a record\n\
cn: John\n  Doe\n\
description:: SGVsbG8sIFfDtnJsZCE=\n\
cn;lang-de: Johann\n\
\n\n\
dn:: Y249TcO8bGxlcixkYz1leGFtcGxlLGRjPWNvbQ==\n\
cn: Müller\n";
        let records = read_all(text).expect("parses");
        assert_eq!(records.len(), 2);
        let r = &records[0];
        assert_eq!(r.dn, "uid=jdoe,ou=people,dc=example,dc=com");
        assert_eq!(r.line, 6);
        assert_eq!(str_values(r, "objectclass"), ["inetOrgPerson", "person"]);
        assert_eq!(str_values(r, "cn"), ["John Doe"]);
        assert_eq!(str_values(r, "description"), ["Hello, Wörld!"]);
        assert_eq!(str_values(r, "cn;lang-de"), ["Johann"]);
        assert_eq!(r.attrs[0].0, "objectClass");
        assert_eq!(records[1].dn, "cn=Müller,dc=example,dc=com");
        assert_eq!(str_values(&records[1], "cn"), ["Müller"]);
    }

    #[test]
    fn crlf_line_endings() {
        let text = "version: 1\r\n\r\ndn: cn=a,dc=x\r\ncn: a\r\n b\r\nsn: s\r\n\r\ndn: cn=b,dc=x\r\ncn: b\r\n";
        let records = read_all(text).expect("parses");
        assert_eq!(records.len(), 2);
        assert_eq!(str_values(&records[0], "cn"), ["ab"]);
        assert_eq!(str_values(&records[0], "sn"), ["s"]);
    }

    #[test]
    fn binary_values_stay_bytes() {
        let records = read_all("dn: cn=a,dc=x\njpegPhoto:: /9j/4AA=\n").expect("parses");
        assert_eq!(records[0].values("jpegphoto").expect("present")[0], vec![0xff, 0xd8, 0xff, 0xe0, 0x00]);
    }

    #[test]
    fn url_values_are_refused_with_the_line() {
        let err =
            read_all("version: 1\n\ndn: cn=a,dc=x\ncn: a\njpegPhoto:< file:///etc/passwd\n").expect_err("refused");
        assert_eq!(err.line(), 5);
        assert!(err.to_string().contains("URL values (<) are not supported; inline the value"), "{err}");
    }

    #[test]
    fn change_records_are_refused() {
        let err = read_all("dn: cn=a,dc=x\nchangetype: add\ncn: a\n").expect_err("refused");
        assert_eq!(err.line(), 2);
        assert!(err.to_string().contains("change records"), "{err}");
        let err = read_all("dn: cn=a,dc=x\ncn: a\n-\n").expect_err("refused");
        assert_eq!(err.line(), 3);
    }

    #[test]
    fn syntax_errors_carry_line_numbers() {
        let err = read_all("dn: cn=a,dc=x\ncn: a\nno colon here\n").expect_err("bad");
        assert_eq!(err.line(), 3);
        let err = read_all("cn: a\n").expect_err("no dn");
        assert!(err.to_string().contains("must start with 'dn:'"), "{err}");
        let err = read_all("dn: cn=a,dc=x\ncn: a\ndn: cn=b,dc=x\n").expect_err("missing blank");
        assert_eq!(err.line(), 3);
        assert!(err.to_string().contains("blank line"), "{err}");
        let err = read_all("dn: cn=a,dc=x\ndescription:: !!!notbase64\n").expect_err("bad base64");
        assert_eq!(err.line(), 2);
        let err = read_all("version: 2\n").expect_err("bad version");
        assert_eq!(err.line(), 1);
        let err = read_all(" orphan continuation\n").expect_err("orphan");
        assert_eq!(err.line(), 1);
    }

    #[test]
    fn folded_line_errors_report_the_first_physical_line() {
        let err = read_all("dn: cn=a,dc=x\ncn: a\nbroken\n  value\n").expect_err("bad");
        assert_eq!(err.line(), 3);
    }

    #[test]
    fn empty_input_and_trailing_blank_lines() {
        assert!(read_all("").expect("empty").is_empty());
        assert!(read_all("version: 1\n\n\n").expect("version only").is_empty());
        assert_eq!(read_all("\n\ndn: cn=a\ncn: a\n\n\n\n").expect("parses").len(), 1);
        assert_eq!(read_all("\u{feff}dn: cn=a\ncn: a").expect("bom, no final newline").len(), 1);
    }

    #[test]
    fn stops_after_the_first_error() {
        let mut reader = LdifReader::new("dn: cn=a\nbad\n\ndn: cn=b\ncn: b\n".as_bytes());
        assert!(reader.next().expect("item").is_err());
        assert!(reader.next().is_none());
    }
}
