# The README's two commands: `make run` (the main job) and `make test`. Both install the
# software Vulkan driver first when no Vulkan driver is found (and Open MPI when missing), and
# say so. Both build with --features mpi where Open MPI is installed (one build serves both),
# so the mpirun test runs too.
export XDG_RUNTIME_DIR ?= /tmp
CARGO ?= cargo

.PHONY: run test bench setup web

setup:
	@bash scripts/setup.sh

run: setup
	$(CARGO) run --release $$(bash scripts/features.sh) -- train

test: setup
	$(CARGO) test --release $$(bash scripts/features.sh)

bench: setup
	$(CARGO) run --release -- bench matmul

# The page that trains in a browser tab (WebGPU): built into target/web/site, then served on
# http://127.0.0.1:8080/ until Ctrl-C.
web: setup
	bash scripts/web-build.sh
	$(CARGO) run --release $$(bash scripts/features.sh) -- serve-web
