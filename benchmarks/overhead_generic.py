"""Forward-pass overhead of ``HookedModule`` (any torch module) on a GCN and a CNN.

Everything runs in ONE process on one torch thread, under ``torch.no_grad``, on seeded random
weights and inputs. Contenders are interleaved: after a warm-up, each round runs every contender
of a model once, in a fresh seeded random order, so drift and other load on the (shared, 2-core)
machine hit all of them alike. We report medians and ratios to the plain ``module(*inputs)``.

Rows per model:
  plain        module(*inputs) (the reference)
  plain_again  the very same call again: its ratio to ``plain`` is this run's noise floor
  run          hm.run(*inputs) with nothing attached (the goal: <= 1% over ``plain``)
  cache        hm.run_with_cache(*inputs) of every declared site
  raw_hooks    the floor for that cache: bare torch hooks (forward / message) cloning the same
               tensors, registered and removed per call
  cache_item   (GCN) hm.run_with_cache(*inputs, items=[3]): one graph's rows of every site

It also checks that ``run`` and ``run_with_cache`` give the plain outputs bit for bit and that no
hook is left on the module, and times the fixed Python cost of ``hm.run`` with nothing attached
on ``nn.Identity`` (no forward to speak of), min over many calls.

    python benchmarks/overhead_generic.py --rounds 200
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from interplab.runtime.generic import HookedModule, SiteSpec

ROOT = Path(__file__).resolve().parent


# -- models ---------------------------------------------------------------------------------------
class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x):
        x = self.pool(self.conv1(x).relu())
        x = self.pool(self.conv2(x).relu())
        return self.fc(x.flatten(1))


def make_gcn(hidden: int):
    from torch_geometric.nn import GCNConv, global_mean_pool

    class GCN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList([GCNConv(16, hidden), GCNConv(hidden, hidden), GCNConv(hidden, hidden)])
            self.head = nn.Linear(hidden, 2)

        def forward(self, x, edge_index, batch=None):
            for conv in self.convs:
                x = conv(x, edge_index).relu()
            return self.head(global_mean_pool(x, batch))

    return GCN()


def graph_batch(n_graphs: int, gen: torch.Generator):
    from torch_geometric.data import Batch, Data

    graphs = []
    for _ in range(n_graphs):
        n = int(torch.randint(10, 31, (1,), generator=gen))
        e = torch.randint(0, n, (2, 3 * n), generator=gen)
        graphs.append(Data(x=torch.randn(n, 16, generator=gen), edge_index=e[:, e[0] != e[1]]))
    return Batch.from_data_list(graphs)


def setups(args) -> dict:
    """{model name: (hooked module, inputs, kwargs, extra contenders, description)}."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cnn = CNN().eval()
    img = torch.randn(args.cnn_batch, 3, 32, 32, generator=gen)
    out = {"cnn": (HookedModule(cnn, {"conv1": SiteSpec("conv1", layout="image"),
                                      "conv2": SiteSpec("conv2", layout="image"), "fc": "fc"}),
                   (img,), {}, {}, f"CNN 2 conv + pool + linear, batch {args.cnn_batch} x 3 x 32 x 32")}
    try:
        gcn = make_gcn(args.hidden).eval()
    except ImportError as err:
        print(f"note: torch_geometric not installed ({err}); GCN skipped", file=sys.stderr)
        return out
    b = graph_batch(args.graphs, gen)
    hm = HookedModule(gcn, {"conv1": SiteSpec("convs.0", layout="nodes"),
                            "conv2": SiteSpec("convs.1", layout="nodes"),
                            "conv3": SiteSpec("convs.2", layout="nodes"),
                            "msg2": SiteSpec("convs.1", tensor="message", layout="edges")})
    extra = {"cache_item": lambda *a, **k: hm.run_with_cache(*a, items=[3], **k)}
    out["gcn"] = (hm, (b.x, b.edge_index), {"batch": b.batch}, extra,
                  f"GCN 3 x GCNConv({args.hidden}) + mean pool, {args.graphs} graphs, {b.num_nodes} nodes, "
                  f"{b.num_edges} edges")
    return out


