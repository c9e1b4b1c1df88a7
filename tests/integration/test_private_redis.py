"""``PrivateRedis``: a throwaway redis-server of one's own (benchmarks, fault tests), with or
without the project's persistence, gone after ``stop``."""

from __future__ import annotations

import pytest
import redis

from skewless.services.process import port_open
from skewless.services.redis_server import HOST, PERSISTENCE, PrivateRedis

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("persistent", [False, True])
def test_a_private_redis_answers_on_its_own_port_and_stops(tmp_path, persistent):
    with PrivateRedis(tmp_path / "r", persistent=persistent) as server:
        assert server.port != 6379 and server.url == f"redis://{HOST}:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        config = {k: v for name in ("appendonly", "save", "dir") for k, v in client.config_get(name).items()}
        assert config["appendonly"] == ("yes" if persistent else "no") and config["save"] == ""
        assert config["dir"] == str(tmp_path / "r")
        if persistent:
            assert client.config_get("appendfsync")["appendfsync"] == dict(zip(PERSISTENCE, PERSISTENCE[1:]))[
                "--appendfsync"]
        assert server.used_memory_mb() > 0
    assert server.proc.poll() is not None
    assert not port_open(HOST, server.port)
    assert (tmp_path / "r" / "redis.log").stat().st_size > 0
