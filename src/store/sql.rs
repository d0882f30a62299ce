//! One SQL text, two engines. Every query of the store is written once, with SQLite's `?N`
//! placeholders, and runs through a `Conn`: on SQLite as it is (`prepare_cached`), on
//! PostgreSQL with `?N` rewritten to `$N` once per statement and the prepared statement kept
//! per connection, the twin of `prepare_cached`. Parameters are `Value`s (bound as whatever
//! type the engine expects), rows are read with `Row::get`, and the few places the dialects
//! differ are `Dialect`'s fragments.

use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

/// A parameter. Booleans bind as 0/1 (both schemas store them as integers); PostgreSQL gets
/// the type it inferred for the parameter (`Value`'s `ToSql` converts).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// What can be bound as a parameter; `args!` calls it on each argument.
pub(crate) trait ToValue {
    fn to_value(&self) -> Value<'_>;
}

impl ToValue for i64 {
    fn to_value(&self) -> Value<'_> {
        Value::Int(*self)
    }
}

impl ToValue for u16 {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl<const N: usize> ToValue for [u8; N] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

/// The parameters of a statement, in `?N` order: `args![a, b]` is a `&[Value]`.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        &[$($crate::store::sql::ToValue::to_value(&$arg)),*] as &[$crate::store::sql::Value<'_>]
    };
}
pub(crate) use args;

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(n),
            Value::Text(text) => ValueRef::Text(text.as_bytes()),
            Value::Blob(bytes) => ValueRef::Blob(bytes),
        }))
    }
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) => match *ty {
                Type::BOOL => (n != 0).to_sql(ty, out),
                Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
                _ => n.to_sql(ty, out),
            },
            Value::Text(text) => text.to_sql(ty, out),
            Value::Blob(bytes) => bytes.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::BOOL,
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::TEXT,
            Type::VARCHAR,
            Type::BYTEA,
        ]
        .contains(ty)
    }

    to_sql_checked!();
}

/// A failure of either engine, or a column that did not hold what its reader expected.
#[derive(Debug)]
pub(crate) enum SqlError {
    Sqlite(rusqlite::Error),
    Postgres(postgres::Error),
    Column { index: usize, reason: String },
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlError::Sqlite(err) => write!(f, "{err}"),
            SqlError::Postgres(err) => write!(f, "{err}"),
            SqlError::Column { index, reason } => write!(f, "column {index}: {reason}"),
        }
    }
}

impl SqlError {
    /// Whether the database could not be reached (PostgreSQL went away, or is shutting down):
    /// the store answers `Error::Unavailable` rather than an internal error.
    pub(crate) fn is_unavailable(&self) -> bool {
        let SqlError::Postgres(err) = self else {
            return false;
        };
        if err.is_closed() {
            return true;
        }
        match err.code() {
            // Connection exceptions, and the server shutting down or starting up.
            Some(code) => {
                let code = code.code();
                code.starts_with("08") || ["57P01", "57P02", "57P03"].contains(&code)
            }
            None => {
                std::error::Error::source(err).is_some_and(|cause| cause.is::<std::io::Error>())
            }
        }
    }
}

impl std::error::Error for SqlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SqlError::Sqlite(err) => Some(err),
            SqlError::Postgres(err) => Some(err),
            SqlError::Column { .. } => None,
        }
    }
}

impl From<rusqlite::Error> for SqlError {
    fn from(err: rusqlite::Error) -> SqlError {
        SqlError::Sqlite(err)
    }
}

impl From<postgres::Error> for SqlError {
    fn from(err: postgres::Error) -> SqlError {
        SqlError::Postgres(err)
    }
}

pub(crate) type SqlResult<T> = Result<T, SqlError>;

