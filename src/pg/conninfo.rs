//! Connection strings and the libpq rules that tokio-postgres does not implement.
//!
//! Users already have `postgres://` URLs, `key=value` strings, `PG*` variables and a `~/.pgpass`; a
//! monitoring tool must read them exactly as `psql` does or it connects somewhere else (or nowhere).
//! tokio-postgres parses neither the environment nor the password file, has no default host, and
//! rejects keys such as `sslrootcert` or `sslmode=verify-full`, so this module parses both syntaxes
//! itself and resolves a [`Target`] with libpq's precedence: the string, then the environment, then the
//! compiled-in defaults. The environment is passed in as a lookup so every rule is unit-tested.
//!
//! Passwords live in [`Secret`], whose `Debug` and `Display` never show them; [`Target::display`] is
//! what every message prints.

use percent_encoding::percent_decode_str;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A password: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// libpq's `sslmode`, with libpq's meaning: `prefer` and `require` encrypt without verifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "invalid sslmode {other:?}: use disable, allow, prefer, require, verify-ca or \
                     verify-full"
                ))
            }
        })
    }
}

/// Where to connect: a TCP host name or address, or a Unix-socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    Unix(PathBuf),
}

impl Host {
    fn parse(s: &str) -> Host {
        if s.starts_with('/') || s.starts_with('@') {
            Host::Unix(PathBuf::from(s))
        } else {
            Host::Tcp(s.to_owned())
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) if h.contains(':') => write!(f, "[{h}]"),
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A fully resolved connection target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Tried in order, as libpq does with a host list.
    pub hosts: Vec<(Host, u16)>,
    pub user: String,
    pub dbname: String,
    pub password: Option<Secret>,
    pub passfile: PathBuf,
    pub sslmode: SslMode,
    pub sslrootcert: PathBuf,
    /// From the connection string only; `None` leaves the caller's default.
    pub connect_timeout: Option<Duration>,
    /// Server `options` (e.g. `-c search_path=x`), passed through.
    pub options: Option<String>,
}

impl Target {
    /// `user@host:port/dbname`, never with a password.
    pub fn display(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        format!("{}@{}/{}", self.user, hosts.join(","), self.dbname)
    }
}

/// The environment and machine facts resolution depends on.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn home(&self) -> Option<PathBuf>;
    fn os_user(&self) -> Option<String>;
    fn default_socket_dir(&self) -> Option<PathBuf>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn home(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from)
    }
    fn os_user(&self) -> Option<String> {
        // libpq asks the password database for the effective uid, not $USER.
        // SAFETY: geteuid has no preconditions; getpwuid returns a pointer into static storage that we
        // copy out of at once, before any other call could overwrite it.
        unsafe {
            let pw = libc::getpwuid(libc::geteuid());
            if pw.is_null() || (*pw).pw_name.is_null() {
                return self.var("USER");
            }
            Some(
                std::ffi::CStr::from_ptr((*pw).pw_name)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    }
    fn default_socket_dir(&self) -> Option<PathBuf> {
        // Debian's libpq is built with /var/run/postgresql; upstream's default is /tmp.
        ["/var/run/postgresql", "/tmp"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_dir())
    }
}

/// Keys pgswarm understands, and keys libpq knows that are accepted but have no effect here.
const KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "connect_timeout",
    "options",
    "sslmode",
    "sslrootcert",
];
const IGNORED_KEYS: &[&str] = &[
    "application_name",
    "fallback_application_name",
    "client_encoding",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "target_session_attrs",
    "channel_binding",
    "gssencmode",
    "sslcompression",
    "sslsni",
    "load_balance_hosts",
];
const UNSUPPORTED_KEYS: &[&str] = &[
    "service",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "requirepeer",
    "krbsrvname",
    "gsslib",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "require_auth",
];

fn check_key(key: &str) -> Result<(), String> {
    if KEYS.contains(&key) || IGNORED_KEYS.contains(&key) {
        Ok(())
    } else if UNSUPPORTED_KEYS.contains(&key) {
        Err(format!(
            "connection option {key:?} is not supported by pgswarm; remove it or use a plain \
             host/port/user/password target"
        ))
    } else {
        Err(format!(
            "invalid connection option {key:?} (known: {})",
            KEYS.join(", ")
        ))
    }
}

/// True when `s` is a libpq connection keyword (used to tell `NAME=conninfo` from `key=value`).
pub fn is_keyword(s: &str) -> bool {
    KEYS.contains(&s) || IGNORED_KEYS.contains(&s) || UNSUPPORTED_KEYS.contains(&s)
}

