# The two commands: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
.DEFAULT_GOAL := help

help:
	@echo "make demo        start Kafka, ClickHouse, capture, stream worker, traffic (make demo-stop)"
	@echo "make test        install what is missing, start services, run all tests, stop them"
	@echo "make bench-capture | bench-stream | bench-reconcile | bench-query   benchmarks"
	@echo "                  (results in docs/benchmarks.md)"
	@echo "make soak-stream  the stream worker's memory under steady load (must stay flat)"
	@echo "make up / down   start / stop Kafka and ClickHouse only"

install:
	@infra/bootstrap.sh

demo: install
	@infra/demo.sh start

demo-stop:
	@infra/demo.sh stop

demo-status:
	@infra/demo.sh status

up: install
	@infra/kafka.sh start && infra/clickhouse.sh start
	@.venv/bin/clickagg topics && .venv/bin/clickagg migrate

down:
	@infra/kafka.sh stop; infra/clickhouse.sh stop

test: install
	@infra/test.sh

test-unit: install
	@.venv/bin/python -m pytest -q tests/unit

lint: install
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench-capture: install
	@infra/bench.sh capture

bench-stream: install
	@infra/bench.sh stream

bench-reconcile: install
	@infra/bench.sh reconcile

bench-query: install
	@infra/bench.sh query

soak-stream: install
	@infra/bench.sh soak

dbt-prepare: install
	@.venv/bin/python -m assets.dbt

.PHONY: help install demo demo-stop demo-status up down test test-unit lint dbt-prepare soak-stream \
	bench-capture bench-stream bench-reconcile bench-query