/// A row being read, of either engine.
pub(crate) enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    pub(crate) fn get<T: FromColumn>(&self, index: usize) -> SqlResult<T> {
        match self {
            Row::Sqlite(row) => T::from_sqlite(row, index),
            Row::Postgres(row) => T::from_postgres(row, index),
        }
    }

    /// A failure to make sense of column `index`, in the engines' error type.
    pub(crate) fn bad_column(index: usize, err: impl fmt::Display) -> SqlError {
        SqlError::Column {
            index,
            reason: err.to_string(),
        }
    }
}

/// What a column can be read as.
pub(crate) trait FromColumn: Sized {
    fn from_sqlite(row: &rusqlite::Row, index: usize) -> SqlResult<Self>;
    fn from_postgres(row: &postgres::Row, index: usize) -> SqlResult<Self>;
}

/// An integer column on PostgreSQL, whatever its width (`count(*)` is INT8, a literal INT4)
/// or a boolean (a comparison's result).
struct PgInt(i64);

impl<'a> FromSql<'a> for PgInt {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<PgInt, Box<dyn std::error::Error + Sync + Send>> {
        Ok(PgInt(match *ty {
            Type::BOOL => i64::from(bool::from_sql(ty, raw)?),
            Type::INT2 => i64::from(i16::from_sql(ty, raw)?),
            Type::INT4 => i64::from(i32::from_sql(ty, raw)?),
            _ => i64::from_sql(ty, raw)?,
        }))
    }

    fn accepts(ty: &Type) -> bool {
        [Type::BOOL, Type::INT2, Type::INT4, Type::INT8].contains(ty)
    }
}

/// Only whether a PostgreSQL column is NULL.
struct PgIsNull(bool);

impl<'a> FromSql<'a> for PgIsNull {
    fn from_sql(
        _: &Type,
        _: &'a [u8],
    ) -> Result<PgIsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(PgIsNull(false))
    }

    fn from_sql_null(_: &Type) -> Result<PgIsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(PgIsNull(true))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

macro_rules! integer_column {
    ($($ty:ty),*) => {$(
        impl FromColumn for $ty {
            fn from_sqlite(row: &rusqlite::Row, index: usize) -> SqlResult<Self> {
                Ok(row.get(index)?)
            }
            fn from_postgres(row: &postgres::Row, index: usize) -> SqlResult<Self> {
                let PgInt(n) = row.try_get(index)?;
                <$ty>::try_from(n).map_err(|err| Row::bad_column(index, err))
            }
        }
    )*};
}
integer_column!(i64, u16);

impl FromColumn for bool {
    fn from_sqlite(row: &rusqlite::Row, index: usize) -> SqlResult<Self> {
        Ok(row.get(index)?)
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> SqlResult<Self> {
        let PgInt(n) = row.try_get(index)?;
        Ok(n != 0)
    }
}

impl FromColumn for String {
    fn from_sqlite(row: &rusqlite::Row, index: usize) -> SqlResult<Self> {
        Ok(row.get(index)?)
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> SqlResult<Self> {
        Ok(row.try_get(index)?)
    }
}

impl FromColumn for Vec<u8> {
    fn from_sqlite(row: &rusqlite::Row, index: usize) -> SqlResult<Self> {
        Ok(row.get(index)?)
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> SqlResult<Self> {
        Ok(row.try_get(index)?)
    }
}

impl<const N: usize> FromColumn for [u8; N] {
    fn from_sqlite(row: &rusqlite::Row, index: usize) -> SqlResult<Self> {
        Ok(row.get(index)?)
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> SqlResult<Self> {
        let bytes: &[u8] = row.try_get(index)?;
        <[u8; N]>::try_from(bytes).map_err(|err| Row::bad_column(index, err))
    }
}

impl<T: FromColumn> FromColumn for Option<T> {
    fn from_sqlite(row: &rusqlite::Row, index: usize) -> SqlResult<Self> {
        if row.get_ref(index)? == rusqlite::types::ValueRef::Null {
            return Ok(None);
        }
        T::from_sqlite(row, index).map(Some)
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> SqlResult<Self> {
        let PgIsNull(null) = row.try_get(index)?;
        if null {
            return Ok(None);
        }
        T::from_postgres(row, index).map(Some)
    }
}

/// Where the two dialects differ, as fragments of the one SQL text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The larger of two values (SQLite's scalar `max`).
    pub(crate) fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "max",
            Dialect::Postgres => "GREATEST",
        }
    }

