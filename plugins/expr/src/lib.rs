//! The mapping expression language: lexer, recursive-descent parser, evaluator.
//!
//! Independent of the plugin bindings (only `std` and `roster-wire`), so it is
//! unit-tested natively.
//!
//! # Grammar
//!
//! ```text
//! expr   := string | name | name "(" [ expr ( "," expr )* ] ")"
//! string := '…' | "…"            escapes: \\ \' \" \n \r \t \0 \u{hex}
//! name   := [A-Za-z0-9_] [A-Za-z0-9_;.-]*
//! ```
//!
//! A bare `name` is an attribute reference; `name(…)` a function call
//! (function names are case-insensitive). Whitespace between tokens is ignored.
//!
//! # Values
//!
//! Every expression evaluates to a list of strings (LDAP attributes are
//! multi-valued). An attribute reference gives all values of the attribute,
//! matched case-insensitively, in source order, with empty values dropped;
//! an absent attribute gives the empty list. Values that are not valid UTF-8
//! (binary attributes such as `objectGUID`) are converted lossily, invalid
//! bytes becoming U+FFFD. A string literal gives a one-element list.
//!
//! A list is *empty* when it has no non-empty string. A list is *truthy* when it
//! has at least one value and its first value is not `""`, `"false"` or `"0"`
//! (ASCII case-insensitive). Predicates return `"true"` or `"false"`.
//! The functions are listed on [`Func`].

use std::borrow::Cow;
use std::fmt;

use roster_wire::Attrs;

/// The value of an expression: all its strings, borrowed where possible.
pub type Values<'a> = Vec<Cow<'a, str>>;

/// Deepest nesting of function calls accepted.
pub const MAX_DEPTH: usize = 64;

/// A parse error: a 0-based character position in the expression and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub position: u32,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

impl std::error::Error for ParseError {}

fn error<T>(position: u32, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError { position, message: message.into() })
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Name(String),
    Str(String),
    LParen,
    RParen,
    Comma,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Name(n) => format!("'{n}'"),
            Tok::Str(_) => "a string".to_string(),
            Tok::LParen => "'('".to_string(),
            Tok::RParen => "')'".to_string(),
            Tok::Comma => "','".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    tok: Tok,
    /// Character offset of the token's first character.
    pos: u32,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ';' | '.')
}

fn lex(src: &str) -> Result<(Vec<Token>, u32), ParseError> {
    let mut tokens = Vec::new();
    let mut chars = src.chars().zip(0u32..).peekable();
    while let Some((c, pos)) = chars.next() {
        let tok = match c {
            c if c.is_whitespace() => continue,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '\'' | '"' => {
                let quote = c;
                let mut s = String::new();
                loop {
                    let Some((c, at)) = chars.next() else {
                        return error(pos, format!("unterminated string: missing closing {quote}"));
                    };
                    match c {
                        c if c == quote => break,
                        '\\' => {
                            let Some((e, _)) = chars.next() else {
                                return error(at, format!("unterminated string: missing closing {quote}"));
                            };
                            match e {
                                '\\' | '\'' | '"' => s.push(e),
                                'n' => s.push('\n'),
                                'r' => s.push('\r'),
                                't' => s.push('\t'),
                                '0' => s.push('\0'),
                                'u' => s.push(unicode_escape(&mut chars, at)?),
                                other => {
                                    return error(at, format!("unknown escape '\\{other}' (use \\\\ for a backslash)"));
                                }
                            }
                        }
                        c => s.push(c),
                    }
                }
                Tok::Str(s)
            }
            c if is_name_start(c) => {
                let mut name = String::from(c);
                while let Some(&(c, _)) = chars.peek() {
                    if !is_name_char(c) {
                        break;
                    }
                    name.push(c);
                    chars.next();
                }
                Tok::Name(name)
            }
            other => {
                let hint = if other.is_alphabetic() {
                    " (attribute and function names are ASCII; quote text as a string)"
                } else {
                    ""
                };
                return error(pos, format!("unexpected character '{other}'{hint}"));
            }
        };
        tokens.push(Token { tok, pos });
    }
    Ok((tokens, src.chars().count() as u32))
}

