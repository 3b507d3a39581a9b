//! A small JSON reader, enough for criterion's estimates.json (std only, no serde).

/// A JSON value. Numbers are `f64`, as criterion's estimates are.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object: members in order; a key given twice means its last value (as Python's
    /// `json` reads it).
    Object(Vec<(String, Value)>),
}

impl Value {
    /// Member `key` of an object; `None` if this is not an object or has no such member.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }
}

/// Parses a JSON text (one value, whitespace around it).
pub fn parse(text: &str) -> Result<Value, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.error("trailing characters"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.i)
    }

    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ if self.eat("null") => Ok(Value::Null),
            _ if self.eat("true") => Ok(Value::Bool(true)),
            _ if self.eat("false") => Ok(Value::Bool(false)),
            _ => Err(self.error("expected a value")),
        }
    }

    fn object(&mut self) -> Result<Value, String> {
        self.i += 1;
        let mut members = Vec::new();
        self.ws();
        if self.eat("}") {
            return Ok(Value::Object(members));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return Err(self.error("expected a key"));
            }
            let key = self.string()?;
            self.ws();
            if !self.eat(":") {
                return Err(self.error("expected ':'"));
            }
            members.push((key, self.value()?));
            self.ws();
            if self.eat("}") {
                return Ok(Value::Object(members));
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' or '}'"));
            }
        }
    }

    fn array(&mut self) -> Result<Value, String> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat("]") {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.ws();
            if self.eat("]") {
                return Ok(Value::Array(items));
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' or ']'"));
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while !matches!(self.s.get(self.i), None | Some(b'"' | b'\\')) {
                self.i += 1;
            }
            out +=
                std::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.error("not UTF-8"))?;
            match self.s.get(self.i) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                _ => {}
            }
            self.i += 1;
            let c = match self.s.get(self.i) {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\x08',
                Some(b'f') => '\x0c',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    let hex = self
                        .s
                        .get(self.i + 1..self.i + 5)
                        .ok_or_else(|| self.error("short \\u"))?;
                    let hex = std::str::from_utf8(hex).map_err(|_| self.error("bad \\u"))?;
                    let code = u32::from_str_radix(hex, 16).map_err(|_| self.error("bad \\u"))?;
                    self.i += 4;
                    // A lone surrogate (or half a pair) reads as the replacement character.
                    char::from_u32(code).unwrap_or('\u{fffd}')
                }
                _ => return Err(self.error("bad escape")),
            };
            out.push(c);
            self.i += 1;
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.i;
        while matches!(
            self.s.get(self.i),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).expect("ASCII");
        text.parse()
            .map(Value::Number)
            .map_err(|_| self.error("bad number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_estimates() {
        let text = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.5,
            "upper_bound":2.5},"point_estimate":2004.0813,"standard_error":0.25},
            "slope":null,"median":{"point_estimate":2e3}}"#;
        let v = parse(text).unwrap();
        assert_eq!(
            v.get("mean")
                .and_then(|m| m.get("point_estimate"))
                .and_then(Value::as_f64),
            Some(2004.0813)
        );
        assert_eq!(
            v.get("median")
                .and_then(|m| m.get("point_estimate"))
                .and_then(Value::as_f64),
            Some(2000.0)
        );
        assert_eq!(v.get("slope"), Some(&Value::Null));
        assert_eq!(v.get("nothing"), None);
    }

    #[test]
    fn strings_arrays_and_duplicates() {
        let v = parse(r#" {"a": [1, -2.5e-1, true, false, "x\"\u00e9\n"], "a": "last"} "#).unwrap();
        assert_eq!(v.get("a"), Some(&Value::String("last".into())));
        let Value::Object(m) = v else { panic!() };
        assert_eq!(
            m[0].1,
            Value::Array(vec![
                Value::Number(1.0),
                Value::Number(-0.25),
                Value::Bool(true),
                Value::Bool(false),
                Value::String("x\"é\n".into())
            ])
        );
    }

    #[test]
    fn rejects_broken_text() {
        for bad in [
            "",
            "{",
            r#"{"a" 1}"#,
            "[1,]",
            "{} x",
            r#""abc"#,
            "nul",
            "1.2.3",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
