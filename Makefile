PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# Torch is pinned to the build this machine kind ships on disk (CPU). A user
# with a GPU build of torch already installed keeps it (nothing is reinstalled).
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1

.PHONY: install test test-fast lint format bench demo clean

install:
	@$(PYTHON) -c "import torch" 2>/dev/null \
		&& echo "torch already installed: $$($(PYTHON) -c 'import torch; print(torch.__version__)') (kept)" \
		|| $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev]"
	@$(PYTHON) -m hf_vitrobust.data --check-fashion-mnist >/dev/null 2>&1 \
		&& echo "Fashion-MNIST files found." \
		|| { if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			(apt-get install -y dataset-fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist)) \
			|| echo "WARNING: could not install Debian's dataset-fashion-mnist; see README (Fashion-MNIST)."; \
		else \
			echo "NOTE: Fashion-MNIST files not found and apt-get is unavailable (or not root)."; \
			echo "      Install Debian's 'dataset-fashion-mnist', or set HF_VITROBUST_FASHION_MNIST_DIR to a folder"; \
			echo "      holding {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz. Continuing."; \
		fi; }
	@command -v chromium >/dev/null 2>&1 || { if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y chromium || (apt-get update && apt-get install -y chromium)) \
		|| echo "WARNING: could not install chromium; the report's browser test will be skipped."; \
	else echo "NOTE: chromium not found; the report's browser test will be skipped."; fi; }

test:
	$(PYTHON) -m pytest -q -ra

test-fast:
	$(PYTHON) -m pytest -q -ra -m "not slow"

lint:
	ruff check .
	ruff format --check .

format:
	ruff format .
	ruff check --fix .

bench:
	@for b in bench/*.py; do \
		case $$b in bench/gpu_*) continue;; esac; \
		echo "== $$b"; PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" $(PYTHON) $$b || exit 1; \
	done

demo:
	$(PYTHON) recipes/demo.py --output_dir outputs/demo

clean:
	rm -rf outputs build *.egg-info .pytest_cache
