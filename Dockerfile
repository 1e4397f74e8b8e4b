# The image of every tvdb-assets service in docker-compose.yml: the code server (which also
# runs the runs), the webserver, the daemon and the one-shot `init`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home \
    DAGSTER_TELEMETRY_DISABLED=1 \
    DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1 \
    DAGSTER_EVENT_BATCH_SIZE=1000

RUN useradd --create-home --uid 1000 tvdb
WORKDIR /opt/dagster/app

# The project and its pinned dependencies (no dev tools).
COPY pyproject.toml README.md ./
COPY tvdb_assets ./tvdb_assets
RUN pip install . && rm -rf build tvdb_assets.egg-info

# The instance: the project's template (Postgres storage from TVDB_DAGSTER_PG_URL, the
# queued run coordinator, run monitoring) and the workspace of the compose file.
RUN mkdir -p "$DAGSTER_HOME" /opt/dagster/inbox \
    && cp tvdb_assets/dagster.template.yaml "$DAGSTER_HOME/dagster.yaml" \
    && chown -R tvdb:tvdb /opt/dagster
COPY deploy/workspace.yaml /opt/dagster/workspace.yaml

USER tvdb
EXPOSE 3000 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "tvdb_assets.definitions", "--location-name", "tvdb_assets"]
