-- up: imported from supabase/migrations/{file}, as written, wrapped in one transaction.
-- Everything a long lock does not need should come first; if a statement below takes a long
-- lock, mark where that lock phase starts (the README's "lock phase" line) and name its
-- tables in manifest.toml lock_tables.
BEGIN;

{body}
COMMIT;
