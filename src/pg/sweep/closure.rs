//! The dependency closure: what `DROP SCHEMA … CASCADE` would remove outside a schema, computed the way
//! the server's own dependency walk does it, so the sweep can keep a schema whose removal would reach
//! outside it, and name what it found.

use crate::pg::row::{ColumnError, RowExt};
use std::collections::{BTreeSet, HashMap};
use tokio_postgres::{Client, Statement};

/// What `DROP SCHEMA … CASCADE` would remove outside each root schema, following the server's own
/// dependency walk (`findDependentObjects`):
///
/// - forward: everything that depends on a removed object, through every dependency type but pins
///   (normal, auto, internal, partition, extension). A whole object reaches what depends on any of its
///   columns; a column only what depends on that column. That is how a `public` column typed
///   `stale.t[]` is reached: through the array type's internal dependency on `stale.t`'s row type;
/// - backward: removing an internal part or an extension member removes its owner (and an owner
///   outside the schema is then outside);
/// - each object reached is located by its own namespace column, or by its table's for what has none
///   (defaults, triggers, rules, policies). A kind not listed is outside: fail closed;
/// - the triggers a foreign key of the schema keeps on the table it references are part of that
///   key (`public.users` gets `RI_ConstraintTrigger_a_…` for `stale.orders.user_id`; dropping the
///   key removes them, and nothing of `public.users` is lost), and so are toast tables and their
///   indexes (`pg_toast`). No other internal part counts as inside: the operators and support
///   functions an operator class of the schema adds to a `public` operator family are internal parts
///   of that class, yet removing them breaks `public` indexes that use the family;
/// - a table of the schema that is a partition or inheritance child of a table outside is outside too:
///   its rows belong to the outside table.
///
/// Returns one row per root schema and outside object: `(schema, "kind schema.name", is_part)`, where
/// `is_part` marks a column or internal part of another outside object (left out of the names shown).
const CLOSURE_SQL: &str = "
WITH RECURSIVE roots AS (
  SELECT oid AS root FROM pg_catalog.pg_namespace WHERE nspname = ANY($1)
),
walk(root, classid, objid, objsubid) AS (
  SELECT r.root, 'pg_catalog.pg_namespace'::pg_catalog.regclass::pg_catalog.oid, r.root, 0 FROM roots r
  UNION
  SELECT w.root, x.classid, x.objid, x.objsubid
  FROM walk w CROSS JOIN LATERAL (
    SELECT d.classid, d.objid, d.objsubid FROM pg_catalog.pg_depend d
     WHERE d.refclassid = w.classid AND d.refobjid = w.objid
       AND (w.objsubid = 0 OR d.refobjsubid = w.objsubid) AND d.deptype <> 'p'
    UNION ALL
    SELECT d.refclassid, d.refobjid, d.refobjsubid FROM pg_catalog.pg_depend d
     WHERE d.classid = w.classid AND d.objid = w.objid
       AND (w.objsubid = 0 OR d.objsubid = w.objsubid) AND d.deptype IN ('i', 'e')
  ) x
),
located AS (
  SELECT w.root, w.classid, w.objid, w.objsubid,
    CASE w.classid
      WHEN 'pg_catalog.pg_namespace'::pg_catalog.regclass THEN w.objid
      WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN (
        SELECT CASE WHEN c.relnamespace = w.root THEN w.root
                    WHEN (SELECT n.nspname LIKE 'pg\\_toast%' FROM pg_catalog.pg_namespace n
                           WHERE n.oid = c.relnamespace) THEN w.root
                    ELSE c.relnamespace END
          FROM pg_catalog.pg_class c WHERE c.oid = w.objid)
      WHEN 'pg_catalog.pg_type'::pg_catalog.regclass THEN (SELECT typnamespace FROM pg_catalog.pg_type WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN (SELECT pronamespace FROM pg_catalog.pg_proc WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN
        (SELECT connamespace FROM pg_catalog.pg_constraint WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN (SELECT c.relnamespace FROM pg_catalog.pg_attrdef a
        JOIN pg_catalog.pg_class c ON c.oid = a.adrelid WHERE a.oid = w.objid)
      WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN (SELECT c.relnamespace FROM pg_catalog.pg_trigger t
        JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid WHERE t.oid = w.objid)
      WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN (SELECT c.relnamespace FROM pg_catalog.pg_rewrite r
        JOIN pg_catalog.pg_class c ON c.oid = r.ev_class WHERE r.oid = w.objid)
      WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass THEN (SELECT c.relnamespace FROM pg_catalog.pg_policy p
        JOIN pg_catalog.pg_class c ON c.oid = p.polrelid WHERE p.oid = w.objid)
      WHEN 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass THEN
        (SELECT stxnamespace FROM pg_catalog.pg_statistic_ext WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_operator'::pg_catalog.regclass THEN (SELECT oprnamespace FROM pg_catalog.pg_operator WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_opclass'::pg_catalog.regclass THEN (SELECT opcnamespace FROM pg_catalog.pg_opclass WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_opfamily'::pg_catalog.regclass THEN (SELECT opfnamespace FROM pg_catalog.pg_opfamily WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_amop'::pg_catalog.regclass THEN (SELECT f.opfnamespace FROM pg_catalog.pg_amop a
        JOIN pg_catalog.pg_opfamily f ON f.oid = a.amopfamily WHERE a.oid = w.objid)
      WHEN 'pg_catalog.pg_amproc'::pg_catalog.regclass THEN (SELECT f.opfnamespace FROM pg_catalog.pg_amproc a
        JOIN pg_catalog.pg_opfamily f ON f.oid = a.amprocfamily WHERE a.oid = w.objid)
      WHEN 'pg_catalog.pg_collation'::pg_catalog.regclass THEN
        (SELECT collnamespace FROM pg_catalog.pg_collation WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_conversion'::pg_catalog.regclass THEN
        (SELECT connamespace FROM pg_catalog.pg_conversion WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_ts_config'::pg_catalog.regclass THEN (SELECT cfgnamespace FROM pg_catalog.pg_ts_config WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_ts_dict'::pg_catalog.regclass THEN (SELECT dictnamespace FROM pg_catalog.pg_ts_dict WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_ts_parser'::pg_catalog.regclass THEN (SELECT prsnamespace FROM pg_catalog.pg_ts_parser WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_ts_template'::pg_catalog.regclass THEN
        (SELECT tmplnamespace FROM pg_catalog.pg_ts_template WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_extension'::pg_catalog.regclass THEN (SELECT extnamespace FROM pg_catalog.pg_extension WHERE oid = w.objid)
      WHEN 'pg_catalog.pg_default_acl'::pg_catalog.regclass THEN
        (SELECT nullif(defaclnamespace, 0) FROM pg_catalog.pg_default_acl WHERE oid = w.objid)
    END AS nsp
  FROM walk w
),
outside AS (
  SELECT o.* FROM located o
   WHERE o.nsp IS DISTINCT FROM o.root
     AND NOT (o.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND EXISTS (
       SELECT 1 FROM pg_catalog.pg_depend d JOIN located l
           ON l.root = o.root AND l.classid = d.refclassid AND l.objid = d.refobjid
          AND l.nsp = l.root
        WHERE d.classid = o.classid AND d.objid = o.objid AND d.deptype = 'i'))
)
SELECT (SELECT nspname FROM pg_catalog.pg_namespace WHERE oid = o.root)::pg_catalog.text,
       coalesce((SELECT i.type || ' ' || i.identity
                   FROM pg_catalog.pg_identify_object(o.classid, o.objid, o.objsubid) i),
                'an object of an unknown kind'),
       -- A column of, or an internal part of, another outside object: not worth naming on its own.
       EXISTS (SELECT 1 FROM outside w WHERE w.root = o.root AND o.objsubid <> 0
                  AND w.classid = o.classid AND w.objid = o.objid AND w.objsubid = 0)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN outside w
                    ON w.root = o.root AND w.classid = d.refclassid AND w.objid = d.refobjid
                 WHERE d.classid = o.classid AND d.objid = o.objid AND d.deptype = 'i')
  FROM outside o
UNION ALL
SELECT (SELECT nspname FROM pg_catalog.pg_namespace WHERE oid = l.root)::pg_catalog.text,
       coalesce((SELECT i.type || ' ' || i.identity
                   FROM pg_catalog.pg_identify_object(l.classid, l.objid, 0) i), 'a table')
         || ' (partition or child of ' || h.inhparent::pg_catalog.regclass::pg_catalog.text || ')',
       false
  FROM located l JOIN pg_catalog.pg_inherits h ON h.inhrelid = l.objid
  JOIN pg_catalog.pg_class p ON p.oid = h.inhparent
 WHERE l.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND l.objsubid = 0 AND p.relnamespace <> l.root";

/// The closure statement, prepared once per session (planning it costs about a third of running it).
pub async fn prepare_closure(client: &Client) -> Result<Statement, tokio_postgres::Error> {
    client.prepare(CLOSURE_SQL).await
}

/// The objects outside each given schema that `DROP SCHEMA … CASCADE` would also remove (see
/// [`CLOSURE_SQL`]'s rules), sorted, per schema; schemas with none are absent. `closure` comes from
/// [`prepare_closure`] on the same session.
pub async fn external_dependents_prepared(
    client: &Client,
    closure: &Statement,
    schemas: &[String],
) -> Result<HashMap<String, Vec<String>>, tokio_postgres::Error> {
    let rows = client.query(closure, &[&schemas]).await?;
    Ok(collect_dependents(&rows, schemas))
}

/// Per schema, what the closure found. A row that cannot be read counts as a dependent of every
/// schema asked about (named by the problem): the decision is "anything at all", so an answer
/// that cannot be read keeps them all.
fn collect_dependents(
    rows: &[tokio_postgres::Row],
    schemas: &[String],
) -> HashMap<String, Vec<String>> {
    // Per schema: (the objects worth naming, the parts of those).
    let mut found: HashMap<String, (BTreeSet<String>, BTreeSet<String>)> = HashMap::new();
    let mut unreadable = None;
    for row in rows {
        let decoded =
            (|| Ok::<_, ColumnError>((row.col::<String>(0)?, row.col::<String>(1)?, row.col(2)?)))(
            );
        match decoded {
            Ok((schema, object, is_part)) => {
                let entry = found.entry(schema).or_default();
                let set = if is_part { &mut entry.1 } else { &mut entry.0 };
                set.insert(object);
            }
            Err(e) => unreadable = Some(e),
        }
    }
    if let Some(e) = unreadable {
        let why = format!("(a dependency row could not be read: {e})");
        return schemas
            .iter()
            .map(|s| (s.clone(), vec![why.clone()]))
            .collect();
    }
    // The decision is "anything at all"; parts are named only if nothing else is.
    found
        .into_iter()
        .map(|(k, (named, parts))| {
            let shown = if named.is_empty() { parts } else { named };
            (k, shown.into_iter().collect())
        })
        .collect()
}
