//! Property tests: the parsers round-trip valid input and never panic on any input.

use pgswarm::domain::naming::{
    parse_label, parse_schema_name, Label, LabelParse, Namespace, SchemaName, Worker,
    MAX_NAME_BYTES,
};
use pgswarm::pg::config::{quote_env_entry, split_entry, split_env_entries};
use pgswarm::pg::conninfo::{match_passfile, parse_conninfo};
use proptest::prelude::*;

fn worker() -> impl Strategy<Value = Worker> {
    prop_oneof![Just(Worker::Master), (0u32..10_000).prop_map(Worker::Gw)]
}

fn namespace() -> impl Strategy<Value = Namespace> {
    prop_oneof![
        "[a-z0-9]{1,32}",
        (
            1u32..4_000_000,
            1_000_000_000i64..2_000_000_000,
            any::<u32>()
        )
            .prop_map(|(p, t, r)| format!("p{p}t{t}r{r:08x}")),
    ]
    .prop_map(|s| Namespace::parse(&s).expect("strategy makes valid namespaces"))
}

/// `PROPTEST_CASES` when set (a longer run), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #[test]
    fn labels_round_trip(
        w in worker(),
        ns in namespace(),
        suffix in proptest::option::of("[a-z0-9_]{0,20}"),
        prefix in "[a-z][a-z0-9_]{0,8}[a-z0-9]",
    ) {
        let label = Label { worker: w, namespace: ns, suffix, suffix_maybe_truncated: false };
        let text = label.format(&prefix);
        prop_assume!(text.len() < MAX_NAME_BYTES);
        prop_assert_eq!(parse_label(&prefix, &text), LabelParse::Labeled(label));
    }

    #[test]
    fn cut_labels_never_change_namespace(
        w in worker(), ns in namespace(), suffix in "[a-z0-9_]{0,60}", prefix in "[a-z]{1,30}",
    ) {
        let full = Label { worker: w, namespace: ns.clone(), suffix: Some(suffix), suffix_maybe_truncated: false }
            .format(&prefix);
        let cut = &full[..full.len().min(MAX_NAME_BYTES)];
        // Whatever the server keeps, a parse either names the true namespace or none at all.
        match parse_label(&prefix, cut) {
            LabelParse::Labeled(l) => prop_assert_eq!(l.namespace, ns),
            LabelParse::Unattributed(_) => {}
            LabelParse::Unlabeled => prop_assert!(false, "a prefixed name is never unlabeled"),
        }
    }

    /// The attribution oracle (issue 10): whatever the namespace (generated, forced, or forced and
    /// beginning with a complete generated token), whatever the suffix, and wherever the server's
    /// 63-byte cut falls, a parse names the true namespace or none at all.
    #[test]
    fn attribution_never_guesses(
        w in worker(),
        ns in prop_oneof![
            namespace().prop_map(|n| n.into_string()),
            (namespace(), "[a-z0-9]{1,8}").prop_map(|(n, extra)| format!("{n}{extra}")),
        ].prop_filter("a valid namespace", |n| Namespace::parse(n).is_some()),
        suffix in proptest::option::of("[a-z0-9_]{0,30}"),
        prefix in "[a-z][a-z0-9_]{0,38}[a-z0-9]",
    ) {
        let ns = Namespace::parse(&ns).unwrap();
        let full = Label { worker: w, namespace: ns.clone(), suffix, suffix_maybe_truncated: false }
            .format(&prefix);
        let cut = &full[..full.len().min(MAX_NAME_BYTES)];
        match parse_label(&prefix, cut) {
            LabelParse::Labeled(l) => prop_assert_eq!(l.namespace, ns, "{} credited wrongly", cut),
            LabelParse::Unattributed(_) => {}
            LabelParse::Unlabeled => prop_assert!(false, "a prefixed name is never unlabeled"),
        }
    }

    #[test]
    fn generated_tokens_decode(p in 1u32..4_000_000, t in 0i64..4_000_000_000, r in any::<u32>()) {
        let ns = Namespace::parse(&format!("p{p}t{t}r{r:08x}")).unwrap();
        let info = ns.token().expect("generated token decodes");
        prop_assert_eq!((info.pid, info.started_at.timestamp(), info.entropy), (p, t, r));
    }

    #[test]
    fn schema_names_round_trip(w in worker(), ns in namespace(), prefix in "[a-z][a-z0-9_]{0,8}[a-z0-9]") {
        for name in [SchemaName::Namespaced { namespace: ns.clone(), worker: w }, SchemaName::Legacy { worker: w }] {
            prop_assert_eq!(parse_schema_name(&prefix, &name.format(&prefix)), Some(name));
        }
    }

    #[test]
    fn parsers_never_panic(s in any::<String>(), prefix in any::<String>()) {
        let _ = parse_label(&prefix, &s);
        let _ = parse_label("pytest", &s);
        let _ = parse_schema_name(&prefix, &s);
        let _ = parse_schema_name("test", &s);
        let _ = parse_conninfo(&s);
        let _ = parse_conninfo(&format!("postgres://{s}"));
        let _ = split_entry(&s);
        let _ = split_env_entries(&s);
        let _ = match_passfile(&s, ["a", "b", "c", "d"]);
        let _ = Namespace::parse(&s).map(|n| n.token());
        let _ = toml::from_str::<pgswarm::pg::config::FileConfig>(&s);
    }

    /// Issue 27: quoting any list of entries and joining them with whitespace gives them back.
    #[test]
    fn env_entries_round_trip_through_quoting(
        entries in proptest::collection::vec("[a-z=/:' \"\\\\\t.]{1,12}|\\PC{1,8}", 0..6),
        sep in "[ \t\n]{1,3}",
    ) {
        let entries: Vec<String> = entries.into_iter().filter(|e| !e.is_empty()).collect();
        let joined = entries.iter().map(|e| quote_env_entry(e)).collect::<Vec<_>>().join(&sep);
        prop_assert_eq!(split_env_entries(&joined).unwrap(), entries);
    }

    #[test]
    fn label_shaped_noise_never_panics(s in "(pytest_)?(gw[0-9]{0,3}|master|x)?_?[a-z0-9_]{0,70}") {
        let _ = parse_label("pytest", &s);
        let _ = parse_label("pytest", &s[..s.len().min(MAX_NAME_BYTES)]);
    }
}

