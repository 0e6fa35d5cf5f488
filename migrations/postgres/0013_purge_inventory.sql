-- What a purge removes, counted before its first removal: the proof reports this, so a purge
-- interrupted (a crash, a leader losing its lease) and finished by another node still counts
-- every object exactly once.
ALTER TABLE namespaces ADD COLUMN purge_objects bigint;
ALTER TABLE namespaces ADD COLUMN purge_bytes bigint;
ALTER TABLE namespaces ADD COLUMN purge_snapshots bigint;
