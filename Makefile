# The two commands a new user needs: `make demo` and `make test`.
.PHONY: setup services demo test down bench

setup:
	bash scripts/setup.sh

services: setup
	skewless services up

demo: services
	skewless demo

test: services
	bash scripts/run_tests.sh

down:
	skewless services down

bench: services
	skewless bench ingest --size 100000
