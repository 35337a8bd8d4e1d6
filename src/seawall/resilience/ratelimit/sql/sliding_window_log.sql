-- Sliding window log: per key, the grants still inside the window, as two arrays in
-- grant order (when each grant leaves the window, and its cost) and their sum. Each row
-- also keeps the decision of the statement that last wrote it, which is what the upsert
-- returns. The update branch reads the server clock after the row lock is held.

-- name: create
CREATE {unlogged} TABLE IF NOT EXISTS {table} (
    limiter text NOT NULL,
    key text NOT NULL,
    leaves_at double precision[] NOT NULL,
    costs bigint[] NOT NULL,
    granted bigint NOT NULL,
    expires_at double precision NOT NULL,
    allowed boolean NOT NULL,
    remaining bigint NOT NULL,
    retry_after double precision NOT NULL,
    reset_after double precision NOT NULL,
    PRIMARY KEY (limiter, key)
);
CREATE INDEX IF NOT EXISTS {table}_expires_at ON {table} (expires_at);

-- name: take
INSERT INTO {table} AS t
    (limiter, key, leaves_at, costs, granted, expires_at, allowed, remaining,
     retry_after, reset_after)
SELECT %(limiter)s, %(key)s,
       CASE WHEN %(cost)s::bigint > 0 THEN ARRAY[f.now + %(window)s::float8]
            ELSE '{}'::float8[] END,
       CASE WHEN %(cost)s::bigint > 0 THEN ARRAY[%(cost)s::bigint] ELSE '{}'::bigint[] END,
       %(cost)s::bigint, f.now + %(window)s::float8, true,
       %(limit)s::bigint - %(cost)s::bigint, 0,
       CASE WHEN %(cost)s::bigint > 0 THEN %(window)s::float8 ELSE 0 END
FROM (SELECT date_part('epoch', clock_timestamp()) AS now) AS f
ON CONFLICT (limiter, key) DO UPDATE SET
    (leaves_at, costs, granted, expires_at, allowed, remaining, retry_after, reset_after) = (
        SELECT k.leaves_at, k.costs, k.granted,
               coalesce(k.leaves_at[array_upper(k.leaves_at, 1)], p.now),
               g.granted, p.lim - k.granted,
               CASE WHEN g.granted THEN 0 ELSE (
                   SELECT min(o.leaves_at) FROM (
                       SELECT u.leaves_at, sum(u.cost) OVER (ORDER BY u.position) AS freed
                       FROM unnest(l.leaves_at, l.costs) WITH ORDINALITY
                           AS u(leaves_at, cost, position)
                   ) AS o
                   WHERE o.freed >= l.used + p.cost - p.lim
               ) - p.now END,
               coalesce(k.leaves_at[array_upper(k.leaves_at, 1)] - p.now, 0)
        FROM (SELECT date_part('epoch', clock_timestamp()) AS now,
                     %(window)s::float8 AS width,
                     %(limit)s::bigint AS lim,
                     %(cost)s::bigint AS cost) AS p
        CROSS JOIN LATERAL (
            SELECT coalesce(array_agg(u.leaves_at ORDER BY u.position), '{}') AS leaves_at,
                   coalesce(array_agg(u.cost ORDER BY u.position), '{}') AS costs,
                   coalesce(sum(u.cost), 0)::bigint AS used
            FROM unnest(t.leaves_at, t.costs) WITH ORDINALITY AS u(leaves_at, cost, position)
            WHERE u.leaves_at > p.now
        ) AS l
        CROSS JOIN LATERAL (SELECT l.used + p.cost <= p.lim AS granted) AS g
        CROSS JOIN LATERAL (
            SELECT CASE WHEN g.granted AND p.cost > 0
                        THEN l.leaves_at || (p.now + p.width) ELSE l.leaves_at END AS leaves_at,
                   CASE WHEN g.granted AND p.cost > 0
                        THEN l.costs || p.cost ELSE l.costs END AS costs,
                   CASE WHEN g.granted THEN l.used + p.cost ELSE l.used END AS granted
        ) AS k
    )
RETURNING allowed, remaining, retry_after, reset_after;
