#!/bin/sh
# First start of a target database (staging or production): the project's own baseline
# schema and seed, as `make demo` lays them down. Run by the postgres image's entrypoint
# from /docker-entrypoint-initdb.d; the project's sql/ is mounted at /rollout/sql.
set -eu
SQL_DIR="${ROLLOUT_SQL_DIR:-/rollout/sql}"
run_psql() {
    psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"
}

for file in "$SQL_DIR"/baseline/*.sql; do
    echo "rollout: baseline $(basename "$file")"
    run_psql --file "$file"
done

echo "rollout: seeding ${ROLLOUT_SEED_ALLOCATIONS:-100000} allocations"
run_psql --single-transaction \
    --command "SET rollout_seed.allocations = '${ROLLOUT_SEED_ALLOCATIONS:-100000}'" \
    --command "SET rollout_seed.seed = '${ROLLOUT_SEED:-42}'" \
    --command "SET rollout_seed.anchor = '${ROLLOUT_SEED_ANCHOR:-$(date -u +%F)}'" \
    --file "$SQL_DIR/seed/seed.sql"
# As hosted Supabase has it: the performance probes read the server's own timings.
run_psql --command "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
echo "rollout: target ready"
