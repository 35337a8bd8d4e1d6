-- Lock statements for PostgreSQL. {table} is the lease table, {fences} the fencing
-- counters of session-scoped advisory locks. Every lease is judged on the server's
-- clock_timestamp(); every statement is one round trip that commits on its own
-- (connections run in autocommit).

-- name: create
CREATE TABLE IF NOT EXISTS {table} (
    name TEXT PRIMARY KEY,
    owner TEXT,
    token BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
)

-- name: acquire
-- A free or expired row is taken and its token incremented in the same statement; a
-- held row is left alone and its remaining lease reported instead (one round trip).
-- The same owner again (a retry whose first reply was lost) is granted afresh.
WITH granted AS (
    INSERT INTO {table} AS held (name, owner, token, expires_at)
    VALUES (%(name)s, %(owner)s, 1, clock_timestamp() + %(ttl)s * interval '1 second')
    ON CONFLICT (name) DO UPDATE
        SET owner = excluded.owner, token = held.token + 1, expires_at = excluded.expires_at
        WHERE held.owner IS NULL OR held.expires_at <= clock_timestamp()
            OR held.owner = excluded.owner
    RETURNING token
)
SELECT token, NULL::float8 FROM granted
UNION ALL
SELECT 0, extract(epoch FROM expires_at - clock_timestamp())::float8
FROM {table}
WHERE name = %(name)s AND owner IS NOT NULL AND NOT EXISTS (SELECT FROM granted)

-- name: extend
UPDATE {table} SET expires_at = clock_timestamp() + %(ttl)s * interval '1 second'
WHERE name = %(name)s AND owner = %(owner)s AND expires_at > clock_timestamp()

-- name: release
UPDATE {table} SET owner = NULL
WHERE name = %(name)s AND owner = %(owner)s AND expires_at > clock_timestamp()

-- name: inspect
SELECT owner, token, extract(epoch FROM expires_at - clock_timestamp())::float8
FROM {table}
WHERE name = %(name)s AND owner IS NOT NULL AND expires_at > clock_timestamp()

-- name: force_release
UPDATE {table} SET owner = NULL
WHERE name = %(name)s AND owner IS NOT NULL AND expires_at > clock_timestamp()

-- name: create_fences
CREATE TABLE IF NOT EXISTS {fences} (
    name TEXT PRIMARY KEY,
    owner TEXT,
    token BIGINT NOT NULL
)

-- name: advisory_acquire
-- Try the session-scoped advisory lock; only when it is granted, bump the name's
-- fencing counter (the CTE runs once: pg_try_advisory_lock is volatile).
WITH attempt AS (SELECT pg_try_advisory_lock(%(key)s) AS ok)
INSERT INTO {fences} AS fence (name, owner, token)
SELECT %(name)s, %(owner)s, 1 FROM attempt WHERE attempt.ok
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = fence.token + 1
RETURNING token

-- name: advisory_regrant
UPDATE {fences} SET token = token + 1 WHERE name = %(name)s AND owner = %(owner)s
RETURNING token

-- name: advisory_release
SELECT pg_advisory_unlock(%(key)s)

-- name: advisory_alive
SELECT 1

-- name: advisory_inspect
SELECT fence.owner, fence.token, (
    SELECT pid FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 1
      AND classid = %(high)s::oid AND objid = %(low)s::oid
    LIMIT 1
)
FROM {fences} AS fence
WHERE fence.name = %(name)s

-- name: advisory_force_release
SELECT pg_terminate_backend(pid) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1
  AND classid = %(high)s::oid AND objid = %(low)s::oid
