#!/usr/bin/env bash
# Runs once, when the postgres container initialises an empty data directory
# (files in /docker-entrypoint-initdb.d are ignored on later starts).
#
# Creates the harvest state database next to the Airflow metadata database, owned by its own role:
#   HARVEST_DB_NAME      (default: harvest)
#   HARVEST_DB_USER      (default: harvest)
#   HARVEST_DB_PASSWORD  (default: harvest)
set -euo pipefail

harvest_db="${HARVEST_DB_NAME:-harvest}"
harvest_user="${HARVEST_DB_USER:-harvest}"
harvest_password="${HARVEST_DB_PASSWORD:-harvest}"

psql -v ON_ERROR_STOP=1 \
    --username "$POSTGRES_USER" \
    --dbname "$POSTGRES_DB" \
    -v harvest_db="$harvest_db" \
    -v harvest_user="$harvest_user" \
    -v harvest_password="$harvest_password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'harvest_user', :'harvest_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'harvest_user')
\gexec

SELECT format('CREATE DATABASE %I OWNER %I', :'harvest_db', :'harvest_user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'harvest_db')
\gexec

SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'harvest_db')
\gexec
SQL

echo "harvest database '$harvest_db' ready (owner '$harvest_user')"
