# The driftloop image: one image for serving, the controller, drift checks, training jobs and
# (with `entrypoint: mlflow`) the MLflow tracking server of docker-compose.yml, so that client
# and server always run the same MLflow version.
#   docker build -t driftloop:local .
#   docker run --rm driftloop:local --help
# Lint: hadolint Dockerfile (tests/integration/test_deploy_files.py runs it).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies change less often than code: resolve them in their own layer first.
COPY pyproject.toml README.md ./
RUN mkdir -p driftloop && touch driftloop/__init__.py \
    && /opt/venv/bin/pip install ".[deploy]" \
    && /opt/venv/bin/pip uninstall -y driftloop
COPY driftloop/ driftloop/
COPY registry/ registry/
COPY training/ training/
COPY serving/ serving/
COPY monitoring/ monitoring/
COPY controller/ controller/
# No dev extras in the image: the project and the deploy extra (psycopg, boto3) only.
RUN /opt/venv/bin/pip install --no-deps ".[deploy]"

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DRIFTLOOP_HOME=/var/lib/driftloop \
    DRIFTLOOP_SERVING_HOST=0.0.0.0 \
    DRIFTLOOP_CONTROLLER_HOST=0.0.0.0
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/driftloop \
        --shell /usr/sbin/nologin driftloop \
    && mkdir -p /var/lib/driftloop/data /opt/driftloop \
    && chown -R driftloop:driftloop /var/lib/driftloop
COPY --from=build /opt/venv /opt/venv
COPY examples/ /opt/driftloop/examples/
COPY deploy/healthcheck.py /opt/driftloop/healthcheck.py
USER 10001:10001
WORKDIR /var/lib/driftloop
EXPOSE 8000 8001
# Serving's /healthz by default; compose points other roles elsewhere (DRIFTLOOP_HEALTHCHECK_URL).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/driftloop/healthcheck.py"]
ENTRYPOINT ["driftloop"]
CMD ["--help"]
