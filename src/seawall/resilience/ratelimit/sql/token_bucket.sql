-- Token bucket: the token count and when it was computed, per key.
-- Each row also keeps the decision of the statement that last wrote it, which is what
-- the upsert returns. The insert branch is a fresh (full) bucket; the update branch
-- reads the server clock after the row lock is held.

-- name: create
CREATE {unlogged} TABLE IF NOT EXISTS {table} (
    limiter text NOT NULL,
    key text NOT NULL,
    tokens double precision NOT NULL,
    computed_at double precision NOT NULL,
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
    (limiter, key, tokens, computed_at, expires_at, allowed, remaining, retry_after,
     reset_after)
SELECT %(limiter)s, %(key)s, %(burst)s::bigint - %(cost)s::bigint, f.now,
       f.now + %(cost)s::bigint / %(refill)s::float8, true,
       %(burst)s::bigint - %(cost)s::bigint, 0, %(cost)s::bigint / %(refill)s::float8
FROM (SELECT date_part('epoch', clock_timestamp()) AS now) AS f
ON CONFLICT (limiter, key) DO UPDATE SET
    (tokens, computed_at, expires_at, allowed, remaining, retry_after, reset_after) = (
        SELECT k.kept, p.now, p.now + (p.capacity - k.kept) / p.refill, g.granted,
               floor(k.kept + 1e-9)::bigint,
               CASE WHEN g.granted THEN 0 ELSE (p.cost - b.tokens) / p.refill END,
               (p.capacity - k.kept) / p.refill
        FROM (SELECT greatest(date_part('epoch', clock_timestamp()), t.computed_at) AS now,
                     %(refill)s::float8 AS refill,
                     %(burst)s::float8 AS capacity,
                     %(cost)s::bigint AS cost) AS p
        CROSS JOIN LATERAL (
            SELECT least(p.capacity, t.tokens + (p.now - t.computed_at) * p.refill) AS tokens
        ) AS b
        CROSS JOIN LATERAL (SELECT b.tokens >= p.cost - 1e-9 AS granted) AS g
        CROSS JOIN LATERAL (
            SELECT CASE WHEN g.granted THEN b.tokens - p.cost ELSE b.tokens END AS kept) AS k
    )
RETURNING allowed, remaining, retry_after, reset_after;
