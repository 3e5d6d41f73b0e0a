# Two commands do everything on a fresh machine with Python 3.10+ and pip:
#   make demo       create .venv, install craft, train the quickstart model and print a sample
#   make test       create .venv, install craft with its test tools, run the fast tests (< 4 min)
#   make test-full  the whole suite: also the `slow` tests (signals, kill -9, DDP, compiled decode, ...)
# Tests run under the allocator `python -m craft` uses (python -m craft.allocator, see README).
#
# TORCH_SPEC chooses the PyTorch build, e.g. the CPU wheel index:
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# Extras installed into .venv; CI adds the trackers: make test EXTRAS=dev,trackers
EXTRAS ?= dev
PY := $(VENV)/bin/python

.PHONY: demo test test-full install web lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: install
	@if [ -f logs/quickstart_char/checkpoints/last.ckpt ]; then \
		echo "logs/quickstart_char already trained: generating from it (delete the folder to retrain)"; \
	else \
		$(PY) -m craft fit --config configs/quickstart.yaml; \
	fi
	$(PY) -m craft predict --config configs/quickstart.yaml --ckpt_path last

test: install
	$(PY) -m craft.allocator $(PY) -m pytest -m "not slow"

test-full: install
	$(PY) -m craft.allocator $(PY) -m pytest

# onnxruntime-web for `craft.export --web`, and playwright-core for its browser test (needs npm).
web:
	npm ci --prefix craft/web --no-audit --no-fund

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV)
