"""What calling ffebm through Python adds to an EP step.

    python python/bench/overhead.py                      # splitting_small_2block, batch 16
    python python/bench/overhead.py --reps 10 --json out.json

Two measurements, both in one process on the same compiled code:

1. Full EP steps (the preset's T1/T2/beta), interleaved: ``Model.gradients`` timed from
   Python (argument checks and conversion, GIL release, worker thread, result arrays and
   dicts) against ``Model.time_gradients``, which times ``compute_gradients`` alone inside
   Rust on the same batch. Interleaving pairs the two under the same machine load; the
   ratio of medians and the median of the per-pair ratios are reported.
2. Within each full ``Model.gradients`` call: its wall time seen from Python minus the
   time its ``compute_gradients`` took inside Rust (``Gradients.seconds``, same call). This
   difference is exactly what the binding adds to that call, free of the load noise that
   blurs (1) on a shared machine.
3. The same two calls as (1) with T1 = T2 = 1, many times (difference of medians).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

import ffebm

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--preset", default="splitting_small_2block")
p.add_argument("--batch", type=int, default=16)
p.add_argument("--reps", type=int, default=8, help="interleaved full-step pairs")
p.add_argument("--short-reps", type=int, default=200, help="pairs of 1-sweep calls")
p.add_argument("--json", help="also write the results here")
a = p.parse_args()

m = ffebm.Model.from_preset(a.preset, seed=0)
c, h, w = m.input_shape
rng = np.random.default_rng(1)
x = rng.standard_normal((a.batch, c, h, w), dtype=np.float32)
y = (np.arange(a.batch) % m.classes).astype(np.int64)


inner = []  # (python wall, rust compute) of each full Model.gradients call


def python_call(**kw):
    t = time.perf_counter()
    g = m.gradients(x, y, algo="ep", **kw)
    wall = time.perf_counter() - t
    if not kw:
        inner.append((wall, g.seconds))
    return wall


def rust_call(**kw):
    return m.time_gradients(x, y, **kw)


# warm-up (kernel packing, allocator, thread pool)
python_call()
rust_call()
inner.clear()

full_py, full_rs, ratios = [], [], []
for i in range(a.reps):
    first, second = (python_call, rust_call) if i % 2 == 0 else (rust_call, python_call)
    r1, r2 = first(), second()
    py, rs = (r1, r2) if first is python_call else (r2, r1)
    full_py.append(py)
    full_rs.append(rs)
    ratios.append(py / rs)
    print(f"pair {i + 1}: python {py:.4f} s, rust {rs:.4f} s, ratio {py / rs:.4f}", flush=True)

short_py, short_rs = [], []
for i in range(a.short_reps):
    short_py.append(python_call(t1=1, t2=1))
    short_rs.append(rust_call(t1=1, t2=1))

med = statistics.median
fixed = med(short_py) - med(short_rs)
res = {
    "preset": a.preset,
    "batch": a.batch,
    "defaults": m.defaults,
    "threads": ffebm.threads(),
    "cpu": platform.processor() or platform.machine(),
    "load_average": os.getloadavg(),
    "full_python_s": full_py,
    "full_rust_s": full_rs,
    "full_median_python_s": med(full_py),
    "full_median_rust_s": med(full_rs),
    "full_ratio_of_medians": med(full_py) / med(full_rs),
    "full_median_pair_ratio": med(ratios),
    "short_median_python_ms": 1e3 * med(short_py),
    "short_median_rust_ms": 1e3 * med(short_rs),
    "short_cost_per_call_ms": 1e3 * fixed,
    "short_cost_fraction_of_step": fixed / med(full_rs),
    "inner_overhead_ms": [1e3 * (w - c) for w, c in inner],
    "inner_median_overhead_ms": 1e3 * med(w - c for w, c in inner),
    "inner_max_overhead_fraction": max((w - c) / c for w, c in inner),
    "inner_median_overhead_fraction": med((w - c) / c for w, c in inner),
}
print(
    f"\n{a.preset}, batch {a.batch}, {ffebm.threads()} threads, load {res['load_average'][0]:.2f}\n"
    f"EP step: python {res['full_median_python_s']:.4f} s, rust {res['full_median_rust_s']:.4f} s "
    f"(median of {a.reps} interleaved pairs); ratio of medians {res['full_ratio_of_medians']:.4f}, "
    f"median pair ratio {res['full_median_pair_ratio']:.4f}\n"
    f"1-sweep call: python {res['short_median_python_ms']:.3f} ms, rust {res['short_median_rust_ms']:.3f} ms "
    f"-> {res['short_cost_per_call_ms']:.3f} ms per call = "
    f"{100 * res['short_cost_fraction_of_step']:.3f}% of an EP step\n"
    f"inside each full call (python wall - rust compute): median "
    f"{res['inner_median_overhead_ms']:.3f} ms = {100 * res['inner_median_overhead_fraction']:.4f}% "
    f"(max {100 * res['inner_max_overhead_fraction']:.4f}%)"
)
if a.json:
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
