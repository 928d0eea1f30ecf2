# Neural Avatar — set-up, demo and tests. `make demo` and `make test` create .venv when missing.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-pure test-bpy test-viewport test-stock bench build-body build-motions extension clean

$(STAMP): requirements.txt requirements-nodeps.txt
	@bash tools/ensure_system_libs.sh
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(VPY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@# make the repo importable as `neural_avatar` inside the venv
	ln -sfn "$(CURDIR)" "$$($(VPY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/neural_avatar"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VPY) -m neural_avatar demo --out out/demo

test: $(STAMP)
	$(VENV)/bin/pytest -q -rs tests

test-pure: $(STAMP)
	$(VENV)/bin/pytest -q -m "not bpy" tests

test-bpy: $(STAMP)
	$(VENV)/bin/pytest -q -m bpy tests

test-viewport: $(STAMP)
	bash tools/viewport_test.sh

# Optional real-Blender tier (root, ~1.5 GB, ~10 min): stock Debian Blenders 4.3 and 5.2 without
# numpy/torch, from Install from Disk to F12 (screenshots in out/stock/). Needs no venv.
test-stock:
	bash tools/stock_blender_test.sh

bench: $(STAMP)
	$(VPY) -m neural_avatar bench --core --json out/bench_core.json

# Re-runnable data builders (need build-time packages from requirements-build.txt).
build-body: $(STAMP)
	$(VPY) -m pip install -q -r requirements-build.txt
	$(VPY) -m neural_avatar build-body

build-motions: $(STAMP)
	$(VPY) -m pip install -q -r requirements-build.txt
	$(VPY) -m neural_avatar build-motions

extension: $(STAMP)
	$(VPY) -m neural_avatar build-extension --out dist

clean:
	rm -rf out dist build .pytest_cache
