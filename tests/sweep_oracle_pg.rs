//! The sweep's safety claim, proven against an oracle over random object graphs (issue 10).
//!
//! Claim: a sweep removes nothing outside the schemas it reports as dropped, and keeps every schema
//! whose removal would reach outside it.
//!
//! Each graph lives in its own database on a real server: stale, live and `public` schemas, and random
//! objects of every kind that can tie schemas together (tables, views, materialized views, sequences,
//! enums, domains, composite types, arrays and row types of each, functions with argument and return
//! types, SQL-body functions, triggers, defaults, CHECKs, foreign keys, policies, partitions,
//! inheritance, statistics, rules), each placed in a random schema and referring to random earlier
//! objects in any schema. Then a sweep runs, and three independent checks judge it:
//!
//! 1. **the oracle**: a `sql_drop` event trigger records `pg_event_trigger_dropped_objects()`, what the
//!    server really removed. Every removed object must belong to a schema the sweep reports as dropped
//!    (by its schema, or for objects without one by the table they belong to; the internal triggers
//!    of a foreign key by the table that owns the key);
//! 2. every object the generator made outside the dropped schemas still exists (by its address), and
//!    every surviving table still has its rows (a dropped partition would take rows of an outside
//!    table with it);
//! 3. precision: a stale schema that nothing outside refers to (by the generator's own bookkeeping) is
//!    dropped; one that something outside refers to is kept as `external_dependents`; live ones are
//!    kept as `live`.
//!
//! `cargo test` runs a fixed set of seeds; `PGSWARM_ORACLE_GRAPHS=N` runs N (the ignored test runs 400).

mod common;

use common::sweep::*;
use common::*;
use pgswarm::domain::sweep::{KeepReason, SweepReport, SweepRules};
use pgswarm::pg::cluster::{ClusterOptions, TempCluster};
use pgswarm::pg::sweep::DependencyCheck;
use pgswarm::pg::sweep::DropSettings;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio_postgres::Client;

