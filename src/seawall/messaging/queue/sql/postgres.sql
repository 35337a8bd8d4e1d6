-- The PostgreSQL queue store's statements (seawall.messaging.queue.postgres).
--
-- Placeholders filled once when the store is built:
--   {now}    the time of the statement: the server's clock_timestamp() in epoch seconds,
--            or %(now)s when a test injects a clock;
--   {relax}  ", set_config('synchronous_commit', 'off', true)" for receives, acks, nacks
--            and extensions (their commit returns before the WAL reaches disk; a server
--            crash can undo the last ones, which means a redelivery), or nothing.
-- Every statement runs alone in autocommit, or inside a caller's transaction.
-- A message's place in line is `place`: when it was sent, when its delay ended or when
-- it was redriven; a redelivery keeps it. It is ready when visible_at <= now.

-- name: schema
CREATE SEQUENCE IF NOT EXISTS seawall_queue_ids;
CREATE TABLE IF NOT EXISTS seawall_queues (
    name text PRIMARY KEY,
    created_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS seawall_queue_messages (
    id bigint PRIMARY KEY DEFAULT nextval('seawall_queue_ids'),
    queue text NOT NULL,
    priority smallint NOT NULL,
    place double precision NOT NULL,
    visible_at double precision NOT NULL,
    token bigint,
    deliveries integer NOT NULL DEFAULT 0,
    enqueued_at double precision NOT NULL,
    body bytea NOT NULL,
    headers jsonb,
    last_error text
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX IF NOT EXISTS seawall_queue_messages_line
    ON seawall_queue_messages (queue, priority DESC, place, id);
CREATE TABLE IF NOT EXISTS seawall_queue_dead (
    id bigint PRIMARY KEY,
    queue text NOT NULL,
    died bigserial NOT NULL,
    priority smallint NOT NULL,
    deliveries integer NOT NULL,
    enqueued_at double precision NOT NULL,
    dead_at double precision NOT NULL,
    body bytea NOT NULL,
    headers jsonb,
    reason text NOT NULL,
    last_error text
);
CREATE INDEX IF NOT EXISTS seawall_queue_dead_order ON seawall_queue_dead (queue, died);
CREATE TABLE IF NOT EXISTS seawall_queue_dedup (
    queue text NOT NULL,
    dedup_id text NOT NULL,
    expires_at double precision NOT NULL,
    message_id bigint NOT NULL,
    PRIMARY KEY (queue, dedup_id)
);

-- name: schema_ready
SELECT to_regclass('seawall_queue_dedup') IS NOT NULL

-- name: declare
INSERT INTO seawall_queues (name, created_at)
VALUES (%(queue)s, extract(epoch FROM clock_timestamp())::float8)
ON CONFLICT (name) DO NOTHING

-- name: names
SELECT name FROM seawall_queues ORDER BY name

-- name: send
WITH t AS MATERIALIZED (SELECT {now} AS now),
message AS (
    INSERT INTO seawall_queue_messages
        (queue, priority, place, visible_at, enqueued_at, body, headers)
    SELECT %(queue)s, %(priority)s, t.now + %(delay)s, t.now + %(delay)s, t.now, %(body)s,
        %(headers)s::jsonb
    FROM t
    RETURNING id
)
SELECT id, pg_notify('seawall_queue', %(queue)s)::text FROM message

-- name: send_deduplicated
WITH t AS MATERIALIZED (SELECT {now} AS now),
seen AS (
    SELECT message_id FROM seawall_queue_dedup
    WHERE queue = %(queue)s AND dedup_id = %(dedup_id)s AND expires_at > (SELECT now FROM t)
),
fresh AS (
    INSERT INTO seawall_queue_dedup AS d (queue, dedup_id, expires_at, message_id)
    SELECT %(queue)s, %(dedup_id)s, t.now + %(window)s, nextval('seawall_queue_ids')
    FROM t WHERE NOT EXISTS (SELECT FROM seen)
    ON CONFLICT (queue, dedup_id) DO UPDATE
        SET expires_at = excluded.expires_at, message_id = excluded.message_id
        WHERE d.expires_at <= excluded.expires_at - %(window)s
    RETURNING message_id
),
message AS (
    INSERT INTO seawall_queue_messages
        (id, queue, priority, place, visible_at, enqueued_at, body, headers)
    SELECT fresh.message_id, %(queue)s, %(priority)s, t.now + %(delay)s, t.now + %(delay)s,
        t.now, %(body)s, %(headers)s::jsonb
    FROM fresh, t
    RETURNING id
)
SELECT id, false, pg_notify('seawall_queue', %(queue)s)::text FROM message
UNION ALL
SELECT message_id, true, NULL FROM seen

-- name: dedup_sweep
WITH t AS MATERIALIZED (SELECT {now} AS now)
DELETE FROM seawall_queue_dedup
WHERE queue = %(queue)s AND expires_at <= (SELECT now FROM t)

-- name: send_many
WITH t AS MATERIALIZED (SELECT {now} AS now),
message AS (
    INSERT INTO seawall_queue_messages
        (id, queue, priority, place, visible_at, enqueued_at, body, headers)
    SELECT nextval('seawall_queue_ids'), %(queue)s, batch.priority,
        (SELECT now FROM t) + batch.delay, (SELECT now FROM t) + batch.delay,
        (SELECT now FROM t), batch.body, batch.headers::jsonb
    FROM unnest(%(priorities)s::smallint[], %(delays)s::float8[], %(bodies)s::bytea[],
        %(headers)s::text[]) WITH ORDINALITY AS batch(priority, delay, body, headers, position)
    ORDER BY batch.position
    RETURNING id
)
SELECT array_agg(id ORDER BY id), pg_notify('seawall_queue', %(queue)s)::text FROM message

-- name: claim
WITH t AS MATERIALIZED (SELECT {now} AS now {relax}),
picked AS (
    SELECT m.id, m.deliveries
    FROM seawall_queue_messages m
    WHERE m.queue = %(queue)s
        AND m.place <= (SELECT now FROM t)
        AND m.visible_at <= (SELECT now FROM t)
    ORDER BY m.priority DESC, m.place, m.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE seawall_queue_messages m
    SET token = %(token)s, deliveries = m.deliveries + 1,
        visible_at = (SELECT now FROM t) + %(visibility)s
    FROM picked
    WHERE m.id = picked.id AND picked.deliveries < %(max_deliveries)s
    RETURNING m.id, m.body, m.headers, m.priority, m.deliveries, m.enqueued_at, m.place
),
spent AS (
    DELETE FROM seawall_queue_messages m
    USING picked
    WHERE m.id = picked.id AND picked.deliveries >= %(max_deliveries)s
    RETURNING m.id, m.queue, m.priority, m.deliveries, m.enqueued_at, m.body, m.headers,
        m.last_error
),
buried AS (
    INSERT INTO seawall_queue_dead
        (id, queue, priority, deliveries, enqueued_at, dead_at, body, headers, reason, last_error)
    SELECT id, queue, priority, deliveries, enqueued_at, (SELECT now FROM t), body, headers,
        'visibility timeout expired on its last allowed delivery (' || deliveries
            || ' of max_deliveries=' || %(max_deliveries)s::int || ')',
        last_error
    FROM spent
    RETURNING id, deliveries, reason
)
SELECT id, body, headers, priority, deliveries, enqueued_at, place, NULL::text FROM claimed
UNION ALL
SELECT id, NULL, NULL, NULL, deliveries, NULL, NULL, reason FROM buried

-- name: next_due
WITH t AS MATERIALIZED (SELECT {now} AS now)
SELECT min(visible_at) - (SELECT now FROM t) FROM seawall_queue_messages
WHERE queue = %(queue)s

-- name: ack
WITH t AS MATERIALIZED (SELECT 1 {relax})
DELETE FROM seawall_queue_messages
WHERE id = %(id)s AND token = %(token)s AND queue = %(queue)s AND EXISTS (SELECT FROM t)

-- name: ack_many
WITH t AS MATERIALIZED (SELECT 1 {relax})
DELETE FROM seawall_queue_messages m
USING unnest(%(ids)s::bigint[], %(tokens)s::bigint[]) AS receipt(id, token)
WHERE m.id = receipt.id AND m.token = receipt.token AND m.queue = %(queue)s
    AND EXISTS (SELECT FROM t)
RETURNING m.id, m.token

-- name: nack
WITH t AS MATERIALIZED (SELECT {now} AS now {relax}),
held AS (
    SELECT id, deliveries FROM seawall_queue_messages
    WHERE id = %(id)s AND token = %(token)s AND queue = %(queue)s
    FOR UPDATE
),
requeued AS (
    UPDATE seawall_queue_messages m
    SET token = NULL,
        visible_at = (SELECT now FROM t) + %(delay)s,
        place = CASE WHEN %(delay)s > 0 THEN (SELECT now FROM t) + %(delay)s ELSE m.place END,
        last_error = coalesce(%(error)s::text, m.last_error)
    FROM held
    WHERE m.id = held.id AND held.deliveries < %(max_deliveries)s
    RETURNING m.id
),
killed AS (
    DELETE FROM seawall_queue_messages m
    USING held
    WHERE m.id = held.id AND held.deliveries >= %(max_deliveries)s
    RETURNING m.id, m.queue, m.priority, m.deliveries, m.enqueued_at, m.body, m.headers,
        m.last_error
),
buried AS (
    INSERT INTO seawall_queue_dead
        (id, queue, priority, deliveries, enqueued_at, dead_at, body, headers, reason, last_error)
    SELECT id, queue, priority, deliveries, enqueued_at, (SELECT now FROM t), body, headers,
        'negatively acknowledged on its last allowed delivery (' || deliveries
            || ' of max_deliveries=' || %(max_deliveries)s::int || ')',
        coalesce(%(error)s::text, last_error)
    FROM killed
    RETURNING deliveries, reason
)
SELECT 'requeued', NULL::int, NULL::text, pg_notify('seawall_queue', %(queue)s)::text
FROM requeued
UNION ALL
SELECT 'dead_lettered', deliveries, reason, NULL FROM buried

-- name: extend
WITH t AS MATERIALIZED (SELECT {now} AS now {relax})
UPDATE seawall_queue_messages SET visible_at = (SELECT now FROM t) + %(visibility)s
WHERE id = %(id)s AND token = %(token)s AND queue = %(queue)s

-- name: dead_letter
WITH t AS MATERIALIZED (SELECT {now} AS now {relax}),
killed AS (
    DELETE FROM seawall_queue_messages
    WHERE id = %(id)s AND token = %(token)s AND queue = %(queue)s
    RETURNING id, queue, priority, deliveries, enqueued_at, body, headers, last_error
),
buried AS (
    INSERT INTO seawall_queue_dead
        (id, queue, priority, deliveries, enqueued_at, dead_at, body, headers, reason, last_error)
    SELECT id, queue, priority, deliveries, enqueued_at, (SELECT now FROM t), body, headers,
        %(reason)s, last_error
    FROM killed
    RETURNING deliveries
)
SELECT deliveries FROM buried

-- name: peek
WITH t AS MATERIALIZED (SELECT {now} AS now)
SELECT id, body, headers, priority, deliveries, enqueued_at, visible_at, last_error
FROM seawall_queue_messages
WHERE queue = %(queue)s
    AND place <= (SELECT now FROM t)
    AND visible_at <= (SELECT now FROM t)
ORDER BY priority DESC, place, id
LIMIT %(limit)s

-- name: stats
WITH t AS MATERIALIZED (SELECT {now} AS now)
SELECT
    count(*) FILTER (WHERE m.visible_at <= t.now),
    count(*) FILTER (WHERE m.visible_at > t.now AND m.token IS NOT NULL),
    count(*) FILTER (WHERE m.visible_at > t.now AND m.token IS NULL),
    (SELECT count(*) FROM seawall_queue_dead d WHERE d.queue = %(queue)s)
FROM t LEFT JOIN seawall_queue_messages m ON m.queue = %(queue)s
GROUP BY t.now

-- name: purge
DELETE FROM seawall_queue_messages WHERE queue = %(queue)s

-- name: dead_letters
SELECT id, body, headers, priority, deliveries, enqueued_at, dead_at, reason, last_error
FROM seawall_queue_dead
WHERE queue = %(queue)s
ORDER BY died
LIMIT %(limit)s

-- name: dead_letter_one
SELECT id, body, headers, priority, deliveries, enqueued_at, dead_at, reason, last_error
FROM seawall_queue_dead
WHERE queue = %(queue)s AND id = %(id)s

-- name: redrive
WITH t AS MATERIALIZED (SELECT {now} AS now),
moved AS (
    DELETE FROM seawall_queue_dead
    WHERE queue = %(queue)s AND (%(every)s OR id = ANY(%(ids)s::bigint[]))
    RETURNING id, queue, priority, enqueued_at, body, headers, died
),
revived AS (
    INSERT INTO seawall_queue_messages
        (id, queue, priority, place, visible_at, enqueued_at, body, headers)
    SELECT id, queue, priority, (SELECT now FROM t), (SELECT now FROM t), enqueued_at, body,
        headers
    FROM moved
    ORDER BY died
    RETURNING id
),
counted AS (SELECT count(*) AS moved FROM revived)
SELECT moved, CASE WHEN moved > 0 THEN pg_notify('seawall_queue', %(queue)s)::text END
FROM counted

-- name: purge_dead
DELETE FROM seawall_queue_dead WHERE queue = %(queue)s
