"""TopK SAE training throughput: interplab against SAELens and sparsify, side by side in one
process, on the same cached activations.

    .venv-sae/bin/python benchmarks/sae_train.py --store STORE_DIR [--steps 200] [--batch 4096]

(`make bench-sae` builds `.venv-sae` — SAELens needs transformer-lens<4, so its peers cannot
share `.venv` with the TransformerLens-4 benchmarks — harvests the store and runs this.)

Configuration, the same for all three: d_in 576 (SmolLM2-135M's residual stream), 16×
expansion (d_sae 9216), k 32, the same batch size and number of steps, Adam at sparsify's
default learning rate 2e-4 / sqrt(d_sae / 2**14), linear warm-up over the first 10 % of steps
and linear decay to 0 over the last 20 %, decoder kept at unit norm, b_dec initialised from
the first batch's mean, no input normalisation, no AuxK (no latent can be dead within the
dead-token window in a run this short, so the AuxK term would be 0 for all three anyway).
interplab runs twice: with the encoder matmul in float32 (``interplab``) and in bfloat16
(``interplab_bf16``; ``--matmul-dtype bfloat16`` of ``train-sae``).

The activations are read once from an interplab store into memory (float32) and every peer
gets the SAME batches in the same order — SAELens through its own ``SAETrainer`` fed by an
iterator over those tensors (its data pipeline cannot read our store), sparsify through its own
``SparseCoder`` forward/loss (FVU + AuxK) with its own decoder-norm and gradient-projection
steps, driven by the loop of ``sparsify.Trainer.fit`` (which harvests from a model itself and
cannot take cached activations). Timed: the training loop only (not loading). Reported per
peer: tokens/s (median over ``--repeats`` interleaved repeats), final FVU on held-out
activations (against the mean, same code for all), peak memory of the training loop (CUDA max
allocated on GPU; peak resident-set growth sampled every 5 ms on CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import threading
import time
from pathlib import Path

import torch


def fvu(recon: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of variance unexplained, against the target's mean (not zero)."""
    err = (recon.float() - target.float()).pow(2).sum()
    var = (target.float() - target.float().mean(0)).pow(2).sum()
    return float(err / var)


def lr_multiplier(step: int, steps: int, warmup: int, decay: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if step >= steps - decay:
        return max(0.0, (steps - step) / decay)
    return 1.0


class PeakMemory:
    """Peak memory growth of a block: CUDA max-allocated, or sampled RSS on CPU."""

    def __init__(self, device: str) -> None:
        self.device = device

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self._rss()
            self.peak = self.base
            self._stop = threading.Event()

            def sample():
                while not self._stop.wait(0.005):
                    self.peak = max(self.peak, self._rss())

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())
            self.bytes = self.peak - self.base


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -- the three contenders ---------------------------------------------------------------------

def run_interplab(acts, batches, args, out_dir, matmul_dtype="float32"):
    import tempfile

    from interplab.activations.source import TensorSource
    from interplab.dictionary import DictionaryConfig
    from interplab.dictionary.train_config import TrainConfig
    from interplab.dictionary.trainer import train

    class Ordered(TensorSource):
        """Yields exactly the benchmark's batch order (the same rows every peer gets)."""

        def batches(self, batch_size, seed=0, start_batch=0):
            for rows in batches[start_batch:]:
                yield {"x": self.tensors["x"][rows]}

    source = Ordered({"x": acts})
    dcfg = DictionaryConfig(arch="topk", d_in=args.d_in, d_sae=args.d_in * args.expansion, k=args.k,
                            input_site="x", dead_after_tokens=10**12)
    # init_tokens = one batch: b_dec from the first batch's mean, as the peers get it here.
    tcfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr,
                       warmup_steps=args.warmup, decay="linear", decay_start=1 - args.decay_frac,
                       b_dec_init="mean", init_tokens=args.batch, normalize=False,
                       device=args.device, checkpoint_every=0, log_every=args.steps,
                       out_dir=tempfile.mkdtemp(prefix="interplab-sae-bench-"), seed=0,
                       matmul_dtype=matmul_dtype)
    sync(args.device)
    t = time.perf_counter()
    result = train(source, [dcfg], tcfg, progress=False)
    sync(args.device)
    dt = time.perf_counter() - t
    d = next(iter(result.dictionaries.values())).eval()
    return dt, lambda x: d(x)


def run_interplab_bf16(acts, batches, args, out_dir):
    return run_interplab(acts, batches, args, out_dir, matmul_dtype="bfloat16")


