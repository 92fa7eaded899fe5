# Quick start:  make run   (the shipped policy in the simulated ROS 2 graph, then a short
#                           collect -> RL -> hot swap -> evaluate loop)
#               make test  (the test suite)
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EPISODES ?= 20
EVAL ?= 30
OUT ?= out/quickstart

.PHONY: venv run collect test test-fast bench clean

$(STAMP): requirements/base.txt requirements/test.txt requirements/extras.txt requirements/constraints.txt setup.py
	bash scripts/setup_env.sh
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	rm -rf $(OUT)
	$(VENV)/bin/vla-rl-ros evaluate --episodes 10 --real-time-factor 1.0
	$(VENV)/bin/vla-rl-ros improve --rounds 1 --episodes-per-round $(EPISODES) --eval-episodes $(EVAL) --epochs 8 --out $(OUT)

collect: $(STAMP)
	rm -rf $(OUT)_demos $(OUT)_demos_logs
	$(VENV)/bin/vla-rl-ros collect --episodes 6 --out $(OUT)_demos --real-time-factor 2.0

test: $(STAMP)
	$(VPY) -m pytest -q -rs tests

test-fast: $(STAMP)
	$(VPY) -m pytest -q -rs tests/core

bench: $(STAMP)
	$(VPY) bench/sim_speed.py

clean:
	rm -rf out build *.egg-info
