# The README's commands. `make demo` and `make test` work on a fresh Debian 12 machine as root.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LINT_VENV := .venv-lint
# sudo and nftables: lab hosts with non-root logins and enforced security groups (lab up --cloud aws);
# systemd-container: systemd-nspawn, which boots systemd over this machine's root as each lab host's
# PID 1 (runner/lab/machine.py) and for tests/e2e/test_14_units_under_systemd.py
SYSTEM_PACKAGES := openssh-server openssh-client iproute2 util-linux sudo nftables python3.11-venv systemd-container openssl

.PHONY: venv system-deps demo check e2e test lint bench clean

# The two tiers. Every test is in exactly one: the fast tier deselects what the full tier adds.
# The slowest tests are listed after each run; no test runs longer than the timeout in pyproject.
FAST_TIER := -m "not e2e and not integration"
FULL_TIER_ONLY := -m "e2e or integration"
PYTEST := $(BIN)/pytest -q --durations=25

venv: $(VENV)/.installed

# The control machine's environment, from the committed lock (exact versions and hashes).
$(VENV)/.installed: pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (daskfleet needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$$(grep -E '^uv==' requirements.lock | cut -d' ' -f1)"
	# compiled at install, as pip does (uv does not by default): no process, test worker or
	# command pays for compiling the packages it imports on its first run
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

# What the lab needs from the system (root): sshd, ip, unshare; and apt lists for the demo corpus.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] || ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then \
	  echo "installing:$$missing (and refreshing apt lists)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: system-deps venv
	$(BIN)/daskfleet demo

# Fast tier: unit, batch (LocalCluster) and static tests; no lab, no network; a few minutes.
# On every core (pytest-xdist; at most 8 workers): its tests share no state.
check: venv
	$(PYTEST) -n auto --maxprocesses=8 $(FAST_TIER) tests/unit tests/batch tests/static

# Full tier only: real lab hosts, the emulated EC2, the registry (cross-arch wheelhouse). Needs
# root, terraform and the provider mirror: without them it fails, it never skips. Three sessions at
# once, each on a lab of its own (tests/run_full_tier.py).
e2e: system-deps venv
	$(BIN)/python tests/run_full_tier.py $(PYTEST) $(FULL_TIER_ONLY)

# Everything: the fast tier first (one make run makes each target once: `make check lint test`
# runs the fast tier once).
test: system-deps check e2e

$(LINT_VENV)/.installed: requirements-lint.lock
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet "$$(grep -E '^uv==' requirements.lock | cut -d' ' -f1)"
	$(LINT_VENV)/bin/uv pip sync --quiet --python $(LINT_VENV)/bin/python requirements-lint.lock
	touch $@

lint: venv $(LINT_VENV)/.installed
	$(BIN)/ruff check runner tests bench playbooks/library
	$(BIN)/mypy  # [tool.mypy] in pyproject.toml: runner/, against this venv's packages
	CHECKPOINT_DISABLE=1 terraform fmt -check -recursive terraform
	$(BIN)/python tests/static/terraform_validate.py
	cd playbooks && ANSIBLE_CONFIG=ansible.cfg ../$(LINT_VENV)/bin/ansible-lint --profile production site.yml
	$(BIN)/python tests/static/checkov_check.py $(LINT_VENV)/bin/checkov

bench: venv  # needs root and no lab up; see docs/performance.md for its time (BENCH_ARGS=--quick: a smoke run)
	PYTHONPATH=. $(BIN)/python bench/suite.py $(BENCH_ARGS)

clean:
	-$(BIN)/daskfleet down 2>/dev/null
	-$(BIN)/daskfleet lab down 2>/dev/null
	rm -rf .daskfleet runs inventory/lab
