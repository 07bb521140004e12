# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv and installs
# what it needs on a fresh machine; a second run installs nothing (the stamp below is newer than setup.py).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# DDS stays on loopback in every process started from here (tests, demo, benchmarks).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export PYTHONUNBUFFERED := 1

.PHONY: demo readme-images test install clean

install: $(STAMP)

$(STAMP): setup.py scripts/build_tf2_msgs.sh
	@# open3d's wheel links against libusb from Debian
	@ldconfig -p | grep -q libusb-1.0.so.0 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libusb-1.0-0; }
	@# torch.compile (the --compile fast path) builds its CPU kernels with g++
	@command -v g++ >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq g++; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# the CPU build of torch from local disk first, so nothing else pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[ros,dev]"
	@# tf2_msgs has no wheel: built from PyPI's rosidl generators and Debian's definitions, so TF runs in the tests
	@$(PY) -c "import tf2_msgs" 2>/dev/null || SUDO="$(SUDO)" bash scripts/build_tf2_msgs.sh $(VENV)
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dares demo --out demo_out

# the README's pictures are the demo's own output
readme-images: demo
	cp demo_out/strip.png docs/images/demo_strip.png
	cp demo_out/points.png docs/images/demo_points.png
	cp demo_out/fused.png docs/images/demo_fused.png
	cp demo_out/trajectory.png docs/images/demo_trajectory.png

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q test

clean:
	rm -rf $(VENV) demo_out .pytest_cache
