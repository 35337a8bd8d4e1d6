-- Lock statements for SQLite. {table} is the lease table, {now} the database's clock in
-- Unix seconds (julianday('now'), millisecond resolution). Each is one statement that
-- commits on its own: SQLite takes its write lock, so no other process interleaves.

-- name: create
CREATE TABLE IF NOT EXISTS {table} (
    name TEXT PRIMARY KEY,
    owner TEXT,
    token INTEGER NOT NULL,
    expires_at REAL NOT NULL
)

-- name: acquire
INSERT INTO {table} (name, owner, token, expires_at)
VALUES (?1, ?2, 1, {now} + ?3)
ON CONFLICT (name) DO UPDATE
    SET owner = excluded.owner, token = {table}.token + 1, expires_at = excluded.expires_at
    WHERE {table}.owner IS NULL OR {table}.expires_at <= {now} OR {table}.owner = excluded.owner
RETURNING token

-- name: remaining
SELECT expires_at - {now} FROM {table} WHERE name = ?1 AND owner IS NOT NULL

-- name: extend
UPDATE {table} SET expires_at = {now} + ?3
WHERE name = ?1 AND owner = ?2 AND expires_at > {now}

-- name: release
UPDATE {table} SET owner = NULL
WHERE name = ?1 AND owner = ?2 AND expires_at > {now}

-- name: inspect
SELECT owner, token, expires_at - {now} FROM {table}
WHERE name = ?1 AND owner IS NOT NULL AND expires_at > {now}

-- name: force_release
UPDATE {table} SET owner = NULL
WHERE name = ?1 AND owner IS NOT NULL AND expires_at > {now}
