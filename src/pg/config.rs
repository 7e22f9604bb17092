//! Which databases to watch and with what settings: flags beat environment beat config file.
//!
//! A database entry is `[NAME=]CONNINFO`. CONNINFO is a `postgres://`/`postgresql://` URL or a libpq
//! `key=value` string. The entry has a NAME exactly when the text before its first `=` is *not* a libpq
//! connection keyword: `platform=postgres://h/db` and `platform=host=/tmp dbname=db` are named
//! `platform`; `host=/tmp dbname=db` and `postgres://h/db` are unnamed and take the database name. A
//! bare word (`--db app_test`) is a database name on the default server, as with `psql app_test`.
//!
//! Every error names the bad value and says how to fix it, with any password in it masked (see
//! `domain::text::redact`); nothing here panics on any input.

use crate::domain::naming::validate_prefix;
use crate::domain::snapshot::Convention;
use crate::domain::text::redact;
use crate::pg::connect::SessionSettings;
use crate::pg::conninfo::{
    is_keyword, is_url, parse_conninfo, parse_timeout, resolve_target, Environment,
};
use crate::pg::probe::DbTarget;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub app_prefix: Option<String>,
    pub schema_prefix: Option<String>,
    /// Schemas every run shares, where a test session's writes are public writes (default
    /// `["public"]`).
    pub shared_schemas: Option<Vec<String>>,
    pub connect_timeout: Option<String>,
    pub read_only: Option<bool>,
    #[serde(default)]
    pub databases: Vec<FileDatabase>,
    /// `[[sqlite]] path = "..."`: SQLite test databases (paths or globs).
    #[serde(default)]
    pub sqlite: Vec<FileSqlite>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSqlite {
    pub path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDatabase {
    pub name: Option<String>,
    pub url: String,
}

/// Settings given on the command line or in the environment (already merged by clap: flag over env).
#[derive(Debug, Default, Clone)]
pub struct CliSettings {
    pub db: Vec<String>,
    pub sqlite: Vec<String>,
    pub env_db: Option<String>,
    pub config: Option<PathBuf>,
    pub app_prefix: Option<String>,
    pub schema_prefix: Option<String>,
    /// `--shared-schema` (repeatable); empty: the config file's, else `public`.
    pub shared_schemas: Vec<String>,
    pub connect_timeout: Option<String>,
    pub read_only: bool,
}

/// Everything a command needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub databases: Vec<DbTarget>,
    pub convention: Convention,
    pub session: SessionSettings,
    pub read_only: bool,
    /// Where read-only mode came from (`--read-only`, or the config file), for the messages that
    /// say why something is disabled.
    pub read_only_source: Option<String>,
    /// No database was configured (`--db`, `PGSWARM_DB`, `--config`): the one database is libpq's
    /// default, and a failure to reach it should say how to configure pgswarm.
    pub nothing_configured: bool,
    /// SQLite test databases (paths or globs): `--sqlite`, else `[[sqlite]]` in the config file.
    pub sqlite: Vec<String>,
}

impl Settings {
    /// `read-only mode (from --read-only)`, for refusals.
    pub fn read_only_reason(&self) -> String {
        read_only_reason(self.read_only_source.as_deref())
    }
}

/// `read-only mode (from read_only = true in pgswarm.toml)`: what disabled an action, in words.
pub fn read_only_reason(source: Option<&str>) -> String {
    format!("read-only mode (from {})", source.unwrap_or("--read-only"))
}

/// Parses a duration: `5s`, `500ms`, `2m`, `1h 30m`, or a bare number of seconds.
pub fn parse_duration(what: &str, s: &str) -> Result<Duration, ConfigError> {
    let t = s.trim();
    let d = if let Ok(secs) = t.parse::<f64>() {
        (0.0..1e9)
            .contains(&secs)
            .then(|| Duration::from_secs_f64(secs))
    } else {
        humantime::parse_duration(t).ok()
    };
    d.ok_or_else(|| {
        ConfigError(format!(
            "invalid {what} {s:?}: use a duration such as 5s, 500ms or 2m"
        ))
    })
}

