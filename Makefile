# make demo: set up this machine and boot two nodes.   make test: set up and run the suite.
VENV      := .venv
PYTHON    ?= python3
VNODE     := $(VENV)/bin/vnode
IMAGE_DIR := /var/lib/vnode/images
# Nested KVM fails on many cloud VMs (guests die with "KVM internal error"); plain emulation
# always works. On bare metal use VIRT_TYPE=auto.
VIRT_TYPE ?= qemu
DEMO_DISTRO ?= d12

.PHONY: setup host venv image demo test unit lint

setup: host venv image

host:
	sh install/setup-host.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

image: venv
	$(VNODE) images build $(DEMO_DISTRO)

demo: setup
	$(VNODE) up 1 2 --distro $(DEMO_DISTRO) --virt-type $(VIRT_TYPE)
	$(VNODE) list

test: setup
	$(VENV)/bin/ruff check core plugins tests
	$(VENV)/bin/python -m pytest -v tests

unit: venv
	$(VENV)/bin/python -m pytest -v tests/unit

lint: venv
	$(VENV)/bin/ruff check core plugins tests
	$(VENV)/bin/ruff format --check core plugins tests

