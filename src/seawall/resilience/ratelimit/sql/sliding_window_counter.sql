-- Sliding window counter: the current window's end, the previous window's count and the
-- current count, per key. Windows are aligned on the epoch. Each row also keeps the
-- decision of the statement that last wrote it, which is what the upsert returns. The
-- update branch reads the server clock after the row lock is held.

-- name: create
CREATE {unlogged} TABLE IF NOT EXISTS {table} (
    limiter text NOT NULL,
    key text NOT NULL,
    window_end double precision NOT NULL,
    previous bigint NOT NULL,
    current bigint NOT NULL,
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
    (limiter, key, window_end, previous, current, expires_at, allowed, remaining,
     retry_after, reset_after)
SELECT %(limiter)s, %(key)s, f.window_end, 0, %(cost)s::bigint,
       f.window_end + %(window)s::float8, true, %(limit)s::bigint - %(cost)s::bigint, 0,
       CASE WHEN %(cost)s::bigint > 0 THEN f.window_end + %(window)s::float8 - f.now
            ELSE 0 END
FROM (SELECT c.now, (floor(c.now / %(window)s::float8) + 1) * %(window)s::float8 AS window_end
      FROM (SELECT date_part('epoch', clock_timestamp()) AS now) AS c) AS f
ON CONFLICT (limiter, key) DO UPDATE SET
    (window_end, previous, current, expires_at, allowed, remaining, retry_after,
     reset_after) = (
        SELECT w.window_end, w.previous, k.kept,
               CASE WHEN k.kept > 0 THEN w.window_end + p.width ELSE w.window_end END,
               g.granted,
               greatest(0, floor(p.lim - (e.carried + k.kept) + 1e-9))::bigint,
               CASE WHEN g.granted THEN 0
                    WHEN w.current + p.cost <= p.lim THEN greatest(
                        e.left_ - p.width * (p.lim - w.current - p.cost) / w.previous, 1e-9)
                    ELSE greatest(
                        e.left_ + p.width - p.width * (p.lim - p.cost) / w.current, 1e-9)
               END,
               CASE WHEN k.kept > 0 THEN e.left_ + p.width
                    WHEN w.previous > 0 THEN e.left_ ELSE 0 END
        FROM (SELECT date_part('epoch', clock_timestamp()) AS now,
                     %(window)s::float8 AS width,
                     %(limit)s::bigint AS lim,
                     %(cost)s::bigint AS cost) AS p
        CROSS JOIN LATERAL (
            SELECT (floor(p.now / p.width) + 1) * p.width AS next_end) AS x
        CROSS JOIN LATERAL (
            SELECT CASE WHEN p.now < t.window_end THEN t.window_end ELSE x.next_end END
                       AS window_end,
                   CASE WHEN p.now < t.window_end THEN t.previous
                        WHEN x.next_end - t.window_end < 1.5 * p.width THEN t.current
                        ELSE 0 END AS previous,
                   CASE WHEN p.now < t.window_end THEN t.current ELSE 0 END AS current
        ) AS w
        CROSS JOIN LATERAL (
            SELECT w.window_end - p.now AS left_,
                   w.previous * (w.window_end - p.now) / p.width AS carried) AS e
        CROSS JOIN LATERAL (
            SELECT e.carried + w.current + p.cost <= p.lim + 1e-9 AS granted) AS g
        CROSS JOIN LATERAL (
            SELECT CASE WHEN g.granted THEN w.current + p.cost ELSE w.current END AS kept
        ) AS k
    )
RETURNING allowed, remaining, retry_after, reset_after;
