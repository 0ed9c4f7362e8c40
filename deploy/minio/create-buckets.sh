#!/bin/sh
# One-shot (service minio-init): the buckets for MLflow artifacts and the prediction log, and an
# access key for driftloop and MLflow that can read and write objects but cannot administer
# MinIO. Idempotent: safe on every `docker compose up`.
set -eu
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${S3_ACCESS_KEY_ID:?}" "${S3_SECRET_ACCESS_KEY:?}"
: "${MLFLOW_BUCKET:?}" "${LOG_BUCKET:?}"

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/$MLFLOW_BUCKET"
mc mb --ignore-existing "local/$LOG_BUCKET"
mc admin user add local "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
mc admin policy attach local readwrite --user "$S3_ACCESS_KEY_ID" 2>/dev/null \
  || echo "policy readwrite already attached to $S3_ACCESS_KEY_ID"
echo "buckets $MLFLOW_BUCKET and $LOG_BUCKET ready"
