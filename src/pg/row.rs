//! Reading a column without trusting the server.
//!
//! `tokio_postgres::Row::get` panics when a column is NULL where the caller expects a value, or of
//! another type than the caller's. pgswarm's statements are pinned to `pg_catalog` (see
//! `connect`), so the types should always be the expected ones, but the server is input all the
//! same: every column is read with [`RowExt::col`], and a surprise becomes an error for that
//! database (`ReadStatus`, shown with the column's name), never a panic.

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

/// A column that was not what the statement promised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server returned an unexpected value in column {index} ({name}, type {pg_type}): {problem}"
)]
pub struct ColumnError {
    pub index: usize,
    pub name: String,
    pub pg_type: String,
    pub problem: String,
}

/// `Row::get` without the panic.
pub trait RowExt {
    /// Column `index` as `T`, or why it cannot be one.
    fn col<'a, T: FromSql<'a>>(&'a self, index: usize) -> Result<T, ColumnError>;
}

impl RowExt for Row {
    fn col<'a, T: FromSql<'a>>(&'a self, index: usize) -> Result<T, ColumnError> {
        self.try_get(index).map_err(|e| {
            let column = self.columns().get(index);
            ColumnError {
                index,
                name: column.map(|c| c.name().to_string()).unwrap_or_default(),
                pg_type: column.map(|c| c.type_().to_string()).unwrap_or_default(),
                problem: std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string()),
            }
        })
    }
}
