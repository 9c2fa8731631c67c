# The two commands in README.md. Each installs what it needs first.
.PHONY: demo demo-down test bench lint soak

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

# A nemesis campaign on the real test bed (tests/nemesis/): SEED replays one, MINUTES says
# how long (docs/reliability.md). Exits non-zero when the checker finds a violation.
soak:
	scripts/bootstrap
	.venv/bin/python -m tests.nemesis.campaign $(if $(SEED),--seed $(SEED)) --minutes $(or $(MINUTES),10)