# -- timing ---------------------------------------------------------------------------------------
def orders(names: list[str], rounds: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(rounds):
        order = names[:]
        rng.shuffle(order)
        out.append(order)
    return out


def interleaved(contenders: dict, rounds: int, warmup: int) -> tuple[dict, dict]:
    names = list(contenders)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    with torch.no_grad():
        for _ in range(warmup):
            for n in names:
                contenders[n]()
        gc.collect()
        gc.disable()  # a collection landing inside one call is noise, not overhead
        try:
            for order in orders(names, rounds):
                for n in order:
                    c0, t0 = time.process_time(), time.perf_counter()
                    out = contenders[n]()
                    t1, c1 = time.perf_counter(), time.process_time()
                    del out
                    wall[n].append((t1 - t0) * 1e3)
                    cpu[n].append((c1 - c0) * 1e3)
        finally:
            gc.enable()
    return wall, cpu


def summarise(wall: dict, cpu: dict) -> dict:
    ref, ref_cpu = wall["plain"], cpu["plain"]
    med_ref = statistics.median(ref)
    return {
        n: {"median_ms": statistics.median(ts),
            "ratio_of_medians": statistics.median(ts) / med_ref,
            "median_paired_ratio": statistics.median(t / r for t, r in zip(ts, ref, strict=True)),
            "min_ms": min(ts), "ratio_of_mins": min(ts) / min(ref),
            "cpu_median_ms": statistics.median(cpu[n]),
            "cpu_ratio_of_medians": statistics.median(cpu[n]) / statistics.median(ref_cpu)}
        for n, ts in wall.items()
    }


def fixed_cost(reps: int = 20000) -> dict:
    """Microseconds of Python work ``hm.run`` adds to a call with nothing attached (min of reps)."""
    ident = nn.Identity()
    hm = HookedModule(ident, {"x": ""})
    x = torch.zeros(1)

    def best(f):
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            f(x)
            ts.append(time.perf_counter() - t)
        return min(ts) * 1e6

    plain, run = best(ident), best(hm.run)
    return {"identity_call_us": plain, "hm_run_us": run, "added_us": run - plain}


def make_raw_hooks(hm: HookedModule):
    """The least a hook-based cache of the same sites can do (output and message sites only)."""
    mods = dict(hm.module.named_modules())
    specs = list(hm.sites.items())

    def fn(*inputs, **kw):
        store, handles = {}, []
        try:
            for name, spec in specs:
                def keep(module, args, output, name=name):
                    store[name] = output.detach().clone()
                mod = mods[spec.path]
                if spec.tensor == "message":
                    handles.append(mod.register_message_forward_hook(keep))
                else:
                    handles.append(mod.register_forward_hook(keep))
            return hm.module(*inputs, **kw), store
        finally:
            for h in handles:
                h.remove()
    return fn


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    return torch.equal(a, b)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cnn-batch", type=int, default=32)
    ap.add_argument("--graphs", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "results" / "overhead_generic.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    results, checks, described = {}, {}, {}
    load_before = os.getloadavg()
    for name, (hm, inputs, kw, extra, desc) in setups(args).items():
        module = hm.module
        raw_hooks = make_raw_hooks(hm)
        contenders = {
            "plain": lambda m=module, i=inputs, k=kw: m(*i, **k),
            "plain_again": lambda m=module, i=inputs, k=kw: m(*i, **k),
            "run": lambda h=hm, i=inputs, k=kw: h.run(*i, **k),
            "cache": lambda h=hm, i=inputs, k=kw: h.run_with_cache(*i, **k),
            "raw_hooks": lambda f=raw_hooks, i=inputs, k=kw: f(*i, **k),
        }
        contenders.update({n: (lambda f=f, i=inputs, k=kw: f(*i, **k)) for n, f in extra.items()})
        with torch.no_grad():
            ref = module(*inputs, **kw)
            checks[f"{name}_run_bit_identical"] = same(hm.run(*inputs, **kw), ref)
            out, cache = hm.run_with_cache(*inputs, **kw)
            checks[f"{name}_cache_output_bit_identical"] = same(out, ref)
            _, raw = contenders["raw_hooks"]()
            checks[f"{name}_cache_equals_raw_hooks"] = all(torch.equal(cache[n], raw[n]) for n in raw)
        print(f"timing {name}: {desc}; {args.warmup} warm-up + {args.rounds} interleaved rounds ...",
              file=sys.stderr, flush=True)
        wall, cpu = interleaved(contenders, args.rounds, args.warmup)
        results[name] = summarise(wall, cpu)
        checks[f"{name}_no_hooks_left"] = hm.n_torch_hooks == 0 and all(
            not m._forward_hooks and not m._forward_pre_hooks and not getattr(m, "_message_forward_hooks", None)
            for m in module.modules())
        described[name] = desc
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {**vars(args), "torch_threads": torch.get_num_threads()},
        "machine": {"cpu": platform.processor() or platform.machine(), "n_cpus": os.cpu_count()},
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "versions": {"torch": torch.__version__, "python": platform.python_version(),
                     **({"torch_geometric": sys.modules["torch_geometric"].__version__}
                        if "torch_geometric" in sys.modules else {})},
        "models": described, "timing": results, "fixed_cost_nothing_attached": fixed_cost(),
        "checks": checks,
    }
    report(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return result


def report(r: dict) -> None:
    c = r["config"]
    print(f"\n== HookedModule overhead: {c['torch_threads']} torch thread(s), {c['rounds']} interleaved rounds ==")
    la = r["load_average_1_5_15"]
    print(f"   load average before {la['before']}, after {la['after']} on {r['machine']['n_cpus']} CPUs")
    for name, rows in r["timing"].items():
        print(f"\n-- {name}: {r['models'][name]} --")
        print(f"{'contender':<14}{'median ms':>10}{'x plain':>9}{'paired':>9}{'min ms':>9}{'x plain':>9}"
              f"{'cpu ms':>9}{'x plain':>9}")
        for n, t in rows.items():
            print(f"{n:<14}{t['median_ms']:>10.3f}{t['ratio_of_medians']:>9.4f}{t['median_paired_ratio']:>9.4f}"
                  f"{t['min_ms']:>9.3f}{t['ratio_of_mins']:>9.4f}{t['cpu_median_ms']:>9.3f}"
                  f"{t['cpu_ratio_of_medians']:>9.4f}")
    f = r["fixed_cost_nothing_attached"]
    print(f"\nfixed Python cost of hm.run with nothing attached (nn.Identity, min): "
          f"{f['added_us']:.2f} us ({f['identity_call_us']:.2f} -> {f['hm_run_us']:.2f} us)")
    print("checks: " + ", ".join(f"{k}={v}" for k, v in r["checks"].items()))


if __name__ == "__main__":
    main()