/// `\u{…}`: 1 to 6 hex digits naming a Unicode scalar value.
fn unicode_escape(
    chars: &mut std::iter::Peekable<impl Iterator<Item = (char, u32)>>,
    at: u32,
) -> Result<char, ParseError> {
    let bad = || ParseError {
        position: at,
        message: "malformed unicode escape: expected \\u{…} with 1 to 6 hex digits".to_string(),
    };
    if chars.next().map(|(c, _)| c) != Some('{') {
        return Err(bad());
    }
    let mut hex = String::new();
    loop {
        match chars.next() {
            Some(('}', _)) => break,
            Some((c, _)) if c.is_ascii_hexdigit() && hex.len() < 6 => hex.push(c),
            _ => return Err(bad()),
        }
    }
    u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).ok_or_else(bad)
}

// ---------------------------------------------------------------------------
// Syntax tree and functions

/// The built-in functions.
///
/// | function | arity | result |
/// | --- | --- | --- |
/// | `lower(x)`, `upper(x)` | 1 | each value lower- / uppercased (Unicode) |
/// | `trim(x)` | 1 | each value with surrounding whitespace removed |
/// | `first(x)` | 1 | the first non-empty value of `x` (or nothing) |
/// | `join(sep, a, …)` | ≥ 2 | one value: every non-empty value of `a, …` joined by the first value of `sep`; nothing when there are none |
/// | `concat(a, …)` | ≥ 1 | one value: the first values of the arguments concatenated (an empty argument adds nothing); nothing when every argument is empty |
/// | `coalesce(a, …)` | ≥ 1 | the first argument that is not empty (evaluated lazily) |
/// | `split(x, sep)` | 2 | each value split on the first value of `sep`, empty parts dropped (no split when `sep` is empty) |
/// | `replace(x, from, to)` | 3 | each value with every `from` replaced by `to` (first values; unchanged when `from` is empty) |
/// | `if(cond, then, else)` | 3 | `then` when `cond` is truthy, else `else` (only the chosen branch is evaluated) |
/// | `eq(a, b)` | 2 | `"true"` when some value of `a` equals some value of `b` (exact, case-sensitive) |
/// | `not(x)` | 1 | `"true"` when `x` is not truthy |
/// | `present(x)` | 1 | `"true"` when `x` is not empty |
/// | `contains(x, s)`, `starts_with(x, s)`, `ends_with(x, s)` | 2 | `"true"` when some value of `x` contains / starts with / ends with some value of `s` (case-sensitive) |
/// | `and(a, …)`, `or(a, …)` | ≥ 1 | `"true"` when all / any arguments are truthy (short-circuit) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Lower,
    Upper,
    Trim,
    First,
    Join,
    Concat,
    Coalesce,
    Split,
    Replace,
    If,
    Eq,
    Not,
    Present,
    Contains,
    StartsWith,
    EndsWith,
    And,
    Or,
}

/// `(name, function, minimum arity, maximum arity)`.
const FUNCTIONS: &[(&str, Func, usize, Option<usize>)] = &[
    ("lower", Func::Lower, 1, Some(1)),
    ("upper", Func::Upper, 1, Some(1)),
    ("trim", Func::Trim, 1, Some(1)),
    ("first", Func::First, 1, Some(1)),
    ("join", Func::Join, 2, None),
    ("concat", Func::Concat, 1, None),
    ("coalesce", Func::Coalesce, 1, None),
    ("split", Func::Split, 2, Some(2)),
    ("replace", Func::Replace, 3, Some(3)),
    ("if", Func::If, 3, Some(3)),
    ("eq", Func::Eq, 2, Some(2)),
    ("not", Func::Not, 1, Some(1)),
    ("present", Func::Present, 1, Some(1)),
    ("contains", Func::Contains, 2, Some(2)),
    ("starts_with", Func::StartsWith, 2, Some(2)),
    ("ends_with", Func::EndsWith, 2, Some(2)),
    ("and", Func::And, 1, None),
    ("or", Func::Or, 1, None),
];

/// The names of the built-in functions.
pub fn function_names() -> impl Iterator<Item = &'static str> {
    FUNCTIONS.iter().map(|f| f.0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Attr(String),
    Lit(String),
    Call(Func, Vec<Node>),
}

/// A parsed expression, ready to evaluate any number of times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    source: String,
    node: Node,
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

// ---------------------------------------------------------------------------
// Parser