/// Issue 11, finding 4: a password never appears in any configuration error, for any malformed entry,
/// in any of the three sources (`--db`, `PGSWARM_DB`, the config file). Checked on the start and the
/// end of the password, so that a secret cut short by a separator inside it cannot leak its tail.
mod redaction {
    use pgswarm::pg::config::{resolve_settings, CliSettings};
    use pgswarm::pg::conninfo::Environment;
    use proptest::prelude::*;
    use std::path::PathBuf;

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

    /// Malformed entries; `P` is where the password goes.
    const ENTRIES: &[&str] = &[
        "postgres://alice:P@db1:99999/x",
        "postgres://alice:P@db1/x?sslmode=sometimes",
        "postgres://alice:P@[::1/x",
        "postgres://alice:P@db1/x?password=P&nonsense",
        "postgres://alice:P@db1/x?connect_timeout=soon",
        "postgresql://alice:P@db1/x?bogus=1",
        "host=db1 password=P port=abc",
        "host=db1 password='P",
        "host=db1 password=P bogus=1",
        "host=db1 password = 'P' sslmode=never",
        "n=host=db1 password=P connect_timeout=-3",
        "bad name=host=db1 password=P",
    ];

    fn leaked(message: &str, password: &str) -> bool {
        let chars: Vec<char> = password.chars().collect();
        let head: String = chars.iter().take(6).collect();
        let tail: String = chars[chars.len().saturating_sub(6)..].iter().collect();
        message.contains(password) || message.contains(&head) || message.contains(&tail)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(super::cases(300)))]
        #[test]
        fn a_password_never_appears_in_a_configuration_error(
            tail in "[A-Za-z0-9!#$%^*()_+=.~:;<>|{}/?,&@ -]{8,16}",
            which in 0..ENTRIES.len(),
            source in 0..3usize,
        ) {
            let password = format!("Zq{tail}");
            // A word shaped `identifier=` after a space starts a new option in libpq's own grammar
            // (`password=ab cd=ef` is password `ab` and option `cd`): not one secret any more.
            let word_eq = password.split_whitespace().skip(1).any(|w| {
                w.split_once('=').is_some_and(|(k, _)| {
                    k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            });
            prop_assume!(!word_eq);
            let entry = ENTRIES[which].replace('P', &password);
            let dir = tempfile::tempdir().unwrap();
            let cli = match source {
                0 => CliSettings { db: vec![entry.clone()], ..Default::default() },
                1 => CliSettings { env_db: Some(format!("\"{entry}\"")), ..Default::default() },
                _ => {
                    let path = dir.path().join("pgswarm.toml");
                    // Written as TOML would need it, or broken: both must stay secret.
                    let url = if which % 2 == 0 { entry.replace('\\', "\\\\").replace('"', "\\\"") } else { entry.clone() };
                    std::fs::write(&path, format!("[[databases]]\nname = \"x\"\nurl = \"{url}\"\n")).unwrap();
                    CliSettings { config: Some(path), ..Default::default() }
                }
            };
            if let Err(e) = resolve_settings(&cli, &NoEnv) {
                let msg = e.to_string();
                prop_assert!(!leaked(&msg, &password), "password {password:?} leaked: {msg}");
            }
        }

        #[test]
        fn broken_toml_never_shows_its_lines(
            tail in "[A-Za-z0-9!#$%^*()_+=.~:;<>|{}/?,&@ -]{8,16}",
            form in 0..4usize,
        ) {
            let password = format!("Zq{tail}");
            let text = match form {
                0 => format!("[[databases]]\nurl = \"postgres://a:{password}@h/x\n"),
                1 => format!("[[databases]]\nurl = 'host=h password={password}'\nbogus = 1\n"),
                2 => format!("databases = [{{ url = \"host=h password={password}\", nme = \"x\" }}]\n"),
                _ => format!("read_only = yes\n# password={password}\n[[databases]]\nurl = \"x\"\n"),
            };
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pgswarm.toml");
            std::fs::write(&path, &text).unwrap();
            let cli = CliSettings { config: Some(path), ..Default::default() };
            let msg = resolve_settings(&cli, &NoEnv).expect_err("broken config").to_string();
            prop_assert!(!leaked(&msg, &password), "password {password:?} leaked: {msg}");
            prop_assert!(msg.contains("at line"), "{msg}");
        }
    }
}