    /// The smaller of two values (SQLite's scalar `min`).
    pub(crate) fn least(self) -> &'static str {
        match self {
            Dialect::Sqlite => "min",
            Dialect::Postgres => "LEAST",
        }
    }

    /// ` INDEXED BY index` on SQLite (its planner needs the hint); nothing on PostgreSQL.
    pub(crate) fn indexed_by(self, index: &str) -> String {
        match self {
            Dialect::Sqlite => format!(" INDEXED BY {index}"),
            Dialect::Postgres => String::new(),
        }
    }

    /// A condition: the row `alias`'s JSON array of tags holds every tag of the JSON array
    /// bound at `?param`.
    pub(crate) fn has_every_tag(self, alias: &str, param: usize) -> String {
        match self {
            Dialect::Sqlite => format!(
                "NOT EXISTS (SELECT value FROM json_each(?{param})
                             EXCEPT SELECT value FROM json_each({alias}.tags))"
            ),
            Dialect::Postgres => format!("{alias}.tags::jsonb @> (?{param}::text)::jsonb"),
        }
    }
}

/// A PostgreSQL connection with its statement cache. The store uses it from one thread at a
/// time (it is checked out of the pool or the writer's lock), hence the `RefCell`s.
pub(crate) struct PgConn {
    client: RefCell<postgres::Client>,
    /// Each SQL text prepared once: the statement and, per `$N`, the index of its `Value`.
    statements: RefCell<HashMap<String, (postgres::Statement, Vec<usize>)>>,
}

impl PgConn {
    pub(crate) fn new(client: postgres::Client) -> PgConn {
        PgConn {
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
        }
    }

    /// The client itself, for what is not a cached statement (transactions, migrations).
    pub(crate) fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        self.client.borrow_mut()
    }

    /// Whether the connection to the server is gone (a broken one is dropped, not reused).
    pub(crate) fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    fn run<T>(
        &self,
        sql: &str,
        args: &[Value],
        run: impl FnOnce(
            &mut postgres::Client,
            &postgres::Statement,
            &[&(dyn ToSql + Sync)],
        ) -> Result<T, postgres::Error>,
    ) -> SqlResult<T> {
        let mut client = self.client.borrow_mut();
        let mut statements = self.statements.borrow_mut();
        if !statements.contains_key(sql) {
            let (text, order) = numbered_placeholders(sql);
            let statement = client.prepare(&text)?;
            statements.insert(sql.to_string(), (statement, order));
        }
        let (statement, order) = &statements[sql];
        let params: Vec<&(dyn ToSql + Sync)> = order
            .iter()
            .map(|&index| args.get(index).unwrap_or(&Value::Null) as &(dyn ToSql + Sync))
            .collect();
        Ok(run(&mut client, statement, &params)?)
    }
}

/// Rewrites `?N` to PostgreSQL's `$N`, numbering the parameters the text uses densely (a text
/// may skip one, which PostgreSQL refuses): returns the text and, for each `$N`, the index
/// of the `Value` it takes. Quoted strings and identifiers are left alone.
fn numbered_placeholders(sql: &str) -> (String, Vec<usize>) {
    let mut text = String::with_capacity(sql.len());
    let mut order: Vec<usize> = Vec::new();
    let mut chars = sql.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((_, c)) = chars.next() {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') => {
                let mut digits = String::new();
                while let Some(&(_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    digits.push(d);
                    chars.next();
                }
                if let Ok(n @ 1..) = digits.parse::<usize>() {
                    let index = n - 1;
                    let position = order.iter().position(|&used| used == index);
                    let number = position.unwrap_or_else(|| {
                        order.push(index);
                        order.len() - 1
                    }) + 1;
                    text.push('$');
                    text.push_str(&number.to_string());
                    continue;
                }
                text.push('?');
                text.push_str(&digits);
                continue;
            }
            (None, _) => {}
        }
        text.push(c);
    }
    (text, order)
}