struct Parser {
    tokens: std::vec::IntoIter<Token>,
    peeked: Option<Token>,
    end: u32,
}

impl Parser {
    fn peek(&mut self) -> Option<&Token> {
        if self.peeked.is_none() {
            self.peeked = self.tokens.next();
        }
        self.peeked.as_ref()
    }

    fn next(&mut self) -> Option<Token> {
        self.peeked.take().or_else(|| self.tokens.next())
    }

    fn expr(&mut self, depth: usize) -> Result<Node, ParseError> {
        let Some(Token { tok, pos }) = self.next() else {
            return error(self.end, "expected an attribute, a string or a function call, found the end");
        };
        match tok {
            Tok::Str(s) => Ok(Node::Lit(s)),
            Tok::Name(name) => {
                if self.peek().map(|t| &t.tok) != Some(&Tok::LParen) {
                    return Ok(Node::Attr(name));
                }
                if depth >= MAX_DEPTH {
                    return error(pos, format!("expression nested deeper than {MAX_DEPTH} calls"));
                }
                self.next(); // '('
                let args = self.args(&name, pos, depth)?;
                let call = resolve(&name, pos, args.len())?;
                Ok(Node::Call(call, args))
            }
            other => {
                error(pos, format!("expected an attribute, a string or a function call, found {}", other.describe()))
            }
        }
    }

    fn args(&mut self, name: &str, open: u32, depth: usize) -> Result<Vec<Node>, ParseError> {
        let mut args = Vec::new();
        if self.peek().map(|t| &t.tok) == Some(&Tok::RParen) {
            self.next();
            return Ok(args);
        }
        loop {
            args.push(self.expr(depth + 1)?);
            match self.next() {
                Some(Token { tok: Tok::Comma, .. }) => {}
                Some(Token { tok: Tok::RParen, .. }) => return Ok(args),
                Some(Token { tok, pos }) => {
                    return error(pos, format!("expected ',' or ')', found {}", tok.describe()));
                }
                None => {
                    return error(self.end, format!("missing ')' to close '{name}(' opened at position {open}"));
                }
            }
        }
    }
}

fn resolve(name: &str, pos: u32, arity: usize) -> Result<Func, ParseError> {
    let Some(&(canonical, func, min, max)) = FUNCTIONS.iter().find(|f| f.0.eq_ignore_ascii_case(name)) else {
        let mut message = format!("unknown function '{name}'");
        match suggest(name, function_names()) {
            Some(s) => message.push_str(&format!(" (did you mean '{s}'?)")),
            None => {
                message.push_str(&format!("; known functions: {}", function_names().collect::<Vec<_>>().join(", ")))
            }
        }
        return error(pos, message);
    };
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    let wanted = match max {
        Some(max) if max == min => format!("exactly {min} {}", plural(min)),
        Some(max) => format!("{min} to {max} arguments"),
        None => format!("at least {min} {}", plural(min)),
    };
    if arity < min || max.is_some_and(|m| arity > m) {
        return error(pos, format!("{canonical}() takes {wanted}, got {arity}"));
    }
    Ok(func)
}

