//! Compact forms for narrow columns: generated tokens as `p4100…0a0a`, sizes as `3.4M`. The full
//! names are always one Enter away, in the detail overlay.

use crate::domain::format::session_label;
use crate::domain::naming::{parse_schema_name, Namespace, SchemaName};
use crate::domain::snapshot::SessionReport;

/// `test_p4100…0a0a_gw0` for a generated-token schema (the full name is in the detail view).
pub(super) fn compact_schema(name: &str, prefix: &str) -> String {
    match parse_schema_name(prefix, name) {
        Some(SchemaName::Namespaced { namespace, worker }) => match namespace.token() {
            Some(t) => format!("{prefix}_p{}…{:04x}_{worker}", t.pid, t.entropy & 0xffff),
            None => name.to_string(),
        },
        _ => name.to_string(),
    }
}

/// `p10001…1eef` for a generated token; forced namespaces as they are.
pub(super) fn short_namespace(ns: &str) -> String {
    match Namespace::parse(ns).and_then(|n| n.token()) {
        Some(t) => format!("p{}…{:04x}", t.pid, t.entropy & 0xffff),
        None => ns.to_string(),
    }
}

/// A compact session label for tree lines: `p4100…0a0a/gw1_setup` for generated tokens.
pub(super) fn short_label(s: &SessionReport) -> String {
    match (&s.namespace, &s.worker) {
        (Some(ns), Some(w)) => {
            let ns = short_namespace(ns);
            let mut l = format!("{ns}/{w}");
            if let Some(suffix) = &s.suffix {
                l.push('_');
                l.push_str(suffix);
            }
            l
        }
        _ => session_label(s),
    }
}

/// `512B`, `192K`, `3.4M`, `1.2G`: sizes for narrow columns.
pub(super) fn fmt_bytes_short(b: i64) -> String {
    let b = b.max(0) as f64;
    let (v, unit) = if b < 1024.0 {
        return format!("{b}B");
    } else if b < 1024.0 * 1024.0 {
        (b / 1024.0, "K")
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        (b / 1024.0 / 1024.0, "M")
    } else {
        (b / 1024.0 / 1024.0 / 1024.0, "G")
    };
    if v < 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

/// `s` in at most `width` columns: cut with an ellipsis, never silently.
pub(super) fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}
