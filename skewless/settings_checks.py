"""Format checks for the addresses in settings: ports, ``host:port`` lists, the Redis URL,
the Spark master URL; and masking of a password written inside a URL.

Each check returns the value unchanged or raises ``ValueError`` with a message that never
repeats the value itself (a URL can hold a password); the caller names the key.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

PORT_RANGE = (1, 65535)
MASK = "**********"  # what pydantic prints for a SecretStr


def check_port(port: int | str, what: str = "port") -> int:
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in {PORT_RANGE[0]}..{PORT_RANGE[1]}") from None
    if not PORT_RANGE[0] <= number <= PORT_RANGE[1]:
        raise ValueError(f"{what} {number} is outside {PORT_RANGE[0]}..{PORT_RANGE[1]}")
    return number


def check_host_port(entry: str, port_required: bool = False) -> str:
    """``host``, ``host:port`` or ``[ipv6]:port``."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            raise ValueError(f"{entry!r} is not host:port")
    elif ":" in entry:
        host, port = entry.rsplit(":", 1)
    else:
        host, port = entry, None
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise ValueError(f"{entry!r} is not host:port")
    if port is None:
        if port_required:
            raise ValueError(f"{entry!r} has no port (host:port)")
    else:
        check_port(port, f"port of {host!r}")
    return entry


REDIS_FORM = "redis://[:password@]host[:port][/db], or rediss:// for TLS"


def check_redis_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        why = (" (a unix socket cannot be used: Feast's Redis online store connects over TCP)"
               if parts.scheme == "unix" else "")
        raise ValueError(f"must be {REDIS_FORM}{why}")
    if not parts.hostname:
        raise ValueError(f"has no host (the form is {REDIS_FORM})")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"port must be a number in {PORT_RANGE[0]}..{PORT_RANGE[1]}") from None
    if port is not None:
        check_port(port)
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError("the database (after the last /) must be a number, as in redis://localhost:6379/0")
    return url


SPARK_MASTER_FORMS = "local, local[N], local[*], spark://host:port, yarn or k8s://https://host:port"
_LOCAL = re.compile(r"local(\[(?:[1-9]\d*|\*)(?:,[1-9]\d*)?\])?")
_LOCAL_CLUSTER = re.compile(r"local-cluster\[[1-9]\d*,[1-9]\d*,[1-9]\d*\]")


def check_spark_master(master: str) -> str:
    """The master URL forms Spark accepts (Spark 4 has no Mesos)."""
    bad = ValueError(f"{master!r} is not a Spark master URL: use {SPARK_MASTER_FORMS}")
    if master == "yarn" or _LOCAL.fullmatch(master) or _LOCAL_CLUSTER.fullmatch(master):
        return master
    if master.startswith("spark://"):
        hosts = master[len("spark://"):].split(",")
        try:
            for entry in hosts:
                check_host_port(entry, port_required=True)
        except ValueError as exc:
            raise ValueError(f"{master!r}: {exc} (a standalone master is spark://host:port)") from None
        return master
    if master.startswith("k8s://"):
        api = master[len("k8s://"):]
        target = api if "://" in api else f"https://{api}"
        parts = urlsplit(target)
        try:
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{master!r}: a Kubernetes master is k8s://https://host:port") from None
        return master
    raise bad


def spark_standalone_hosts(master: str) -> list[tuple[str, int]]:
    """``spark://h1:p1,h2:p2`` -> [(h1, p1), (h2, p2)]; [] for other masters."""
    if not master.startswith("spark://"):
        return []
    out = []
    for entry in master[len("spark://"):].split(","):
        host, port = entry.rsplit(":", 1)
        out.append((host.strip("[]"), int(port)))
    return out


def mask_url_password(url: str) -> str:
    """``scheme://user:secret@host/...`` -> ``scheme://user:**********@host/...``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def url_has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False