/// The closest candidate to `word` if it looks like a typo of it.
fn suggest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    let word: Vec<char> = word.to_ascii_lowercase().chars().collect();
    let limit = (word.len() / 3).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(&word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &[char], b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Parses an expression.
pub fn parse(source: &str) -> Result<Expr, ParseError> {
    let (tokens, end) = lex(source)?;
    if tokens.is_empty() {
        return error(0, "empty expression");
    }
    let mut parser = Parser { tokens: tokens.into_iter(), peeked: None, end };
    let node = parser.expr(0)?;
    if let Some(Token { tok, pos }) = parser.next() {
        let hint = if tok == Tok::Comma { " (arguments go inside a function call)" } else { "" };
        return error(pos, format!("unexpected {} after the end of the expression{hint}", tok.describe()));
    }
    Ok(Expr { source: source.to_string(), node })
}

// ---------------------------------------------------------------------------
// Evaluator

const TRUE: &str = "true";
const FALSE: &str = "false";

/// True when `values` is truthy: a first value that is not `""`, `"false"`
/// or `"0"` (ASCII case-insensitive).
pub fn truthy(values: &[Cow<'_, str>]) -> bool {
    values.first().is_some_and(|v| {
        let v: &str = v;
        !(v.is_empty() || v.eq_ignore_ascii_case(FALSE) || v == "0")
    })
}

/// True when `values` holds at least one non-empty string.
pub fn non_empty(values: &[Cow<'_, str>]) -> bool {
    values.iter().any(|v| !v.is_empty())
}

fn boolean<'a>(b: bool) -> Values<'a> {
    vec![Cow::Borrowed(if b { TRUE } else { FALSE })]
}

fn first<'v>(values: &'v [Cow<'_, str>]) -> &'v str {
    values.first().map_or("", |v| v.as_ref())
}

impl Expr {
    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against one entry's attributes.
    pub fn eval<'a>(&'a self, attrs: &Attrs<'a>) -> Values<'a> {
        eval(&self.node, attrs)
    }

    /// Evaluates and tests for truth (see [`truthy`]).
    pub fn is_true(&self, attrs: &Attrs<'_>) -> bool {
        truthy(&self.eval(attrs))
    }
}

fn map_each<'a>(values: Values<'a>, f: impl Fn(&str) -> String) -> Values<'a> {
    values.into_iter().map(|v| Cow::Owned(f(&v))).collect()
}

/// Applies `f` to each value, keeping borrowed slices borrowed.
fn slice_each<'a>(values: Values<'a>, f: impl Fn(&str) -> &str) -> Values<'a> {
    values
        .into_iter()
        .map(|v| match v {
            Cow::Borrowed(s) => Cow::Borrowed(f(s)),
            Cow::Owned(s) => Cow::Owned(f(&s).to_string()),
        })
        .collect()
}

fn any_pair(x: &[Cow<'_, str>], y: &[Cow<'_, str>], test: impl Fn(&str, &str) -> bool) -> bool {
    x.iter().any(|a| y.iter().any(|b| test(a, b)))
}

