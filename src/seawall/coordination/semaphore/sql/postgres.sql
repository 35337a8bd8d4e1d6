-- Semaphore statements for PostgreSQL. {table} holds the holdings, {table}_intents the
-- exclusive waiters, {table}_counters the fencing counters. Every holding is judged on
-- the server's clock_timestamp(); every call is one round trip in autocommit.

-- name: create
CREATE TABLE IF NOT EXISTS {table} (
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    token BIGINT NOT NULL,
    slot INTEGER NOT NULL,
    exclusive BOOLEAN NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, owner)
);
CREATE TABLE IF NOT EXISTS {table}_intents (
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, owner)
);
CREATE TABLE IF NOT EXISTS {table}_counters (name TEXT PRIMARY KEY, token BIGINT NOT NULL);
-- Acquire: the counter row of the name is locked first, so acquires of one name run one
-- after another; each later statement of this VOLATILE function takes a fresh snapshot
-- and sees every holding committed before the lock was granted.
CREATE OR REPLACE FUNCTION {table}_acquire(
    p_name TEXT, p_owner TEXT, p_ttl FLOAT8, p_limit INTEGER, p_exclusive BOOLEAN,
    p_intent_ttl FLOAT8
) RETURNS TABLE (token BIGINT, slot INTEGER, hint FLOAT8)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_now TIMESTAMPTZ;
    v_count INTEGER;
    v_any_exclusive BOOLEAN;
    v_soonest FLOAT8;
    v_latest FLOAT8;
    v_slot INTEGER;
    v_token BIGINT;
BEGIN
    INSERT INTO {table}_counters AS c (name, token) VALUES (p_name, 0)
    ON CONFLICT (name) DO UPDATE SET token = c.token;
    v_now := clock_timestamp();
    DELETE FROM {table} AS h WHERE h.name = p_name AND h.expires_at <= v_now;
    DELETE FROM {table}_intents AS i WHERE i.name = p_name AND i.expires_at <= v_now;
    SELECT h.slot INTO v_slot FROM {table} AS h WHERE h.name = p_name AND h.owner = p_owner;
    IF v_slot IS NULL THEN
        SELECT count(*), coalesce(bool_or(h.exclusive), false),
               min(extract(epoch FROM h.expires_at - v_now))::float8,
               max(extract(epoch FROM h.expires_at - v_now))::float8
        INTO v_count, v_any_exclusive, v_soonest, v_latest
        FROM {table} AS h WHERE h.name = p_name;
        IF p_exclusive THEN
            IF v_count > 0 THEN
                IF p_intent_ttl > 0 THEN
                    INSERT INTO {table}_intents AS i (name, owner, expires_at)
                    VALUES (p_name, p_owner, v_now + p_intent_ttl * interval '1 second')
                    ON CONFLICT (name, owner) DO UPDATE SET expires_at = excluded.expires_at;
                END IF;
                RETURN QUERY SELECT 0::bigint, -1, greatest(v_latest, 0);
                RETURN;
            END IF;
            v_slot := 0;
        ELSE
            IF v_count >= p_limit OR v_any_exclusive THEN
                RETURN QUERY SELECT 0::bigint, -1, greatest(v_soonest, 0);
                RETURN;
            END IF;
            IF EXISTS (
                SELECT 1 FROM {table}_intents AS i WHERE i.name = p_name AND i.owner <> p_owner
            ) THEN
                RETURN QUERY SELECT 0::bigint, -1, NULL::float8;
                RETURN;
            END IF;
            SELECT min(s) INTO v_slot FROM generate_series(0, v_count) AS s
            WHERE NOT EXISTS (
                SELECT 1 FROM {table} AS h WHERE h.name = p_name AND h.slot = s
            );
        END IF;
    END IF;
    UPDATE {table}_counters AS c SET token = c.token + 1 WHERE c.name = p_name
    RETURNING c.token INTO v_token;
    INSERT INTO {table} AS h (name, owner, token, slot, exclusive, expires_at)
    VALUES (p_name, p_owner, v_token, v_slot, p_exclusive, v_now + p_ttl * interval '1 second')
    ON CONFLICT (name, owner) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at;
    DELETE FROM {table}_intents AS i WHERE i.name = p_name AND i.owner = p_owner;
    RETURN QUERY SELECT v_token, v_slot, NULL::float8;
END
$fn$

-- name: acquire
SELECT token, slot, hint FROM {table}_acquire(
    %(name)s, %(owner)s, %(ttl)s, %(limit)s, %(exclusive)s, %(intent_ttl)s
)

-- name: extend
UPDATE {table} SET expires_at = clock_timestamp() + %(ttl)s * interval '1 second'
WHERE name = %(name)s AND owner = %(owner)s AND expires_at > clock_timestamp()

-- name: release
WITH withdrawn AS (
    DELETE FROM {table}_intents WHERE name = %(name)s AND owner = %(owner)s
)
DELETE FROM {table} WHERE name = %(name)s AND owner = %(owner)s AND expires_at > clock_timestamp()

-- name: state
SELECT (SELECT token FROM {table}_counters WHERE name = %(name)s),
       h.owner, h.token, h.slot, h.exclusive,
       extract(epoch FROM h.expires_at - clock_timestamp())::float8
FROM (SELECT 1) AS one
LEFT JOIN {table} AS h ON h.name = %(name)s AND h.expires_at > clock_timestamp()
ORDER BY h.slot

-- name: force_release
DELETE FROM {table} WHERE name = %(name)s AND owner = %(owner)s AND expires_at > clock_timestamp()