/// The config file read when neither `--config` nor `PGSWARM_CONFIG` names one:
/// `$XDG_CONFIG_HOME/pgswarm/config.toml`, else `~/.config/pgswarm/config.toml`, only if something
/// is there. A missing file is no configuration; one that exists is read like `--config` (an invalid
/// one is an error naming it).
pub fn default_config_file(env: &dyn Environment) -> Option<PathBuf> {
    let base = env
        .var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        // The XDG spec ignores a relative path.
        .filter(|p| p.is_absolute())
        .or_else(|| env.home().map(|h| h.join(".config")))?;
    let path = base.join("pgswarm").join("config.toml");
    std::fs::symlink_metadata(&path).is_ok().then_some(path)
}

/// Splits `[NAME=]CONNINFO` into its name (if any) and connection string.
pub fn split_entry(entry: &str) -> (Option<&str>, &str) {
    let entry = entry.trim();
    if is_url(entry) {
        return (None, entry);
    }
    match entry.split_once('=') {
        Some((head, rest)) if !is_keyword(head.trim()) && !head.contains(char::is_whitespace) => {
            (Some(head), rest)
        }
        _ => (None, entry),
    }
}

/// How `PGSWARM_DB` entries are quoted, for error messages and `--help`.
pub const ENV_DB_QUOTING: &str = "in PGSWARM_DB, unquoted whitespace separates entries: quote an \
     entry (or a NAME=value's value) that contains spaces in single or double quotes, e.g. \
     PGSWARM_DB=\"platform='host=/tmp port=5432 dbname=p' tenant=postgres://db2/t\"";

/// Splits `PGSWARM_DB` into entries, as a shell splits words:
///
/// - unquoted whitespace separates entries (runs of it count once; empty entries are ignored);
/// - `'...'` keeps everything up to the next `'` as it is;
/// - `"..."` keeps everything up to the next unescaped `"`; inside, `\"` and `\\` stand for `"`
///   and `\` (any other backslash is kept);
/// - quoted and unquoted parts of one entry join (`platform='host=/tmp port=5'` is one entry);
/// - outside quotes a backslash is an ordinary character.
///
/// [`quote_env_entry`] is its inverse.
pub fn split_env_entries(s: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => cur.push(c),
                    None => return Err(unterminated(s, '\'')),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => cur.push(c),
                        Some(c) => {
                            cur.push('\\');
                            cur.push(c);
                        }
                        None => return Err(unterminated(s, '"')),
                    },
                    Some(c) => cur.push(c),
                    None => return Err(unterminated(s, '"')),
                }
            },
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn unterminated(s: &str, quote: char) -> ConfigError {
    let name = if quote == '"' { "double" } else { "single" };
    ConfigError(format!(
        "PGSWARM_DB has an unterminated {name} quote: {s:?}; {ENV_DB_QUOTING}"
    ))
}

/// Quotes one entry so that [`split_env_entries`] gives it back: as it is when it needs no
/// quoting, else in single quotes, else (it contains a `'`) in double quotes with `"` and `\`
/// escaped.
pub fn quote_env_entry(entry: &str) -> String {
    let plain = !entry.is_empty()
        && !entry
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '\'' | '"'));
    if plain {
        entry.to_string()
    } else if !entry.contains('\'') {
        format!("'{entry}'")
    } else {
        let mut q = String::from('"');
        for c in entry.chars() {
            if matches!(c, '"' | '\\') {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Turns one entry into a target; `source` says where it came from for the error message.
pub fn build_target(
    name: Option<&str>,
    conninfo: &str,
    source: &str,
    env: &dyn Environment,
) -> Result<DbTarget, ConfigError> {
    let conninfo = conninfo.trim();
    let looks_bare = !is_url(conninfo)
        && !conninfo.contains('=')
        && !conninfo.is_empty()
        && !conninfo.contains(char::is_whitespace);
    let raw = if looks_bare {
        // `--db app_test`: a database name on the default server, as `psql app_test` does.
        let mut m = std::collections::BTreeMap::new();
        m.insert("dbname".to_string(), conninfo.to_string());
        m
    } else {
        parse_conninfo(conninfo).map_err(|e| ConfigError(format!("{source}: {e}")))?
    };
    let target = resolve_target(&raw, env).map_err(|e| ConfigError(format!("{source}: {e}")))?;
    let name = match name {
        Some(n) if valid_name(n) => n.to_string(),
        Some(n) => {
            return Err(ConfigError(format!(
                "{source}: invalid database name {n:?}: use letters, digits, '_', '-' or '.'"
            )))
        }
        None => target.dbname.clone(),
    };
    Ok(DbTarget { name, target })
}

/// Parses the config file's text. A TOML error names the line and column and says what is wrong,
/// but never quotes the line itself: it may hold a password.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
                format!(" at line {line}, column {column}")
            })
            .unwrap_or_default();
        ConfigError(format!(
            "config file {}{at}: {}",
            path.display(),
            e.message().trim()
        ))
    })
}

