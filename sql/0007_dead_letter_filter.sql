-- The operator's dead-letter filter, in one place: `mailroom dead list | retry | purge`
-- and their count use it. Plain LANGUAGE sql with no SET clause, so the planner inlines
-- it (the callers keep `status = 'dead'` beside it for the outbox_dead index). Every
-- filter is optional: NULL matches anything.
CREATE FUNCTION mailroom.dead_letter_matches(
    o mailroom.outbox, ids bigint[], queue text, template text, reason text,
    since timestamptz, before timestamptz
) RETURNS boolean
LANGUAGE sql STABLE
RETURN (ids IS NULL OR o.id = ANY (ids))
   AND (queue IS NULL OR o.queue = queue)
   AND (template IS NULL OR coalesce(o.template,
        CASE WHEN o.raw_mime IS NOT NULL THEN 'raw' ELSE 'simple' END) = template)
   AND (reason IS NULL OR strpos(lower(coalesce(o.last_error, '')), lower(reason)) > 0)
   AND (since IS NULL OR o.updated_at >= since)
   AND (before IS NULL OR o.updated_at < before);
