"""Redis keeps the online store across restarts the same way in both setups: the dev
services (``skewless services up``) and docker-compose (parsed: no Docker engine here).
The restart itself is proven on a real Redis in tests/integration/test_online_store_recovery.py."""

from pathlib import Path

import yaml

from skewless.services.redis_server import PERSISTENCE

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())


def _flags(args: list[str]) -> dict[str, str]:
    return {a: b for a, b in zip(args, args[1:]) if a.startswith("--")}


def test_dev_redis_appends_every_write_and_fsyncs_every_second():
    assert _flags(PERSISTENCE) == {"--appendonly": "yes", "--appendfsync": "everysec", "--save": ""}


def test_compose_redis_uses_the_same_persistence_on_a_named_volume():
    redis = COMPOSE["services"]["redis"]
    assert redis["command"][0] == "redis-server"
    assert _flags(redis["command"][1:]) == _flags(PERSISTENCE)
    volume, target = redis["volumes"][0].split(":")
    assert target == "/data" and volume in COMPOSE["volumes"]  # named: `compose down` + `up` keeps it