/// Resolves the settings: flags > environment > config file > libpq environment. Every error is
/// redacted: no password from `--db`, `PGSWARM_DB` or the config file appears in it.
pub fn resolve_settings(cli: &CliSettings, env: &dyn Environment) -> Result<Settings, ConfigError> {
    resolve_redacted(cli, env, true)
}

/// The settings of a command that touches no configured database (a replay, the demo on its own
/// server): the convention and the safety switch, and no database, not even from the libpq
/// environment.
pub fn resolve_offline(cli: &CliSettings) -> Result<Settings, ConfigError> {
    resolve_redacted(cli, &crate::pg::conninfo::ProcessEnv, false)
}

fn resolve_redacted(
    cli: &CliSettings,
    env: &dyn Environment,
    with_databases: bool,
) -> Result<Settings, ConfigError> {
    let text =
        match &cli.config {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                ConfigError(format!("cannot read config file {}: {e}", p.display()))
            })?),
            None => None,
        };
    resolve(cli, text.as_deref(), env, with_databases).map_err(|e| {
        let mut inputs: Vec<&str> = cli.db.iter().map(String::as_str).collect();
        inputs.extend(cli.env_db.as_deref());
        inputs.extend(text.as_deref());
        ConfigError(redact(&e.0, &inputs))
    })
}

fn resolve(
    cli: &CliSettings,
    text: Option<&str>,
    env: &dyn Environment,
    with_databases: bool,
) -> Result<Settings, ConfigError> {
    let file = match (&cli.config, text) {
        (Some(p), Some(t)) => parse_file(p, t)?,
        _ => FileConfig::default(),
    };
    let sqlite: Vec<String> = if cli.sqlite.is_empty() {
        file.sqlite.iter().map(|s| s.path.clone()).collect()
    } else {
        cli.sqlite.clone()
    };
    if let Some(empty) = sqlite.iter().find(|p| p.trim().is_empty()) {
        return Err(ConfigError(format!(
            "SQLite path {empty:?} is empty: give a file path or a glob (--sqlite PATH)"
        )));
    }
    let no_postgres = cli.db.is_empty()
        && cli.env_db.as_deref().is_none_or(|s| s.trim().is_empty())
        && file.databases.is_empty();
    // SQLite targets on their own are a configuration: no PostgreSQL default is tried.
    let nothing_configured = with_databases && no_postgres && sqlite.is_empty();
    let sqlite_only = no_postgres && !sqlite.is_empty();
    let databases = if with_databases && !sqlite_only {
        resolve_databases(cli, &file, env)?
    } else {
        Vec::new()
    };
    let mut settings = finish(cli, file, databases, env, nothing_configured)?;
    settings.sqlite = sqlite;
    Ok(settings)
}

