-- Semaphore statements for SQLite. {table} holds the holdings, {table}_intents the
-- exclusive waiters, {table}_counters the fencing counters; {now} is the database's
-- clock in Unix seconds. Acquire and release run inside BEGIN IMMEDIATE, so SQLite's
-- write lock makes each one atomic across processes.

-- name: create_holdings
CREATE TABLE IF NOT EXISTS {table} (
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    token INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    exclusive INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (name, owner)
)

-- name: create_intents
CREATE TABLE IF NOT EXISTS {table}_intents (
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (name, owner)
)

-- name: create_counters
CREATE TABLE IF NOT EXISTS {table}_counters (name TEXT PRIMARY KEY, token INTEGER NOT NULL)

-- name: now
SELECT {now}

-- name: prune_holdings
DELETE FROM {table} WHERE name = ?1 AND expires_at <= ?2

-- name: prune_intents
DELETE FROM {table}_intents WHERE name = ?1 AND expires_at <= ?2

-- name: holdings
SELECT owner, slot, exclusive, expires_at FROM {table} WHERE name = ?1

-- name: intents
SELECT owner, expires_at FROM {table}_intents WHERE name = ?1

-- name: intend
INSERT INTO {table}_intents (name, owner, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name, owner) DO UPDATE SET expires_at = excluded.expires_at

-- name: bump
INSERT INTO {table}_counters (name, token) VALUES (?1, 1)
ON CONFLICT (name) DO UPDATE SET token = {table}_counters.token + 1
RETURNING token

-- name: hold
INSERT INTO {table} (name, owner, token, slot, exclusive, expires_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (name, owner) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at

-- name: withdraw
DELETE FROM {table}_intents WHERE name = ?1 AND owner = ?2

-- name: extend
UPDATE {table} SET expires_at = {now} + ?3
WHERE name = ?1 AND owner = ?2 AND expires_at > {now}

-- name: release
DELETE FROM {table} WHERE name = ?1 AND owner = ?2 AND expires_at > {now}

-- name: state
SELECT owner, token, slot, exclusive, expires_at - {now} FROM {table}
WHERE name = ?1 AND expires_at > {now} ORDER BY slot

-- name: last_token
SELECT token FROM {table}_counters WHERE name = ?1
