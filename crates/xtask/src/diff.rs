//! Line differences as `diff` prints them without options (`2c2`, `<`, `---`, `>`).

/// The changes that turn `old` into `new`, as `diff old new` prints them; empty if equal.
/// Lines end at `\n` only (a `\r` before it is part of the line, as for `diff`).
pub fn normal(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
            continue;
        }
        // A hunk: everything up to the next line both keep.
        let (i0, j0) = (i, j);
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i] == b[j] && lcs[i][j] == lcs[i + 1][j + 1] + 1 {
                break;
            }
            if j == b.len() || (i < a.len() && lcs[i + 1][j] >= lcs[i][j + 1]) {
                i += 1;
            } else {
                j += 1;
            }
        }
        out += &hunk(&a[i0..i], &b[j0..j], i0, j0);
    }
    out
}

/// One hunk: lines `a` (from line `i0` + 1 of the old text) replaced by `b` (from `j0` + 1).
fn hunk(a: &[&str], b: &[&str], i0: usize, j0: usize) -> String {
    let range = |start: usize, len: usize| {
        if len <= 1 {
            format!("{}", start + len.max(1))
        } else {
            format!("{},{}", start + 1, start + len)
        }
    };
    let mut out = match (a.is_empty(), b.is_empty()) {
        (true, _) => format!("{}a{}\n", i0, range(j0, b.len())),
        (_, true) => format!("{}d{}\n", range(i0, a.len()), j0),
        _ => format!("{}c{}\n", range(i0, a.len()), range(j0, b.len())),
    };
    for line in a {
        out += &format!("< {}", with_newline(line));
    }
    if !a.is_empty() && !b.is_empty() {
        out += "---\n";
    }
    for line in b {
        out += &format!("> {}", with_newline(line));
    }
    out
}

/// A line as `diff` prints it: with its newline, or a note that the file has none.
fn with_newline(line: &str) -> String {
    if line.ends_with('\n') {
        line.to_string()
    } else {
        format!("{line}\n\\ No newline at end of file\n")
    }
}

#[cfg(test)]
mod tests {
    use super::normal;

    #[test]
    fn equal_texts_have_no_hunks() {
        assert_eq!(normal("a\nb\n", "a\nb\n"), "");
    }

    #[test]
    fn change_add_delete() {
        assert_eq!(normal("a\nb\nc\n", "a\nx\nc\n"), "2c2\n< b\n---\n> x\n");
        assert_eq!(
            normal("a\nb\nc\nd\n", "a\nx\ny\nd\n"),
            "2,3c2,3\n< b\n< c\n---\n> x\n> y\n"
        );
        assert_eq!(normal("a\nc\n", "a\nb\nc\n"), "1a2\n> b\n");
        assert_eq!(normal("a\nb\nc\n", "a\nc\n"), "2d1\n< b\n");
        assert_eq!(normal("", "a\nb\n"), "0a1,2\n> a\n> b\n");
        assert_eq!(normal("a\nb\n", ""), "1,2d0\n< a\n< b\n");
    }

    #[test]
    fn carriage_returns_and_last_lines_without_newline() {
        assert_eq!(
            normal("a\r\nb\r\n", "a\r\nc\r\n"),
            "2c2\n< b\r\n---\n> c\r\n"
        );
        assert_eq!(
            normal("a\nb", "a\nb\n"),
            "2c2\n< b\n\\ No newline at end of file\n---\n> b\n"
        );
    }
}