fn resolve_databases(
    cli: &CliSettings,
    file: &FileConfig,
    env: &dyn Environment,
) -> Result<Vec<DbTarget>, ConfigError> {
    let file_label = |i: usize| {
        format!(
            "config file {} databases[{i}]",
            cli.config.as_deref().unwrap_or(Path::new("?")).display()
        )
    };
    let mut databases = Vec::new();
    if !cli.db.is_empty() {
        for entry in &cli.db {
            let (name, conninfo) = split_entry(entry);
            databases.push(build_target(
                name,
                conninfo,
                &format!("--db {entry:?}"),
                env,
            )?);
        }
    } else if let Some(v) = cli.env_db.as_deref().filter(|v| !v.trim().is_empty()) {
        for entry in split_env_entries(v)? {
            let (name, conninfo) = split_entry(&entry);
            let source = format!("PGSWARM_DB entry {entry:?}");
            let target = build_target(name, conninfo, &source, env)
                .map_err(|e| ConfigError(format!("{}; {ENV_DB_QUOTING}", e.0)))?;
            databases.push(target);
        }
    } else if !file.databases.is_empty() {
        for (i, d) in file.databases.iter().enumerate() {
            databases.push(build_target(
                d.name.as_deref(),
                &d.url,
                &file_label(i),
                env,
            )?);
        }
    } else {
        // No database configured at all: one from the libpq environment, as psql would connect.
        databases.push(build_target(
            None,
            "",
            "the libpq environment (PGHOST, PGDATABASE, ...)",
            env,
        )?);
    }
    let from_env = cli.db.is_empty() && cli.env_db.as_deref().is_some_and(|v| !v.trim().is_empty());
    let mut seen = std::collections::BTreeSet::new();
    for d in &databases {
        if !seen.insert(d.name.as_str()) {
            // Two unnamed halves of one split key=value entry land here: say how to quote.
            let hint = if from_env {
                format!("; {ENV_DB_QUOTING}")
            } else {
                String::new()
            };
            return Err(ConfigError(format!(
                "database name {:?} is configured twice: give each entry its own NAME \
                 (--db NAME=CONNINFO){hint}",
                d.name
            )));
        }
    }
    Ok(databases)
}

/// `--shared-schema` over `shared_schemas` in the config file over `public`; each checked.
fn shared_schemas(
    cli: &CliSettings,
    file: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    let (list, source) = if !cli.shared_schemas.is_empty() {
        (cli.shared_schemas.clone(), "--shared-schema")
    } else if let Some(list) = file {
        (list, "shared_schemas in the config file")
    } else {
        return Ok(vec![
            crate::domain::public_write::DEFAULT_SHARED_SCHEMA.to_string()
        ]);
    };
    for name in &list {
        crate::domain::public_write::validate_shared_schema(name)
            .map_err(|e| ConfigError(format!("{e} (from {source})")))?;
    }
    let mut list = list;
    list.sort();
    list.dedup();
    Ok(list)
}

