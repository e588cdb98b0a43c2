//! SCIM 2.0 filters (RFC 7644 §3.4.2.2) over JSON resources: `eq ne co sw ew
//! pr gt ge lt le`, `and or not`, parentheses, attribute paths
//! (`name.familyName`, `emails.value`, `urn:…:User:costCenter`) and value
//! paths (`emails[type eq "work" and value co "@x"]`). String comparison is
//! case-insensitive, as for the attributes Roster publishes (caseExact false).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        path: Vec<String>,
        op: Op,
        value: Value,
    },
    Present(Vec<String>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`, then optionally `.sub`: any element of `attr` matching.
    ValuePath {
        path: Vec<String>,
        filter: Box<Filter>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            if let Some(n) = chars.get(i + 1) {
                                v.push(*n);
                            }
                            i += 2;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let start = i;
                while i < chars.len() && !matches!(chars[i], ' ' | '\t' | '\n' | '(' | ')' | '[' | ']' | '"') {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

fn split_path(p: &str) -> Vec<String> {
    // A schema URN prefix ends at the last ':'; the rest is dotted.
    match p.rfind(':') {
        Some(i) => {
            let mut v = vec![p[..i].to_string()];
            v.extend(p[i + 1..].split('.').map(str::to_string));
            v
        }
        None => p.split('.').map(str::to_string).collect(),
    }
}

impl Parser {
    fn peek_word(&self) -> Option<String> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.peek_word().as_deref() == Some("or") {
            self.pos += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.peek_word().as_deref() == Some("and") {
            self.pos += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.peek_word().as_deref() == Some("not") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.toks.get(self.pos) == Some(&Tok::LParen) {
            self.pos += 1;
            let f = self.or()?;
            if self.toks.get(self.pos) != Some(&Tok::RParen) {
                return Err("missing ')'".into());
            }
            self.pos += 1;
            return Ok(f);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Filter, String> {
        let Some(Tok::Word(path)) = self.toks.get(self.pos).cloned() else {
            return Err(format!("expected an attribute path at token {}", self.pos + 1));
        };
        self.pos += 1;
        if self.toks.get(self.pos) == Some(&Tok::LBracket) {
            self.pos += 1;
            let inner = self.or()?;
            if self.toks.get(self.pos) != Some(&Tok::RBracket) {
                return Err("missing ']'".into());
            }
            self.pos += 1;
            return Ok(Filter::ValuePath { path: split_path(&path), filter: Box::new(inner) });
        }
        let op = self.peek_word().ok_or("expected an operator")?;
        self.pos += 1;
        if op == "pr" {
            return Ok(Filter::Present(split_path(&path)));
        }
        let op = match op.as_str() {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "co" => Op::Co,
            "sw" => Op::Sw,
            "ew" => Op::Ew,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            other => return Err(format!("unknown operator '{other}'")),
        };
        let value = match self.toks.get(self.pos).cloned() {
            Some(Tok::Str(s)) => Value::String(s),
            Some(Tok::Word(w)) => match w.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                n => n
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or(format!("bad value '{n}'"))?,
            },
            _ => return Err("expected a value".into()),
        };
        self.pos += 1;
        Ok(Filter::Compare { path: split_path(&path), op, value })
    }
}

pub fn parse(s: &str) -> Result<Filter, String> {
    let mut p = Parser { toks: lex(s)?, pos: 0 };
    let f = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected input at token {}", p.pos + 1));
    }
    Ok(f)
}

/// Values at a path (case-insensitive keys; arrays flatten).
fn values<'a>(v: &'a Value, path: &[String]) -> Vec<&'a Value> {
    let Some((first, rest)) = path.split_first() else { return vec![v] };
    let mut out = Vec::new();
    match v {
        Value::Array(items) => {
            for i in items {
                out.extend(values(i, path));
            }
        }
        Value::Object(m) => {
            if let Some((_, child)) = m.iter().find(|(k, _)| k.eq_ignore_ascii_case(first)) {
                match child {
                    Value::Array(items) => {
                        for i in items {
                            out.extend(values(i, rest));
                        }
                    }
                    c => out.extend(values(c, rest)),
                }
            }
        }
        _ => {}
    }
    out
}

fn compare(have: &Value, op: Op, want: &Value) -> bool {
    match (have, want) {
        (Value::String(h), Value::String(w)) => {
            let (h, w) = (h.to_lowercase(), w.to_lowercase());
            match op {
                Op::Eq => h == w,
                Op::Ne => h != w,
                Op::Co => h.contains(&w),
                Op::Sw => h.starts_with(&w),
                Op::Ew => h.ends_with(&w),
                Op::Gt => h > w,
                Op::Ge => h >= w,
                Op::Lt => h < w,
                Op::Le => h <= w,
            }
        }
        (Value::Number(h), Value::Number(w)) => {
            let (h, w) = (h.as_f64().unwrap_or(0.0), w.as_f64().unwrap_or(0.0));
            match op {
                Op::Eq => h == w,
                Op::Ne => h != w,
                Op::Gt => h > w,
                Op::Ge => h >= w,
                Op::Lt => h < w,
                Op::Le => h <= w,
                _ => false,
            }
        }
        (Value::Bool(h), Value::Bool(w)) => match op {
            Op::Eq => h == w,
            Op::Ne => h != w,
            _ => false,
        },
        _ => op == Op::Ne,
    }
}

pub fn matches(f: &Filter, v: &Value) -> bool {
    match f {
        Filter::And(a, b) => matches(a, v) && matches(b, v),
        Filter::Or(a, b) => matches(a, v) || matches(b, v),
        Filter::Not(a) => !matches(a, v),
        Filter::Present(p) => values(v, p).iter().any(|x| match x {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        }),
        Filter::Compare { path, op, value } => {
            let found = values(v, path);
            if *op == Op::Ne {
                return found.iter().all(|x| compare(x, Op::Ne, value));
            }
            found.iter().any(|x| compare(x, *op, value))
        }
        Filter::ValuePath { path, filter } => {
            let container = &path[..1];
            let sub = &path[1..];
            let Some(items) = values(v, &[])
                .first()
                .and_then(|r| r.as_object())
                .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(&container[0])).map(|(_, x)| x))
            else {
                return false;
            };
            let items: Vec<&Value> = match items {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            items.iter().any(|i| matches(filter, i) && (sub.is_empty() || !values(i, sub).is_empty()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_over_resources() {
        let u = json!({"userName": "Bjensen", "name": {"familyName": "Jensen"}, "active": true,
                       "emails": [{"value": "bj@example.com", "type": "work"}, {"value": "b@home.org", "type": "home"}],
                       "meta": {"lastModified": "2024-05-01T00:00:00Z"},
                       "urn:roster:params:scim:schemas:extension:custom:2.0:User": {"headcount": 12}});
        let t = |f: &str| matches(&parse(f).expect(f), &u);
        assert!(t(r#"userName eq "bjensen""#));
        assert!(t(r#"name.familyName co "ens""#));
        assert!(t(r#"userName sw "B" and active eq true"#));
        assert!(t(r#"emails[type eq "work" and value ew "example.com"]"#));
        assert!(!t(r#"emails[type eq "work" and value ew "home.org"]"#));
        assert!(t(r#"emails.value co "home""#));
        assert!(t(r#"not (userName eq "x") and title pr or name pr"#));
        assert!(t(r#"meta.lastModified gt "2024-01-01T00:00:00Z""#));
        assert!(t(r#"urn:roster:params:scim:schemas:extension:custom:2.0:User:headcount ge 10"#));
        assert!(!t(r#"title pr"#));
        assert!(t(r#"userName ne "someone""#));
        assert!(parse("userName eq").is_err());
        assert!(parse("(userName eq \"a\"").is_err());
    }
}
