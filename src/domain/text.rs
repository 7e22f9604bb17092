//! Text that reaches a person: one sanitiser for everything printed to a terminal or a text file, and
//! one redaction for everything that might echo a connection string or a configuration line.
//!
//! **Sanitising.** Any database user can put bytes into what pgswarm prints: query text, an
//! `application_name` (PostgreSQL 16+ keeps non-ASCII as `\xNN`, older servers as `?`, but proxies and
//! other servers may not), quoted identifiers (`CREATE TABLE "a␛]0;pwned␇"`), error messages that quote
//! them. Printed raw, an escape sequence can retitle, clear or rewrite the terminal of whoever runs
//! `pgswarm snapshot`, and a bidirectional override can make a line read differently from what it
//! says. [`is_unsafe`] is the one rule (C0 controls including newline, DEL, C1 controls, and the bidi
//! overrides, embeddings, isolates and marks); [`sanitize`] turns each such character into a visible
//! escape (`\x1b`, `\u{202e}`) for text output, and the dashboard replaces it in each drawn cell. JSON
//! keeps the raw value (escaped by JSON itself): a script gets exactly what the server said.
//!
//! **Redacting.** Connection strings carry passwords (`postgres://u:secret@h/db`, `password=secret`),
//! and a malformed entry still does. Error messages quote the bad value, so [`redact`] masks every
//! password-like part of the inputs an error came from, wherever it reappears in the message, also in
//! the `{:?}` form. It is lenient on purpose: it must find the secret in input that did not parse.

use std::borrow::Cow;

/// Characters that must never reach a terminal as they are.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() // C0 (including \n, \r, \t), DEL, C1
        || matches!(c,
            '\u{061C}'              // Arabic letter mark
            | '\u{200E}' | '\u{200F}' // left-to-right / right-to-left mark
            | '\u{202A}'..='\u{202E}' // embeddings and overrides
            | '\u{2066}'..='\u{2069}' // isolates
        )
}

/// The text with every unsafe character replaced by a visible escape: `\n`, `\t`, `\r`, `\x1b`,
/// `\u{202e}`. Borrowed when nothing needed replacing (the common case costs no allocation).
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`sanitize`] for output that is made of lines: every line is sanitised, the newlines between them
/// stay. Use it on a whole rendered report as the last step; fields that may themselves contain a
/// newline are sanitised one by one before, so that no field can forge a line.
pub fn sanitize_lines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&sanitize(line));
    }
    Cow::Owned(out)
}

fn push_escape(out: &mut String, c: char) {
    use std::fmt::Write;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// What a redacted secret is shown as.
pub const MASK: &str = "****";

/// A password, or a part of one, to mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub text: String,
    /// The whole value as written: masked wherever it appears. A part is masked only where it is not
    /// inside a longer word (the part `pass` of `my pass` must not mask the word `password`).
    pub whole: bool,
}

