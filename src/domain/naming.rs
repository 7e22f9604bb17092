//! The test-isolation naming convention, parsed without ever panicking.
//!
//! Every test connection is labeled `{app_prefix}_{worker}_{namespace}[_{suffix}]` and every worker
//! schema is named `{schema_prefix}_{namespace}_{worker}` (or the legacy `{schema_prefix}_{worker}`).
//! Everything pgswarm does, grouping sessions into invocations and above all deciding which schemas
//! are stale, hangs on reading these names right, so the rules here are strict:
//!
//! - a namespace is 1 to 32 characters of `[a-z0-9]` (no underscore, which is what makes the suffix
//!   boundary unambiguous);
//! - a worker is `gw<N>` or `master`;
//! - PostgreSQL keeps only 63 bytes of `application_name`. A label that reaches that length may have
//!   been cut: a cut suffix is flagged, and a name that may have been cut *inside* the namespace is
//!   never attributed to a namespace (it could be another invocation's), it is
//!   [`LabelParse::Unattributed`].
//!
//! Anything that does not carry the app prefix is an unlabeled session: still shown, never guessed at.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use std::fmt;

/// PostgreSQL keeps at most this many bytes of an identifier or `application_name` (NAMEDATALEN-1).
pub const MAX_NAME_BYTES: usize = 63;
/// Longest namespace the convention allows.
pub const MAX_NAMESPACE_LEN: usize = 32;

/// An xdist worker id: `gw0`, `gw1`, ... or `master` (the controller, also the id without xdist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Worker {
    Master,
    Gw(u32),
}

impl Worker {
    /// Parses `gw<N>` (decimal, no sign, no leading `+`) or `master`.
    pub fn parse(s: &str) -> Option<Worker> {
        if s == "master" {
            return Some(Worker::Master);
        }
        let digits = s.strip_prefix("gw")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Reject leading zeros ("gw01"): xdist never produces them, and accepting them would make two
        // spellings of one worker.
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        digits.parse().ok().map(Worker::Gw)
    }
}

impl fmt::Display for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Worker::Master => f.write_str("master"),
            Worker::Gw(n) => write!(f, "gw{n}"),
        }
    }
}

impl Worker {
    /// `to_string` without the formatting machinery (hot path: once per session per poll).
    #[allow(clippy::inherent_to_string_shadow_display)]
    pub fn to_string(&self) -> String {
        match self {
            Worker::Master => "master".to_owned(),
            Worker::Gw(n) => {
                let mut s = String::with_capacity(8);
                s.push_str("gw");
                let mut digits = [0u8; 10];
                let mut i = digits.len();
                let mut v = *n;
                loop {
                    i -= 1;
                    digits[i] = b'0' + (v % 10) as u8;
                    v /= 10;
                    if v == 0 {
                        break;
                    }
                }
                s.push_str(std::str::from_utf8(&digits[i..]).expect("ascii digits"));
                s
            }
        }
    }
}

impl Serialize for Worker {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Worker {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Worker::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a worker: {s:?}")))
    }
}

/// A namespace token: `[a-z0-9]{1,32}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Namespace(String);

impl From<Namespace> for String {
    fn from(n: Namespace) -> String {
        n.0
    }
}

impl TryFrom<String> for Namespace {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Namespace::parse(&s).ok_or_else(|| format!("not a namespace: {s:?}"))
    }
}

/// What a generated token (`p<PID>t<EPOCH>r<8 hex>`) says about the runner that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInfo {
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub entropy: u32,
}

