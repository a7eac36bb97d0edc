# Busbar's two everyday commands. Both do every set-up step from a fresh clone.
#   make run    Busbar with demo data: web, workers, beat, DIP simulator (Ctrl-C stops it all)
#   make test   the whole test suite against real PostgreSQL and Redis
# Extra pytest arguments: make test ARGS="-k tenancy -x"

VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint env clean

$(VENV)/.synced: pyproject.toml uv.lock scripts/bootstrap.sh
	./scripts/bootstrap.sh
	@touch $@

run: $(VENV)/.synced
	$(PY) -m core.devenv run

test: $(VENV)/.synced
	$(PY) -m core.devenv test $(ARGS)

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DJANGO_SECRET_KEY=type-checking $(VENV)/bin/mypy core tenants messaging console dipsim sampleclient bench

env: $(VENV)/.synced
	@$(PY) -m core.devenv env

clean:
	rm -rf $(VENV) var
