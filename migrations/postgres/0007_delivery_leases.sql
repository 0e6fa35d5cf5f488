-- A claim stamps its deliveries with a fresh token; finishing one needs the token, so a worker
-- whose lease ran out (and whose delivery another worker claimed) cannot record its outcome.
ALTER TABLE deliveries ADD COLUMN lease_token text;
-- A claim marks its subscriptions busy until the lease ends. The mark sits on the row every
-- claimer locks, so a claimer that waited re-reads it and a subscription's deliveries are
-- never in flight from two claims at once.
ALTER TABLE webhooks ADD COLUMN busy_until bigint;
