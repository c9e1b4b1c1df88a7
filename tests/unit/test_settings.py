from pathlib import Path

import pytest

from skewless.errors import ConfigError
from skewless.settings import check_environment, find_config_file, load_settings


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.config_file is None
    assert s.state_dir == tmp_path / ".skewless"
    assert s.kafka.bootstrap_servers == ["localhost:9092"]


def test_file_found_upward_and_paths_relative_to_it(tmp_path, monkeypatch):
    (tmp_path / "skewless.yaml").write_text("lake_path: data/lake\nkafka:\n  partitions: 2\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert find_config_file() == tmp_path / "skewless.yaml"
    s = load_settings()
    assert s.lake_path == str(tmp_path / "data" / "lake")
    assert s.kafka.partitions == 2


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text("spark_master: local[1]\n")
    monkeypatch.setenv("SKEWLESS_SPARK_MASTER", "spark://cluster:7077")
    monkeypatch.setenv("SKEWLESS_KAFKA__BOOTSTRAP_SERVERS", "b1:9092,b2:9092")
    s = load_settings(cfg)
    assert s.spark_master == "spark://cluster:7077"
    assert s.kafka.bootstrap_servers == ["b1:9092", "b2:9092"]


@pytest.mark.parametrize("text,key", [("lakepath: x\n", "lakepath"), ("kafka:\n  bootstrap: x\n", "kafka.bootstrap")])
def test_unknown_keys_are_rejected_by_name(tmp_path, text, key):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
        load_settings(cfg)


def test_secrets_only_from_the_environment(tmp_path, monkeypatch):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text("kafka:\n  sasl_password: hunter2\n")
    with pytest.raises(ConfigError, match="SKEWLESS_KAFKA__SASL_PASSWORD"):
        load_settings(cfg)
    monkeypatch.setenv("SKEWLESS_KAFKA__SASL_PASSWORD", "hunter2")
    s = load_settings(Path(cfg.parent / "none.yaml") if False else None)
    assert s.kafka.sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in str(s.public_dict())


def test_bad_values_are_named(tmp_path):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text("kafka:\n  partitions: zero\n")
    with pytest.raises(ConfigError, match="kafka.partitions"):
        load_settings(cfg)


# --- ports and addresses are checked when settings load ---------------------------------

PORT_VARIABLES = ["SKEWLESS_SERVING__PORT", "SKEWLESS_SERVICES__KAFKA_PORT",
                  "SKEWLESS_SERVICES__KAFKA_CONTROLLER_PORT", "SKEWLESS_SERVICES__REDIS_PORT"]


@pytest.mark.parametrize("variable", PORT_VARIABLES)
@pytest.mark.parametrize("port", ["0", "-5", "65536", "70000"])
def test_every_port_is_range_checked_and_the_variable_named(tmp_path, monkeypatch, variable, port):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, port)
    with pytest.raises(ConfigError, match=f"environment variable {variable}: '[a-z_.]+port'"):
        load_settings()


def test_a_port_in_the_file_is_blamed_on_the_file(tmp_path):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text("services:\n  redis_port: 70000\n")
    with pytest.raises(ConfigError, match=f"{cfg}: 'services.redis_port': Input should be less than or equal to 65535"):
        load_settings(cfg)


def test_valid_ports_at_the_edges_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKEWLESS_SERVING__PORT", "65535")
    monkeypatch.setenv("SKEWLESS_SERVICES__REDIS_PORT", "1")
    s = load_settings()
    assert (s.serving.port, s.services.redis_port) == (65535, 1)


def test_two_services_on_one_port_are_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKEWLESS_SERVICES__REDIS_PORT", "9093")
    with pytest.raises(ConfigError, match="SKEWLESS_SERVICES__REDIS_PORT: 'services': two services on one port"):
        load_settings()


@pytest.mark.parametrize("servers,why", [
    ("b1:9092,b2:70000", "port of 'b2' 70000 is outside 1..65535"),
    ("b1:x", "port of 'b1' must be a number"),
    (":9092", "is not host:port"),
    (",", "needs at least one host:port"),
])
def test_bootstrap_servers_are_host_port(tmp_path, monkeypatch, servers, why):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKEWLESS_KAFKA__BOOTSTRAP_SERVERS", servers)
    with pytest.raises(ConfigError, match=f"SKEWLESS_KAFKA__BOOTSTRAP_SERVERS: 'kafka.bootstrap_servers': .*{why}"):
        load_settings()


