"""Time the PyTorch reference implementation (hybrid_bp_ep_official) on this machine.

The reference code is NOT part of ffebm.  Reconstruct it locally (see
tests/fixtures/reference/README.md) and point FFEBM_REFERENCE_DIR at the folder
that contains its `src/` and `hydra_conf/` directories, then run e.g.

    FFEBM_REFERENCE_DIR=/work/scratch/reference \
        python tools/reference/time_reference.py \
        --presets splitting_small_2block splitting_small_1block \
        --batches 16 64 --repeats 3 --out timing.json

What is timed (CIFAR-10 shapes: 3x32x32 inputs, 10 classes, random inputs
drawn from N(0,1), i.e. already "normalised"), torch.set_num_threads(2):

* ``free``: ``model.initialize_neurons(x)`` + ``model(x, neurons)`` — the free
  phase, T1 sweeps per block (T1 = 60 from the preset's yaml).
* ``ep``:   ``EP(beta=0.2, T2=20).run(model, x, y, CrossEntropyLoss('none'))`` —
  free phase + two nudged phases of T2 sweeps per block + the Phi-contrast
  backward per block, exactly what one training step of the reference does
  before ``optimizer.step()``.
* ``bptt``: ``BPTT(T2=20).run(...)`` — free phase + T2 sweeps with autograd +
  backward (the paper's ID baseline).

Each measurement: one warm-up run, then ``--repeats`` timed runs; the median
(and all runs, with the process CPU time of each) are reported.  The warm-up is
the same call with T1 = 2, T2 = min(T2, 8) (it exercises every kernel and shape of the real
run, at a fraction of the cost).  Models are in train mode (as in training),
weights are the reference's own GOE init with ``torch.manual_seed(seed)``; each
preset is built once and reused for all batch sizes (BN running statistics do
not affect timing).  Measurements run in the order given by ``--what``
(default: EP steps first, then free phases, then BPTT), so that the most
important numbers are written to ``--out`` first.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

REF = os.environ.get("FFEBM_REFERENCE_DIR")
if not REF:
    sys.exit("set FFEBM_REFERENCE_DIR to the reconstructed reference checkout")
sys.path.insert(0, REF)

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from src.models import getModel  # noqa: E402  (reference code)
from src.algorithms import getAlgorithm  # noqa: E402  (reference code)


def build(preset, seed, threads, num_classes=10):
    cfg = OmegaConf.load(os.path.join(REF, "hydra_conf", "model", preset + ".yaml"))
    # The reference's GOE init loops in Python over every (out, in) kernel pair
    # (~5e5 tiny ops for these presets); with 2 intra-op threads on a busy
    # machine each op pays a thread-pool barrier, so build with 1 thread.
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = getModel(cfg.name, cfg, torch.device("cpu"), input_size=32, num_classes=num_classes)
    torch.set_num_threads(threads)
    # materialise the LazyLinear readout without touching BN statistics
    last = model.initialize_neurons(torch.zeros(1))[-1][-1]
    model.readout(torch.zeros_like(last))
    model.train()
    return model


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def wait_for_quiet(threshold, max_wait):
    """Poll the 1-min load average until it drops below `threshold` (None: don't wait)."""
    t0 = time.time()
    while threshold is not None and os.getloadavg()[0] >= threshold and time.time() - t0 < max_wait:
        time.sleep(15)
    return time.time() - t0


def time_fn(fn, warmup, repeats):
    """Warm-up once, then time `repeats` runs: wall clock and process CPU time.

    The load average is recorded because this machine may be shared with other
    jobs; a run whose CPU time is far below threads x wall time was contended.
    """
    warmup()
    runs, cpu = [], []
    load0 = os.getloadavg()[0]
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"median_s": statistics.median(runs), "runs_s": runs, "cpu_s": cpu,
            "loadavg_1min_before": load0, "loadavg_1min_after": os.getloadavg()[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["splitting_small_2block", "splitting_small_1block"])
    ap.add_argument("--batches", nargs="+", type=int, default=[16, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--T2", type=int, default=20)
    ap.add_argument("--beta", type=float, default=0.2)
    ap.add_argument("--what", nargs="+", default=["ep", "free", "bptt"],
                    help="measurements, outermost loop (then presets, then batches)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--wait-load", type=float, default=None,
                    help="before each measurement wait (up to --max-wait s) until the 1-min load average is below this")
    ap.add_argument("--max-wait", type=float, default=1800)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")  # = getCriterion("cross_entropy")
    results = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "python": platform.python_version(),
        "T2": args.T2,
        "beta": args.beta,
        "repeats": args.repeats,
        "command": " ".join(sys.argv),
        "timings": [],
    }
    models = {preset: build(preset, args.seed, args.threads) for preset in args.presets}
    plan = [(what, preset, batch) for what in args.what for preset in args.presets for batch in args.batches]
    for what, preset, batch in plan:
        model = models[preset]
        T1 = model.num_iterations
        g = torch.Generator().manual_seed(1234)
        x = torch.randn(batch, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        ep = getAlgorithm("ep", {"T2": args.T2, "beta": args.beta})
        bptt = getAlgorithm("bptt", {"T2": args.T2})
        fns = {
            "free": lambda T1, T2: model(x, model.initialize_neurons(x), T1),
            "ep": lambda T1, T2: (setattr(ep, "T2", T2), ep.run(model, x, y, loss_fn, num_iterations=T1)),
            "bptt": lambda T1, T2: (setattr(bptt, "T2", T2), bptt.run(model, x, y, loss_fn, num_iterations=T1)),
        }
        fn = fns[what]
        waited = wait_for_quiet(args.wait_load, args.max_wait)
        # warm-up: T1 = 2, T2 = min(T2, 8); BPTT needs enough sweeps for the loss to reach
        # every layer of a deep block, or the reference asserts that some p.grad is None
        r = time_fn(lambda: fn(T1, args.T2), lambda: fn(2, min(args.T2, 8)), args.repeats)
        r["waited_for_quiet_s"] = waited
        row = {"preset": preset, "batch": batch, "what": what, "T1": T1, "T2": args.T2 if what != "free" else None, **r}
        results["timings"].append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
