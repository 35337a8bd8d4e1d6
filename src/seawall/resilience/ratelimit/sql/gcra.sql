-- GCRA: one theoretical arrival time per key.
-- Each row also keeps the decision of the statement that last wrote it, which is what
-- the upsert returns. The insert branch is a fresh key (always granted: cost <= burst
-- is checked by the caller); the update branch reads the server clock after the row
-- lock is held.

-- name: create
CREATE {unlogged} TABLE IF NOT EXISTS {table} (
    limiter text NOT NULL,
    key text NOT NULL,
    arrival double precision NOT NULL,
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
    (limiter, key, arrival, expires_at, allowed, remaining, retry_after, reset_after)
SELECT %(limiter)s, %(key)s, f.now + f.debt, f.now + f.debt, true,
       %(burst)s::bigint - %(cost)s::bigint, 0, f.debt
FROM (SELECT date_part('epoch', clock_timestamp()) AS now,
             %(cost)s::bigint * %(emission)s::float8 AS debt) AS f
ON CONFLICT (limiter, key) DO UPDATE SET
    (arrival, expires_at, allowed, remaining, retry_after, reset_after) = (
        SELECT CASE WHEN g.granted THEN p.now + n.debt ELSE t.arrival END,
               CASE WHEN g.granted THEN p.now + n.debt ELSE t.arrival END,
               g.granted,
               floor((p.tolerance - k.held) / p.emission + 1e-9)::bigint,
               CASE WHEN g.granted THEN 0 ELSE n.debt - p.tolerance END,
               k.held
        FROM (SELECT date_part('epoch', clock_timestamp()) AS now,
                     %(emission)s::float8 AS emission,
                     %(burst)s::bigint * %(emission)s::float8 AS tolerance,
                     %(cost)s::bigint AS cost) AS p
        -- the debt (arrival - now) is exact, so a fresh or idle key compares exactly
        CROSS JOIN LATERAL (
            SELECT greatest(t.arrival - p.now, 0) AS held,
                   greatest(t.arrival - p.now, 0) + p.cost * p.emission AS debt) AS n
        CROSS JOIN LATERAL (
            SELECT n.debt <= p.tolerance + greatest(1e-9 * p.emission, 1e-6) AS granted) AS g
        CROSS JOIN LATERAL (
            SELECT CASE WHEN g.granted THEN n.debt ELSE n.held END AS held) AS k
    )
RETURNING allowed, remaining, retry_after, reset_after;
