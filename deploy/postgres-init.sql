-- Run once by the postgres image on an empty data directory (docker-compose.yml).
-- The application logs in as a plain owner role: no superuser, no BYPASSRLS, so that row-level
-- security holds even if a transaction ever ran without the restricted role (kernel/tenancy/
-- dbbackend). CREATEROLE: `manage.py migrate` creates the restricted roles and grants them.
CREATE ROLE tenantapi LOGIN PASSWORD 'tenantapi' NOSUPERUSER NOBYPASSRLS NOCREATEDB CREATEROLE;
CREATE DATABASE tenantapi OWNER tenantapi;
