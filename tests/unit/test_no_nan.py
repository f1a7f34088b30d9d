"""No NaN trains or ships (issue 11, item 2): the trainer stops at the first non-finite batch or
loss, naming the step (and, for a store, the shard), and keeps the last good checkpoint;
interventions, steering vectors and scales refuse NaN / infinity where they are built."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from interplab.activations import shards as st
from interplab.activations.source import TensorSource
from interplab.activations.store import ActivationStore
from interplab.analyses.generate_run import GenerateConfig
from interplab.analyses.steering import SteeringVector
from interplab.analyses.steering_apply import steer_interventions
from interplab.analyses.steering_eval import SteeringEvalConfig
from interplab.cli.main import main
from interplab.core.errors import ConfigError, InputError, InterplabError, InterventionError
from interplab.dictionary import DictionaryConfig
from interplab.dictionary.checkpoint import latest_checkpoint
from interplab.dictionary.guard import NonFiniteError, check_weights
from interplab.dictionary.train_config import TrainConfig
from interplab.dictionary.trainer import train
from interplab.interventions import Ablate, Intervention, Patch, Steer, from_json

SITE = "L1.resid_post"
DICT = [DictionaryConfig(arch="topk", d_in=8, d_sae=32, k=2, input_site=SITE)]


pytestmark = pytest.mark.usefixtures("one_thread")


def data(n=512, d=8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g)


def cfg(out, **kw):
    base = dict(steps=12, batch_size=32, lr=1e-3, log_every=4, checkpoint_every=3, init_tokens=32,
                out_dir=str(out), device="cpu")
    return TrainConfig(**{**base, **kw})


def assert_finite_checkpoint(out, step):
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == f"step-{step:08d}"
    for name in ("dictionaries.safetensors", "optimizer.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(ckpt / name)).values() if t.is_floating_point())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_row_stops_training_at_its_step_and_keeps_the_last_checkpoint(tmp_path, bad):
    x = data()
    x[4 * 32 + 5, 3] = bad  # in order (no shuffle): batch 4, i.e. step 5
    with pytest.raises(NonFiniteError) as err:
        train(TensorSource({SITE: x}, shuffle=False), DICT, cfg(tmp_path), progress=False)
    msg = str(err.value)
    assert "step 5" in msg and SITE in msg and "NaN or infinite" in msg and "TensorSource" in msg
    assert "step-00000003" in msg  # the checkpoint it keeps
    assert_finite_checkpoint(tmp_path, 3)
    assert not (tmp_path / "L1.resid_post.topk.32.k2" / "weights.safetensors").exists()  # nothing published


def test_a_non_finite_init_sample_stops_before_the_first_step(tmp_path):
    x = data()
    x[7, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="before its first step"):
        train(TensorSource({SITE: x}, shuffle=False), DICT, cfg(tmp_path), progress=False)
    assert latest_checkpoint(tmp_path) is None


def test_a_loss_that_overflows_on_finite_inputs_says_training_diverged(tmp_path):
    x = data()
    x[4 * 32 + 5] = 3e38  # finite, but its square overflows
    with pytest.raises(NonFiniteError, match="step 5: the loss of .* although its activation batch is finite"):
        train(TensorSource({SITE: x}, shuffle=False), DICT, cfg(tmp_path), progress=False)
    assert_finite_checkpoint(tmp_path, 3)


def test_non_finite_weights_are_never_written():
    from interplab.dictionary.base import DICTIONARIES

    d = DICTIONARIES.get("topk")(DICT[0])
    check_weights({0: d}, ["a"], 3, None, lambda t: t)  # finite: passes
    with torch.no_grad():
        d.W_dec[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="After step 3, non-finite weights in a \\(W_dec\\)"):
        check_weights({0: d}, ["a"], 3, None, lambda t: t)


# -- a store whose shard holds NaN (as the model produced it: the file hashes are right) -----------
def make_store(root, bad_shard=2, rows=64, n_shards=4, d=8):
    root.mkdir()
    g = torch.Generator().manual_seed(1)
    for i in range(n_shards):
        acts = torch.randn(rows, d, generator=g)
        if i == bad_shard:
            acts[17, 2] = float("nan")
        ids = torch.arange(rows // 4 * 5).reshape(-1, 5) + i * 1000
        st.write_shard(root, i, {SITE: acts}, ids, i * rows // 4)
    header = {"format": st.FORMAT, "model": {"name": "tiny", "weights_hash": "abc123"}, "sites": [SITE],
              "widths": {SITE: d}, "dtype": "float32", "rows_per_context": 4, "first_position": 1,
              "n_tokens": rows * n_shards, "tokens_per_shard": rows, "n_shards": n_shards}
    st.write_manifest(root, header, st.scan_shards(root))
    return root


def first_bad_step(store, batch_size, seed):
    for i, b in enumerate(store.batches(batch_size, seed=seed)):
        if not torch.isfinite(b[SITE]).all():
            return i + 1


def test_a_store_with_nan_names_the_step_and_the_shard(tmp_path):
    store = ActivationStore.open(make_store(tmp_path / "store"))
    seed = next(s for s in range(50) if first_bad_step(store, 16, s) > 4)
    step = first_bad_step(store, 16, seed)
    with pytest.raises(NonFiniteError) as err:
        train(store, DICT, cfg(tmp_path / "out", batch_size=16, init_tokens=16, seed=seed, steps=16),
              progress=False)
    msg = str(err.value)
    assert f"step {step}:" in msg and "shard-00002/L1.resid_post.safetensors (1 row," in msg
    assert "as harvested" in msg  # not corruption: the model produced it
    assert_finite_checkpoint(tmp_path / "out", 3 * ((step - 1) // 3))


def test_train_sae_cli_exits_2_naming_the_step(tmp_path, capsys):
    make_store(tmp_path / "store", bad_shard=0, n_shards=1)
    code = main(["train-sae", "--store", str(tmp_path / "store"), "--expansions", "2", "--k", "2",
                 "--batch-size", "8", "--init-tokens", "8", "--steps", "6", "--device", "cpu",
                 "--out", str(tmp_path / "run")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "Training stopped at step" in err and "shard-00000" in err and "Traceback" not in err


def test_a_failed_run_warns_about_fvu_above_one():
    from interplab.dictionary.train_run import TrainSaeResult

    r = TrainSaeResult(arch="topk", origin="x", sites=[SITE], steps=2, batch_size=8, tokens=16, resumed_from=None,
                       dead_after_tokens=10, dictionaries={"a": {"metrics": {"fvu": 12.0, "l0": 2}, "path": "p"},
                                                           "b": {"metrics": {"fvu": 0.2, "l0": 2}, "path": "q"}},
                       store=None, curve_steps=[], curves={})
    texts = [b.text for b in r.terminal() if hasattr(b, "text")]
    assert any("WARNING: a (FVU 12)" in t and "worse than predicting the batch mean" in t for t in texts)
    assert not any("b (FVU" in t for t in texts)


# -- interventions, vectors and scales -----------------------------------------------------------
NAN, INF = float("nan"), float("inf")


def test_steer_refuses_a_nan_vector_and_a_non_finite_scale():
    with pytest.raises(InterventionError, match="steer at L0.resid_pre: vector has 1 non-finite"):
        Steer("L0.resid_pre", vector=torch.tensor([1.0, NAN]))
    for scale in (NAN, INF, -INF, torch.tensor(NAN)):
        with pytest.raises(InterventionError, match="steer at L0.resid_pre: scale .* finite"):
            Steer("L0.resid_pre", vector=torch.ones(2), scale=scale)
    with pytest.raises(InterventionError, match="scale must be a number"):
        Steer("L0.resid_pre", vector=torch.ones(2), scale="2")


def test_patch_and_ablate_refuse_non_finite_values():
    with pytest.raises(InterventionError, match="patch at L0.resid_pre: value has 2 non-finite entries"):
        Patch("L0.resid_pre", value=torch.tensor([[NAN, 1.0], [0.0, INF]]))
    with pytest.raises(InterventionError, match="ablate at L0.resid_pre: value has 1 non-finite"):
        Ablate("L0.resid_pre", mode="mean", value=[0.0, NAN])
    with pytest.raises(InterventionError, match="ablate at L0.resid_pre: seed must be integers"):
        Ablate("L0.resid_pre", seed=NAN)


def test_positions_and_rows_must_be_integers():
    for bad in ("12", [1.5], [NAN], [True]):
        with pytest.raises(InterventionError, match="positions must be integers"):
            Steer("L0.resid_pre", vector=torch.ones(2), positions=bad)
    with pytest.raises(InterventionError, match="rows must be integers"):
        Patch("L0.resid_pre", value=torch.ones(2), rows=[INF])
    ok = Steer("L0.resid_pre", vector=torch.ones(2), positions=[2.0, -1], rows=torch.tensor([0, 1]))
    assert ok.positions == (2, -1) and ok.rows == (0, 1)


def test_json_with_nan_or_infinity_is_refused():
    vec = {"shape": [2], "dtype": "float32", "data": [1.0, NAN]}
    text = json.dumps([{"op": "steer", "site": "L0.resid_pre", "vector": vec}])
    assert "NaN" in text
    with pytest.raises(InterventionError, match="steer at L0.resid_pre: vector has 1 non-finite"):
        from_json(text)
    with pytest.raises(InterventionError, match="scale is inf"):
        Intervention.from_json('{"op": "steer", "site": "L0.resid_pre", "vector": [1, 2], "scale": Infinity}')
    with pytest.raises(InterventionError, match="patch at L0.resid_pre: value has 1 non-finite"):
        Intervention.from_json('{"op": "patch", "site": "L0.resid_pre", "value": [NaN, 1]}')
    with pytest.raises(InterventionError, match="patch needs a 'site'"):
        Intervention.from_json('{"op": "patch", "value": [1]}')
    with pytest.raises(InterventionError, match="Unknown intervention op \\['steer'\\]"):
        Intervention.from_json('{"op": ["steer"], "site": "L0.resid_pre"}')
    with pytest.raises(InterventionError, match="not valid JSON: .* line 1"):
        from_json('[{"op": "steer",')
    with pytest.raises(InterventionError, match="dtype 'complex64' is not one of"):
        Intervention.from_dict({"op": "patch", "site": "L0.resid_pre",
                                "value": {"shape": [1], "dtype": "complex64", "data": [1]}})
    with pytest.raises(InterventionError, match="cannot build a tensor of shape \\[3\\]"):
        Intervention.from_dict({"op": "patch", "site": "L0.resid_pre", "value": {"shape": [3], "data": [1, 2]}})


def test_steering_vectors_refuse_nan_built_or_loaded(tmp_path):
    with pytest.raises(InputError, match="has 1 non-finite entries"):
        SteeringVector({"L0.resid_post": torch.tensor([1.0, NAN])})
    v = SteeringVector({"L0.resid_post": torch.ones(4)})
    v.save(tmp_path / "v")
    # A vector file whose numbers were damaged (or saved from a diverged computation).
    from safetensors.torch import save_file
    save_file({"L0.resid_post": torch.tensor([1.0, INF, 0.0, 0.0])}, str(tmp_path / "v" / "vectors.safetensors"))
    with pytest.raises(InputError, match="vectors.safetensors: Steering vector at L0.resid_post has 1 non-finite"):
        SteeringVector.load(tmp_path / "v")
    (tmp_path / "v" / "vectors.safetensors").write_bytes(b"garbage")
    with pytest.raises(InterplabError, match="vectors.safetensors cannot be read"):
        SteeringVector.load(tmp_path / "v")
    with pytest.raises(InterventionError, match="scale is nan"):
        v.interventions(NAN)
    with pytest.raises(InterventionError, match="scale is inf"):
        steer_interventions([v, v], [1.0, INF])


def test_generate_and_sweep_scales_must_be_finite():
    for scale in (NAN, INF):
        with pytest.raises(ConfigError, match="scale must be a finite number"):
            GenerateConfig(scale=scale, device="cpu")
    with pytest.raises(ConfigError, match="scales must be finite numbers"):
        SteeringEvalConfig(scales=[0.0, 1.0, NAN])
    assert math.isfinite(GenerateConfig(device="cpu").scale)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_generate_cli_refuses_a_non_finite_scale(value, capsys):
    code = main(["generate", f"--scale={value}", "--steer", "nowhere", "--device", "cpu"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "scale must be a finite number" in err, err
