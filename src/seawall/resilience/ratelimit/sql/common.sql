-- Statements every algorithm's table shares. {table} is the algorithm's table.
-- Times are seconds since the epoch on the server's clock (clock_timestamp()).

-- name: cleanup
DELETE FROM {table} WHERE expires_at <= date_part('epoch', clock_timestamp());

-- name: reset
DELETE FROM {table} WHERE limiter = %(limiter)s AND key = %(key)s;
