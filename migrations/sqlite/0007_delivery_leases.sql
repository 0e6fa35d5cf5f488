-- A claim stamps its deliveries with a fresh token; finishing one needs the token, so a worker
-- whose lease ran out (and whose delivery another worker claimed) cannot record its outcome.
ALTER TABLE deliveries ADD COLUMN lease_token TEXT;
