-- Builds schema `evil`: a look-alike for every catalog function, aggregate, operator, relation and
-- type whose name pgswarm's SQL text uses (the arrays below are filled in by tests/common/lookalike.rs
-- from the string literals of src/pg). Every look-alike lies: booleans are true, numbers and pids
-- are invented (424242), arrays of pids name a blocker that does not exist, set-returning
-- functions and relations return nothing (so every `pytest%` session is hidden), types are
-- domains over other types. Run by the database's owner, who needs no superuser for any of it.
-- Objects that cannot be made (pseudo-type arguments such as "any") are listed in evil.skipped.
SET search_path = pg_catalog;
CREATE SCHEMA evil;
CREATE TABLE evil.skipped (kind text, name text, why text);
CREATE TABLE evil.made (kind text, name text, signature text);

-- The lie for a value of type t, as an SQL expression (fully qualified: look-alike bodies must not
-- resolve through a search_path that contains `evil` themselves).
CREATE FUNCTION evil.lie(t regtype) RETURNS text LANGUAGE sql SET search_path = pg_catalog AS $$
  SELECT CASE t
    WHEN 'bool'::regtype THEN 'true'
    WHEN 'int2'::regtype THEN '4242::pg_catalog.int2'
    WHEN 'int4'::regtype THEN '424242::pg_catalog.int4'
    WHEN 'int8'::regtype THEN '424242::pg_catalog.int8'
    WHEN 'oid'::regtype THEN '424242::pg_catalog.oid'
    WHEN 'float8'::regtype THEN '4242.0::pg_catalog.float8'
    WHEN 'numeric'::regtype THEN '4242::pg_catalog.numeric'
    WHEN 'int4[]'::regtype THEN 'ARRAY[424242]::pg_catalog.int4[]'
    WHEN 'text'::regtype THEN quote_literal('pytest_gw0_p1t1r1') || '::pg_catalog.text'
    WHEN 'name'::regtype THEN quote_literal('evil') || '::pg_catalog.name'
    WHEN 'timestamptz'::regtype THEN quote_literal('2000-01-01 00:00:00+00') || '::pg_catalog.timestamptz'
    ELSE 'NULL::' || format_type(t, NULL)
  END
$$;

-- The same lie as a literal for an aggregate's INITCOND (NULL: no initial value, so NULL).
CREATE FUNCTION evil.lie_literal(t regtype) RETURNS text LANGUAGE sql SET search_path = pg_catalog AS $$
  SELECT CASE t
    WHEN 'bool'::regtype THEN 'true'
    WHEN 'int2'::regtype THEN '4242'
    WHEN 'int4'::regtype THEN '424242'
    WHEN 'int8'::regtype THEN '424242'
    WHEN 'oid'::regtype THEN '424242'
    WHEN 'float8'::regtype THEN '4242'
    WHEN 'numeric'::regtype THEN '4242'
    WHEN 'int4[]'::regtype THEN '{424242}'
    WHEN 'text'::regtype THEN 'pytest_gw0_p1t1r1'
    WHEN 'name'::regtype THEN 'evil'
    WHEN 'timestamptz'::regtype THEN '2000-01-01 00:00:00+00'
  END
$$;

DO $gen$
DECLARE
  fn_words text[] := '{@FUNCTIONS@}';
  rel_words text[] := '{@RELATIONS@}';
  type_words text[] := '{@TYPES@}';
  op_words text[] := '{@OPERATORS@}';
  concrete text[] := '{int4,int8,text,oid,bool,name,timestamptz,xid}';
  r record;
  c text;
  sig text;
  args text;
  argtypes text;
  body text;
  n int := 0;
