-- What a purge removes, counted before its first removal: the proof reports this, so a purge
-- interrupted (a crash, a leader losing its lease) and finished by another run still counts
-- every object exactly once.
ALTER TABLE namespaces ADD COLUMN purge_objects INTEGER;
ALTER TABLE namespaces ADD COLUMN purge_bytes INTEGER;
ALTER TABLE namespaces ADD COLUMN purge_snapshots INTEGER;
