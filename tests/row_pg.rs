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
