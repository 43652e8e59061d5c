# vidcorpus: two commands on a fresh machine.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
DEMO_ROOT ?= demo_root
DEMO_WORLD ?= demo_world

.PHONY: demo test install system-deps clean

$(PY):
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium (browser tests will fail)"

demo: install
	$(PY) -m pipelines.demo --root $(DEMO_ROOT) --world $(DEMO_WORLD)

test: install system-deps
	$(PY) -m pytest -q tests

clean:
	rm -rf $(DEMO_ROOT) $(DEMO_WORLD)