/// Issue 11, finding 5: whatever bytes the database (or a hostile recording) puts into any string of
/// a snapshot or a sweep plan, the text output holds no control character and no extra line.
mod sanitising {
    use pgswarm::cmd::report::render_report;
    use pgswarm::domain::fixtures;
    use pgswarm::domain::snapshot::{build_snapshot, Convention, Snapshot};
    use pgswarm::domain::text::is_unsafe;
    use proptest::prelude::*;

    fn poison(snap: &mut Snapshot, next: &mut dyn FnMut() -> String) {
        for s in &mut snap.sessions {
            s.application_name = next();
            s.query = Some(next());
            s.usename = Some(next());
            s.state = Some(next());
            s.database = next();
            s.relation = Some(next());
            s.suffix = Some(next());
            s.namespace = s.namespace.as_ref().map(|_| next());
            s.worker = s.worker.as_ref().map(|_| next());
            s.lock_mode = Some(next());
            s.lock_type = Some(next());
            s.wait_event = Some(next());
            s.client_addr = Some(next());
        }
        for e in &mut snap.blocking {
            e.database = next();
            e.relation = Some(next());
            e.lock_mode = Some(next());
            e.lock_type = Some(next());
            e.blocker_state = Some(next());
            e.blocked_application_name = next();
        }
        for t in &mut snap.lock_trees {
            t.database = next();
            t.root_state = Some(next());
            t.root_application_name = Some(next());
        }
        for d in &mut snap.databases {
            d.target = next();
            d.error = Some(next());
            d.server_version = Some(next());
        }
        for i in &mut snap.invocations {
            i.databases = vec![next(), next()];
            i.workers = vec![next()];
        }
        for s in &mut snap.schemas {
            s.database = next();
            s.schema = next();
        }
        snap.warnings = vec![next(), next()];
        snap.schema_prefix = next();
    }

    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-z]{0,5}(\u{1b}\\[2J|\u{1b}\\]0;title\u{7}|\n|\r|\u{9b}|\u{202e}|\u{2066}|\u{7f}|\t)[a-z]{0,5}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(super::cases(200)))]
        #[test]
        fn text_reports_hold_no_control_character_and_no_forged_line(
            strings in proptest::collection::vec(hostile(), 64),
        ) {
            let base = build_snapshot(fixtures::collision(), &Convention::default());
            let mut hostile_snap = base.clone();
            let mut i = 0;
            poison(&mut hostile_snap, &mut || { i += 1; strings[i % strings.len()].clone() });
            // The same snapshot with every string replaced by a plain one (empty stays empty: an
            // empty query legitimately has no line).
            let mut plain = base.clone();
            let mut j = 0;
            poison(&mut plain, &mut || {
                j += 1;
                if strings[j % strings.len()].is_empty() { String::new() } else { "x".to_string() }
            });
            let text = render_report(&hostile_snap);
            let bad: Vec<char> = text.chars().filter(|&c| c != '\n' && is_unsafe(c)).collect();
            prop_assert!(bad.is_empty(), "unsafe characters {bad:?} in:\n{text}");
            prop_assert_eq!(
                text.lines().count(),
                render_report(&plain).lines().count(),
                "a field forged a line:\n{}", text
            );
        }
    }
}