@pytest.mark.parametrize("url,why", [
    ("http://localhost:6379/0", "must be redis://"),
    ("unix:///tmp/redis.sock", "a unix socket cannot be used"),
    ("localhost:6379", "must be redis://"),
    ("redis:///0", "has no host"),
    ("redis://localhost:99999/0", "port must be a number in 1..65535"),
    ("redis://localhost:0/0", "port 0 is outside 1..65535"),
    ("redis://localhost:port/0", "port must be a number"),
    ("redis://localhost:6379/zero", "the database .* must be a number"),
])
def test_redis_url_is_format_checked_by_key(tmp_path, url, why):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text(f"redis_url: '{url}'\n")
    with pytest.raises(ConfigError, match=f"'redis_url': .*{why}"):
        load_settings(cfg)


@pytest.mark.parametrize("url", ["redis://localhost", "redis://cache.internal:6380/3", "rediss://user@[::1]:6379/0"])
def test_good_redis_urls_load(tmp_path, url):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text(f"redis_url: '{url}'\n")
    assert load_settings(cfg).redis_url == url


def test_a_redis_password_is_masked_never_printed_and_never_in_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKEWLESS_REDIS_URL", "redis://:s3cret-pw@cache:6379/0")
    s = load_settings()
    assert s.redis_url == "redis://:s3cret-pw@cache:6379/0"  # the clients still get it
    assert s.public_dict()["redis_url"] == "redis://:**********@cache:6379/0"
    assert "s3cret-pw" not in str(s.public_dict())
    monkeypatch.setenv("SKEWLESS_REDIS_URL", "redis://admin:s3cret-pw@cache:99999/0")
    with pytest.raises(ConfigError) as bad:
        load_settings()
    assert "SKEWLESS_REDIS_URL" in str(bad.value) and "s3cret-pw" not in str(bad.value)
    monkeypatch.delenv("SKEWLESS_REDIS_URL")
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text("redis_url: redis://:s3cret-pw@cache:6379/0\n")
    with pytest.raises(ConfigError, match="'redis_url' holds a password") as in_file:
        load_settings(cfg)
    assert "SKEWLESS_REDIS_PASSWORD" in str(in_file.value) and "s3cret-pw" not in str(in_file.value)


def test_passwords_in_other_urls_are_masked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKEWLESS_TRAINING__TRACKING_URI", "postgresql://mlflow:pg-pw@db:5432/mlflow")
    monkeypatch.setenv("SKEWLESS_LAKE_PATH", "s3a://key:lake-pw@bucket/lake")
    shown = str(load_settings().public_dict())
    assert "pg-pw" not in shown and "lake-pw" not in shown
    assert "postgresql://mlflow:**********@db:5432/mlflow" in shown


@pytest.mark.parametrize("master", ["local", "local[1]", "local[*]", "local[4,2]", "local-cluster[2,1,1024]",
                                    "spark://m1:7077", "spark://m1:7077,m2:7077", "yarn",
                                    "k8s://https://k8s.example:6443", "k8s://k8s.example"])
def test_spark_master_forms_spark_accepts(tmp_path, monkeypatch, master):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKEWLESS_SPARK_MASTER", master)
    assert load_settings().spark_master == master


@pytest.mark.parametrize("master", ["bogus://x", "local[0]", "local[two]", "spark://m1", "spark://m1:70000",
                                    "mesos://m:5050", "k8s://ftp://x", "", "LOCAL"])
def test_a_bad_spark_master_is_named(tmp_path, master):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text(f"spark_master: '{master}'\n")
    with pytest.raises(ConfigError, match=f"{cfg}: 'spark_master': .*not a Spark master URL|{cfg}: 'spark_master': '"):
        load_settings(cfg)


# --- environment variables: named, checked, consistent ----------------------------------

