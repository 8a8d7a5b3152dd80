-- The row `supabase db push` writes for a migration it applied.
INSERT INTO supabase_migrations.schema_migrations (version, name, statements)
VALUES (%(version)s, %(name)s, %(statements)s)
