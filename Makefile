# mg-run build, demo and test entry points for a Debian 12 machine.
# `make demo` and `make test` install what is missing (as root) and build first.

SWIFT ?= swift
VENV := .build/venv
PYTHON := $(VENV)/bin/python
MG_RUN := .build/debug/mg-run
APT_PACKAGES := pkg-config libyaml-dev libseccomp-dev libcurl4-openssl-dev libmicrohttpd-dev libsqlite3-dev python3-venv
BENCH_PACKAGES := nginx-light wrk
# Versions the end-to-end tests were run with.
PYTHON_PACKAGES := openai==3.63.0 anthropic==2.17.0 pytest==9.2.0 pyyaml==6.0.3

.PHONY: all build deps bench-deps venv demo test unit-test e2e-test bench clean

all: build

# Installs the Debian packages the build needs, or names them when not root.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" -ne 0 ]; then \
	    echo "mg-run: missing Debian packages:$$missing"; \
	    echo "mg-run: run as root: apt-get update && apt-get install -y$$missing"; exit 1; \
	  fi; \
	  echo "mg-run: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

bench-deps:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(APT_PACKAGES) $(BENCH_PACKAGES)"

$(PYTHON):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(PYTHON_PACKAGES)

venv: deps $(PYTHON)

build: deps
	$(SWIFT) build

# A runaway research agent, stopped by mg-run at its cost ceiling; no key needed.
demo: build venv
	@rm -f .build/demo-summary.json .build/demo-audit.jsonl .build/demo-ledger.sqlite*
	@$(MG_RUN) --policy profiles/basic.yaml --upstream simulate --simulate-latency-ms 150 \
	  --summary .build/demo-summary.json --audit .build/demo-audit.jsonl --ledger .build/demo-ledger.sqlite \
	  -- $(PYTHON) examples/runaway_research.py; \
	  status=$$?; echo "--- mg-run exit status $$status (125 means mg-run stopped the agent at a policy limit)"; \
	  echo "--- summary (.build/demo-summary.json); audit log: .build/demo-audit.jsonl"; \
	  cat .build/demo-summary.json; test $$status -eq 125

unit-test: build
	$(SWIFT) test --parallel

e2e-test: build venv
	MG_RUN=$(MG_RUN) $(PYTHON) -m pytest -q Tests/e2e

test: unit-test e2e-test

bench: bench-deps venv
	$(SWIFT) build -c release
	MG_RUN=.build/release/mg-run bench/proxy-overhead
	MG_RUN=.build/release/mg-run bench/spawn-kill

clean:
	rm -rf .build
