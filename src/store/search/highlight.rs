//! Highlight rendering shared by both engines: the engines mark matches with private-use
//! sentinels, and [`render`] turns the text into safe HTML (`&`, `<`, `>` escaped) with the
//! sentinels replaced by `<mark>`…`</mark>`. A message that itself contains `<mark>` therefore
//! shows it escaped, and no message text can inject markup into a search result.

/// Start-of-match sentinel handed to the engines (a private-use character).
pub const PRE: &str = "\u{E000}";
/// End-of-match sentinel.
pub const POST: &str = "\u{E001}";

/// Escapes `text` for HTML and turns the sentinels into `<mark>` tags (unbalanced ones, which
/// only a message typing the sentinel itself could cause, are dropped).
pub fn render(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut open = false;
    for c in text.chars() {
        match c {
            '\u{E000}' if !open => {
                out.push_str("<mark>");
                open = true;
            }
            '\u{E001}' if open => {
                out.push_str("</mark>");
                open = false;
            }
            '\u{E000}' | '\u{E001}' => {}
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            other => out.push(other),
        }
    }
    if open {
        out.push_str("</mark>");
    }
    out
}

/// Marks every case-insensitive occurrence of any of `terms` in `text` with the sentinels
/// (the fallback search, where no engine highlights). Longest term wins at a position.
pub fn mark_terms(text: &str, terms: &[String]) -> String {
    let needles: Vec<Vec<char>> = terms
        .iter()
        .map(|t| fold(t))
        .filter(|t| !t.is_empty())
        .collect();
    let chars: Vec<char> = text.chars().collect();
    let folded: Vec<char> = chars.iter().map(|c| fold_char(*c)).collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let hit = needles
            .iter()
            .filter(|n| folded[i..].starts_with(n))
            .map(Vec::len)
            .max();
        match hit {
            Some(len) => {
                out.push_str(PRE);
                out.extend(&chars[i..i + len]);
                out.push_str(POST);
                i += len;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

/// Lower-cases one character to one character (multi-character lower cases keep the original,
/// so positions in the folded text stay aligned with the original).
fn fold_char(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

fn fold(s: &str) -> Vec<char> {
    s.chars().map(fold_char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_escapes_and_marks() {
        let s = format!("a <b>&{PRE}meeting{POST} x");
        assert_eq!(render(&s), "a &lt;b&gt;&amp;<mark>meeting</mark> x");
        assert_eq!(render("<mark>x</mark>"), "&lt;mark&gt;x&lt;/mark&gt;");
        assert_eq!(render(&format!("{POST}a{PRE}b")), "a<mark>b</mark>");
    }

    #[test]
    fn marks_terms_case_insensitively() {
        let terms = vec!["Meet".to_string(), "世界".to_string()];
        assert_eq!(
            render(&mark_terms("MEETING in 你好世界", &terms)),
            "<mark>MEET</mark>ING in 你好<mark>世界</mark>"
        );
        assert_eq!(
            render(&mark_terms("<script>", &["script".to_string()])),
            "&lt;<mark>script</mark>&gt;"
        );
        assert_eq!(mark_terms("abc", &[]), "abc");
    }
}