/// A connection of either engine: what `Reader` and `Writer` run their SQL on.
#[derive(Clone, Copy)]
pub(crate) enum Conn<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(&'c PgConn),
}

impl<'c> Conn<'c> {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs a statement; returns how many rows it changed.
    pub(crate) fn execute(&self, sql: &str, args: &[Value]) -> SqlResult<usize> {
        match self {
            Conn::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args))?),
            Conn::Postgres(conn) => conn.run(sql, args, |client, statement, params| {
                client
                    .execute(statement, params)
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            }),
        }
    }

    /// Runs an `INSERT` (written without `RETURNING`) of one row; returns the new row's
    /// `key`, the table's integer primary key. SQLite is asked for its last rowid instead of
    /// `RETURNING`: it runs `RETURNING` as a trigger, which makes it copy every page the insert
    /// changes into a statement journal (a temporary file) first.
    pub(crate) fn insert(&self, sql: &str, key: &str, args: &[Value]) -> SqlResult<i64> {
        match self {
            Conn::Sqlite(conn) => {
                conn.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(args))?;
                Ok(conn.last_insert_rowid())
            }
            Conn::Postgres(_) => {
                self.query_one(&format!("{sql} RETURNING {key}"), args, |row| row.get(0))
            }
        }
    }

    /// Every row of a query, each through `map`.
    pub(crate) fn query_map<T>(
        &self,
        sql: &str,
        args: &[Value],
        mut map: impl FnMut(&Row) -> SqlResult<T>,
    ) -> SqlResult<Vec<T>> {
        match self {
            Conn::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(args))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(map(&Row::Sqlite(row))?);
                }
                Ok(out)
            }
            Conn::Postgres(conn) => {
                let rows = conn.run(sql, args, |client, statement, params| {
                    client.query(statement, params)
                })?;
                rows.iter().map(|row| map(&Row::Postgres(row))).collect()
            }
        }
    }

    /// The first row of a query through `map`, or `None` if it has none.
    pub(crate) fn query_opt<T>(
        &self,
        sql: &str,
        args: &[Value],
        map: impl FnOnce(&Row) -> SqlResult<T>,
    ) -> SqlResult<Option<T>> {
        match self {
            Conn::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(args))?;
                match rows.next()? {
                    Some(row) => map(&Row::Sqlite(row)).map(Some),
                    None => Ok(None),
                }
            }
            Conn::Postgres(conn) => {
                let row = conn.run(sql, args, |client, statement, params| {
                    client.query_opt(statement, params)
                })?;
                row.map(|row| map(&Row::Postgres(&row))).transpose()
            }
        }
    }

    /// The one row a query always has (an aggregate, an `INSERT … RETURNING`).
    pub(crate) fn query_one<T>(
        &self,
        sql: &str,
        args: &[Value],
        map: impl FnOnce(&Row) -> SqlResult<T>,
    ) -> SqlResult<T> {
        self.query_opt(sql, args, map)?
            .ok_or_else(|| SqlError::Column {
                index: 0,
                reason: "the statement returned no row".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_densely_outside_quotes() {
        let (text, order) =
            numbered_placeholders("SELECT '?1', \"a?2\" FROM t WHERE a = ?3 AND b = ?1 OR c = ?3");
        assert_eq!(
            text,
            "SELECT '?1', \"a?2\" FROM t WHERE a = $1 AND b = $2 OR c = $1"
        );
        assert_eq!(order, [2, 0]);
        let (text, order) = numbered_placeholders("x = ?12::text");
        assert_eq!((text.as_str(), order), ("x = $1::text", vec![11]));
    }
}