def test_a_bad_environment_value_is_blamed_on_the_variable_not_the_file(tmp_path, monkeypatch):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text("kafka:\n  partitions: 2\n")
    monkeypatch.setenv("SKEWLESS_KAFKA__PARTITIONS", "abc")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert str(exc.value).startswith("environment variable SKEWLESS_KAFKA__PARTITIONS: 'kafka.partitions'")
    assert str(cfg) not in str(exc.value)


def test_errors_from_the_file_and_the_environment_each_name_their_source(tmp_path, monkeypatch):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text("ingest:\n  flush_records: 0\n")
    monkeypatch.setenv("SKEWLESS_KAFKA__PARTITIONS", "abc")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert f"{cfg}: 'ingest.flush_records'" in str(exc.value)
    assert "environment variable SKEWLESS_KAFKA__PARTITIONS: 'kafka.partitions'" in str(exc.value)


def test_a_section_given_as_bad_json_names_its_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKEWLESS_KAFKA", "{not json")
    with pytest.raises(ConfigError, match="environment variable SKEWLESS_KAFKA: not valid"):
        load_settings()


@pytest.mark.parametrize("typo,suggestion", [
    ("SKEWLESS_LAKE_PTH", "SKEWLESS_LAKE_PATH"),               # top level: was silently ignored
    ("SKEWLESS_KAFKA__PARTITONS", "SKEWLESS_KAFKA__PARTITIONS"),  # nested: was rejected without the name
    ("SKEWLESS_REDIS_PASWORD", "SKEWLESS_REDIS_PASSWORD"),
    ("skewless_spark_mastr", "SKEWLESS_SPARK_MASTER"),         # settings are read whatever the case
])
def test_unknown_environment_variables_are_rejected_by_name_with_the_closest(tmp_path, monkeypatch, typo, suggestion):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(typo, "x")
    with pytest.raises(ConfigError, match=f"unknown environment variable: {typo} \\(did you mean {suggestion}\\?\\)"):
        load_settings()


def test_config_file_is_not_an_environment_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKEWLESS_CONFIG_FILE", str(tmp_path / "other.yaml"))
    with pytest.raises(ConfigError, match="SKEWLESS_CONFIG_FILE \\(the settings file is chosen with --config\\)"):
        load_settings()


def test_secrets_and_the_projects_own_variables_are_allowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, value in {"SKEWLESS_KAFKA__SASL_PASSWORD": "pw", "SKEWLESS_REDIS_PASSWORD": "pw",
                        "SKEWLESS_SERVING__API_KEY": "key", "SKEWLESS_SERVE_CONFIG": "/x/skewless.yaml",
                        "SKEWLESS_INGEST_CRASH_AT": "after_write:1"}.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.serving.api_key.get_secret_value() == "key"


def test_every_skewless_variable_the_repository_uses_is_allowed():
    """A variable the project reads or documents (code, docs, compose, Dockerfile; the tests,
    with their deliberate typos, aside) must not be one the settings loader rejects: each
    is a setting or listed in PROCESS_VARIABLES."""
    import re

    repo = Path(__file__).resolve().parents[2]
    files = [p for pattern in ("**/*.py", "**/*.md", "**/*.yml", "**/*.yaml", "**/*.sh", "Dockerfile", "Makefile")
             for p in repo.glob(pattern)
             if not {"tests", ".skewless", ".git"} & set(p.relative_to(repo).parts) and ".egg-info" not in str(p)]
    used = {m for p in files for m in re.findall(r"\bSKEWLESS_[A-Z0-9_]*[A-Z0-9]\b", p.read_text(errors="replace"))}
    assert {"SKEWLESS_SERVE_CONFIG", "SKEWLESS_INGEST_CRASH_AT", "SKEWLESS_KAFKA__BOOTSTRAP_SERVERS"} <= used
    check_environment({name: "" for name in used})


# --- the settings file ----------------------------------------------------------------

def test_a_file_that_is_not_utf8_is_named(tmp_path):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_bytes("lake_path: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"{cfg}: not UTF-8 text \\(byte 0xe9 at offset 14\\)"):
        load_settings(cfg)


def test_a_utf8_file_loads_whatever_the_locale(tmp_path, monkeypatch):
    cfg = tmp_path / "skewless.yaml"
    cfg.write_text("lake_path: café\n", encoding="utf-8")
    assert load_settings(cfg).lake_path.endswith("café")
