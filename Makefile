# Quick start:  make run   (collect simulated expert episodes through the ROS 2 graph)
#               make test  (the test suite)
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EPISODES ?= 6
OUT ?= out/quickstart

.PHONY: venv run test test-fast bench clean

$(STAMP): requirements/base.txt requirements/test.txt requirements/constraints.txt setup.py
	bash scripts/setup_env.sh
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	rm -rf $(OUT) $(OUT)_logs
	$(VENV)/bin/vla-rl-ros collect --episodes $(EPISODES) --out $(OUT) --speed 2.0

test: $(STAMP)
	$(VPY) -m pytest -q -rs tests

test-fast: $(STAMP)
	$(VPY) -m pytest -q -rs tests/core

bench: $(STAMP)
	$(VPY) bench/sim_speed.py

clean:
	rm -rf out build *.egg-info
