//! Numbers and text as Python printed them, so reports match the Python they replaced.
//!
//! `.2f`, `.3g`, `.0%`, `str.splitlines` and text-mode reads.

/// `format(x, f".{prec}f")`: fixed point, rounded to nearest, ties to even on the exact value.
pub fn fixed(x: f64, prec: usize) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{x:.prec$}")
    }
}

/// `format(x, f".{prec}g")`: `prec` significant digits, fixed point unless the exponent is
/// below -4 or at least `prec`, insignificant zeros removed.
pub fn general(x: f64, prec: usize) -> String {
    if !x.is_finite() {
        return fixed(x, 0);
    }
    let p = prec.max(1);
    let sci = format!("{x:.prec$e}", prec = p - 1);
    let (mantissa, exp) = sci.split_once('e').expect("Rust's {:e} has an exponent");
    let exp: i32 = exp.parse().expect("Rust's {:e} exponent is a number");
    if (-4..p as i32).contains(&exp) {
        strip_fraction_zeros(&fixed(x, (p as i32 - 1 - exp) as usize)).to_string()
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip_fraction_zeros(mantissa), exp.abs())
    }
}

/// `format(x, f".{prec}%")`: `x` times 100, fixed point, and a percent sign.
pub fn percent(x: f64, prec: usize) -> String {
    format!("{}%", fixed(x * 100.0, prec))
}

/// Without the zeros that end a fraction, nor a point left with no digits after it.
fn strip_fraction_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Text as Python's `open(path).read()` gives it: universal newlines (`\r\n` and `\r` become
/// `\n`).
pub fn universal_newlines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// `str.splitlines()`: lines split at any of Python's line boundaries, without them.
pub fn splitlines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let boundary = matches!(
            c,
            '\n' | '\r'
                | '\x0b'
                | '\x0c'
                | '\x1c'
                | '\x1d'
                | '\x1e'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if !boundary {
            continue;
        }
        lines.push(&text[start..i]);
        start = i + c.len_utf8();
        if c == '\r' {
            if let Some(&(j, '\n')) = chars.peek() {
                chars.next();
                start = j + 1;
            }
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rounds_ties_to_even_like_python() {
        assert_eq!(fixed(0.125, 2), "0.12");
        assert_eq!(fixed(0.375, 2), "0.38");
        assert_eq!(fixed(2.5, 0), "2");
        assert_eq!(fixed(291.27777, 2), "291.28");
        assert_eq!(fixed(-0.001, 2), "-0.00");
        assert_eq!(fixed(f64::INFINITY, 1), "inf");
        assert_eq!(fixed(f64::NAN, 1), "nan");
    }

    #[test]
    fn general_switches_to_exponents_as_python_does() {
        assert_eq!(general(1.5, 3), "1.5");
        assert_eq!(general(2.0, 3), "2");
        assert_eq!(general(1.23456, 3), "1.23");
        assert_eq!(general(12.345, 3), "12.3");
        assert_eq!(general(999.5, 3), "1e+03");
        assert_eq!(general(1234.0, 3), "1.23e+03");
        assert_eq!(general(0.0001234, 3), "0.000123");
        assert_eq!(general(0.00001234, 3), "1.23e-05");
        assert_eq!(general(0.0, 3), "0");
        assert_eq!(general(-0.0, 3), "-0");
    }

    #[test]
    fn percent_multiplies_first() {
        assert_eq!(percent(0.125, 0), "12%");
        assert_eq!(percent(0.5, 0), "50%");
        assert_eq!(percent(0.004, 0), "0%");
    }

    #[test]
    fn splitlines_knows_every_boundary() {
        assert_eq!(splitlines("a\nb\r\nc\rd\x0ce"), ["a", "b", "c", "d", "e"]);
        assert_eq!(splitlines("a\n\nb\n"), ["a", "", "b"]);
        assert_eq!(splitlines(""), Vec::<&str>::new());
        assert_eq!(splitlines("x\u{2028}y"), ["x", "y"]);
    }

    #[test]
    fn universal_newlines_is_text_mode() {
        assert_eq!(universal_newlines("a\r\nb\rc\n"), "a\nb\nc\n");
    }
}