/// The convention, the connect timeout and the safety switch.
fn finish(
    cli: &CliSettings,
    mut file: FileConfig,
    databases: Vec<DbTarget>,
    env: &dyn Environment,
    nothing_configured: bool,
) -> Result<Settings, ConfigError> {
    let app_prefix = cli
        .app_prefix
        .clone()
        .or(file.app_prefix)
        .unwrap_or_else(|| "pytest".into());
    validate_prefix("app prefix", &app_prefix).map_err(ConfigError)?;
    let schema_prefix = cli
        .schema_prefix
        .clone()
        .or(file.schema_prefix)
        .unwrap_or_else(|| "test".into());
    validate_prefix("schema prefix", &schema_prefix).map_err(ConfigError)?;
    let shared_schemas = shared_schemas(cli, file.shared_schemas.take())?;

    // Connect timeout: a value in a connection string wins for that database; otherwise
    // --connect-timeout (or PGSWARM_CONNECT_TIMEOUT) > config file > PGCONNECT_TIMEOUT > 5 s.
    let mut session = SessionSettings::default();
    let timeout = match (&cli.connect_timeout, &file.connect_timeout) {
        (Some(s), _) => Some(parse_duration("--connect-timeout", s)?),
        (None, Some(s)) => Some(parse_duration("connect_timeout in the config file", s)?),
        (None, None) => env
            .var("PGCONNECT_TIMEOUT")
            .map(|v| parse_timeout(&v, "PGCONNECT_TIMEOUT").map_err(ConfigError))
            .transpose()?,
    };
    if let Some(d) = timeout {
        if d.is_zero() {
            return Err(ConfigError(
                "invalid connect timeout 0: pgswarm never waits forever; give a positive duration"
                    .into(),
            ));
        }
        session.connect_timeout = d;
    }

    Ok(Settings {
        databases,
        sqlite: Vec::new(),
        convention: Convention {
            app_prefix,
            schema_prefix,
            shared_schemas,
        },
        session,
        read_only: cli.read_only || file.read_only.unwrap_or(false),
        read_only_source: match (cli.read_only, file.read_only, &cli.config) {
            (true, _, _) => Some("--read-only".into()),
            (false, Some(true), Some(p)) => Some(format!("read_only = true in {}", p.display())),
            _ => None,
        },
        nothing_configured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoEnv;
    impl Environment for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
        fn home(&self) -> Option<PathBuf> {
            None
        }
        fn os_user(&self) -> Option<String> {
            Some("me".into())
        }
        fn default_socket_dir(&self) -> Option<PathBuf> {
            Some("/run/pg".into())
        }
    }

    #[test]
    fn entry_names_are_told_apart_from_keywords() {
        assert_eq!(
            split_entry("platform=postgres://h/db"),
            (Some("platform"), "postgres://h/db")
        );
        assert_eq!(
            split_entry("t1=host=/tmp dbname=x"),
            (Some("t1"), "host=/tmp dbname=x")
        );
        assert_eq!(
            split_entry("host=/tmp dbname=x"),
            (None, "host=/tmp dbname=x")
        );
        assert_eq!(split_entry("dbname=x"), (None, "dbname=x"));
        assert_eq!(
            split_entry("postgres://h/db?a=b"),
            (None, "postgres://h/db?a=b")
        );
        assert_eq!(split_entry("app_test"), (None, "app_test"));
    }

    #[test]
    fn names_default_to_the_database_and_bare_words_are_dbnames() {
        let cli = CliSettings {
            db: vec![
                "postgres://h/one".into(),
                "two".into(),
                "x=dbname=three".into(),
            ],
            ..Default::default()
        };
        let s = resolve_settings(&cli, &NoEnv).unwrap();
        let names: Vec<&str> = s.databases.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["one", "two", "x"]);
        assert_eq!(s.databases[2].target.dbname, "three");
        assert_eq!(s.convention, Convention::default());
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "app_prefix = \"ci\"\nconnect_timeout = \"3s\"\n[[databases]]\nname = \"f\"\nurl = \"dbname=fromfile\"\n",
        )
        .unwrap();
        let mut cli = CliSettings {
            config: Some(path),
            ..Default::default()
        };
        let s = resolve_settings(&cli, &NoEnv).unwrap();
        assert_eq!(s.databases[0].name, "f");
        assert_eq!(s.convention.app_prefix, "ci");
        assert_eq!(s.session.connect_timeout, Duration::from_secs(3));
        cli.env_db = Some("e1=postgres://h/a \"e2=host=/x dbname=b\"".into());
        let s = resolve_settings(&cli, &NoEnv).unwrap();
        let names: Vec<&str> = s.databases.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["e1", "e2"]);
        cli.db = vec!["flag=dbname=c".into()];
        cli.app_prefix = Some("pytest".into());
        let s = resolve_settings(&cli, &NoEnv).unwrap();
        assert_eq!(s.databases.len(), 1);
        assert_eq!(s.databases[0].name, "flag");
        assert_eq!(s.convention.app_prefix, "pytest");
    }

    #[test]
    fn shared_schemas_come_from_the_flag_over_the_file_over_public_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "shared_schemas = [\"reference\", \"public\"]\n").unwrap();
        let mut cli = CliSettings::default();
        let s = resolve_settings(&cli, &NoEnv).unwrap();
        assert_eq!(s.convention.shared_schemas, ["public"]);
        cli.config = Some(path.clone());
        let s = resolve_settings(&cli, &NoEnv).unwrap();
        assert_eq!(s.convention.shared_schemas, ["public", "reference"]);
        cli.shared_schemas = vec!["lookup".into()];
        let s = resolve_settings(&cli, &NoEnv).unwrap();
        assert_eq!(s.convention.shared_schemas, ["lookup"]);
        cli.shared_schemas = vec!["x".repeat(64)];
        let e = resolve_settings(&cli, &NoEnv).unwrap_err().to_string();
        assert!(
            e.contains(&"x".repeat(64)) && e.contains("--shared-schema"),
            "{e}"
        );
        std::fs::write(&path, "shared_schemas = [\"\"]\n").unwrap();
        cli.shared_schemas = Vec::new();
        let e = resolve_settings(&cli, &NoEnv).unwrap_err().to_string();
        assert!(
            e.contains("invalid shared schema \"\"") && e.contains("config file"),
            "{e}"
        );
    }

    #[test]
    fn no_database_means_the_libpq_environment() {
        let s = resolve_settings(&CliSettings::default(), &NoEnv).unwrap();
        assert_eq!(s.databases.len(), 1);
        assert_eq!(s.databases[0].name, "me");
    }

    #[test]
    fn errors_name_the_bad_value() {
        let dir = tempfile::tempdir().unwrap();
        let bad_toml = dir.path().join("bad.toml");
        std::fs::write(&bad_toml, "databses = []\n").unwrap();
        let cases: Vec<(CliSettings, &str)> = vec![
            (
                CliSettings {
                    db: vec!["a=dbname=x".into(), "a=dbname=y".into()],
                    ..Default::default()
                },
                "\"a\" is configured twice",
            ),
            (
                CliSettings {
                    db: vec!["bad name=dbname=x".into()],
                    ..Default::default()
                },
                "missing \"=\"",
            ),
            (
                CliSettings {
                    db: vec!["n=sslmode=sometimes".into()],
                    ..Default::default()
                },
                "\"sometimes\"",
            ),
            (
                CliSettings {
                    app_prefix: Some("Py-Test".into()),
                    ..Default::default()
                },
                "\"Py-Test\"",
            ),
            (
                CliSettings {
                    connect_timeout: Some("soon".into()),
                    ..Default::default()
                },
                "\"soon\"",
            ),
            (
                CliSettings {
                    connect_timeout: Some("0s".into()),
                    ..Default::default()
                },
                "never waits forever",
            ),
            (
                CliSettings {
                    config: Some(bad_toml),
                    ..Default::default()
                },
                "databses",
            ),
            (
                CliSettings {
                    config: Some(dir.path().join("missing.toml")),
                    ..Default::default()
                },
                "missing.toml",
            ),
            (
                CliSettings {
                    env_db: Some("\"unterminated".into()),
                    ..Default::default()
                },
                "unterminated",
            ),
        ];
        for (cli, needle) in cases {
            let e = resolve_settings(&cli, &NoEnv).unwrap_err().0;
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    /// Issue 27: `PGSWARM_DB` entries quoted as a shell would, so the demo's key=value entries
    /// survive being pasted; an entry split in two says how to quote it.
    #[test]
    fn env_entries_are_split_like_shell_words() {
        let split = |s: &str| split_env_entries(s).unwrap();
        assert_eq!(
            split("platform='host=/tmp/x port=5432 dbname=p'  tenant=postgres://h/t\n"),
            vec![
                "platform=host=/tmp/x port=5432 dbname=p",
                "tenant=postgres://h/t"
            ]
        );
        assert_eq!(
            split(r#""host=/tmp dbname=a" b="it's \"x\" \\ \n""#),
            vec!["host=/tmp dbname=a", r#"b=it's "x" \ \n"#]
        );
        // libpq's own quoting inside an entry's quotes is kept for libpq.
        assert_eq!(
            split(r#"a="host='/tmp/my dir' dbname=a""#),
            vec!["a=host='/tmp/my dir' dbname=a"]
        );
        assert_eq!(
            split(r"C:\x '' "),
            vec![r"C:\x"],
            "empty entries are ignored"
        );
        for bad in ["'open", "a=\"open", "\"ends in \\"] {
            let e = split_env_entries(bad).unwrap_err().0;
            assert!(
                e.contains("unterminated") && e.contains("PGSWARM_DB"),
                "{e}"
            );
        }
        let cli = CliSettings {
            env_db: Some("platform='host=/tmp port=5432 dbname=p' tenant=\"dbname=t\"".into()),
            ..Default::default()
        };
        let names: Vec<String> = resolve_settings(&cli, &NoEnv)
            .unwrap()
            .databases
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, vec!["platform", "tenant"]);
        // Unquoted, a key=value entry falls apart into two unnamed ones.
        let cli = CliSettings {
            env_db: Some("host=/tmp port=5".into()),
            ..Default::default()
        };
        let e = resolve_settings(&cli, &NoEnv).unwrap_err().0;
        assert!(
            e.contains("configured twice") && e.contains("quote an entry"),
            "{e}"
        );
        // The same entries as --db flags need no quoting hint.
        let cli = CliSettings {
            db: vec!["dbname=a".into(), "dbname=a".into()],
            ..Default::default()
        };
        let e = resolve_settings(&cli, &NoEnv).unwrap_err().0;
        assert!(!e.contains("PGSWARM_DB"), "{e}");
        // A bad entry from PGSWARM_DB says how entries are separated.
        let cli = CliSettings {
            env_db: Some("n=sslmode=sometimes".into()),
            ..Default::default()
        };
        let e = resolve_settings(&cli, &NoEnv).unwrap_err().0;
        assert!(
            e.contains("sometimes") && e.contains("quote an entry"),
            "{e}"
        );
    }

    /// Issue 27: the default config file is `$XDG_CONFIG_HOME/pgswarm/config.toml`, else
    /// `~/.config/pgswarm/config.toml`, and only when it exists.
    #[test]
    fn the_default_config_file_is_used_only_when_it_exists() {
        struct Env(Option<PathBuf>, Option<PathBuf>);
        impl Environment for Env {
            fn var(&self, name: &str) -> Option<String> {
                (name == "XDG_CONFIG_HOME")
                    .then(|| self.0.as_ref().map(|p| p.display().to_string()))
                    .flatten()
            }
            fn home(&self) -> Option<PathBuf> {
                self.1.clone()
            }
            fn os_user(&self) -> Option<String> {
                None
            }
            fn default_socket_dir(&self) -> Option<PathBuf> {
                None
            }
        }
        let xdg = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let (x, h) = (xdg.path().to_path_buf(), home.path().to_path_buf());
        assert_eq!(
            default_config_file(&Env(Some(x.clone()), Some(h.clone()))),
            None
        );
        std::fs::create_dir_all(h.join(".config/pgswarm")).unwrap();
        std::fs::write(h.join(".config/pgswarm/config.toml"), "").unwrap();
        assert_eq!(
            default_config_file(&Env(None, Some(h.clone()))),
            Some(h.join(".config/pgswarm/config.toml"))
        );
        assert_eq!(
            default_config_file(&Env(Some(x.clone()), Some(h.clone()))),
            None,
            "XDG_CONFIG_HOME wins over HOME even when it has no file"
        );
        std::fs::create_dir_all(x.join("pgswarm")).unwrap();
        std::fs::write(x.join("pgswarm/config.toml"), "").unwrap();
        assert_eq!(
            default_config_file(&Env(Some(x.clone()), Some(h.clone()))),
            Some(x.join("pgswarm/config.toml"))
        );
        assert_eq!(
            default_config_file(&Env(Some("relative".into()), Some(h.clone()))),
            Some(h.join(".config/pgswarm/config.toml")),
            "a relative XDG_CONFIG_HOME is ignored"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("x", "5").unwrap(), Duration::from_secs(5));
        assert_eq!(
            parse_duration("x", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("x", "-1").is_err());
        assert!(parse_duration("x", "NaN").is_err());
    }
}
