-- ficus's schema is `_ficus` (it was `ficus`: see adapters/src/migrations.rs). Nobody but its
-- owner (the adapter's role) and superusers may use it: an application never resolves an
-- unqualified name into it through search_path (a schema without USAGE is skipped there).
-- An application that writes the ready-made outbox is granted that explicitly:
--   GRANT USAGE ON SCHEMA _ficus TO app; GRANT INSERT, DELETE ON _ficus.outbox TO app;
REVOKE ALL ON SCHEMA _ficus FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA _ficus FROM PUBLIC;