def run_saelens(acts, batches, args, out_dir):
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(
        d_in=args.d_in, d_sae=args.d_in * args.expansion, k=args.k, dtype="float32",
        device=args.device, aux_loss_coefficient=0.0, normalize_activations="none"))
    with torch.no_grad():  # b_dec from the data mean, as for the others
        sae.b_dec.copy_(acts[batches[0]].mean(0).to(sae.b_dec))
    decay = int(args.steps * args.decay_frac)
    cfg = SAETrainerConfig(
        total_training_samples=args.steps * args.batch, train_batch_size_samples=args.batch,
        lr=args.lr, lr_end=0.0, lr_scheduler_name="constant", lr_warm_up_steps=args.warmup,
        lr_decay_steps=decay, device=args.device, dead_feature_window=10**9,
        feature_sampling_window=10**9, logger=LoggingConfig(log_to_wandb=False))
    provider = (acts[rows] for rows in batches)
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=provider)
    sync(args.device)
    t = time.perf_counter()
    trainer.fit()
    sync(args.device)
    dt = time.perf_counter() - t
    sae.eval()
    return dt, lambda x: sae(x)


def run_sparsify(acts, batches, args, out_dir):
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(args.d_in, SparseCoderConfig(expansion_factor=args.expansion, k=args.k),
                      device=args.device, dtype=torch.float32)
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr)
    decay = int(args.steps * args.decay_frac)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_multiplier(s, args.steps, args.warmup, decay))
    sync(args.device)
    t = time.perf_counter()
    # The body of sparsify.Trainer.fit for one hookpoint, loss_fn="fvu", auxk_alpha=0.
    for step, rows in enumerate(batches[:args.steps]):
        x = acts[rows]
        if step == 0:
            sae.b_dec.data = x.mean(0).to(sae.dtype)
        sae.set_decoder_norm_to_unit_norm()
        total_variance = (x - x.mean(0)).pow(2).sum()
        out = sae(x=x, y=x, dead_mask=None, total_variance=total_variance)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        sched.step()
    sync(args.device)
    dt = time.perf_counter() - t
    return dt, lambda x: sae(x=x, y=x).sae_out


CONTENDERS = {"interplab": run_interplab, "interplab_bf16": run_interplab_bf16, "saelens": run_saelens,
              "sparsify": run_sparsify}


def load_activations(args) -> tuple[torch.Tensor, torch.Tensor]:
    from interplab.activations.store import ActivationStore

    store = ActivationStore.open(args.store)
    site = args.site or store.sites[0]
    need = args.steps * args.batch + args.heldout
    if store.n_tokens < need:
        raise SystemExit(f"The store holds {store.n_tokens} tokens; this run needs {need} "
                         f"(steps × batch + held-out). Harvest more or lower --steps/--batch.")
    got = next(store.batches(need, seed=0))[site]
    return got[:-args.heldout].to(args.device), got[-args.heldout:].to(args.device)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="an interplab activation store (interplab harvest)")
    ap.add_argument("--site", default="", help="site in the store (default: its first)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--expansion", type=int, default=16)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--heldout", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default="interplab,interplab_bf16,saelens,sparsify")
    ap.add_argument("--out", default="benchmarks/results/sae_train.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.lr = 2e-4 / math.sqrt(args.d_in * args.expansion / 2**14)
    args.warmup = max(1, args.steps // 10)
    args.decay_frac = 0.2

    train_acts, heldout = load_activations(args)
    assert train_acts.shape[1] == args.d_in, (train_acts.shape, args.d_in)
    g = torch.Generator().manual_seed(0)
    batches = list(torch.randperm(train_acts.shape[0], generator=g).view(args.steps, args.batch))
    out_dir = Path("/tmp/interplab-sae-bench")
    names = [n for n in args.only.split(",") if n]
    times: dict[str, list[float]] = {n: [] for n in names}
    results: dict[str, dict] = {}
    for rep in range(args.repeats):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            torch.manual_seed(0)
            with PeakMemory(args.device) as mem:
                dt, forward = CONTENDERS[name](train_acts, batches, args, out_dir)
            times[name].append(dt)
            with torch.no_grad():
                final = fvu(torch.cat([forward(c) for c in heldout.split(4096)]), heldout)
            results[name] = {"fvu": final, "peak_bytes": mem.bytes}
            print(f"{name:10s} repeat {rep}: {dt:8.2f} s  {args.steps * args.batch / dt:10.0f} tok/s  "
                  f"FVU {final:.4f}  peak +{mem.bytes / 2**20:.0f} MiB", flush=True)
    tokens = args.steps * args.batch
    for name in names:
        results[name]["seconds_median"] = statistics.median(times[name])
        results[name]["tokens_per_s"] = tokens / results[name]["seconds_median"]
    peers = [n for n in names if not n.startswith("interplab")]
    if peers:
        best = max(peers, key=lambda n: results[n]["tokens_per_s"])
        results["faster_peer"] = best
        for ours in [n for n in names if n.startswith("interplab")]:
            ratio = results[ours]["tokens_per_s"] / results[best]["tokens_per_s"]
            fvu_rel = results[ours]["fvu"] / results[best]["fvu"] - 1
            results[f"{ours}_speedup_vs_{best}"] = ratio
            results[f"{ours}_fvu_vs_{best}"] = fvu_rel
            print(f"{ours} / {best}: {ratio:.2f}× tokens/s, FVU {fvu_rel:+.1%}")
    results["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    results["device"] = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