/// True when `s` starts with a URL scheme libpq accepts.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// Parses a URL or a `key=value` string into raw keyword values (nothing resolved yet).
pub fn parse_conninfo(s: &str) -> Result<BTreeMap<String, String>, String> {
    let map = if is_url(s) {
        parse_url(s)?
    } else {
        parse_keyvalue(s)?
    };
    for k in map.keys() {
        check_key(k)?;
    }
    Ok(map)
}

fn decode(s: &str, what: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("invalid percent-encoding in the {what} of a connection URL"))
}

fn parse_url(s: &str) -> Result<BTreeMap<String, String>, String> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .ok_or_else(|| "connection URL must start with postgres:// or postgresql://".to_string())?;
    let mut map = BTreeMap::new();
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let hostlist = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                map.insert("user".into(), decode(user, "user name")?);
            }
            if let Some(p) = password {
                map.insert("password".into(), decode(p, "password")?);
            }
            hosts
        }
        None => authority,
    };
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for part in hostlist.split(',') {
            let (host, port) = if let Some(v6) = part.strip_prefix('[') {
                let (h, after) = v6.split_once(']').ok_or_else(|| {
                    format!("unterminated [ in host {part:?} of a connection URL")
                })?;
                let port =
                    match after {
                        "" => None,
                        p => Some(p.strip_prefix(':').ok_or_else(|| {
                            format!("unexpected {p:?} after ] in a connection URL")
                        })?),
                    };
                (h.to_string(), port)
            } else {
                match part.rsplit_once(':') {
                    Some((h, p)) => (decode(h, "host")?, Some(p)),
                    None => (decode(part, "host")?, None),
                }
            };
            hosts.push(host);
            ports.push(port.unwrap_or("").to_string());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            map.insert("host".into(), hosts.join(","));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            map.insert("port".into(), ports.join(","));
        }
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        map.insert("dbname".into(), decode(path, "database name")?);
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("invalid URL query parameter {pair:?}: expected key=value"))?;
        let k = decode(k, "query")?;
        // libpq spells it `ssl=true` in JDBC-style URLs; accept the libpq keyword only.
        map.insert(k, decode(v, "query")?);
    }
    Ok(map)
}

fn parse_keyvalue(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!(
                "invalid connection string: missing \"=\" after {key:?} (expected key=value pairs \
                 such as \"host=/tmp dbname=app\", or a postgres:// URL)"
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(format!(
                            "invalid connection string: unterminated quoted value for {key:?}"
                        ))
                    }
                    Some('\\') => {
                        if let Some(c) = chars.next() {
                            value.push(c);
                        }
                    }
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if key.is_empty() {
            return Err("invalid connection string: empty key before \"=\"".into());
        }
        map.insert(key, value);
    }
    Ok(map)
}

/// Parses a libpq `connect_timeout` (whole seconds, at least 2; 0 "forever" is refused).
pub fn parse_timeout(value: &str, source: &str) -> Result<Duration, String> {
    let secs: i64 = value.trim().parse().map_err(|_| {
        format!("invalid connect_timeout {value:?} in {source}: use a whole number of seconds")
    })?;
    if secs <= 0 {
        return Err(format!(
            "invalid connect_timeout {value:?} in {source}: pgswarm never waits forever; use a \
             positive number of seconds"
        ));
    }
    // libpq rounds values below 2 s up to 2 s.
    Ok(Duration::from_secs(secs.max(2) as u64))
}

/// Resolves raw keywords against the environment, as libpq does.
pub fn resolve_target(
    raw: &BTreeMap<String, String>,
    env: &dyn Environment,
) -> Result<Target, String> {
    let get = |key: &str, var: &str| -> Option<String> {
        raw.get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| env.var(var))
    };
    let host_str = get("host", "PGHOST").or_else(|| get("hostaddr", "PGHOSTADDR"));
    let hosts: Vec<Host> = match host_str {
        Some(h) => h.split(',').map(|h| h.trim()).map(Host::parse).collect(),
        None => vec![match env.default_socket_dir() {
            Some(dir) => Host::Unix(dir),
            None => Host::Tcp("localhost".into()),
        }],
    };
    let ports: Vec<u16> = match get("port", "PGPORT") {
        Some(p) => p
            .split(',')
            .map(|p| {
                let p = p.trim();
                if p.is_empty() {
                    return Ok(5432);
                }
                p.parse::<u16>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("invalid port {p:?}: use a number from 1 to 65535"))
            })
            .collect::<Result<_, _>>()?,
        None => vec![5432],
    };
    let ports = match (ports.len(), hosts.len()) {
        (1, n) => vec![ports[0]; n],
        (a, b) if a == b => ports,
        (a, b) => {
            return Err(format!(
                "{a} ports given for {b} hosts: give one port, or one per host"
            ))
        }
    };
    let user = get("user", "PGUSER")
        .or_else(|| env.os_user())
        .ok_or_else(|| "no user name: set user= in the target, or PGUSER".to_string())?;
    let dbname = get("dbname", "PGDATABASE").unwrap_or_else(|| user.clone());
    let home = env.home().unwrap_or_else(|| PathBuf::from("/"));
    let passfile = get("passfile", "PGPASSFILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".pgpass"));
    let sslmode = match get("sslmode", "PGSSLMODE") {
        Some(m) => SslMode::parse(&m)?,
        None => SslMode::Prefer,
    };
    let sslrootcert = get("sslrootcert", "PGSSLROOTCERT")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".postgresql/root.crt"));
    // PGCONNECT_TIMEOUT is applied by the caller, below its own --connect-timeout flag.
    let connect_timeout = match raw.get("connect_timeout").filter(|v| !v.is_empty()) {
        Some(v) => Some(parse_timeout(v, "the connection string")?),
        None => None,
    };
    Ok(Target {
        hosts: hosts.into_iter().zip(ports).collect(),
        user,
        dbname,
        password: get("password", "PGPASSWORD").map(Secret),
        passfile,
        sslmode,
        sslrootcert,
        connect_timeout,
        options: raw.get("options").filter(|v| !v.is_empty()).cloned(),
    })
}

