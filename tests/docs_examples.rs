//! What a newcomer copies must work: every `pgswarm …` example in the README and docs/ parses with
//! the real argument parser, every relative link points at a file in the repository, and `--help`
//! at 80 columns (or in a pipe) never splits an example.

use clap::Parser;
use pgswarm::cmd::cli::Cli;
use std::path::{Path, PathBuf};
use std::process::Command;

const SUBCOMMANDS: &[&str] = &[
    "",
    "watch",
    "snapshot",
    "sweep",
    "demo",
    "record",
    "incidents",
    "cancel",
    "terminate",
];

fn docs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    files.extend(more);
    files
}

/// Splits a shell line into words (single and double quotes, backslash escapes); stops at a
/// pipe, a redirection, `&&`, `;` or a comment.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                    cur.push(d);
                }
            }
            '"' => {
                in_word = true;
                while let Some(d) = chars.next() {
                    match d {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        _ => cur.push(d),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            '|' | '>' | '<' | ';' | '&' | '#' if !in_word || c != '#' => break,
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// The `pgswarm …` commands in a Markdown file's code blocks: every line of a `sh` block, and the
/// `$ ` lines of other blocks (the rest of those is output). Continuation lines are joined;
/// environment assignments and `cargo run --release --` are dropped.
fn examples(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<bool> = None; // Some(shell?) inside a code block
    let mut pending = String::new();
    for line in text.lines() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(matches!(lang.trim(), "sh" | "bash" | "shell")),
            };
            pending.clear();
            continue;
        }
        let Some(shell) = block else {
            continue;
        };
        let line = line.trim();
        if !shell && pending.is_empty() && !line.starts_with("$ ") {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        let full = format!("{pending}{line}");
        pending.clear();
        let full = full.trim_start_matches("$ ").trim();
        let full = full
            .strip_prefix("cargo run --release -- ")
            .map(|rest| format!("pgswarm {rest}"))
            .unwrap_or_else(|| full.to_string());
        let ws = words(&full);
        let start = ws
            .iter()
            .position(|w| !w.contains('=') || w.starts_with('-'));
        if let Some(i) = start.filter(|&i| ws[i] == "pgswarm") {
            out.push(ws[i..].join("\u{1f}"));
        }
    }
    out
}

#[test]
fn every_pgswarm_example_in_the_readme_and_docs_parses() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for file in docs() {
        let text = std::fs::read_to_string(&file).unwrap();
        for ex in examples(&text) {
            let args: Vec<&str> = ex.split('\u{1f}').collect();
            checked += 1;
            if let Err(e) = Cli::try_parse_from(&args) {
                if e.kind() != clap::error::ErrorKind::DisplayHelp
                    && e.kind() != clap::error::ErrorKind::DisplayVersion
                {
                    bad.push(format!("{}: {}\n{e}", file.display(), args.join(" ")));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "examples that do not parse:\n{}",
        bad.join("\n")
    );
    assert!(
        checked >= 15,
        "found only {checked} examples: is the extraction broken?"
    );
}

#[test]
fn the_example_extractor_finds_commands_and_skips_the_rest() {
    let md = "text\n```sh\n$ pgswarm snapshot --json | jq .x   # comment\nPGSWARM_DB='a b' \\\n  pgswarm sweep --dry-run\ncargo test\n```\n`pgswarm not-in-code`\n";
    let ex = examples(md);
    assert_eq!(
        ex,
        vec![
            "pgswarm\u{1f}snapshot\u{1f}--json".to_string(),
            "pgswarm\u{1f}sweep\u{1f}--dry-run".to_string()
        ]
    );
}

#[test]
fn relative_links_point_at_files_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut bad = Vec::new();
    for file in docs() {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split('#').next().unwrap_or("");
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let path = dir.join(target);
            let inside = path
                .canonicalize()
                .map(|p| p.starts_with(root.canonicalize().unwrap()))
                .unwrap_or(false);
            if !inside {
                bad.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "links to missing or outside files:\n{}",
        bad.join("\n")
    );
}

fn help(sub: &str, columns: Option<&str>) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgswarm"));
    if !sub.is_empty() {
        c.arg(sub);
    }
    c.arg("--help");
    match columns {
        Some(w) => c.env("COLUMNS", w),
        None => c.env_remove("COLUMNS"),
    };
    let out = c.output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The lines of the `Examples:` block.
fn example_block(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Examples:"))
        .take_while(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn help_at_80_columns_and_in_a_pipe_splits_no_example() {
    for sub in SUBCOMMANDS {
        let wide = example_block(&help(sub, Some("300")));
        if *sub != "watch" && *sub != "demo" && *sub != "record" {
            assert!(!wide.is_empty(), "`pgswarm {sub} --help` has examples");
        }
        for columns in [Some("80"), None] {
            let got = example_block(&help(sub, columns));
            assert_eq!(got, wide, "`pgswarm {sub} --help` at {columns:?} columns");
        }
        for line in help(sub, Some("80")).lines() {
            assert!(
                line.chars().count() <= 80,
                "`pgswarm {sub} --help` at 80 columns: {line:?}"
            );
        }
    }
}
