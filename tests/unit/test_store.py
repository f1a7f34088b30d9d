"""The activation store without a model: shards written by hand, then read back. Batches are
deterministic, cover every row once per epoch, jump exactly with ``start_batch``, upcast to
float32; in-order reads, token lookup and the refusals (with their messages)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from interplab.activations import shards as st
from interplab.activations.source import BatchSource
from interplab.activations.store import ActivationStore, StoreError
from interplab.core.errors import InputError, SiteError

CTX, ROWS = 5, 4  # contexts of 5 tokens, BOS dropped: 4 rows each
SITES = {"L0.resid_post": 3, "L1.mlp_out": 2}


def header(n_tokens: int, per_shard: int, n_shards: int) -> dict:
    return {"format": st.FORMAT, "model": {"name": "tiny", "weights_hash": "abc123"},
            "sites": list(SITES), "widths": SITES, "dtype": "bfloat16", "rows_per_context": ROWS,
            "first_position": 1, "n_tokens": n_tokens, "tokens_per_shard": per_shard,
            "n_shards": n_shards}


def make_store(root, shard_rows=(8, 8, 8, 4), write=None) -> torch.Tensor:
    """Row r of site s holds r (+0.5 for the second site); returns the token ids."""
    n = sum(shard_rows)
    root.mkdir(exist_ok=True)
    ids = torch.arange(n // ROWS * CTX).reshape(-1, CTX)
    start = 0
    for i, rows in enumerate(shard_rows if write is None else write):
        start = sum(shard_rows[:i])
        r = torch.arange(start, start + rows, dtype=torch.float32)[:, None]
        acts = {s: (r + 0.5 * k).expand(rows, w).to(torch.bfloat16) for k, (s, w) in enumerate(SITES.items())}
        st.write_shard(root, i, acts, ids[start // ROWS:(start + rows) // ROWS], start // ROWS)
    st.write_manifest(root, header(n, shard_rows[0], len(shard_rows)), st.scan_shards(root))
    return ids


@pytest.fixture
def store(tmp_path) -> ActivationStore:
    make_store(tmp_path / "s")
    return ActivationStore.open(tmp_path / "s", buffer_shards=2)


def row_ids(batches) -> list[int]:
    return torch.cat([b["L0.resid_post"][:, 0] for b in batches]).long().tolist()


def test_store_is_a_batch_source(store):
    assert isinstance(store, BatchSource)
    assert store.sites == list(SITES) and store.width("L1.mlp_out") == 2 and store.n_tokens == 28
    assert store.manifest["complete"] and store.dtype == torch.bfloat16


def test_each_epoch_is_a_permutation_and_deterministic(store):
    got = list(itertools.islice(store.batches(4, seed=3), 14))  # two epochs of 7
    assert all(b["L0.resid_post"].dtype == torch.float32 and b["L0.resid_post"].shape == (4, 3) for b in got)
    assert all(torch.equal(b["L1.mlp_out"][:, 0], b["L0.resid_post"][:, 0] + 0.5) for b in got)  # aligned
    first = row_ids(got[:7])
    second = row_ids(got[7:])
    assert sorted(first) == list(range(28)) == sorted(second)
    assert first != second and first != list(range(28))  # shuffled, freshly each epoch
    again = list(itertools.islice(store.batches(4, seed=3), 14))
    assert all(torch.equal(a["L0.resid_post"], b["L0.resid_post"]) for a, b in zip(got, again))
    other = row_ids(itertools.islice(store.batches(4, seed=4), 7))
    assert other != first


@pytest.mark.parametrize("batch_size", [3, 4, 5])
def test_start_batch_is_the_tail_of_the_full_sequence(store, batch_size):
    full = list(itertools.islice(store.batches(batch_size, seed=1), 20))
    for j in (0, 1, 4, 5, 9, 13):
        tail = list(itertools.islice(store.batches(batch_size, seed=1, start_batch=j), 20 - j))
        assert all(torch.equal(a[s], b[s]) for a, b in zip(full[j:], tail) for s in SITES), j


def test_batches_of_some_sites_only(store):
    batch = next(store.batches(4, sites=["L1.mlp_out"]))
    assert list(batch) == ["L1.mlp_out"]
    with pytest.raises(SiteError, match=r"holds no site L9.resid_post; it holds 'L0.resid_post', 'L1.mlp_out'"):
        next(store.batches(4, sites=["L9.resid_post"]))
    with pytest.raises(InputError, match=r"batch_size must be in 1..28 \(the rows stored\), got 29"):
        next(store.batches(29))


def test_in_order_reads_tokens_and_locate(tmp_path):
    ids = make_store(tmp_path / "s")
    store = ActivationStore.open(tmp_path / "s")
    rows = store.read(6, 19)
    assert rows["L0.resid_post"][:, 0].tolist() == list(range(6, 19))
    assert torch.equal(store.tokens(), ids)
    assert store.locate(0) == (0, 1) and store.locate(3) == (0, 4) and store.locate(9) == (2, 2)
    assert store.locate(27) == (6, 4)
    with pytest.raises(InputError, match="Row 28 outside the store's 0..27"):
        store.locate(28)


def test_check_model_and_sites(store):
    store.check("tiny", ["L0.resid_post"])
    store.check("abc123")
    with pytest.raises(StoreError, match=r"harvested from model 'tiny' \(weights hash abc123\), not 'other'"):
        store.check("other")
    with pytest.raises(SiteError, match="holds no site L2.resid_post"):
        store.check("tiny", ["L2.resid_post"])


def test_open_refuses_what_is_not_a_complete_store(tmp_path):
    with pytest.raises(StoreError, match="is not an activation store: it has no manifest.json"):
        ActivationStore.open(tmp_path)
    make_store(tmp_path / "p", write=(8, 8))  # two of four shards
    with pytest.raises(StoreError, match=r"incomplete: 16 of 28 tokens stored. Re-run the same harvest to resume"):
        ActivationStore.open(tmp_path / "p")
    partial = ActivationStore.open(tmp_path / "p", allow_partial=True)
    assert partial.n_tokens == 16
    (tmp_path / "p" / "manifest.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(StoreError, match="has format 'other/9'; this interplab reads 'interplab-activation-store/1'"):
        ActivationStore.open(tmp_path / "p")


def test_open_detects_missing_and_corrupt_shards(tmp_path):
    make_store(tmp_path / "s")
    f = tmp_path / "s" / "shard-00001" / "L0.resid_post.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    ActivationStore.open(tmp_path / "s")  # cheap open trusts the files
    with pytest.raises(StoreError, match=r"shard-00001/L0.resid_post.safetensors is corrupt \(hash mismatch\)"):
        ActivationStore.open(tmp_path / "s", verify=True)
    import shutil

    shutil.rmtree(tmp_path / "s" / "shard-00002")
    with pytest.raises(StoreError, match="shard-00002 is missing or differs from the manifest"):
        ActivationStore.open(tmp_path / "s")


def test_shard_write_failure_leaves_no_temp(tmp_path, monkeypatch):
    make_store(tmp_path / "s", write=(8,))

    def broken(tensors, path):
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "_save", broken)
    with pytest.raises(OSError):
        st.write_shard(tmp_path / "s", 1, {"L0.resid_post": torch.zeros(8, 3)}, torch.zeros(2, CTX), 2)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["manifest.json", "shard-00000"]
