-- Supabase grants the API roles everything on new objects in public; RLS, not grants,
-- is what keeps them out. These defaults apply to objects the current role creates.
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;

-- btree_gist gives GiST the `=` operator on uuid and text; the pre-migration exclusion
-- constraint on allocations already needs it. Trusted extension: no superuser needed.
CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;
