# Set-up on a fresh Debian machine, as root: `make demo` and `make test`.
# Both install what is missing (Debian packages, a virtualenv) and skip it when present.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# A tower host (`make install-tower`): the tower and its Redis (or Sentinel), and an agent
# beside it. The tests, the demo and the benches need the rest as well (STUN server,
# browser, traffic tools).
TOWER_PACKAGES := redis-server redis-sentinel wireguard-go wireguard-tools iproute2 nftables \
                  procps curl systemd python3-venv openssl
APT_PACKAGES := $(TOWER_PACKAGES) iputils-ping iperf3 coturn tcpdump conntrack chromium \
                chromium-driver fonts-dejavu-core
PYTEST_ARGS ?=

.PHONY: test demo bench screenshots deps apt venv bench-deps agent-dist agent-pyz install-tower clean

deps: apt venv

# Debian starts its redis-server service on 6379 when the package is installed: the port
# of the tower's private Redis. When this step installs redis-server itself, it stops and
# disables that service (the tower runs its own); one installed before is left alone.
SYSTEMD_RUN_DIR ?= /run/systemd/system
apt: .stamp-apt
.stamp-apt: PACKAGES = $(APT_PACKAGES)
.stamp-apt-tower: PACKAGES = $(TOWER_PACKAGES)
.stamp-apt .stamp-apt-tower:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
	  case " $$missing " in *" redis-server "*) \
	    echo "disabling Debian's redis-server service: the tower starts its own Redis on 6379"; \
	    if [ -d $(SYSTEMD_RUN_DIR) ]; then systemctl disable --now redis-server; \
	    else service redis-server stop || true; update-rc.d redis-server disable || true; fi ;; \
	  esac; \
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

# The dashboard's images in docs/ (README, docs/dashboard.md), taken by its browser tests.
screenshots: deps
	SCREENSHOT_DIR=$(CURDIR)/docs/images $(PY) -m pytest -q tests/redis/test_dashboard_browser.py \
	  tests/netns/test_dashboard_lab.py

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

# The agent as one executable file, dist/aircrew.pyz (needs only python3 >= 3.11 on a
# node): `sudo install -m 0755 aircrew.pyz /usr/local/bin/aircrew` (docs/quickstart.md).
agent-pyz: venv
	$(PY) -m deploy.agentdist --pyz --out dist

# The tower on this host: the virtualenv, and controltower and aircrew on sudo's PATH.
PREFIX ?= /usr/local
install-tower: .stamp-apt-tower venv
	install -d $(PREFIX)/bin
	ln -sf $(CURDIR)/$(VENV)/bin/controltower $(PREFIX)/bin/controltower
	ln -sf $(CURDIR)/$(VENV)/bin/aircrew $(PREFIX)/bin/aircrew
	@echo "installed: $(PREFIX)/bin/controltower (start: sudo controltower serve; see docs/quickstart.md)"

clean:
	rm -rf $(VENV) .stamp-apt .stamp-apt-tower .stamp-venv .stamp-bench *.egg-info build dist