/// The password-like parts of a connection string or configuration text, found leniently (the input
/// may be malformed). First the regions that may hold a password: the password of every
/// `scheme://user:password@` (read up to the host's `@` three ways: within the authority, within the
/// whitespace-delimited token, within the line), and the value of every `password=` (quoted: up to the
/// closing quote or the line's end; unquoted: up to the next `identifier=` word on the line, since a bad
/// line may hold a password with a space). Then, because a parser may echo any part of a value it
/// split, every prefix, suffix and piece of a region cut at whitespace or a character URL and
/// `key=value` grammars split on, of 4 characters or more, and the first piece whatever its length.
pub fn secret_candidates(text: &str) -> Vec<Secret> {
    let mut regions: Vec<&str> = Vec::new();
    url_passwords(text, &mut regions);
    keyword_passwords(text, &mut regions);
    let mut found: Vec<Secret> = Vec::new();
    let mut add = |s: &str, whole: bool| {
        let s = s.trim_matches(|c: char| c == '"' || c == '\'' || c.is_whitespace());
        match found.iter_mut().find(|f| f.text == s) {
            Some(f) => f.whole |= whole,
            None if !s.is_empty() => found.push(Secret {
                text: s.to_string(),
                whole,
            }),
            None => {}
        }
    };
    // Where a parser may cut a value: whitespace and the characters URL and key=value grammars split on.
    let cut = |c: char| c.is_whitespace() || "&,;:@/?#=[]".contains(c);
    for region in regions {
        add(region, true);
        let mut push = |s: &str| add(s, false);
        let mut piece_start = 0;
        for (p, c) in region.char_indices().filter(|&(_, c)| cut(c)) {
            for part in [
                &region[..p],
                &region[p + c.len_utf8()..],
                &region[piece_start..p],
            ] {
                if part.trim().chars().count() >= 4 {
                    push(part);
                }
            }
            piece_start = p + c.len_utf8();
        }
        if region[piece_start..].trim().chars().count() >= 4 {
            push(&region[piece_start..]);
        }
        // A grammar that splits on one character only (a URL query on '&') echoes what lies between
        // two of those, other cut characters included.
        let mut kinds: Vec<char> = region.chars().filter(|&c| cut(c)).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for k in kinds {
            for part in region.split(k) {
                if part.trim().chars().count() >= 4 {
                    push(part);
                }
            }
        }
        // A parser that stops at the first cut keeps only this much: mask it however short.
        if let Some(first) = region.split(cut).next() {
            push(first);
        }
    }
    found
}

fn url_passwords<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let after = &rest[i + 3..];
        let line = &after[..after.find('\n').unwrap_or(after.len())];
        let token = &line[..line
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\''))
            .unwrap_or(line.len())];
        let authority = &token[..token.find(['/', '?', '#']).unwrap_or(token.len())];
        for part in [authority, token, line] {
            match part.rfind('@') {
                Some(at) => {
                    if let Some((_, password)) = part[..at].split_once(':') {
                        out.push(password);
                    }
                }
                // No '@' at all: a malformed URL may still be user:password and nothing else.
                None if part.len() == authority.len() => {
                    if let Some((_, password)) = part.split_once(':') {
                        if !password.chars().all(|c| c.is_ascii_digit() || c == ',') {
                            out.push(password);
                        }
                    }
                }
                None => {}
            }
        }
        rest = &after[token.len()..];
    }
}

fn keyword_passwords<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password") {
        let start = from + i + "password".len();
        from = start;
        let Some(value) = text[start..].trim_start().strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let line = &value[..value.find('\n').unwrap_or(value.len())];
        match line.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let inner = &line[1..];
                let mut end = inner.len();
                let mut escaped = false;
                for (j, c) in inner.char_indices() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == q {
                        end = j;
                        break;
                    }
                }
                out.push(&inner[..end]);
            }
            _ => {
                let mut run_end = 0;
                let next_key = |w: &str| {
                    w.split_once('=').is_some_and(|(k, _)| {
                        k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
                };
                for word in line.split_whitespace() {
                    if run_end > 0 && next_key(word) {
                        break;
                    }
                    run_end = word.as_ptr() as usize - line.as_ptr() as usize + word.len();
                }
                let run = &line[..run_end];
                // A TOML or JSON string around the entry ends the value at its closing quote.
                out.push(&run[..run.find(['"', '\'']).unwrap_or(run.len())]);
            }
        }
    }
}

/// `message` with every secret of every `input` masked, in its plain form and in the forms `{:?}`
/// and percent-decoding would give it.
pub fn redact(message: &str, inputs: &[&str]) -> String {
    let mut secrets: Vec<Secret> = Vec::new();
    for input in inputs {
        for s in secret_candidates(input) {
            let debug = format!("{:?}", s.text);
            let debug = debug[1..debug.len() - 1].to_string();
            let decoded = percent_encoding::percent_decode_str(&s.text)
                .decode_utf8_lossy()
                .into_owned();
            for form in [s.text.clone(), debug, decoded] {
                match secrets.iter_mut().find(|x| x.text == form) {
                    Some(x) => x.whole |= s.whole,
                    None if !form.is_empty() => secrets.push(Secret {
                        text: form,
                        whole: s.whole,
                    }),
                    None => {}
                }
            }
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.text.len()));
    let mut out = message.to_string();
    for s in &secrets {
        out = mask(&out, s);
    }
    out
}