impl Namespace {
    pub fn parse(s: &str) -> Option<Namespace> {
        let ok = !s.is_empty()
            && s.len() <= MAX_NAMESPACE_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        ok.then(|| Namespace(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Decodes a generated token. `None` means a forced (debug) namespace: its age is unknown.
    pub fn token(&self) -> Option<TokenInfo> {
        let rest = self.0.strip_prefix('p')?;
        let (pid, rest) = rest.split_once('t')?;
        let (epoch, hex) = rest.split_once('r')?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(pid) || !all_digits(epoch) {
            return None;
        }
        if hex.len() != 8 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let pid: u32 = pid.parse().ok()?;
        let epoch: i64 = epoch.parse().ok()?;
        let started_at = Utc.timestamp_opt(epoch, 0).single()?;
        let entropy = u32::from_str_radix(hex, 16).ok()?;
        Some(TokenInfo {
            pid,
            started_at,
            entropy,
        })
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed `application_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub worker: Worker,
    pub namespace: Namespace,
    /// Everything after the `_` that follows the namespace (may itself contain underscores).
    pub suffix: Option<String>,
    /// The name is 63 bytes long and ends inside the suffix: the suffix may have been cut by the server.
    pub suffix_maybe_truncated: bool,
}

impl Label {
    /// Formats the label back into an `application_name` (the inverse of [`parse_label`] for labels
    /// that were not cut).
    pub fn format(&self, app_prefix: &str) -> String {
        let mut s = format!("{app_prefix}_{}_{}", self.worker, self.namespace);
        if let Some(suffix) = &self.suffix {
            s.push('_');
            s.push_str(suffix);
        }
        s
    }
}

/// Why a name that carries the app prefix could not be tied to a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unattributed {
    /// The part after the prefix does not start with a worker id.
    BadWorker,
    /// No namespace after the worker, or one that breaks the namespace rule.
    BadNamespace,
    /// 63 bytes long and ending inside the namespace: the server may have cut the namespace short, so
    /// the visible part could be a prefix of another invocation's namespace.
    NamespaceMaybeTruncated,
}

impl fmt::Display for Unattributed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unattributed::BadWorker => "no worker id (gw<N> or master) after the prefix",
            Unattributed::BadNamespace => "namespace missing or not [a-z0-9]{1,32}",
            Unattributed::NamespaceMaybeTruncated => {
                "63 bytes long and ends inside the namespace (may be cut by the server)"
            }
        })
    }
}

/// The three kinds of session name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelParse {
    Labeled(Label),
    /// Carries `{app_prefix}_` but cannot be tied to one namespace.
    Unattributed(Unattributed),
    /// Anything else: psql, an ORM, an application server.
    Unlabeled,
}

/// Parses an `application_name` against the convention. Total: never panics, whatever the input.
pub fn parse_label(app_prefix: &str, application_name: &str) -> LabelParse {
    let Some(rest) = application_name
        .strip_prefix(app_prefix)
        .and_then(|r| r.strip_prefix('_'))
    else {
        return LabelParse::Unlabeled;
    };
    if app_prefix.is_empty() {
        return LabelParse::Unlabeled;
    }
    let may_be_cut = application_name.len() >= MAX_NAME_BYTES;

    let (worker, rest) = match rest.split_once('_') {
        Some((w, r)) => (w, Some(r)),
        None => (rest, None),
    };
    let Some(worker) = Worker::parse(worker) else {
        return LabelParse::Unattributed(Unattributed::BadWorker);
    };
    let Some(rest) = rest else {
        return LabelParse::Unattributed(Unattributed::BadNamespace);
    };
    let (namespace, suffix) = match rest.split_once('_') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    let Some(namespace) = Namespace::parse(namespace) else {
        return LabelParse::Unattributed(Unattributed::BadNamespace);
    };
    if suffix.is_none() && may_be_cut && namespace.as_str().len() < MAX_NAMESPACE_LEN {
        // A namespace ending exactly at byte 63 may be the first part of a longer one. That holds even
        // for a complete generated token: a forced namespace may begin with one (`p1t2r0000000aextra`),
        // and crediting the cut label to the token would let a sweep drop the forced run's schemas.
        // Only a namespace of the maximum length cannot have been longer.
        return LabelParse::Unattributed(Unattributed::NamespaceMaybeTruncated);
    }
    LabelParse::Labeled(Label {
        worker,
        namespace,
        suffix_maybe_truncated: suffix.is_some() && may_be_cut,
        suffix: suffix.map(str::to_owned),
    })
}

/// A parsed test schema name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaName {
    /// `{schema_prefix}_{namespace}_{worker}`
    Namespaced {
        namespace: Namespace,
        worker: Worker,
    },
    /// `{schema_prefix}_{worker}`: from before namespacing; no way to know its owner.
    Legacy { worker: Worker },
}

impl SchemaName {
    pub fn format(&self, schema_prefix: &str) -> String {
        match self {
            SchemaName::Namespaced { namespace, worker } => {
                format!("{schema_prefix}_{namespace}_{worker}")
            }
            SchemaName::Legacy { worker } => format!("{schema_prefix}_{worker}"),
        }
    }

    pub fn namespace(&self) -> Option<&Namespace> {
        match self {
            SchemaName::Namespaced { namespace, .. } => Some(namespace),
            SchemaName::Legacy { .. } => None,
        }
    }

    pub fn worker(&self) -> Worker {
        match self {
            SchemaName::Namespaced { worker, .. } | SchemaName::Legacy { worker } => *worker,
        }
    }
}

/// Parses a schema name with the strict pattern. `None` for anything else, including names that only
/// look similar (upper case, extra underscores, a bad worker): such schemas are never touched.
pub fn parse_schema_name(schema_prefix: &str, name: &str) -> Option<SchemaName> {
    if schema_prefix.is_empty() {
        return None;
    }
    let rest = name.strip_prefix(schema_prefix)?.strip_prefix('_')?;
    match rest.split_once('_') {
        None => Worker::parse(rest).map(|worker| SchemaName::Legacy { worker }),
        Some((namespace, worker)) => Some(SchemaName::Namespaced {
            namespace: Namespace::parse(namespace)?,
            worker: Worker::parse(worker)?,
        }),
    }
}

/// Checks a user-given prefix (`--app-prefix`, `--schema-prefix`); the error says what is allowed.
pub fn validate_prefix(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 40
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !value.ends_with('_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {value:?}: use 1 to 40 characters of a-z, 0-9 and '_', not ending in '_' \
             (the '_' separator is added by pgswarm)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> Namespace {
        Namespace::parse(s).expect("valid namespace in test")
    }

    #[test]
    fn parses_the_seed_examples() {
        let l = parse_label("pytest", "pytest_gw0_p18234t1745178234r3af93d71");
        let LabelParse::Labeled(l) = l else {
            panic!("expected labeled, got {l:?}")
        };
        assert_eq!(l.worker, Worker::Gw(0));
        assert_eq!(l.namespace.as_str(), "p18234t1745178234r3af93d71");
        assert_eq!(l.suffix, None);
        let t = l.namespace.token().expect("generated token");
        assert_eq!(t.pid, 18234);
        assert_eq!(t.started_at.timestamp(), 1745178234);
        assert_eq!(t.entropy, 0x3af93d71);

        let LabelParse::Labeled(l) = parse_label(
            "pytest",
            "pytest_gw0_p18234t1745178234r3af93d71_concurrency",
        ) else {
            panic!()
        };
        assert_eq!(l.suffix.as_deref(), Some("concurrency"));
        assert!(!l.suffix_maybe_truncated);
    }

    #[test]
    fn suffix_keeps_underscores() {
        let LabelParse::Labeled(l) = parse_label("pytest", "pytest_master_mydebug_a_b_c") else {
            panic!()
        };
        assert_eq!(l.worker, Worker::Master);
        assert_eq!(l.namespace, ns("mydebug"));
        assert_eq!(l.suffix.as_deref(), Some("a_b_c"));
        assert!(
            l.namespace.token().is_none(),
            "forced namespace has no token"
        );
    }

    #[test]
    fn unlabeled_and_unattributed() {
        use LabelParse::*;
        assert_eq!(parse_label("pytest", "psql"), Unlabeled);
        assert_eq!(parse_label("pytest", ""), Unlabeled);
        assert_eq!(parse_label("pytest", "pytest"), Unlabeled);
        assert_eq!(parse_label("pytest", "pytestx_gw0_ns"), Unlabeled);
        assert_eq!(
            parse_label("pytest", "pytest_gw0"),
            Unattributed(super::Unattributed::BadNamespace)
        );
        assert_eq!(
            parse_label("pytest", "pytest_gwx_ns"),
            Unattributed(super::Unattributed::BadWorker)
        );
        assert_eq!(
            parse_label("pytest", "pytest_gw0_My-Debug"),
            Unattributed(super::Unattributed::BadNamespace)
        );
        assert_eq!(
            parse_label("pytest", "pytest_gw0__x"),
            Unattributed(super::Unattributed::BadNamespace)
        );
        assert_eq!(
            parse_label("pytest", "pytest_gw01_ns"),
            Unattributed(super::Unattributed::BadWorker)
        );
        let long = format!("pytest_gw0_{}", "a".repeat(33));
        assert_eq!(
            parse_label("pytest", &long),
            Unattributed(super::Unattributed::BadNamespace)
        );
    }

    #[test]
    fn truncation_at_63_bytes() {
        // A long prefix pushes the namespace to the 63-byte edge.
        let prefix = "integration_suite_runner_x";
        let full = format!("{prefix}_gw12_debugsessionnumberone_concurrency");
        assert!(full.len() > MAX_NAME_BYTES);
        let cut = &full[..MAX_NAME_BYTES];
        // Cut in the suffix: still attributed, suffix flagged.
        let LabelParse::Labeled(l) = parse_label(prefix, cut) else {
            panic!("{cut}")
        };
        assert_eq!(l.namespace, ns("debugsessionnumberone"));
        assert!(l.suffix_maybe_truncated);

        // Cut inside a forced namespace: never attributed.
        let prefix = "a_very_long_application_prefix_for_tests";
        let full = format!("{prefix}_gw3_abcdefghijklmnopqrstuvwxyz");
        let cut = &full[..MAX_NAME_BYTES];
        assert_eq!(
            parse_label(prefix, cut),
            LabelParse::Unattributed(Unattributed::NamespaceMaybeTruncated)
        );

        // A complete generated token ending exactly at byte 63 may still be the start of a longer
        // forced namespace (issue 10: a live forced run lost its schemas that way): not attributed.
        let token = "p18234t1745178234r3af93d71";
        let prefix = "p".repeat(MAX_NAME_BYTES - token.len() - "_gw0_".len());
        let name = format!("{prefix}_gw0_{token}");
        assert_eq!(name.len(), MAX_NAME_BYTES);
        assert_eq!(
            parse_label(&prefix, &name),
            LabelParse::Unattributed(Unattributed::NamespaceMaybeTruncated)
        );
        let forced = format!("{token}extra");
        let cut = &format!("{prefix}_gw0_{forced}")[..MAX_NAME_BYTES];
        assert_eq!(cut, name, "the forced run's label, as the server keeps it");
        // A namespace of the maximum length cannot have been cut: it is attributed.
        let long_ns = "a".repeat(MAX_NAMESPACE_LEN);
        let long_prefix = "p".repeat(MAX_NAME_BYTES - long_ns.len() - "_gw0_".len());
        let name = format!("{long_prefix}_gw0_{long_ns}");
        assert_eq!(name.len(), MAX_NAME_BYTES);
        assert!(matches!(
            parse_label(&long_prefix, &name),
            LabelParse::Labeled(Label { suffix: None, .. })
        ));
        // The same token cut by one hex digit is not attributed either.
        let prefix = format!("{prefix}x");
        let name = format!("{prefix}_gw0_{token}");
        let cut = &name[..MAX_NAME_BYTES];
        assert_eq!(
            parse_label(&prefix, cut),
            LabelParse::Unattributed(Unattributed::NamespaceMaybeTruncated)
        );
    }

    #[test]
    fn schema_names() {
        assert_eq!(
            parse_schema_name("test", "test_p1t2r0000000a_gw3"),
            Some(SchemaName::Namespaced {
                namespace: ns("p1t2r0000000a"),
                worker: Worker::Gw(3)
            })
        );
        assert_eq!(
            parse_schema_name("test", "test_gw0"),
            Some(SchemaName::Legacy {
                worker: Worker::Gw(0)
            })
        );
        assert_eq!(
            parse_schema_name("test", "test_master"),
            Some(SchemaName::Legacy {
                worker: Worker::Master
            })
        );
        for bad in [
            "public",
            "test",
            "test_",
            "Test_abc_gw0",
            "test_ABC_gw0",
            "test_abc_gw0_x",
            "test_abc_def_gw0",
            "test_abc_GW0",
            "test_abc_gw",
            "test_\"abc\"_gw0",
            "test_abc_gw0 ",
            "testabc_gw0",
            "test_abc",
            "test__gw0",
        ] {
            assert_eq!(parse_schema_name("test", bad), None, "{bad}");
        }
    }

    #[test]
    fn token_decoding_rejects_near_misses() {
        for bad in [
            "p1t2r123",
            "p1t2r1234567g",
            "pt2r12345678",
            "p1tr12345678",
            "p1t2r123456789",
            "p99999999999t2r12345678",
        ] {
            assert!(ns(bad).token().is_none(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(validate_prefix("app prefix", "pytest").is_ok());
        assert!(validate_prefix("app prefix", "my_app").is_ok());
        for bad in ["", "Py", "a-b", "x_", "a b", &"a".repeat(41)] {
            let err = validate_prefix("app prefix", bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
