-- 0024: rebuild what an older `mailroom migrate` bound to objects planted outside
-- pg_catalog (issue 18, item 3).
--
-- Before issue 18's fix, migrate ran each migration with the caller's search_path. A CHECK
-- constraint, a column default, an index expression or predicate, a view, a trigger's
-- WHEN clause, a policy and a SQL-standard function body (RETURN / BEGIN ATOMIC) bind
-- their operators and functions when they are created: on an install migrated while
-- someone had planted an exact-type overload in public (`public.>(float8, int4)`,
-- `public.%(int8, int4)`, `public.length(text)`, `public.now()`...), those objects call
-- the plant on every write, as whoever writes. What 0001-0018 and lifecycle 1001-1002
-- create of these kinds, each rebuilt if it is bound outside pg_catalog:
--   CHECK constraints: accounts_email_must_be_ascii_user_at_domain,
--     accounts_login_1_to_255_chars, attempts_outcome_known, audit_action_known,
--     audit_reason_at_most_500_chars, audit_via_known, daemons_mode_known,
--     daemons_pause_reason_at_most_300_chars, daemons_transport_at_most_500_chars,
--     daemons_worker_at_most_200_chars, events_detail_at_most_1000_chars,
--     events_recipient_normalized, events_type_known, outbox_max_attempts_between_1_and_100,
--     outbox_sending_has_lease, outbox_status_known, rate_buckets_factor_in_0_1,
--     settings_channel_is_identifier, settings_singleton_check,
--     suppressions_address_normalized, suppressions_detail_at_most_1000_chars,
--     suppressions_reason_known, tokens_code_is_5_digits, tokens_secret_is_32_bytes;
--   column defaults: accounts (created_at, status, updated_at), attempts.at, audit (actor,
--     at, messages), daemons.seen_at, events (received_at, subtype), outbox (attempts,
--     bcc/cc/reply_to_addresses, created_at, enqueued_by, max_attempts, next_attempt_at,
--     not_before, priority, queue, status, updated_at), rate_buckets (day_sent, factor,
--     updated_at), recipient_sends.at, schema_migrations.applied_at, settings (channel,
--     singleton), suppressions (created_at, created_by), tokens (code, created_at,
--     expires_at, secret);
--   index expressions and predicates: attempts_lease_expired, events_bounces_by_recipient,
--     outbox_cancelled, outbox_dead, outbox_due_by_priority, outbox_due_by_time,
--     outbox_idempotency_key, outbox_leases, outbox_provider_message_id, outbox_sent_at;
--   SQL-standard bodies: are_valid_addresses(text[]), bare_address(text),
--     dead_letter_matches(...), is_valid_addr_spec(text), is_valid_address(text),
--     new_token_code(), new_token_secret(), normalize_address(text), rate_factor(...),
--     rate_quota(...), recipient_key(text), ses_addresses(text[]);
--   the trigger WHEN clause of outbox_forget_token;
--   no views or policies (handled all the same, should 0019-0023 or an administrator add
--   some under an unsafe path).
-- Only those that depend (pg_depend) on a function, operator, type or collation outside
-- pg_catalog and mailroom are rebuilt; on a clean install nothing is (idempotent).
--
-- How, generically (static SQL, one function): each bound object is deparsed (pg_get_*def)
-- with the foreign schemas first on the path, so that the plants it calls print
-- unqualified (`length(login)`, `factor > 0`) while everything else prints as it binds
-- (mailroom.* qualified, pg_catalog unqualified or qualified where shadowed); the text is
-- then executed under search_path pg_catalog, pg_temp, where those unqualified names can
-- only resolve to pg_catalog. Deparsing from the catalog, rather than re-stating 0001's
-- text here, also rebuilds an object as it is now (after 0019-0023's changes), not as it
-- once was. While the foreign schemas are on the path, the function runs nothing but
-- schema-qualified calls with exact argument types, so no plant can run here. Constraints
-- are dropped and re-added in one ALTER TABLE and validated against the existing rows
-- (those already NOT VALID stay so); indexes are re-created; views and SQL-standard bodies
-- are replaced (owner and grants kept); triggers keep their enabled state. A dependency
-- that cannot be rebuilt this way (a column whose type is a plant, a FOREIGN KEY's
-- operator) is left to `mailroom check --schema` to report; an object rebuilt and still
-- bound gets a WARNING.
-- mailroom.bound_outside_catalog() lists what can be rebuilt (the same dependencies as
-- `mailroom check --schema`'s query, restricted to the kinds above); both functions are
-- owner only (no SECURITY DEFINER, EXECUTE revoked from PUBLIC); lifecycle 1005 runs the
-- rebuild again for the lifecycle tables. rebind_to_catalog() returns how many objects it
-- rebuilt.

-- What the rebuild can re-create: (kind, object, schema the binding points into) for every
-- object of the mailroom schema depending on a function, operator, type or collation
-- outside pg_catalog and mailroom. Run before the rebuild (what to do) and after (what is
-- left). The string body is parsed at each call under the SET path below.
CREATE FUNCTION mailroom.bound_outside_catalog()
RETURNS TABLE (kind text, object oid, schema text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
WITH refs AS (  -- dependencies on an object outside pg_catalog and mailroom
    SELECT d.classid, d.objid, ref.schema
    FROM pg_depend AS d
    CROSS JOIN LATERAL pg_identify_object(d.refclassid, d.refobjid, 0) AS ref
    WHERE d.refclassid = ANY (ARRAY['pg_proc', 'pg_operator', 'pg_type',
                                    'pg_collation']::regclass[])
      AND ref.schema <> ALL (ARRAY['pg_catalog', 'mailroom'])
), owned AS (  -- ... held by an object of the mailroom schema this can rebuild
    SELECT 'constraint' AS kind, c.oid, r.schema
    FROM refs AS r JOIN pg_constraint AS c ON c.oid = r.objid
    WHERE r.classid = 'pg_constraint'::regclass AND c.contype = 'c'
      AND c.connamespace = 'mailroom'::regnamespace
    UNION ALL
    SELECT 'default', a.oid, r.schema
    FROM refs AS r JOIN pg_attrdef AS a ON a.oid = r.objid
    JOIN pg_class AS t ON t.oid = a.adrelid
    JOIN pg_attribute AS col ON col.attrelid = a.adrelid AND col.attnum = a.adnum
    WHERE r.classid = 'pg_attrdef'::regclass AND col.attgenerated = ''
      AND t.relnamespace = 'mailroom'::regnamespace
    UNION ALL
    SELECT 'index', i.oid, r.schema
    FROM refs AS r JOIN pg_class AS i ON i.oid = r.objid
    WHERE r.classid = 'pg_class'::regclass AND i.relkind = 'i'
      AND i.relnamespace = 'mailroom'::regnamespace
      AND NOT EXISTS (SELECT FROM pg_constraint AS c WHERE c.conindid = i.oid)
    UNION ALL
    SELECT 'view', v.oid, r.schema
    FROM refs AS r JOIN pg_rewrite AS w ON w.oid = r.objid
    JOIN pg_class AS v ON v.oid = w.ev_class
    WHERE r.classid = 'pg_rewrite'::regclass AND v.relkind = 'v'
      AND w.rulename = '_RETURN' AND v.relnamespace = 'mailroom'::regnamespace
    UNION ALL
    SELECT 'trigger', tg.oid, r.schema
    FROM refs AS r JOIN pg_trigger AS tg ON tg.oid = r.objid
    JOIN pg_class AS t ON t.oid = tg.tgrelid
    WHERE r.classid = 'pg_trigger'::regclass AND NOT tg.tgisinternal
      AND t.relnamespace = 'mailroom'::regnamespace
    UNION ALL
    SELECT 'function', p.oid, r.schema
    FROM refs AS r JOIN pg_proc AS p ON p.oid = r.objid
    WHERE r.classid = 'pg_proc'::regclass AND p.prosqlbody IS NOT NULL
      AND p.pronamespace = 'mailroom'::regnamespace
    UNION ALL
    SELECT 'policy', pol.oid, r.schema
    FROM refs AS r JOIN pg_policy AS pol ON pol.oid = r.objid
    JOIN pg_class AS t ON t.oid = pol.polrelid
    WHERE r.classid = 'pg_policy'::regclass AND t.relnamespace = 'mailroom'::regnamespace
)
SELECT DISTINCT kind, oid, schema FROM owned
$$;
REVOKE EXECUTE ON FUNCTION mailroom.bound_outside_catalog() FROM PUBLIC;

CREATE FUNCTION mailroom.rebind_to_catalog() RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    safe_path constant text := 'pg_catalog, pg_temp';
    deparse_path text;
    kinds text[];
    oids oid[];
    target_oid oid;
    statements text[] := '{}';
    definition text;
    check_clause text;
    rel regclass;
    objname name;
    expr pg_node_tree;
    expr2 pg_node_tree;
    state "char";
    domain_type regtype;
    statement text;
    remaining text;
BEGIN
    WITH targets AS (
        SELECT DISTINCT b.kind, b.object FROM mailroom.bound_outside_catalog() AS b
    )
    SELECT array_agg(t.kind ORDER BY t.kind, t.object),
           array_agg(t.object ORDER BY t.kind, t.object),
           (SELECT string_agg(DISTINCT quote_ident(b.schema), ', ')
            FROM mailroom.bound_outside_catalog() AS b)
    INTO kinds, oids, deparse_path
    FROM targets AS t;
    IF kinds IS NULL THEN
        RETURN 0;
    END IF;
    deparse_path := deparse_path || ', ' || safe_path;

    -- Deparse: under deparse_path nothing runs but the assignment(s) between each pair of
    -- set_config calls, each a schema-qualified catalog function on exact types (no
    -- operator or unqualified name a plant could take).
    FOR i IN 1 .. cardinality(kinds) LOOP
        target_oid := oids[i];
        IF kinds[i] = 'constraint' THEN
            SELECT c.conrelid, c.contypid, c.conname INTO rel, domain_type, objname
            FROM pg_constraint AS c WHERE c.oid = target_oid;
            PERFORM pg_catalog.set_config('search_path', deparse_path, true);
            definition := pg_catalog.pg_get_constraintdef(target_oid);
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            IF domain_type::oid = 0 THEN  -- a table's (a domain's has no relation)
                statements := statements || format(
                    'ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s',
                    rel, objname, objname, definition);
            ELSE
                statements := statements
                    || format('ALTER DOMAIN %s DROP CONSTRAINT %I', domain_type, objname)
                    || format('ALTER DOMAIN %s ADD CONSTRAINT %I %s',
                              domain_type, objname, definition);
            END IF;
        ELSIF kinds[i] = 'default' THEN
            SELECT a.adrelid, a.adbin, col.attname INTO rel, expr, objname
            FROM pg_attrdef AS a
            JOIN pg_attribute AS col ON col.attrelid = a.adrelid AND col.attnum = a.adnum
            WHERE a.oid = target_oid;
            PERFORM pg_catalog.set_config('search_path', deparse_path, true);
            definition := pg_catalog.pg_get_expr(expr, rel);
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            statements := statements || format(
                'ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', rel, objname, definition);
        ELSIF kinds[i] = 'index' THEN
            PERFORM pg_catalog.set_config('search_path', deparse_path, true);
            definition := pg_catalog.pg_get_indexdef(target_oid);
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            statements := statements || format('DROP INDEX %s', target_oid::regclass)
                || definition;
        ELSIF kinds[i] = 'view' THEN
            PERFORM pg_catalog.set_config('search_path', deparse_path, true);
            definition := pg_catalog.pg_get_viewdef(target_oid);
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            -- CREATE OR REPLACE VIEW replaces the options: give back those it had
            SELECT coalesce(' WITH (' || array_to_string(v.reloptions, ', ') || ')', '')
            INTO check_clause FROM pg_class AS v WHERE v.oid = target_oid;
            statements := statements || format(
                'CREATE OR REPLACE VIEW %s%s AS %s',
                target_oid::regclass, check_clause, definition);
        ELSIF kinds[i] = 'trigger' THEN
            SELECT tg.tgrelid, tg.tgname, tg.tgenabled INTO rel, objname, state
            FROM pg_trigger AS tg WHERE tg.oid = target_oid;
            PERFORM pg_catalog.set_config('search_path', deparse_path, true);
            definition := pg_catalog.pg_get_triggerdef(target_oid);
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            statements := statements || format('DROP TRIGGER %I ON %s', objname, rel)
                || definition;
            IF state <> 'O' THEN
                statements := statements || format(
                    'ALTER TABLE %s %s TRIGGER %I', rel,
                    CASE state WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA'
                               ELSE 'ENABLE ALWAYS' END,
                    objname);
            END IF;
        ELSIF kinds[i] = 'function' THEN
            PERFORM pg_catalog.set_config('search_path', deparse_path, true);
            definition := pg_catalog.pg_get_functiondef(target_oid);
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            statements := statements || definition;
        ELSIF kinds[i] = 'policy' THEN
            SELECT pol.polrelid, pol.polname, pol.polqual, pol.polwithcheck
            INTO rel, objname, expr, expr2
            FROM pg_policy AS pol WHERE pol.oid = target_oid;
            PERFORM pg_catalog.set_config('search_path', deparse_path, true);
            definition := pg_catalog.pg_get_expr(expr, rel);
            check_clause := pg_catalog.pg_get_expr(expr2, rel);
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            statements := statements || format(
                'ALTER POLICY %I ON %s%s%s', objname, rel,
                ' USING (' || definition || ')', ' WITH CHECK (' || check_clause || ')');
        END IF;
    END LOOP;

    -- Rebuild, under the safe path only.
    PERFORM set_config('search_path', safe_path, true);
    FOREACH statement IN ARRAY statements LOOP
        EXECUTE statement;
    END LOOP;

    SELECT string_agg(DISTINCT pg_describe_object(c.oid, b.object, 0) || ' -> ' || b.schema,
                      '; ')
    INTO remaining
    FROM mailroom.bound_outside_catalog() AS b
    CROSS JOIN LATERAL (SELECT CASE b.kind
        WHEN 'constraint' THEN 'pg_constraint' WHEN 'default' THEN 'pg_attrdef'
        WHEN 'index' THEN 'pg_class' WHEN 'view' THEN 'pg_class'
        WHEN 'trigger' THEN 'pg_trigger' WHEN 'function' THEN 'pg_proc'
        ELSE 'pg_policy' END::regclass AS oid) AS c;
    IF remaining IS NOT NULL THEN
        RAISE WARNING 'mailroom objects still bound outside pg_catalog: %', remaining
            USING HINT = 'see `mailroom check --schema` and docs/operations.md';
    END IF;
    RETURN cardinality(kinds);
END
$$;
REVOKE EXECUTE ON FUNCTION mailroom.rebind_to_catalog() FROM PUBLIC;

SELECT mailroom.rebind_to_catalog();
