//! Issue 23: nothing from the server panics. `RowExt::col` turns a NULL where a value was expected,
//! or a column of another type, into an error that names the column and its type (the probe turns
//! it into a read error for that database); `Row::get` would have panicked (exit 101).

mod common;

use common::*;
use pgswarm::pg::row::RowExt;

#[tokio::test]
async fn unexpected_nulls_and_types_are_errors_that_name_the_column() {
    let srv = Server::start(&["d"]);
    let c = connect_as(&srv.conninfo("d"), "t").await;
    let row = c
        .query_one(
            "SELECT NULL::int4 AS pid, 'x'::text AS state, 7::int8 AS n, ARRAY[1,NULL]::int4[] AS pids",
            &[],
        )
        .await
        .unwrap();
    let e = row.col::<i32>(0).unwrap_err();
    assert_eq!(
        (e.index, e.name.as_str(), e.pg_type.as_str()),
        (0, "pid", "int4")
    );
    assert!(e.to_string().contains("column 0 (pid, type int4)"), "{e}");
    let e = row.col::<i32>(1).unwrap_err();
    assert_eq!(e.name, "state");
    assert!(e.to_string().contains("text"), "{e}");
    assert!(row.col::<i32>(2).is_err(), "int8 is not read as int4");
    assert!(
        row.col::<Vec<i32>>(3).is_err(),
        "a NULL element in an int4[]"
    );
    assert!(
        row.col::<String>(9).is_err(),
        "a column that does not exist"
    );
    assert_eq!(row.col::<Option<i32>>(0).unwrap(), None);
    assert_eq!(row.col::<i64>(2).unwrap(), 7);
}

/// The demo's dashboard once hid its own simulated swarm and refused to signal it: every session a
/// pgswarm process opens goes through `connect`, but only its monitor sessions (labeled `pgswarm`)
/// are its own. A session opened with a test run's label is seen, and can be signalled, like any.
#[tokio::test]
async fn only_monitor_sessions_are_own_sessions() {
    use pgswarm::pg::connect::{connect, is_own_session, SessionSettings};
    use pgswarm::pg::conninfo::ProcessEnv;
    use pgswarm::pg::probe::open_session;
    let srv = Server::start(&["d"]);
    let cfg = settings(&[entry("d", &srv.conninfo("d"))]);
    let target = &cfg.databases[0].target;
    let monitor = open_session(target, &cfg.session, &ProcessEnv)
        .await
        .expect("monitor session");
    let key = monitor.server_key.clone();
    let simulated = connect(
        target,
        &SessionSettings {
            application_name: format!("pytest_gw0_{NS_A}"),
            read_only: false,
            ..SessionSettings::default()
        },
        &ProcessEnv,
    )
    .await
    .expect("a test run's session");
    let rows = monitor
        .client
        .query(
            "SELECT pid, backend_start, application_name FROM pg_catalog.pg_stat_activity \
             WHERE backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap();
    let own: Vec<(String, bool)> = rows
        .iter()
        .map(|r| {
            let app: String = r.get(2);
            (app, is_own_session(&key, r.get(0), r.get(1)))
        })
        .collect();
    assert!(
        own.contains(&(format!("pytest_gw0_{NS_A}"), false)),
        "{own:?}"
    );
    assert!(own.iter().any(|(app, o)| app == "pgswarm" && *o), "{own:?}");
    drop(simulated);
}
