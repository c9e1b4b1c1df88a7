# The project's own services (ingestion consumer, serving API) and every command of the CLI.
# Every package pyproject.toml installs is copied (tests/unit/test_docker_compose.py checks).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md skewless.yaml ./
COPY skewless ./skewless
COPY cli ./cli
COPY ingestion ./ingestion
COPY etl ./etl
COPY training ./training
COPY serving ./serving
COPY monitoring ./monitoring
COPY feature_repo ./feature_repo
COPY benchmarks ./benchmarks
RUN pip install --no-cache-dir .
ENV SKEWLESS_STATE_DIR=/data/state SKEWLESS_LAKE_PATH=/data/lake
ENTRYPOINT ["skewless"]
