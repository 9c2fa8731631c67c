# The two commands in README.md. Each installs what it needs first.
.PHONY: demo demo-down test bench lint

demo:
	scripts/bootstrap
	scripts/demo

demo-down:
	.venv/bin/vmmigration-testbed demo down

test:
	scripts/bootstrap
	scripts/test

bench:
	scripts/bootstrap
	.venv/bin/python bench/migration_bench.py
	.venv/bin/python bench/forecast_bench.py
	.venv/bin/python bench/operator_bench.py
	.venv/bin/python bench/scale_bench.py
	.venv/bin/python bench/fault_bench.py
	.venv/bin/python bench/probe_bench.py
	.venv/bin/python bench/drain_bench.py
	.venv/bin/python bench/carry_bench.py