/// Reads the password for one host from a libpq password file.
///
/// `Ok(None)` when the file is missing or nothing matches; `Err` carries a warning to show (never the
/// password) when the file exists but cannot be used, e.g. because group or others may read it (libpq
/// ignores such a file too).
pub fn lookup_passfile(
    path: &Path,
    host: &Host,
    port: u16,
    dbname: &str,
    user: &str,
    default_socket_dir: Option<&Path>,
) -> Result<Option<Secret>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(None),
    };
    if !meta.is_file() {
        return Err(format!(
            "password file {} is not a plain file; ignored",
            path.display()
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "password file {} has group or world access; permissions should be u=rw (0600) or \
             less; ignored",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
    // libpq matches a socket in the default directory as "localhost".
    let host_field = match host {
        Host::Tcp(h) => h.clone(),
        Host::Unix(dir) if Some(dir.as_path()) == default_socket_dir => "localhost".into(),
        Host::Unix(dir) => dir.display().to_string(),
    };
    let port = port.to_string();
    Ok(match_passfile(&text, [&host_field, &port, dbname, user]).map(Secret))
}

/// Finds the first line of a password file whose four fields match (`*` matches anything).
pub fn match_passfile(text: &str, wanted: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_passfile_line(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = fields
            .iter()
            .zip(wanted)
            .all(|(f, w)| f.as_str() == "*" || f.as_str() == w);
        if matches {
            // Everything after the fourth separator is the password (it may contain ':' escaped).
            return Some(fields[4..].join(":"));
        }
    }
    None
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("never empty").push(n);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, &'static str>);
    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
        fn home(&self) -> Option<PathBuf> {
            Some(PathBuf::from("/home/u"))
        }
        fn os_user(&self) -> Option<String> {
            Some("osuser".into())
        }
        fn default_socket_dir(&self) -> Option<PathBuf> {
            Some(PathBuf::from("/var/run/postgresql"))
        }
    }
    fn env(pairs: &[(&'static str, &'static str)]) -> FakeEnv {
        FakeEnv(pairs.iter().copied().collect())
    }
    fn resolve(s: &str, e: &FakeEnv) -> Result<Target, String> {
        resolve_target(&parse_conninfo(s)?, e)
    }

    #[test]
    fn url_with_everything() {
        let t = resolve(
            "postgresql://al%40ice:p%3Ass@db1:5433,[::1]:5434/my%20db?sslmode=require&connect_timeout=7",
            &env(&[]),
        )
        .unwrap();
        assert_eq!(t.user, "al@ice");
        assert_eq!(t.password.as_ref().unwrap().expose(), "p:ss");
        assert_eq!(
            t.hosts,
            vec![
                (Host::Tcp("db1".into()), 5433),
                (Host::Tcp("::1".into()), 5434)
            ]
        );
        assert_eq!(t.dbname, "my db");
        assert_eq!(t.sslmode, SslMode::Require);
        assert_eq!(t.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(t.display(), "al@ice@db1:5433,[::1]:5434/my db");
        assert!(
            !format!("{t:?}").contains("p:ss"),
            "Debug never shows the password"
        );
    }

    #[test]
    fn url_socket_host_in_query_and_percent_path() {
        let t = resolve("postgres:///app?host=/tmp/sock&port=6000", &env(&[])).unwrap();
        assert_eq!(t.hosts, vec![(Host::Unix("/tmp/sock".into()), 6000)]);
        let t = resolve("postgres://%2Ftmp%2Fx/app", &env(&[])).unwrap();
        assert_eq!(t.hosts, vec![(Host::Unix("/tmp/x".into()), 5432)]);
    }

    #[test]
    fn keyvalue_with_quotes_and_escapes() {
        let t = resolve(
            r"host = /tmp dbname='my \'db\'' password=a\ b options='-c search_path=x'",
            &env(&[]),
        )
        .unwrap();
        assert_eq!(t.dbname, "my 'db'");
        assert_eq!(t.password.unwrap().expose(), "a b");
        assert_eq!(t.options.as_deref(), Some("-c search_path=x"));
    }

    #[test]
    fn environment_fills_gaps_and_string_wins() {
        let e = env(&[
            ("PGHOST", "envhost"),
            ("PGPORT", "6543"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
            ("PGPASSWORD", "envpw"),
            ("PGSSLMODE", "disable"),
        ]);
        let t = resolve("dbname=mine", &e).unwrap();
        assert_eq!(t.hosts, vec![(Host::Tcp("envhost".into()), 6543)]);
        assert_eq!((t.user.as_str(), t.dbname.as_str()), ("envuser", "mine"));
        assert_eq!(t.password.unwrap().expose(), "envpw");
        assert_eq!(t.sslmode, SslMode::Disable);
        let t = resolve("connect_timeout=1", &e).unwrap();
        assert_eq!(
            t.connect_timeout,
            Some(Duration::from_secs(2)),
            "libpq minimum"
        );
    }

    #[test]
    fn defaults_are_libpqs() {
        let t = resolve("", &env(&[])).unwrap();
        assert_eq!(
            t.hosts,
            vec![(Host::Unix("/var/run/postgresql".into()), 5432)]
        );
        assert_eq!((t.user.as_str(), t.dbname.as_str()), ("osuser", "osuser"));
        assert_eq!(t.sslmode, SslMode::Prefer);
        assert_eq!(t.passfile, PathBuf::from("/home/u/.pgpass"));
        assert_eq!(t.sslrootcert, PathBuf::from("/home/u/.postgresql/root.crt"));
        assert_eq!(t.connect_timeout, None);
    }

    #[test]
    fn bad_values_are_named() {
        let e = env(&[]);
        for (input, needle) in [
            ("host=x bogus=1", "\"bogus\""),
            ("sslmode=maybe", "\"maybe\""),
            ("port=99999", "\"99999\""),
            ("connect_timeout=abc", "\"abc\""),
            ("connect_timeout=0", "never waits forever"),
            ("host=a,b,c port=1,2", "2 ports given for 3 hosts"),
            ("dbname='x", "unterminated"),
            ("justaword", "missing \"=\""),
            ("sslcert=/x", "not supported"),
            ("postgres://h/d?x", "\"x\""),
        ] {
            let err = resolve(input, &e).unwrap_err();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn passfile_matching_wildcards_and_escapes() {
        let text = "# comment\n\
                    other:*:*:*:nope\n\
                    db\\:1:5432:app:al:first\n\
                    *:5432:*:bob:pa\\:ss:word\n\
                    localhost:*:*:*:local\n";
        assert_eq!(
            match_passfile(text, ["db:1", "5432", "app", "al"]).as_deref(),
            Some("first")
        );
        assert_eq!(
            match_passfile(text, ["x", "5432", "any", "bob"]).as_deref(),
            Some("pa:ss:word")
        );
        assert_eq!(match_passfile(text, ["x", "5433", "any", "bob"]), None);
        assert_eq!(
            match_passfile(text, ["localhost", "1", "d", "u"]).as_deref(),
            Some("local")
        );
    }

    #[test]
    fn passfile_permissions_and_socket_host() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(
            &path,
            "localhost:5432:*:u:sockpw\n/tmp/s:5432:*:u:otherpw\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let sock = Host::Unix("/var/run/postgresql".into());
        let default = Some(Path::new("/var/run/postgresql"));
        let err = lookup_passfile(&path, &sock, 5432, "d", "u", default).unwrap_err();
        assert!(err.contains("group or world access"), "{err}");
        assert!(!err.contains("sockpw"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pw = lookup_passfile(&path, &sock, 5432, "d", "u", default).unwrap();
        assert_eq!(pw.unwrap().expose(), "sockpw");
        let other = Host::Unix("/tmp/s".into());
        let pw = lookup_passfile(&path, &other, 5432, "d", "u", default).unwrap();
        assert_eq!(pw.unwrap().expose(), "otherpw");
        assert_eq!(
            lookup_passfile(&dir.path().join("missing"), &sock, 5432, "d", "u", default).unwrap(),
            None
        );
    }

    #[test]
    fn keyword_detection() {
        assert!(is_keyword("host") && is_keyword("dbname") && !is_keyword("platform"));
    }
}
