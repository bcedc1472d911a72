#!/bin/sh
# First start of the compose deployment's PostgreSQL (docker-entrypoint-initdb.d, run as the
# superuser): the owner role `desk migrate` connects as, one login role per service, and the
# database, owned by the owner. Roles are cluster-wide, rights per database: `desk migrate` (as
# the owner) grants each service its own schema only (shared/privileges.py).
# tests/deploy/test_compose.py checks these roles against services.SERVICES.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner="${DB_OWNER_PASSWORD:?set DB_OWNER_PASSWORD}" \
  -v intake="${DB_INTAKE_PASSWORD:?set DB_INTAKE_PASSWORD}" \
  -v dispatch="${DB_DISPATCH_PASSWORD:?set DB_DISPATCH_PASSWORD}" \
  -v sla="${DB_SLA_PASSWORD:?set DB_SLA_PASSWORD}" \
  -v notify="${DB_NOTIFY_PASSWORD:?set DB_NOTIFY_PASSWORD}" \
  -v console="${DB_CONSOLE_PASSWORD:?set DB_CONSOLE_PASSWORD}" <<'SQL'
CREATE ROLE desk_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner';
CREATE ROLE desk_intake LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD :'intake';
CREATE ROLE desk_dispatch LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD :'dispatch';
CREATE ROLE desk_sla LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD :'sla';
CREATE ROLE desk_notify LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD :'notify';
CREATE ROLE desk_console LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD :'console';
CREATE DATABASE servicedesk OWNER desk_owner;
SQL