fn eval<'a>(node: &'a Node, attrs: &Attrs<'a>) -> Values<'a> {
    let (func, args) = match node {
        Node::Lit(s) => return vec![Cow::Borrowed(s.as_str())],
        Node::Attr(name) => {
            return attrs
                .get(name)
                .into_iter()
                .flat_map(|a| a.values())
                .filter(|v| !v.is_empty())
                .map(String::from_utf8_lossy)
                .collect();
        }
        Node::Call(func, args) => (*func, args.as_slice()),
    };
    let arg = |i: usize| eval(&args[i], attrs);
    match func {
        Func::Lower => {
            let mut values = arg(0);
            for v in &mut values {
                if !v.is_ascii() || v.bytes().any(|b| b.is_ascii_uppercase()) {
                    *v = Cow::Owned(v.to_lowercase());
                }
            }
            values
        }
        Func::Upper => map_each(arg(0), str::to_uppercase),
        Func::Trim => slice_each(arg(0), str::trim),
        Func::First => arg(0).into_iter().filter(|v| !v.is_empty()).take(1).collect(),
        Func::Join => {
            let sep = arg(0);
            let sep = first(&sep);
            let mut joined: Option<String> = None;
            for a in &args[1..] {
                for v in eval(a, attrs).iter().filter(|v| !v.is_empty()) {
                    match &mut joined {
                        None => joined = Some(v.to_string()),
                        Some(j) => {
                            j.push_str(sep);
                            j.push_str(v);
                        }
                    }
                }
            }
            joined.map(Cow::Owned).into_iter().collect()
        }
        Func::Concat => {
            let mut out = String::new();
            let mut any = false;
            for a in args {
                let v = eval(a, attrs);
                if let Some(f) = v.first() {
                    any = true;
                    out.push_str(f);
                }
            }
            if any { vec![Cow::Owned(out)] } else { Vec::new() }
        }
        Func::Coalesce => args.iter().map(|a| eval(a, attrs)).find(|v| non_empty(v)).unwrap_or_default(),
        Func::Split => {
            let sep = arg(1);
            let sep = first(&sep);
            let mut out = Vec::new();
            for v in arg(0) {
                if sep.is_empty() {
                    if !v.is_empty() {
                        out.push(v);
                    }
                    continue;
                }
                match v {
                    Cow::Borrowed(s) => out.extend(s.split(sep).filter(|p| !p.is_empty()).map(Cow::Borrowed)),
                    Cow::Owned(s) => {
                        out.extend(s.split(sep).filter(|p| !p.is_empty()).map(|p| Cow::Owned(p.to_string())))
                    }
                }
            }
            out
        }
        Func::Replace => {
            let (from, to) = (arg(1), arg(2));
            let (from, to) = (first(&from), first(&to));
            let mut values = arg(0);
            if !from.is_empty() {
                for v in &mut values {
                    if v.contains(from) {
                        *v = Cow::Owned(v.replace(from, to));
                    }
                }
            }
            values
        }
        Func::If => {
            if truthy(&arg(0)) {
                arg(1)
            } else {
                arg(2)
            }
        }
        Func::Eq => boolean(any_pair(&arg(0), &arg(1), |a, b| a == b)),
        Func::Not => boolean(!truthy(&arg(0))),
        Func::Present => boolean(non_empty(&arg(0))),
        Func::Contains => boolean(any_pair(&arg(0), &arg(1), |a, b| a.contains(b))),
        Func::StartsWith => boolean(any_pair(&arg(0), &arg(1), |a, b| a.starts_with(b))),
        Func::EndsWith => boolean(any_pair(&arg(0), &arg(1), |a, b| a.ends_with(b))),
        Func::And => boolean(args.iter().all(|a| truthy(&eval(a, attrs)))),
        Func::Or => boolean(args.iter().any(|a| truthy(&eval(a, attrs)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_wire::Packer;

    fn packed(attrs: &[(&str, &[&str])]) -> Vec<u8> {
        let mut p = Packer::new();
        for (name, values) in attrs {
            p.attr(name, values);
        }
        p.finish()
    }

    /// Evaluates `src` against `attrs`, as owned strings.
    fn ev(src: &str, attrs: &[(&str, &[&str])]) -> Vec<String> {
        let buf = packed(attrs);
        let parsed = Attrs::parse(&buf).expect("valid buffer");
        let expr = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        expr.eval(&parsed).into_iter().map(Cow::into_owned).collect()
    }

    fn err(src: &str) -> (u32, String) {
        let e = parse(src).expect_err(src);
        (e.position, e.message)
    }

    const JANE: &[(&str, &[&str])] = &[
        ("uid", &["JDoe"]),
        ("givenName", &["Jane"]),
        ("sn", &["Doe"]),
        ("cn", &["Jane Doe"]),
        ("mail", &["Jane.Doe@Example.com", "jd@example.com"]),
        ("empty", &[]),
        ("blank", &[""]),
    ];

    // --- lexer -----------------------------------------------------------

    #[test]
    fn lexes_names_strings_and_punctuation_with_char_positions() {
        let (tokens, end) = lex("join( ' ', cn;lang-en , \"x\")").unwrap();
        let toks: Vec<_> = tokens.iter().map(|t| (t.tok.clone(), t.pos)).collect();
        assert_eq!(
            toks,
            vec![
                (Tok::Name("join".into()), 0),
                (Tok::LParen, 4),
                (Tok::Str(" ".into()), 6),
                (Tok::Comma, 9),
                (Tok::Name("cn;lang-en".into()), 11),
                (Tok::Comma, 22),
                (Tok::Str("x".into()), 24),
                (Tok::RParen, 27),
            ]
        );
        assert_eq!(end, 28);
    }

    #[test]
    fn lexes_escapes() {
        let (tokens, _) = lex(r#"'it\'s' "a \"b\"" '\\ \n\t\r\0' '\u{e9}\u{1F600}' "it's""#).unwrap();
        let strings: Vec<_> = tokens
            .into_iter()
            .map(|t| match t.tok {
                Tok::Str(s) => s,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(strings, ["it's", "a \"b\"", "\\ \n\t\r\0", "é😀", "it's"]);
    }

    #[test]
    fn lexes_non_ascii_inside_strings_and_counts_chars_not_bytes() {
        let (tokens, _) = lex("'Müller' x").unwrap();
        assert_eq!(tokens[0].tok, Tok::Str("Müller".into()));
        assert_eq!(tokens[1].pos, 9, "char offset, not byte offset (ü is 2 bytes)");
        // The error position after a non-ASCII literal is in characters too.
        assert_eq!(err("concat('ÉÉÉ', #)").0, 14);
    }

    #[test]
    fn reports_lexical_errors_at_their_position() {
        assert_eq!(err("lower('abc"), (6, "unterminated string: missing closing '".into()));
        assert_eq!(err("\"abc\\"), (4, "unterminated string: missing closing \"".into()));
        let (pos, msg) = err(r"'a\qb'");
        assert_eq!(pos, 2);
        assert!(msg.starts_with("unknown escape '\\q'"), "{msg}");
        assert_eq!(err(r"'\u{110000}'").0, 1, "not a scalar value");
        assert_eq!(err(r"'\u{}'").0, 1);
        assert_eq!(err(r"'\u00e9'").0, 1);
        assert_eq!(err("lower(uid) + x"), (11, "unexpected character '+'".into()));
        let (pos, msg) = err("lower(nâme)");
        assert_eq!(pos, 7, "'n' is a name, 'â' is not");
        assert!(msg.contains("ASCII"), "{msg}");
    }

    // --- parser ----------------------------------------------------------

    #[test]
    fn parses_nested_calls_case_insensitively() {
        let e = parse("Coalesce(displayName, JOIN(' ', givenName, sn))").unwrap();
        assert_eq!(e.source(), "Coalesce(displayName, JOIN(' ', givenName, sn))");
        assert_eq!(
            e.node,
            Node::Call(
                Func::Coalesce,
                vec![
                    Node::Attr("displayName".into()),
                    Node::Call(
                        Func::Join,
                        vec![Node::Lit(" ".into()), Node::Attr("givenName".into()), Node::Attr("sn".into())]
                    ),
                ]
            )
        );
        assert_eq!(parse("  uid  ").unwrap().node, Node::Attr("uid".into()));
        assert_eq!(parse("'lit'").unwrap().node, Node::Lit("lit".into()));
    }

    #[test]
    fn unknown_functions_get_a_suggestion_at_the_name() {
        let (pos, msg) = err("coalesce(displayName, coalese(cn, uid))");
        assert_eq!(pos, 22);
        assert_eq!(msg, "unknown function 'coalese' (did you mean 'coalesce'?)");
        assert_eq!(err("lowr(uid)").1, "unknown function 'lowr' (did you mean 'lower'?)");
        assert_eq!(err("startswith(uid, 'a')").1, "unknown function 'startswith' (did you mean 'starts_with'?)");
        let (_, msg) = err("frobnicate(uid)");
        assert!(msg.starts_with("unknown function 'frobnicate'; known functions: lower, upper"), "{msg}");
    }

    #[test]
    fn wrong_arity_is_reported_at_the_function_name() {
        assert_eq!(err("  lower(uid, cn)"), (2, "lower() takes exactly 1 argument, got 2".into()));
        assert_eq!(err("join(' ')"), (0, "join() takes at least 2 arguments, got 1".into()));
        assert_eq!(err("if(a, b)"), (0, "if() takes exactly 3 arguments, got 2".into()));
        assert_eq!(err("coalesce()"), (0, "coalesce() takes at least 1 argument, got 0".into()));
        assert_eq!(err("replace(a, 'x')").1, "replace() takes exactly 3 arguments, got 2");
    }

    #[test]
    fn syntax_errors_point_at_the_offending_token() {
        assert_eq!(err(""), (0, "empty expression".into()));
        assert_eq!(err("   "), (0, "empty expression".into()));
        assert_eq!(err("lower(uid"), (9, "missing ')' to close 'lower(' opened at position 0".into()));
        assert_eq!(err("lower(uid cn)"), (10, "expected ',' or ')', found 'cn'".into()));
        assert_eq!(err("lower(,)"), (6, "expected an attribute, a string or a function call, found ','".into()));
        assert_eq!(err("join(' ', a,)"), (12, "expected an attribute, a string or a function call, found ')'".into()));
        assert_eq!(err("uid cn"), (4, "unexpected 'cn' after the end of the expression".into()));
        assert_eq!(
            err("uid, cn"),
            (3, "unexpected ',' after the end of the expression (arguments go inside a function call)".into())
        );
        assert_eq!(err("lower(uid))").0, 10);
        assert_eq!(err("(uid)").0, 0);
        assert_eq!(err("lower("), (6, "expected an attribute, a string or a function call, found the end".into()));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}uid{}", "lower(".repeat(1000), ")".repeat(1000));
        assert!(err(&deep).1.contains("nested deeper"));
        let ok = format!("{}uid{}", "lower(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
    }

    // --- evaluator -------------------------------------------------------

    #[test]
    fn attribute_references_are_case_insensitive_and_multi_valued() {
        assert_eq!(ev("UID", JANE), ["JDoe"]);
        assert_eq!(ev("mail", JANE), ["Jane.Doe@Example.com", "jd@example.com"]);
        assert!(ev("missing", JANE).is_empty());
        assert!(ev("empty", JANE).is_empty());
        assert!(ev("blank", JANE).is_empty(), "empty values are dropped");
        assert_eq!(ev("'lit'", JANE), ["lit"]);
        assert_eq!(ev("''", JANE), [""]);
    }

    #[test]
    fn binary_values_are_converted_lossily() {
        let mut p = Packer::new();
        p.attr("objectGUID", &[&[0x41u8, 0xff, 0x42][..]]);
        let buf = p.finish();
        let attrs = Attrs::parse(&buf).unwrap();
        let e = parse("objectGUID").unwrap();
        assert_eq!(e.eval(&attrs), ["A\u{FFFD}B"]);
    }

    #[test]
    fn lower_upper_trim_map_over_every_value_including_non_ascii() {
        assert_eq!(ev("lower(mail)", JANE), ["jane.doe@example.com", "jd@example.com"]);
        assert_eq!(ev("upper(uid)", JANE), ["JDOE"]);
        let people: &[(&str, &[&str])] = &[("sn", &["Müller", "ÉVA", "ΣΟΦΟΣ"]), ("x", &["  a b \t", " "])];
        assert_eq!(ev("lower(sn)", people), ["müller", "éva", "σοφος"]);
        assert_eq!(ev("upper(sn)", people), ["MÜLLER", "ÉVA", "ΣΟΦΟΣ"]);
        assert_eq!(ev("upper('straße')", people), ["STRASSE"]);
        assert_eq!(ev("trim(x)", people), ["a b", ""]);
        assert!(ev("lower(missing)", people).is_empty());
    }

    #[test]
    fn join_skips_empty_values_and_gives_nothing_when_nothing_is_left() {
        assert_eq!(ev("join(' ', givenName, sn)", JANE), ["Jane Doe"]);
        assert_eq!(ev("join(', ', mail, missing, '', uid)", JANE), ["Jane.Doe@Example.com, jd@example.com, JDoe"]);
        assert_eq!(ev("join('', givenName, sn)", JANE), ["JaneDoe"]);
        assert_eq!(ev("join(missing, givenName, sn)", JANE), ["JaneDoe"], "absent separator = ''");
        assert!(ev("join(' ', missing, blank, '')", JANE).is_empty());
    }

    #[test]
    fn coalesce_takes_the_first_non_empty_argument() {
        assert_eq!(ev("coalesce(displayName, join(' ', givenName, sn), cn)", JANE), ["Jane Doe"]);
        assert_eq!(ev("coalesce(missing, blank, mail)", JANE), ["Jane.Doe@Example.com", "jd@example.com"]);
        assert_eq!(ev("coalesce(trim(' '), 'fallback')", JANE), ["fallback"]);
        assert!(ev("coalesce(missing, '')", JANE).is_empty());
    }

    #[test]
    fn first_split_replace_concat() {
        assert_eq!(ev("first(mail)", JANE), ["Jane.Doe@Example.com"]);
        assert!(ev("first(missing)", JANE).is_empty());
        assert_eq!(ev("first(split(' a,,b ', ','))", JANE), [" a"]);
        assert_eq!(ev("split(mail, '@')", JANE), ["Jane.Doe", "Example.com", "jd", "example.com"]);
        assert_eq!(ev("split(lower(cn), ' ')", JANE), ["jane", "doe"]);
        assert_eq!(ev("split('a,,b,', ',')", JANE), ["a", "b"]);
        assert_eq!(ev("split(cn, '')", JANE), ["Jane Doe"]);
        assert_eq!(ev("replace(cn, ' ', '.')", JANE), ["Jane.Doe"]);
        assert_eq!(
            ev("replace(mail, 'example.com', 'corp.example')", JANE),
            ["Jane.Doe@Example.com", "jd@corp.example"]
        );
        assert_eq!(ev("replace(cn, '', 'x')", JANE), ["Jane Doe"]);
        assert_eq!(ev("replace(cn, ' ', missing)", JANE), ["JaneDoe"]);
        assert_eq!(ev("concat(uid, '@', 'example.org')", JANE), ["JDoe@example.org"]);
        assert_eq!(ev("concat(mail, '!')", JANE), ["Jane.Doe@Example.com!"], "first value of each");
        assert_eq!(ev("concat(missing, sn)", JANE), ["Doe"]);
        assert!(ev("concat(missing, empty)", JANE).is_empty());
    }

    #[test]
    fn conditionals_and_predicates() {
        assert_eq!(ev("if(present(mail), 'has mail', 'no mail')", JANE), ["has mail"]);
        assert_eq!(ev("if(missing, 'yes', 'no')", JANE), ["no"]);
        assert_eq!(ev("if('FALSE', 'yes', 'no')", JANE), ["no"]);
        assert_eq!(ev("if('0', 'yes', 'no')", JANE), ["no"]);
        assert_eq!(ev("if('', 'yes', 'no')", JANE), ["no"]);
        assert_eq!(ev("if('no', 'yes', 'no')", JANE), ["yes"], "only '', 'false' and '0' are false");
        assert!(ev("if(uid, missing, 'x')", JANE).is_empty());
        assert_eq!(ev("eq(uid, 'JDoe')", JANE), ["true"]);
        assert_eq!(ev("eq(uid, 'jdoe')", JANE), ["false"], "case-sensitive");
        assert_eq!(ev("eq(lower(uid), 'jdoe')", JANE), ["true"]);
        assert_eq!(ev("eq(mail, 'jd@example.com')", JANE), ["true"], "any value matches");
        assert_eq!(ev("eq(missing, missing)", JANE), ["false"]);
        assert_eq!(ev("not(eq(uid, 'x'))", JANE), ["true"]);
        assert_eq!(ev("not(missing)", JANE), ["true"]);
        assert_eq!(ev("not(not('x'))", JANE), ["true"]);
        assert_eq!(ev("present(blank)", JANE), ["false"]);
        assert_eq!(ev("present(cn)", JANE), ["true"]);
        assert_eq!(ev("contains(mail, '@example.com')", JANE), ["true"]);
        assert_eq!(ev("contains(cn, 'doe')", JANE), ["false"]);
        assert_eq!(ev("contains(missing, '')", JANE), ["false"]);
        assert_eq!(ev("starts_with(cn, 'Jane')", JANE), ["true"]);
        assert_eq!(ev("ends_with(mail, '.com')", JANE), ["true"]);
        assert_eq!(ev("ends_with(cn, 'Jane')", JANE), ["false"]);
        assert_eq!(ev("and(uid, present(mail), 'x')", JANE), ["true"]);
        assert_eq!(ev("and(uid, missing)", JANE), ["false"]);
        assert_eq!(ev("or(missing, 'false', cn)", JANE), ["true"]);
        assert_eq!(ev("or(missing, '0')", JANE), ["false"]);
    }

    #[test]
    fn truthiness() {
        let t = |v: &[&str]| truthy(&v.iter().map(|s| Cow::Borrowed(*s)).collect::<Vec<_>>());
        assert!(!t(&[]));
        assert!(!t(&[""]));
        assert!(!t(&["False"]));
        assert!(!t(&["0", "1"]), "only the first value counts");
        assert!(t(&["true"]));
        assert!(t(&["00"]));
        assert!(t(&["x", ""]));
    }

    #[test]
    fn the_default_rules_parse_and_evaluate() {
        assert_eq!(ev("lower(coalesce(uid, sAMAccountName, userPrincipalName, mail, cn))", JANE), ["jdoe"]);
        let ad: &[(&str, &[&str])] = &[("sAMAccountName", &["ÉVA.Müller"]), ("cn", &["Éva Müller"])];
        assert_eq!(ev("lower(coalesce(uid, sAMAccountName, userPrincipalName, mail, cn))", ad), ["éva.müller"]);
        assert_eq!(ev("coalesce(displayName, join(' ', givenName, sn), cn)", ad), ["Éva Müller"]);
        assert_eq!(ev("lower(first(mail))", JANE), ["jane.doe@example.com"]);
    }
}
