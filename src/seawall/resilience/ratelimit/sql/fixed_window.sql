-- Fixed window: the current window's end and the permits granted in it, per key.
-- Windows are aligned on the epoch. Each row also keeps the decision of the statement
-- that last wrote it, which is what the upsert returns. The update branch reads the
-- server clock after the row lock is held.

-- name: create
CREATE {unlogged} TABLE IF NOT EXISTS {table} (
    limiter text NOT NULL,
    key text NOT NULL,
    window_end double precision NOT NULL,
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
    (limiter, key, window_end, granted, expires_at, allowed, remaining, retry_after,
     reset_after)
SELECT %(limiter)s, %(key)s, f.window_end, %(cost)s::bigint, f.window_end, true,
       %(limit)s::bigint - %(cost)s::bigint, 0,
       CASE WHEN %(cost)s::bigint > 0 THEN f.window_end - f.now ELSE 0 END
FROM (SELECT c.now, (floor(c.now / %(window)s::float8) + 1) * %(window)s::float8 AS window_end
      FROM (SELECT date_part('epoch', clock_timestamp()) AS now) AS c) AS f
ON CONFLICT (limiter, key) DO UPDATE SET
    (window_end, granted, expires_at, allowed, remaining, retry_after, reset_after) = (
        SELECT w.window_end, k.kept, w.window_end, g.granted, p.lim - k.kept,
               CASE WHEN g.granted THEN 0 ELSE w.window_end - p.now END,
               CASE WHEN k.kept > 0 THEN w.window_end - p.now ELSE 0 END
        FROM (SELECT date_part('epoch', clock_timestamp()) AS now,
                     %(window)s::float8 AS width,
                     %(limit)s::bigint AS lim,
                     %(cost)s::bigint AS cost) AS p
        CROSS JOIN LATERAL (
            SELECT CASE WHEN p.now < t.window_end THEN t.window_end
                        ELSE (floor(p.now / p.width) + 1) * p.width END AS window_end,
                   CASE WHEN p.now < t.window_end THEN t.granted ELSE 0 END AS granted
        ) AS w
        CROSS JOIN LATERAL (SELECT w.granted + p.cost <= p.lim AS granted) AS g
        CROSS JOIN LATERAL (
            SELECT CASE WHEN g.granted THEN w.granted + p.cost ELSE w.granted END AS kept
        ) AS k
    )
RETURNING allowed, remaining, retry_after, reset_after;
