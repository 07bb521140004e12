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

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): setup.py
	@# open3d's wheel links against libusb from Debian
	@ldconfig -p | grep -q libusb-1.0.so.0 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libusb-1.0-0; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# the CPU build of torch from local disk first, so nothing else pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[ros,dev]"
	@touch $(STAMP)

SCENE := demo_out/scenes/dataset1/keyframe1
demo: $(STAMP)
	$(VENV)/bin/dares synth --out demo_out/scenes --frames 30 --sequences 1 --width 320 --height 256 --seed 5 --force
	$(VENV)/bin/dares infer --weights dares_core/assets/demo_model.safetensors --input $(SCENE)/image_02/data \
		--out demo_out/depth --height 64 --width 96 --calibration $(SCENE)/calibration.yaml \
		--save-disp demo_out/disparities.npy --force
	$(VENV)/bin/dares eval --pred-disps demo_out/disparities.npy \
		--gt-depths demo_out/scenes/splits/synthetic/gt_depths.npz --out demo_out/eval --force
	@echo "demo: depth, colour maps and point clouds in demo_out/depth, SCARED metrics in demo_out/eval"
	@echo "      (the built-in model is tiny and trained on synthetic scenes: docs/demo_model.md; real weights: README)"

test: $(STAMP)
	$(PY) -m pytest -q test

clean:
	rm -rf $(VENV) demo_out .pytest_cache
