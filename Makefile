# Set-up on a fresh Debian machine, as root: `make demo` and `make test`.
# Both install what is missing (Debian packages, a virtualenv) and skip it when present.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := redis-server redis-sentinel wireguard-go wireguard-tools iproute2 nftables \
                iputils-ping iperf3 coturn procps curl systemd tcpdump conntrack \
                chromium chromium-driver fonts-dejavu-core
PYTEST_ARGS ?=

.PHONY: test demo bench deps apt venv bench-deps agent-dist clean

deps: apt venv

apt: .stamp-apt
.stamp-apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

venv: .stamp-venv
.stamp-venv: setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

demo: deps
	$(PY) -m deploy.demo $(DEMO_ARGS)

# The plot of `make bench` needs matplotlib; py-spy is for the profiles in bench/results/profiles.
bench-deps: .stamp-bench
.stamp-bench: .stamp-venv
	$(PY) -m pip install -q -e '.[test,bench]'
	@touch $@

bench: deps bench-deps
	$(PY) -m bench all

# The agent alone (wire + aircrew, no tower, no Flask) as a wheel in dist/: a node installs
# it with `pip install apex_mesh_agent-<version>-py3-none-any.whl` (see docs/operations.md).
agent-dist: venv
	$(PY) -m deploy.agentdist --out dist

clean:
	rm -rf $(VENV) .stamp-apt .stamp-venv .stamp-bench *.egg-info build dist