/// A small deterministic generator (splitmix64): the same seed builds the same graph.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len())])
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SchemaKind {
    Public,
    Live,
    Stale,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TableKind {
    /// Plain table with `id int PRIMARY KEY, v int`.
    Plain,
    /// Partitioned by range on `id`, with a primary key.
    Partitioned,
    /// A partition or an inheritance child: only read from.
    Member,
}

#[derive(Clone)]
struct Table {
    schema: usize,
    name: String,
    kind: TableKind,
}

#[derive(Clone)]
struct TypeRef {
    schema: usize,
    sql: String,
}

#[derive(Clone)]
struct Func {
    schema: usize,
    name: String,
}

/// An object the generator made, by its address (`pg_get_object_address`), and the schema it
/// belongs to (for a column, trigger, policy, rule or constraint: its table's).
#[derive(Clone, Debug)]
struct Tracked {
    owner: usize,
    kind: &'static str,
    names: Vec<String>,
    args: Vec<String>,
}

#[derive(Clone)]
struct Graph {
    #[allow(dead_code)]
    seed: u64,
    schemas: Vec<(String, SchemaKind)>,
    live_namespace: String,
    statements: Vec<String>,
    objects: Vec<Tracked>,
    /// Tables whose rows are counted before and after the sweep.
    tables: Vec<Table>,
    /// Stale schemas something outside refers to (or that hold a member of an outside table), with
    /// the schemas that refer to them.
    entangled: BTreeMap<usize, BTreeSet<usize>>,
}

#[derive(Clone)]
struct Builder {
    rng: Rng,
    g: Graph,
    types: Vec<TypeRef>,
    tables: Vec<Table>,
    bool_fns: Vec<Func>,
    trigger_fns: Vec<Func>,
    /// Operator families and classes (btree, int4).
    families: Vec<Func>,
    classes: Vec<Func>,
    next: usize,
}

impl Builder {
    fn name(&mut self) -> String {
        self.next += 1;
        format!("o{}", self.next)
    }

    fn schema_name(&self, i: usize) -> &str {
        &self.g.schemas[i].0
    }

    fn q(&self, schema: usize, name: &str) -> String {
        format!("{}.{}", self.schema_name(schema), name)
    }

    /// Where a new object goes: mostly stale schemas, then `public`, then live ones.
    fn place(&mut self) -> usize {
        let roll = self.rng.below(100);
        let of = |k: SchemaKind, g: &Graph| -> Vec<usize> {
            (0..g.schemas.len())
                .filter(|&i| g.schemas[i].1 == k)
                .collect()
        };
        let pool = if roll < 60 {
            of(SchemaKind::Stale, &self.g)
        } else if roll < 85 {
            of(SchemaKind::Public, &self.g)
        } else {
            of(SchemaKind::Live, &self.g)
        };
        *self.rng.pick(&pool).expect("every kind of schema exists")
    }

    /// Records that an object belonging to `owner` refers to something in `target`.
    fn refer(&mut self, owner: usize, target: usize) {
        if owner != target && self.g.schemas[target].1 == SchemaKind::Stale {
            self.g.entangled.entry(target).or_default().insert(owner);
        }
    }

    /// A table member (partition or child) in `member` of a parent in `parent`: both sides.
    fn member_of(&mut self, member: usize, parent: usize) {
        self.refer(member, parent);
        self.refer(parent, member);
    }

    fn sql(&mut self, s: String) {
        self.g.statements.push(s);
    }

    fn track(&mut self, owner: usize, kind: &'static str, names: Vec<String>, args: Vec<String>) {
        self.g.objects.push(Tracked {
            owner,
            kind,
            names,
            args,
        });
    }

    /// A random type for a column or argument: an earlier type (or its array), else a built-in.
    fn some_type(&mut self) -> Option<TypeRef> {
        let t = self.rng.pick(&self.types)?.clone();
        Some(if self.rng.chance(40) {
            TypeRef {
                sql: format!("{}[]", t.sql),
                ..t
            }
        } else {
            t
        })
    }

    fn table_of(&mut self, kinds: &[TableKind]) -> Option<Table> {
        let pool: Vec<Table> = self
            .tables
            .iter()
            .filter(|t| kinds.contains(&t.kind))
            .cloned()
            .collect();
        self.rng.pick(&pool).cloned()
    }

    fn add_one(&mut self) {
        let s = self.place();
        let n = self.name();
        let qn = self.q(s, &n);
        let sn = self.schema_name(s).to_string();
        match self.rng.below(25) {
            0 => {
                self.sql(format!("CREATE TYPE {qn} AS ENUM ('a', 'b')"));
                self.types.push(TypeRef {
                    schema: s,
                    sql: qn.clone(),
                });
                self.track(s, "type", vec![qn], vec![]);
            }
            1 => {
                let base = self.some_type();
                let base_sql = base.as_ref().map_or("int".to_string(), |b| b.sql.clone());
                if let Some(b) = &base {
                    self.refer(s, b.schema);
                }
                self.sql(format!(
                    "CREATE DOMAIN {qn} AS {base_sql} CHECK (VALUE IS NOT DISTINCT FROM VALUE)"
                ));
                self.types.push(TypeRef {
                    schema: s,
                    sql: qn.clone(),
                });
                self.track(s, "type", vec![qn], vec![]);
            }
            2 => {
                let t = self.some_type();
                let t_sql = t.as_ref().map_or("text".to_string(), |b| b.sql.clone());
                if let Some(t) = &t {
                    self.refer(s, t.schema);
                }
                self.sql(format!("CREATE TYPE {qn} AS (x {t_sql}, y int)"));
                self.types.push(TypeRef {
                    schema: s,
                    sql: qn.clone(),
                });
                self.track(s, "type", vec![qn], vec![]);
            }
            3 | 4 => {
                let col = match self.some_type() {
                    Some(t) if self.rng.chance(60) => {
                        self.refer(s, t.schema);
                        format!(", c {}", t.sql)
                    }
                    _ => String::new(),
                };
                self.sql(format!(
                    "CREATE TABLE {qn} (id int PRIMARY KEY, v int{col})"
                ));
                self.sql(format!("INSERT INTO {qn} (id, v) VALUES (1, 1)"));
                self.add_table(s, &n, TableKind::Plain);
            }
            5 => {
                self.sql(format!(
                    "CREATE TABLE {qn} (id int PRIMARY KEY, v int) PARTITION BY RANGE (id)"
                ));
                self.add_table(s, &n, TableKind::Partitioned);
            }
            6 => {
                let Some(p) = self.table_of(&[TableKind::Partitioned]) else {
                    return;
                };
                let k = self.next as i64 * 10;
                let parent = self.q(p.schema, &p.name);
                self.sql(format!(
                    "CREATE TABLE {qn} PARTITION OF {parent} FOR VALUES FROM ({k}) TO ({})",
                    k + 10
                ));
                self.sql(format!("INSERT INTO {parent} (id, v) VALUES ({k}, 1)"));
                self.member_of(s, p.schema);
                self.add_table(s, &n, TableKind::Member);
            }
            7 => {
                let Some(p) = self.table_of(&[TableKind::Plain]) else {
                    return;
                };
                let parent = self.q(p.schema, &p.name);
                self.sql(format!("CREATE TABLE {qn} (extra int) INHERITS ({parent})"));
                self.sql(format!(
                    "INSERT INTO {qn} (id, v) VALUES ({}, 1)",
                    self.next * 10
                ));
                self.member_of(s, p.schema);
                self.add_table(s, &n, TableKind::Member);
            }
            8 => {
                let body = match self.table_of(&[
                    TableKind::Plain,
                    TableKind::Partitioned,
                    TableKind::Member,
                ]) {
                    Some(t) if self.rng.chance(60) => {
                        self.refer(s, t.schema);
                        format!("SELECT * FROM {}", self.q(t.schema, &t.name))
                    }
                    _ => match self.some_type() {
                        Some(t) => {
                            self.refer(s, t.schema);
                            format!("SELECT NULL::{}[] AS x", t.sql)
                        }
                        None => "SELECT 1 AS x".to_string(),
                    },
                };
                self.sql(format!("CREATE VIEW {qn} AS {body}"));
                self.track(s, "view", vec![sn, n], vec![]);
            }
            9 => {
                let Some(t) = self.table_of(&[TableKind::Plain, TableKind::Partitioned]) else {
                    return;
                };
                self.refer(s, t.schema);
                let from = self.q(t.schema, &t.name);
                self.sql(format!(
                    "CREATE MATERIALIZED VIEW {qn} AS SELECT id, v FROM {from}"
                ));
                self.track(s, "materialized view", vec![sn, n], vec![]);
            }
            10 => {
                self.sql(format!("CREATE SEQUENCE {qn}"));
                self.track(s, "sequence", vec![sn, n.clone()], vec![]);
                let Some(t) = self.table_of(&[TableKind::Plain, TableKind::Partitioned]) else {
                    return;
                };
                let col = self.name();
                self.refer(t.schema, s);
                let table = self.q(t.schema, &t.name);
                self.sql(format!(
                    "ALTER TABLE {table} ADD COLUMN {col} bigint DEFAULT nextval('{qn}')"
                ));
                let ts = self.schema_name(t.schema).to_string();
                self.track(t.schema, "table column", vec![ts, t.name, col], vec![]);
            }
            11 => {
                self.sql(format!(
                    "CREATE FUNCTION {qn}(int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true'"
                ));
                self.bool_fns.push(Func {
                    schema: s,
                    name: n.clone(),
                });
                self.track(s, "function", vec![sn, n], vec!["integer".into()]);
            }
            12 => {
                let (Some(a), Some(r)) = (self.some_type(), self.some_type()) else {
                    return;
                };
                self.refer(s, a.schema);
                self.refer(s, r.schema);
                self.sql(format!(
                    "CREATE FUNCTION {qn}(a {}) RETURNS {}[] LANGUAGE sql AS 'SELECT NULL::{}[]'",
                    a.sql, r.sql, r.sql
                ));
                self.track(s, "function", vec![sn, n], vec![a.sql]);
            }
            13 => {
                let Some(t) =
                    self.table_of(&[TableKind::Plain, TableKind::Partitioned, TableKind::Member])
                else {
                    return;
                };
                self.refer(s, t.schema);
                let from = self.q(t.schema, &t.name);
                self.sql(format!(
                    "CREATE FUNCTION {qn}() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM {from}; END"
                ));
                self.track(s, "function", vec![sn, n], vec![]);
            }
            14 => {
                self.sql(format!(
                    "CREATE FUNCTION {qn}() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$"
                ));
                self.trigger_fns.push(Func {
                    schema: s,
                    name: n.clone(),
                });
                self.track(s, "function", vec![sn, n], vec![]);
            }
            15 => {
                let (Some(t), Some(f)) = (
                    self.table_of(&[TableKind::Plain]),
                    self.rng.pick(&self.trigger_fns).cloned(),
                ) else {
                    return;
                };
                self.refer(t.schema, f.schema);
                let (table, func) = (self.q(t.schema, &t.name), self.q(f.schema, &f.name));
                self.sql(format!(
                    "CREATE TRIGGER {n} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {func}()"
                ));
                let ts = self.schema_name(t.schema).to_string();
                self.track(t.schema, "trigger", vec![ts, t.name, n], vec![]);
            }
            16 => {
                let Some(p) = self.table_of(&[TableKind::Plain, TableKind::Partitioned]) else {
                    return;
                };
                self.refer(s, p.schema);
                let parent = self.q(p.schema, &p.name);
                self.sql(format!(
                    "CREATE TABLE {qn} (id int PRIMARY KEY, v int, r int REFERENCES {parent} (id))"
                ));
                self.add_table(s, &n, TableKind::Plain);
            }
            17 => {
                let (Some(t), Some(f)) = (
                    self.table_of(&[TableKind::Plain]),
                    self.rng.pick(&self.bool_fns).cloned(),
                ) else {
                    return;
                };
                self.refer(t.schema, f.schema);
                let (table, func) = (self.q(t.schema, &t.name), self.q(f.schema, &f.name));
                self.sql(format!("CREATE POLICY {n} ON {table} USING ({func}(1))"));
                let ts = self.schema_name(t.schema).to_string();
                self.track(t.schema, "policy", vec![ts, t.name, n], vec![]);
            }
            18 => {
                let (Some(t), Some(f)) = (
                    self.table_of(&[TableKind::Plain, TableKind::Partitioned]),
                    self.rng.pick(&self.bool_fns).cloned(),
                ) else {
                    return;
                };
                self.refer(t.schema, f.schema);
                let (table, func) = (self.q(t.schema, &t.name), self.q(f.schema, &f.name));
                if self.rng.chance(50) {
                    self.sql(format!(
                        "ALTER TABLE {table} ADD CONSTRAINT {n} CHECK ({func}(v))"
                    ));
                    let ts = self.schema_name(t.schema).to_string();
                    self.track(t.schema, "table constraint", vec![ts, t.name, n], vec![]);
                } else {
                    self.sql(format!(
                        "ALTER TABLE {table} ADD COLUMN {n} boolean DEFAULT {func}(1)"
                    ));
                    let ts = self.schema_name(t.schema).to_string();
                    self.track(t.schema, "table column", vec![ts, t.name, n], vec![]);
                }
            }
            19 => {
                let (Some(t), Some(ty)) = (
                    self.table_of(&[TableKind::Plain, TableKind::Partitioned]),
                    self.some_type(),
                ) else {
                    return;
                };
                self.refer(t.schema, ty.schema);
                let table = self.q(t.schema, &t.name);
                self.sql(format!("ALTER TABLE {table} ADD COLUMN {n} {}", ty.sql));
                let ts = self.schema_name(t.schema).to_string();
                self.track(t.schema, "table column", vec![ts, t.name, n], vec![]);
            }
            20 => {
                let Some(t) = self.table_of(&[TableKind::Plain]) else {
                    return;
                };
                self.refer(s, t.schema);
                let table = self.q(t.schema, &t.name);
                self.sql(format!("CREATE STATISTICS {qn} ON id, v FROM {table}"));
                self.track(s, "statistics object", vec![sn, n], vec![]);
            }
            22 => {
                self.sql(format!("CREATE OPERATOR FAMILY {qn} USING btree"));
                self.families.push(Func {
                    schema: s,
                    name: n.clone(),
                });
                self.track(s, "operator family", vec!["btree".into(), sn, n], vec![]);
            }
            23 => {
                // An operator class for int4 in a random earlier family: its operators and support
                // function become members of that family, wherever the family lives.
                let Some(f) = self.rng.pick(&self.families).cloned() else {
                    return;
                };
                self.refer(s, f.schema);
                self.refer(f.schema, s);
                let family = self.q(f.schema, &f.name);
                self.sql(format!(
                    "CREATE OPERATOR CLASS {qn} FOR TYPE int4 USING btree FAMILY {family} AS \
                     OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, \
                     FUNCTION 1 btint4cmp(int4, int4)"
                ));
                self.classes.push(Func {
                    schema: s,
                    name: n.clone(),
                });
                self.track(s, "operator class", vec!["btree".into(), sn, n], vec![]);
            }
            24 => {
                let (Some(t), Some(c)) = (
                    self.table_of(&[TableKind::Plain]),
                    self.rng.pick(&self.classes).cloned(),
                ) else {
                    return;
                };
                self.refer(t.schema, c.schema);
                let (table, class) = (self.q(t.schema, &t.name), self.q(c.schema, &c.name));
                self.sql(format!("CREATE INDEX {n} ON {table} (v {class})"));
                let ts = self.schema_name(t.schema).to_string();
                self.track(t.schema, "index", vec![ts, n], vec![]);
            }
            _ => {
                let (Some(t), Some(t2)) = (
                    self.table_of(&[TableKind::Plain]),
                    self.table_of(&[TableKind::Plain]),
                ) else {
                    return;
                };
                if t.schema == t2.schema && t.name == t2.name {
                    return;
                }
                self.refer(t.schema, t2.schema);
                let (on, other) = (self.q(t.schema, &t.name), self.q(t2.schema, &t2.name));
                self.sql(format!(
                    "CREATE RULE {n} AS ON UPDATE TO {on} DO ALSO DELETE FROM {other} WHERE false"
                ));
                let ts = self.schema_name(t.schema).to_string();
                self.track(t.schema, "rule", vec![ts, t.name, n], vec![]);
            }
        }
    }

    fn add_table(&mut self, s: usize, n: &str, kind: TableKind) {
        let t = Table {
            schema: s,
            name: n.to_string(),
            kind,
        };
        self.tables.push(t.clone());
        self.g.tables.push(t);
        let qn = self.q(s, n);
        self.types.push(TypeRef { schema: s, sql: qn });
        let sn = self.schema_name(s).to_string();
        self.track(s, "table", vec![sn, n.to_string()], vec![]);
    }
}

/// Builds graph `seed` in the database behind `c`. Each step runs in its own transaction; a step the
/// server rejects (PostgreSQL has rules the generator does not model, such as a composite type that
/// would contain itself) is rolled back together with its bookkeeping. Returns the graph and how
/// many steps were rejected.
async fn generate(seed: u64, c: &Client) -> (Graph, usize) {
    let mut rng = Rng(seed);
    let stale = 3 + rng.below(4);
    let live = 1 + rng.below(2);
    let live_namespace = format!("p777t1700000000r{:08x}", seed as u32);
    let mut schemas = vec![("public".to_string(), SchemaKind::Public)];
    for i in 0..live {
        schemas.push((format!("test_{live_namespace}_gw{i}"), SchemaKind::Live));
    }
    for i in 0..stale {
        let ns = format!("p{}t1700000000r{:08x}", 50_000 + i, seed as u32 ^ 0x5eed);
        schemas.push((format!("test_{ns}_gw{i}"), SchemaKind::Stale));
    }
    let objects = 25 + rng.below(25);
    let mut b = Builder {
        rng,
        g: Graph {
            seed,
            schemas,
            live_namespace,
            statements: vec![],
            objects: vec![],
            tables: vec![],
            entangled: BTreeMap::new(),
        },
        types: vec![],
        tables: vec![],
        bool_fns: vec![],
        trigger_fns: vec![],
        families: vec![],
        classes: vec![],
        next: 0,
    };
    for (name, kind) in b.g.schemas.clone() {
        if kind != SchemaKind::Public {
            b.sql(format!("CREATE SCHEMA {name}"));
        }
    }
    c.batch_execute(&b.g.statements.join(";\n")).await.unwrap();
    let mut rejected = 0;
    for _ in 0..objects {
        let before = b.clone();
        b.add_one();
        let step = b.g.statements[before.g.statements.len()..].join(";\n");
        if step.is_empty() {
            continue;
        }
        if c.batch_execute(&format!("BEGIN;\n{step};\nCOMMIT"))
            .await
            .is_err()
        {
            let _ = c.batch_execute("ROLLBACK").await;
            let rng = b.rng.clone();
            b = before;
            b.rng = rng;
            rejected += 1;
        }
    }
    (b.g, rejected)
}

/// The oracle: an event trigger that records what the server really removed, and a helper that says
/// whether an address still names an object. Lives in its own schema, which no sweep considers.
const ORACLE_SQL: &str = "
CREATE SCHEMA oracle;
CREATE TABLE oracle.dropped (classid oid, objid oid, objsubid int, object_type text,
  schema_name text, object_identity text, address_names text[]);
CREATE FUNCTION oracle.record() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO oracle.dropped SELECT classid, objid, objsubid, object_type, schema_name,
    object_identity, address_names FROM pg_event_trigger_dropped_objects();
END $$;
CREATE FUNCTION oracle.exists(t text, n text[], a text[]) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_get_object_address(t, n, a); RETURN true;
EXCEPTION WHEN OTHERS THEN RETURN false; END $$;
CREATE EVENT TRIGGER oracle_drops ON sql_drop EXECUTE FUNCTION oracle.record();";

struct Totals {
    graphs: usize,
    objects: usize,
    schemas_dropped: usize,
    kept_external: usize,
    kept_live: usize,
    dropped_objects: usize,
    rejected: usize,
}

async fn count_rows(c: &Client, g: &Graph, t: &Table) -> i64 {
    let sql = format!("SELECT count(*) FROM {}.{}", g.schemas[t.schema].0, t.name);
    c.query_one(&sql, &[]).await.map(|r| r.get(0)).unwrap_or(-1)
}

/// Builds graph `seed` in its own database, sweeps, and checks the three claims. Returns what it
/// checked, or every violation.
async fn check_graph(srv: &TempCluster, seed: u64, totals: &mut Totals) -> Result<(), String> {
    let db = format!("graph_{seed}");
    srv.psql("postgres", &format!("CREATE DATABASE {db}"))
        .unwrap();
    let admin = connect_as(&srv.conninfo(&db), "oracle_setup").await;
    let (g, rejected) = generate(seed, &admin).await;
    totals.rejected += rejected;
    admin.batch_execute(ORACLE_SQL).await.unwrap();
    // Internal triggers of foreign keys belong to the table that owns the key.
    let owner_of_internal: HashMap<u32, String> = admin
        .query(
            "SELECT t.oid, n.nspname::text FROM pg_trigger t \
             JOIN pg_constraint c ON c.oid = t.tgconstraint \
             JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace \
             WHERE t.tgisinternal",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut rows_before = Vec::new();
    for t in &g.tables {
        rows_before.push(count_rows(&admin, &g, t).await);
    }
    // The live run is connected while the sweep runs.
    let _live = connect_as(
        &srv.conninfo(&db),
        &format!("pytest_gw0_{}", g.live_namespace),
    )
    .await;

    let settings = settings(&[entry(&db, &srv.conninfo(&db))]);
    // Odd seeds check dependencies only inside each drop's transaction (as `sweep --yes` does), even
    // seeds also at planning (as the dashboard and a confirmed sweep do): both paths meet the oracle.
    let check = if seed % 2 == 1 {
        DependencyCheck::AtDropOnly
    } else {
        DependencyCheck::AtPlan
    };
    let r: SweepReport = sweep_with(
        &settings,
        &SweepRules::default(),
        &DropSettings::default(),
        check,
    )
    .await;
    let result = &r.databases[0];
    let dropped: BTreeSet<&str> = result.dropped.iter().map(String::as_str).collect();
    let mut violations = Vec::new();
    if !result.failed.is_empty() {
        violations.push(format!("failed drops: {:?}", result.failed));
    }

    // 1. The oracle: everything removed belongs to a dropped schema.
    let removed = admin
        .query(
            "SELECT objid, object_type, schema_name, object_identity, address_names \
             FROM oracle.dropped",
            &[],
        )
        .await
        .unwrap();
    for row in &removed {
        let objid: u32 = row.get(0);
        let kind: String = row.get(1);
        let schema: Option<String> = row.get(2);
        let identity: String = row.get(3);
        let names: Vec<String> = row.get(4);
        // Members of an operator family are addressed {access method, schema, family, number}.
        let by_address = if kind.ends_with("of access method") {
            names.get(1).cloned()
        } else {
            names
                .first()
                .map(|n| n.split('.').next().unwrap_or(n).to_string())
        };
        let belongs = owner_of_internal
            .get(&objid)
            .cloned()
            .or(schema)
            .or(by_address);
        let ok = match belongs.as_deref() {
            Some("pg_toast") => true,
            Some(s) => dropped.contains(s),
            None => false,
        };
        if !ok {
            violations.push(format!(
                "removed {kind} {identity} (belongs to {belongs:?}) outside the dropped schemas"
            ));
        }
    }

    // 2. Everything outside the dropped schemas survives, with its rows.
    for o in &g.objects {
        if dropped.contains(g.schemas[o.owner].0.as_str()) {
            continue;
        }
        let exists: bool = admin
            .query_one(
                "SELECT oracle.exists($1, $2, $3)",
                &[&o.kind, &o.names, &o.args],
            )
            .await
            .unwrap()
            .get(0);
        if !exists {
            violations.push(format!("{} {:?} is gone", o.kind, o.names));
        }
    }
    for (t, before) in g.tables.iter().zip(rows_before) {
        if dropped.contains(g.schemas[t.schema].0.as_str()) {
            continue;
        }
        let after = count_rows(&admin, &g, t).await;
        if after != before {
            violations.push(format!(
                "{}.{} had {before} rows, now {after}",
                g.schemas[t.schema].0, t.name
            ));
        }
    }

    // 3. Precision: the right schemas go, for the right reasons. A stale schema something refers to
    // is kept, unless every schema that referred to it was dropped first (then, at its turn,
    // nothing outside depended on it any more: the oracle above checks nothing was lost).
    let reason = |s: &str| result.kept.iter().find(|k| k.schema == s).map(|k| k.reason);
    let gone_first = |referrers: &BTreeSet<usize>| {
        referrers
            .iter()
            .all(|&r| dropped.contains(g.schemas[r].0.as_str()))
    };
    for (i, (name, kind)) in g.schemas.iter().enumerate() {
        let want = match kind {
            SchemaKind::Public => continue,
            SchemaKind::Live => Some(KeepReason::Live),
            SchemaKind::Stale => match g.entangled.get(&i) {
                Some(r) if gone_first(r) && dropped.contains(name.as_str()) => None,
                Some(_) => Some(KeepReason::ExternalDependents),
                None => None,
            },
        };
        let got = if dropped.contains(name.as_str()) {
            None
        } else {
            reason(name)
        };
        if got != want {
            violations.push(format!("{name}: expected {want:?}, got {got:?}"));
        }
    }

    totals.graphs += 1;
    totals.objects += g.objects.len();
    totals.schemas_dropped += dropped.len();
    totals.dropped_objects += removed.len();
    totals.kept_external += result
        .kept
        .iter()
        .filter(|k| k.reason == KeepReason::ExternalDependents)
        .count();
    totals.kept_live += result
        .kept
        .iter()
        .filter(|k| k.reason == KeepReason::Live)
        .count();
    drop(admin);
    srv.psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"))
        .unwrap();
    if violations.is_empty() {
        Ok(())
    } else {
        let by_schema: BTreeMap<usize, &str> = g
            .schemas
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (i, n.as_str()))
            .collect();
        Err(format!(
            "seed {seed}: {} violation(s):\n  {}\nschemas: {by_schema:?}\nentangled: {:?}\nscript:\n{};\nreport: {r:#?}",
            violations.len(),
            violations.join("\n  "),
            g.entangled,
            g.statements.join(";\n")
        ))
    }
}

async fn run_graphs(count: u64) {
    let srv = start_cluster(&[], ClusterOptions::default());
    let mut totals = Totals {
        graphs: 0,
        objects: 0,
        schemas_dropped: 0,
        kept_external: 0,
        kept_live: 0,
        dropped_objects: 0,
        rejected: 0,
    };
    let mut failures = Vec::new();
    let seeds: Vec<u64> = match std::env::var("PGSWARM_ORACLE_SEED") {
        Ok(one) => vec![one.parse().expect("PGSWARM_ORACLE_SEED is a number")],
        Err(_) => (1..=count).collect(),
    };
    for seed in seeds {
        if let Err(e) = check_graph(&srv, seed, &mut totals).await {
            failures.push(e);
        }
    }
    eprintln!(
        "sweep oracle: {} graphs, {} objects ({} generated steps rejected by the server), {} schemas \
         dropped ({} objects removed), {} kept as external_dependents, {} kept as live",
        totals.graphs,
        totals.objects,
        totals.rejected,
        totals.schemas_dropped,
        totals.dropped_objects,
        totals.kept_external,
        totals.kept_live
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Not vacuous: both outcomes happened (over the whole set; one seed may show only one).
    if std::env::var("PGSWARM_ORACLE_SEED").is_err() {
        assert!(totals.schemas_dropped > 0 && totals.kept_external > 0);
    }
}

#[tokio::test]
async fn random_graphs_never_lose_anything_outside_the_dropped_schemas() {
    let count = std::env::var("PGSWARM_ORACLE_GRAPHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    run_graphs(count).await;
}

#[tokio::test]
#[ignore = "long run: 400 graphs (cargo test --test sweep_oracle_pg -- --ignored)"]
async fn four_hundred_random_graphs() {
    run_graphs(400).await;
}
