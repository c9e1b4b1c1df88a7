"""Benchmarks: each module ``bench_<name>`` has ``run(settings, size, **kw) -> dict`` that
measures the thing and its baseline in the same run. Run them as ``skewless bench NAME``."""
