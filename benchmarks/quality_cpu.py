"""Time-to-quality on tiny-shakespeare (nanoGPT's split) on CPU: race.py with CPU defaults.

Trains the default configuration (the cpu-small preset) for 190 s of training on the CPU, then
scores the whole validation text in one stateful pass and reports the loss in nats/char (no
periodic evaluation: on 2 cores a pass costs seconds). Overrides (for tuning) as key=value
arguments, and every other race.py option:

    python benchmarks/quality_cpu.py                      # the default, 190 s
    python benchmarks/quality_cpu.py hidden_size=384 lr=4e-3 --name trial
"""

from __future__ import annotations

from race import main

CPU_DEFAULTS = {
    "preset": "cpu-small",
    "device": "cpu",
    "budget": 190.0,
    "name": "quality_cpu",
    "eval_every": 10**9,
}

if __name__ == "__main__":
    main(defaults=CPU_DEFAULTS, doc=__doc__)
