#!/bin/sh
# Runs once, on the first start of an empty PostgreSQL volume (docker-entrypoint-initdb.d):
# one database and one login role each for MLflow (tracking + registry) and the controller
# (state machine, leases, trigger intake), so neither can read or change the other's tables.
# Passwords come from the environment (.env), passed to psql as variables, never spliced
# into SQL by the shell.
set -eu
: "${MLFLOW_DB_USER:?}" "${MLFLOW_DB_PASSWORD:?}" "${CONTROLLER_DB_USER:?}" "${CONTROLLER_DB_PASSWORD:?}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-postgres}" \
  -v mlflow_user="$MLFLOW_DB_USER" -v mlflow_password="$MLFLOW_DB_PASSWORD" \
  -v controller_user="$CONTROLLER_DB_USER" -v controller_password="$CONTROLLER_DB_PASSWORD" <<'SQL'
CREATE ROLE :"mlflow_user" LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER :"mlflow_user";
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;

CREATE ROLE :"controller_user" LOGIN PASSWORD :'controller_password';
CREATE DATABASE controller OWNER :"controller_user";
REVOKE ALL ON DATABASE controller FROM PUBLIC;
SQL
echo "created databases mlflow and controller"
