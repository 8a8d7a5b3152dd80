-- The Supabase CLI's history, oldest version first (as `supabase migration list` reads it).
SELECT version, coalesce(name, '') AS name, statements
  FROM supabase_migrations.schema_migrations
 ORDER BY version
