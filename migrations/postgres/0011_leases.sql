-- Leadership of a background duty (the retention sweeps): one row per duty, held by one node
-- until it expires unrenewed. The token grows with every change of holder, so an operator (and
-- a fencing check) can tell one reign from the next. Expiry is on the database's clock.
CREATE TABLE leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    token      bigint NOT NULL,
    expires_at bigint NOT NULL
);
