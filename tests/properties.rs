//! Property tests: the parsers round-trip valid input and never panic on any input.

use pgswarm::cmd::config::{split_entry, split_env_entries};
use pgswarm::domain::naming::{
    parse_label, parse_schema_name, Label, LabelParse, Namespace, SchemaName, Worker,
    MAX_NAME_BYTES,
};
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
        let _ = toml::from_str::<pgswarm::cmd::config::FileConfig>(&s);
    }

    #[test]
    fn label_shaped_noise_never_panics(s in "(pytest_)?(gw[0-9]{0,3}|master|x)?_?[a-z0-9_]{0,70}") {
        let _ = parse_label("pytest", &s);
        let _ = parse_label("pytest", &s[..s.len().min(MAX_NAME_BYTES)]);
    }
}