BEGIN
  -- Relations: views that show nothing (or, for the activity, nothing labeled pytest).
  FOR r IN SELECT c.relname FROM pg_class c
            WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind IN ('r', 'v')
              AND c.relname = ANY (rel_words) LOOP
    BEGIN
      EXECUTE format('CREATE VIEW evil.%I AS SELECT * FROM pg_catalog.%I WHERE false',
                     r.relname, r.relname);
      INSERT INTO evil.made VALUES ('relation', r.relname, r.relname);
    EXCEPTION WHEN OTHERS THEN
      INSERT INTO evil.skipped VALUES ('relation', r.relname, SQLERRM);
    END;
  END LOOP;

  -- Functions and aggregates, each signature; polymorphic ones once per concrete type.
  FOR r IN SELECT p.oid, p.proname, p.prokind, p.proretset, p.prorettype,
                  pg_get_function_arguments(p.oid) AS args,
                  pg_get_function_identity_arguments(p.oid) AS ident,
                  pg_get_function_result(p.oid) AS result
             FROM pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY (fn_words)
              AND (p.prokind = 'f'
                   OR (p.prokind = 'a' AND (SELECT a.aggkind FROM pg_aggregate a
                                             WHERE a.aggfnoid = p.oid) = 'n')) LOOP
    FOREACH c IN ARRAY (CASE WHEN r.args ~ 'any(element|array|nonarray|compatible)'
                                  OR r.result ~ 'any(element|array|nonarray|compatible)'
                             THEN concrete ELSE ARRAY['-'] END) LOOP
      args := regexp_replace(regexp_replace(r.args, 'any(compatible)?array', c || '[]', 'g'),
                             'any(element|nonarray|compatible|compatiblenonarray)', c, 'g');
      sig := regexp_replace(regexp_replace(r.result, 'any(compatible)?array', c || '[]', 'g'),
                            'any(element|nonarray|compatible|compatiblenonarray)', c, 'g');
      BEGIN
        IF r.prokind = 'a' THEN
          argtypes := regexp_replace(regexp_replace(r.ident, 'any(compatible)?array', c || '[]', 'g'),
                                     'any(element|nonarray|compatible|compatiblenonarray)', c, 'g');
          n := n + 1;
          EXECUTE format('CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE sql SET search_path = pg_catalog AS %L',
                         'sfunc_' || n, sig || CASE WHEN argtypes = '' THEN '' ELSE ', ' || argtypes END,
                         sig, 'SELECT $1');
          EXECUTE format('CREATE AGGREGATE evil.%I(%s) (SFUNC = evil.%I, STYPE = %s%s)',
                         r.proname, CASE WHEN argtypes = '' THEN '*' ELSE argtypes END, 'sfunc_' || n,
                         sig, coalesce(', INITCOND = ' || quote_literal(evil.lie_literal(sig::regtype)), ''));
        ELSE
          IF r.proretset OR sig ~ '^TABLE' THEN
            -- Returns nothing at all: every session, lock or row it would have listed is hidden.
            SELECT string_agg('NULL::' || format_type(u.t, NULL), ', ' ORDER BY u.i) INTO body
              FROM pg_proc p,
                   LATERAL unnest(coalesce(
                     (SELECT array_agg(x.pt ORDER BY x.i)
                        FROM unnest(p.proallargtypes, p.proargmodes) WITH ORDINALITY AS x(pt, m, i)
                       WHERE x.m IN ('o', 'b', 't')),
                     ARRAY[p.prorettype])) WITH ORDINALITY AS u(t, i)
             WHERE p.oid = r.oid;
            IF c <> '-' THEN
              body := replace(replace(body, 'anyarray', c || '[]'), 'anyelement', c);
            END IF;
            body := 'SELECT ' || body || ' WHERE false';
          ELSE
            body := 'SELECT ' || evil.lie(sig::regtype);
          END IF;
          EXECUTE format('CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE sql SET search_path = pg_catalog AS %L',
                         r.proname, args, sig, body);
        END IF;
        INSERT INTO evil.made VALUES (CASE r.prokind WHEN 'a' THEN 'aggregate' ELSE 'function' END,
                                      r.proname, args);
      EXCEPTION WHEN OTHERS THEN
        INSERT INTO evil.skipped VALUES ('function', r.proname, args || ': ' || SQLERRM);
      END;
    END LOOP;
  END LOOP;

  -- Operators: every catalog operator of each symbol the SQL uses, between non-pseudo types.
  FOR r IN SELECT o.oprname, o.oprleft, o.oprright, o.oprresult FROM pg_operator o
             JOIN pg_type rt ON rt.oid = o.oprright
             LEFT JOIN pg_type lt ON lt.oid = o.oprleft
            WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oprname = ANY (op_words)
              AND rt.typtype <> 'p' AND (o.oprleft = 0 OR lt.typtype <> 'p') LOOP
    n := n + 1;
    BEGIN
      IF r.oprleft = 0 THEN
        EXECUTE format('CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE sql SET search_path = pg_catalog AS %L',
                       'op_' || n, format_type(r.oprright, NULL), format_type(r.oprresult, NULL),
                       'SELECT ' || evil.lie(r.oprresult::regtype));
        EXECUTE format('CREATE OPERATOR evil.%s (RIGHTARG = %s, FUNCTION = evil.%I)',
                       r.oprname, format_type(r.oprright, NULL), 'op_' || n);
      ELSE
        EXECUTE format('CREATE FUNCTION evil.%I(%s, %s) RETURNS %s LANGUAGE sql SET search_path = pg_catalog AS %L',
                       'op_' || n, format_type(r.oprleft, NULL), format_type(r.oprright, NULL),
                       format_type(r.oprresult, NULL), 'SELECT ' || evil.lie(r.oprresult::regtype));
        EXECUTE format('CREATE OPERATOR evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil.%I)',
                       r.oprname, format_type(r.oprleft, NULL), format_type(r.oprright, NULL), 'op_' || n);
      END IF;
      INSERT INTO evil.made VALUES ('operator', r.oprname,
        format_type(r.oprleft, NULL) || ' ' || r.oprname || ' ' || format_type(r.oprright, NULL));
    EXCEPTION WHEN OTHERS THEN
      INSERT INTO evil.skipped VALUES ('operator', r.oprname, SQLERRM);
    END;
  END LOOP;

  -- Types last (the look-alikes above were written with pg_catalog's): domains over another type.
  FOR r IN SELECT t.typname FROM pg_type t
            WHERE t.typnamespace = 'pg_catalog'::regnamespace AND t.typname = ANY (type_words)
              AND t.typtype = 'b' AND t.typrelid = 0 LOOP
    BEGIN
      EXECUTE format('CREATE DOMAIN evil.%I AS %s', r.typname,
                     CASE WHEN r.typname = 'text' THEN 'pg_catalog.varchar(2)' ELSE 'pg_catalog.text' END);
      INSERT INTO evil.made VALUES ('type', r.typname, r.typname);
    EXCEPTION WHEN OTHERS THEN
      INSERT INTO evil.skipped VALUES ('type', r.typname, SQLERRM);
    END;
  END LOOP;
END
$gen$;
