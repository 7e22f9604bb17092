//! The look-alike catalog, generated from pgswarm's own SQL text (issue 23).
//!
//! Every string literal in `src/pg` is read as SQL: each identifier followed by `(` is a function
//! name, every identifier a possible relation or type name, every run of operator characters an
//! operator. `lookalike.sql` then makes, in schema `evil`, a lying look-alike for each one that
//! exists in `pg_catalog` (every overload; polymorphic ones once per common concrete type), as
//! the database's owner would: no superuser needed. A statement added to `src/pg` later is covered
//! without editing this file.

use std::collections::BTreeSet;
use std::path::Path;

/// Names pgswarm's SQL uses, by kind.
#[derive(Debug, Default)]
pub struct SqlWords {
    pub functions: BTreeSet<String>,
    pub words: BTreeSet<String>,
    pub operators: BTreeSet<String>,
}

const OPERATOR_CHARS: &str = "+-*/<>=~!@#%^&|";

/// The string literals (plain and raw) of a Rust source file, comments skipped.
fn string_literals(src: &str) -> Vec<String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            // A char literal such as '"' or '\'' is not the start of a string.
            b'\'' if b.get(i + 2) == Some(&b'\'') => i += 3,
            b'\'' if b.get(i + 1) == Some(&b'\\') && b.get(i + 3) == Some(&b'\'') => i += 4,
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = j + 1;
                let end = src[start..].find(&close).map_or(b.len(), |k| start + k);
                out.push(src[start..end].to_string());
                i = end + close.len();
            }
            b'"' => {
                let mut j = i + 1;
                let mut s = String::new();
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' && j + 1 < b.len() {
                        s.push(' ');
                        j += 2;
                        continue;
                    }
                    s.push(b[j] as char);
                    j += 1;
                }
                out.push(s);
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    out
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src/pg is readable") {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            visit(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

/// Reads every string literal of `src/pg/**/*.rs`.
pub fn sql_words() -> SqlWords {
    let mut files = Vec::new();
    visit(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pg"),
        &mut files,
    );
    let mut w = SqlWords::default();
    for f in files {
        let src = std::fs::read_to_string(&f).expect("source is readable");
        for lit in string_literals(&src) {
            collect(&lit, &mut w);
        }
    }
    w
}

fn collect(text: &str, w: &mut SqlWords) {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_lowercase() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect::<String>().to_lowercase();
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            if chars.get(j) == Some(&'(') {
                w.functions.insert(word.clone());
            }
            w.words.insert(word);
        } else if c.is_ascii_alphabetic() {
            // Upper-case keywords: LIKE is the operator ~~.
            let start = i;
            while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                i += 1;
            }
            if chars[start..i].iter().collect::<String>() == "LIKE" {
                w.operators.insert("~~".into());
                w.operators.insert("!~~".into());
            }
        } else if OPERATOR_CHARS.contains(c) {
            let start = i;
            while i < chars.len() && OPERATOR_CHARS.contains(chars[i]) {
                i += 1;
            }
            w.operators.insert(chars[start..i].iter().collect());
        } else if c.is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    // `a <> b` is also spelled `!=`; `IS DISTINCT FROM`, `IN` and `ANY` use `=`.
    w.operators.insert("=".into());
    w.operators.insert("<>".into());
}

fn array(items: impl IntoIterator<Item = String>) -> String {
    items
        .into_iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",")
        .replace('\'', "''")
}

/// The script that builds schema `evil` in a database (run it as the database's owner).
pub fn lookalike_sql(w: &SqlWords) -> String {
    include_str!("lookalike.sql")
        .replace("@FUNCTIONS@", &array(w.functions.iter().cloned()))
        .replace(
            "@RELATIONS@",
            &array(w.words.iter().filter(|s| s.starts_with("pg_")).cloned()),
        )
        .replace("@TYPES@", &array(w.words.iter().cloned()))
        .replace("@OPERATORS@", &array(w.operators.iter().cloned()))
}
