from pathlib import Path

import pytest

from skewless.errors import ConfigError
from skewless.settings import find_config_file, load_settings


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