fn mask(text: &str, s: &Secret) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev: Option<char> = None;
    while let Some(i) = rest.find(s.text.as_str()) {
        let before = rest[..i].chars().next_back().or(prev);
        let after = rest[i + s.text.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        let inside_a_word = word(before) || word(after);
        out.push_str(&rest[..i]);
        if s.whole || !inside_a_word || s.text.chars().count() >= 8 {
            out.push_str(MASK);
        } else {
            out.push_str(&s.text);
        }
        prev = s.text.chars().next_back();
        rest = &rest[i + s.text.len()..];
    }
    out.push_str(rest);
    out
}

/// A connection string as it may be shown: its secrets masked.
pub fn redact_conninfo(conninfo: &str) -> String {
    redact(conninfo, &[conninfo])
}

/// A name from the catalog as SQL would write it: bare when it is a plain lower-case identifier,
/// else double-quoted with inner quotes doubled. A relation named `t · queued behind it` then reads
/// as one quoted name, never as more of the sentence around it.
pub fn display_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn odd_identifiers_are_quoted_plain_ones_are_not() {
        use super::display_ident;
        assert_eq!(display_ident("orders"), "orders");
        assert_eq!(display_ident("test_p1t1r1_gw0"), "test_p1t1r1_gw0");
        assert_eq!(
            display_ident("t · queued behind it"),
            "\"t · queued behind it\""
        );
        assert_eq!(display_ident("Orders"), "\"Orders\"");
        assert_eq!(display_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(display_ident(""), "\"\"");
        assert_eq!(display_ident("1t"), "\"1t\"");
    }

    use super::*;

    #[test]
    fn sanitize_escapes_what_could_drive_a_terminal() {
        assert!(matches!(sanitize("plain text ü €"), Cow::Borrowed(_)));
        assert_eq!(sanitize("a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(sanitize("line\nforged"), "line\\nforged");
        assert_eq!(sanitize("x\u{9b}31m"), "x\\x9b31m", "C1 CSI");
        assert_eq!(sanitize("del\u{7f}"), "del\\x7f");
        assert_eq!(sanitize("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(sanitize("\u{2066}iso\u{2069}"), "\\u{2066}iso\\u{2069}");
        assert_eq!(sanitize_lines("one\ntwo\x1b[2J"), "one\ntwo\\x1b[2J");
        assert!(matches!(sanitize_lines("one\ntwo"), Cow::Borrowed(_)));
    }

    #[test]
    fn secrets_are_found_in_well_formed_and_broken_input() {
        let cases: &[(&str, &str)] = &[
            ("postgres://app:s3cr3t@db1/x", "s3cr3t"),
            ("postgres://app:s3cr3t@db1:99999/x", "s3cr3t"),
            ("postgresql://app:p%40ss@[::1/x", "p%40ss"),
            ("postgres://app:odd@pass@db1/x", "odd@pass"),
            ("postgres://app:nohost", "nohost"),
            ("host=db1 password=s3cr3t port=x", "s3cr3t"),
            ("host=db1 password = 's3 cr3t' sslmode=bogus", "s3 cr3t"),
            (
                "host=db1 password='unterminated s3cr3t",
                "unterminated s3cr3t",
            ),
            ("postgres://db1/x?password=s3cr3t&sslmode=nope", "s3cr3t"),
            ("url = \"host=db1 PASSWORD=s3cr3t\"", "s3cr3t"),
        ];
        for (input, secret) in cases {
            let found = secret_candidates(input);
            assert!(
                found.iter().any(|f| f.text == *secret),
                "{input}: {found:?}"
            );
            let msg = format!("bad entry {input:?}: {input}");
            let red = redact(&msg, &[input]);
            assert!(!red.contains(secret), "{red}");
        }
        // Ports and plain hosts are not secrets.
        assert!(secret_candidates("postgres://db1:5432/x").is_empty());
        assert!(secret_candidates("host=db1 port=5432").is_empty());
    }
}
