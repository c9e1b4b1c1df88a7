#!/usr/bin/env bash
# Install everything Skewless needs on a fresh Debian machine with Python 3.11+:
# system packages (Java 17, Maven, redis-server, and Chromium, which the monitoring report's
# browser test opens the page in) when missing, then the project itself and
# the jars of Spark's Kafka source.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 3
  fi
fi

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
"$PY" -m pip install -q --disable-pip-version-check -e '.[dev]'

# Spark's Kafka source (spark-sql-kafka-0-10, the installed pyspark's version) is not part of
# pyspark: fetch its jars with mvn now, once, so no test or job pays for it later.
"$PY" - <<'PYEOF'
import sys
from skewless.errors import SkewlessError
from skewless.settings import load_settings
from skewless.spark_kafka import kafka_connector_jars
try:
    jars = kafka_connector_jars(load_settings())
except SkewlessError as exc:
    sys.exit(f"error: {exc}")
print(f"Spark's Kafka connector: {', '.join(j.name for j in jars)} in {jars[0].parent}")
PYEOF
