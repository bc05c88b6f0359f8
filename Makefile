# make demo: set up this machine and boot two nodes.   make test: set up and run the suite.
VENV      := .venv
PYTHON    ?= python3
VNODE     := $(VENV)/bin/vnode
IMAGE_DIR := /var/lib/vnode/images
# Nested KVM fails on many cloud VMs (guests die with "KVM internal error"); plain emulation
# always works. On bare metal use VIRT_TYPE=auto.
VIRT_TYPE ?= qemu
DEMO_DISTRO ?= d12
# Test files run in parallel workers (pytest-xdist; a file's tests stay together in one
# worker). Guests under plain emulation are CPU-bound: one worker per core, at most four
# (a file may boot three guests at once).
TEST_WORKERS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)
# cloud-init's own validator, for the tests: Debian's package unpacked (never installed: that
# would enable cloud-init's boot services on this host) and run by Debian's python3 with the
# libraries it imports. Kept in the venv, so later runs need no network.
CLOUD_INIT      := $(VENV)/cloud-init
CLOUD_INIT_LIBS := python3-yaml python3-jsonschema python3-jinja2 python3-requests \
                   python3-configobj python3-jsonpatch

# What the tests need beyond vnode: a Fedora host's network daemons, which the tests run in a namespace of their own
# (tests/harness/hostns.py). Neither package ships an init script, and nothing here starts
# them on this host; zsh, for the completion test; sshd for the second hypervisor host
# (tests/harness/hypervisor_host.py runs its own, in a namespace).
HOST_NS_PACKAGES := network-manager firewalld dbus iputils-ping zsh openssh-server

.PHONY: setup host venv image stack-images demo test unit lint cloud-init host-ns bench

setup: host venv image

host:
	sh install/setup-host.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	# An editable install has no bytecode until the first import writes it, and none at all
	# where PYTHONDONTWRITEBYTECODE is set; a wheel install has it from the start.
	$(VENV)/bin/python -m compileall -q core plugins
	touch $@

image: venv
	$(VNODE) images build $(DEMO_DISTRO)

# Debian 13 with Ubuntu's network stack (netplan + systemd-networkd, as Debian's own cloud
# images) and with Fedora's (NetworkManager), for tests/integration/test_nics.py
# and test_bridge.py (their netplan and NetworkManager guests).
# Built once, then kept in the image store.
STACK_IMAGES := d13 d13-nm

stack-images: venv
	$(VNODE) images build $(STACK_IMAGES)

demo: setup
	$(VNODE) up 1 2 --distro $(DEMO_DISTRO) --virt-type $(VIRT_TYPE)
	$(VNODE) list
	@echo "The demo nodes keep running (about 1.5 GiB of host memory each under emulation):"
	@echo "  $(VNODE) ssh vnode01      # log in"
	@echo "  $(VNODE) destroy 1 2      # remove them"

cloud-init: venv
	/usr/bin/python3 -c 'import yaml, jsonschema, jinja2, requests, configobj, jsonpatch' 2>/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	       apt-get install -y -qq --no-install-recommends $(CLOUD_INIT_LIBS) >/dev/null; }
	test -f $(CLOUD_INIT)/.unpacked || { rm -rf $(CLOUD_INIT) && mkdir -p $(CLOUD_INIT) \
	  && cd $(CLOUD_INIT) && { apt-get download -qq cloud-init || \
	       { apt-get update -qq && apt-get download -qq cloud-init; }; } \
	  && dpkg-deb -x cloud-init_*.deb root && touch .unpacked; }

host-ns:
	@missing=""; for pkg in $(HOST_NS_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# What the unit tests need unpacked must be there: the tests fail instead of skipping.
test unit: export VNODE_TEST_REQUIRE_CLOUD_INIT = 1

test: setup cloud-init host-ns stack-images
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -v --durations=40 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

unit: venv cloud-init
	$(VENV)/bin/python -m pytest -v tests/unit

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Not part of the tests: speed is measured here, against a bare-QEMU floor (see README).
bench: setup
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)
