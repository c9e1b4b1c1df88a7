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
# Spark's Kafka source is not part of pyspark: its jars (the installed Spark's version) are
# fetched with mvn into the image; Maven and its download cache are removed in the same layer.
ENV SKEWLESS_SERVICES__JAR_CACHE_DIR=/opt/skewless/jars
RUN apt-get update && apt-get install -y --no-install-recommends maven \
    && python -c "from skewless.settings import Settings; import skewless.spark_kafka as k; print(*k.kafka_connector_jars(Settings()))" \
    && apt-get purge -y --auto-remove maven && rm -rf /var/lib/apt/lists/* /root/.m2
ENV SKEWLESS_STATE_DIR=/data/state SKEWLESS_LAKE_PATH=/data/lake
ENTRYPOINT ["skewless"]
