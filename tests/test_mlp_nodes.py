"""MLP nodes (``mlps=True``, off by default): MLPs as senders and receivers of path patching, exact in both
engines and against hand computations; the search, circuits, JSON and figures carry them."""
import math

import pytest
import torch

from app_helpers.circuits import Circuit
from app_helpers.identities import HEAD_INPUTS, MLP, Edge, Head, as_edge, as_node, node_name
from app_helpers.patching import NaivePathPatcher, PathPatcher
from app_helpers.search import search_circuit, select_nodes
from app_helpers.validate import InputError
from references import counted_flops


@pytest.fixture(scope="module")
def model(gpt2_3x4):
    return gpt2_3x4


@pytest.fixture(scope="module")
def naive(model, problem):
    return NaivePathPatcher(model, *problem, mlps=True)


@pytest.fixture(scope="module")
def naive_scores(naive):
    """Every receiver kind: the logits, q/k/v of two heads, each layer's MLP."""
    heads = {(r, c): naive.to_head(r, c) for r in [(1, 2), (2, 0)] for c in HEAD_INPUTS}
    return {"logits": naive.to_logits(), **heads, **{MLP(l): naive.to_mlp(l) for l in range(3)}}


def _score(ld, clean, corrupted):
    return (ld - clean) / (clean - corrupted)


def _ld(model, metric, final, end_pos):
    logits = model.unembed(model.ln_final(final))[torch.arange(len(end_pos)), end_pos]
    return float(metric(logits).mean())


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_engine_equals_naive_reference_with_mlp_nodes(model, problem, naive_scores, chunk_size):
    fast = PathPatcher(model, *problem, chunk_size=chunk_size, mlps=True)
    assert len(fast._length_views) > 1
    fast.prefetch([(2, 0), MLP(2)])  # a head and an MLP receiver of one layer share sender passes
    for key, want in naive_scores.items():
        got = (fast.to_logits() if key == "logits" else fast.to_mlp(key.layer) if isinstance(key, MLP)
               else fast.to_head(*key))
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, equal_nan=True)
    logits = naive_scores["logits"]
    assert logits.shape == (3, 5) and not logits.isnan().any()
    assert logits[:, 4].abs().min() > 1e-3  # the MLP column holds real effects, not zeros
    # who can send into MLP 2: every head of layers 0-2, the MLPs below it, not itself
    into_mlp = naive_scores[MLP(2)]
    assert into_mlp.shape == (3, 5) and into_mlp[:, :4].isnan().sum() == 0
    assert into_mlp[:2, 4].isnan().sum() == 0 and into_mlp[2, 4].isnan()


def test_mlp_sender_into_the_logits_is_its_output_difference(model, problem, naive_scores):
    """Every other node frozen: the final residual moves by exactly the MLP's corrupted − clean output."""
    clean, corrupted, end_pos, metric = problem
    names = ["ln_final.hook_in"] + [f"blocks.{l}.hook_mlp_out" for l in range(3)]
    _, cc = model.run_with_cache(clean, names_filter=names)
    _, cr = model.run_with_cache(corrupted, names_filter=names)
    ld_clean, ld_corr = (_ld(model, metric, c["ln_final.hook_in"], end_pos) for c in (cc, cr))
    for layer in range(3):
        name = f"blocks.{layer}.hook_mlp_out"
        final = cc["ln_final.hook_in"] - cc[name] + cr[name]
        want = _score(_ld(model, metric, final, end_pos), ld_clean, ld_corr)
        assert naive_scores["logits"][layer, 4].item() == pytest.approx(want, abs=1e-5)


def test_head_into_an_mlp_receiver_by_hand(problem):
    """One layer, by hand from the Hugging Face weights: head h's corrupted output enters the MLP's input
    (nothing else changes: every node is frozen), the MLP's new output replaces its clean one."""
    from app_helpers.gpt2_offline import random_gpt2

    model = random_gpt2(n_layers=1, n_heads=4, d_model=64, seed=5)
    hf = model.original_model.transformer
    clean, corrupted, end_pos, metric = problem
    names = ["blocks.0.attn.hook_z", "blocks.0.hook_mlp_out", "ln_final.hook_in"]
    _, cc = model.run_with_cache(clean, names_filter=names)
    _, cr = model.run_with_cache(corrupted, names_filter=names)
    ld_clean, ld_corr = (_ld(model, metric, c["ln_final.hook_in"], end_pos) for c in (cc, cr))
    mid = cc["ln_final.hook_in"] - cc["blocks.0.hook_mlp_out"]  # the stream after attention
    w_o = hf.h[0].attn.c_proj.weight  # [n_heads * d_head, d_model] (Conv1D: input rows)
    engine = NaivePathPatcher(model, *problem, mlps=True)
    scores = engine.to_mlp(0)
    fast = PathPatcher(model, *problem, mlps=True).to_mlp(0)
    for h in range(4):
        dz = (cr["blocks.0.attn.hook_z"] - cc["blocks.0.attn.hook_z"])[:, :, h]  # [n, seq, d_head]
        x = mid + dz @ w_o[h * 16:(h + 1) * 16]
        with torch.inference_mode():
            final = mid + hf.h[0].mlp(hf.h[0].ln_2(x))
        want = _score(_ld(model, metric, final, end_pos), ld_clean, ld_corr)
        assert scores[0, h].item() == pytest.approx(want, abs=1e-5)
        assert fast[0, h].item() == pytest.approx(want, abs=1e-5)
    assert math.isnan(scores[0, 4])  # MLP 0 does not send into itself


def test_mlp_nodes_freeze_the_mlps_and_off_keeps_the_papers_scores(model, problem, naive):
    """Off (the default), MLPs recompute and matrices have n_heads columns; on, every MLP is frozen, so a
    head's score into the logits is its direct effect alone: the final residual moves by W_O Δz."""
    clean, corrupted, end_pos, metric = problem
    off = PathPatcher(model, *problem)
    on = PathPatcher(model, *problem, mlps=True).to_logits()
    assert off.to_logits().shape == (3, 4) and off.to_head((2, 0), "q").shape == (2, 4)
    assert (on[:, :4] - off.to_logits()).abs().max() > 1e-3  # the paths through the MLPs are gone
    names = ["ln_final.hook_in"] + [f"blocks.{l}.attn.hook_z" for l in range(3)]
    _, cc = model.run_with_cache(clean, names_filter=names)
    _, cr = model.run_with_cache(corrupted, names_filter=names)
    ld_clean, ld_corr = (_ld(model, metric, c["ln_final.hook_in"], end_pos) for c in (cc, cr))
    blocks = model.original_model.transformer.h
    for layer, head in [(0, 1), (1, 3), (2, 0)]:
        dz = (cr[f"blocks.{layer}.attn.hook_z"] - cc[f"blocks.{layer}.attn.hook_z"])[:, :, head]
        w_o = blocks[layer].attn.c_proj.weight[head * 16:(head + 1) * 16]
        want = _score(_ld(model, metric, cc["ln_final.hook_in"] + dz @ w_o, end_pos), ld_clean, ld_corr)
        assert on[layer, head].item() == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError, match="mlps=True"):
        off.to_mlp(1)
    with pytest.raises(InputError, match="True or False"):
        PathPatcher(model, *problem, mlps="yes")
    with pytest.raises(InputError, match="MLP receiver's layer"):
        naive.to_mlp(3)


def test_counted_flops_equal_what_torch_counts_with_mlp_receivers(model, problem):
    patcher, flops = counted_flops(lambda: PathPatcher(model, *problem, chunk_size=2, mlps=True))
    assert patcher.cost.flops == flops > 0
    for work in (lambda: patcher.to_logits([(0, 1), (1, 2)]),
                 lambda: patcher.to_mlp(2, [(0, 0), (2, 3)]),
                 lambda: [patcher.to_head((2, 1), c, [(1, 1)]) for c in HEAD_INPUTS]):
        before = patcher.cost.flops
        _, flops = counted_flops(work)
        assert patcher.cost.flops - before == flops > 0
    assert patcher.cost.flops_lower_bound <= patcher.cost.flops


def test_select_nodes_reads_the_last_column_as_each_layers_mlp():
    scores = torch.zeros(3, 5)
    scores[1, 4], scores[2, 1] = 1.0, -0.9
    assert select_nodes(scores, 4, 1.0, 0.01) == [MLP(1), Head(2, 1)]
    assert select_nodes(scores, 4, 1.0, 0.01, candidates=[(0, 0)]) == [MLP(1)]  # MLPs are never pruned
    assert select_nodes(scores[:, :4], 4, 1.0, 0.01) == [Head(2, 1)]


def test_search_with_mlp_nodes_is_one_graph_in_both_engines(model, problem):
    fast = search_circuit(PathPatcher(model, *problem, mlps=True), scale=0.5, logits_scale=0.5)
    naive = search_circuit(NaivePathPatcher(model, *problem, mlps=True), scale=0.5, logits_scale=0.5)
    assert (fast.heads, fast.mlps, fast.edges) == (naive.heads, naive.mlps, naive.edges)
    assert fast.mlps, "this model's search should reach an MLP (else the test shows nothing)"
    mlp_receivers = [e for e in fast.edges if isinstance(e.receiver, MLP)]
    assert mlp_receivers and all(e.component == "mlp" for e in mlp_receivers)
    circuit = Circuit(heads=tuple(fast.heads), edges=tuple(fast.edges), mlps=tuple(fast.mlps))
    again = Circuit.from_json(circuit.to_json())
    assert again == circuit and again.mlps == tuple(fast.mlps)
    assert any(isinstance(e.sender, MLP) or isinstance(e.receiver, MLP) for e in again.edges)
    off = search_circuit(PathPatcher(model, *problem), scale=0.5, logits_scale=0.5)
    assert off.mlps == [] and not any(isinstance(e.sender, MLP) for e in off.edges)


def test_mlp_names_and_edges_parse_and_refuse_what_is_wrong():
    assert as_node("mlp3") == MLP(3) and node_name(MLP(3)) == "mlp3" and as_node("2.1") == Head(2, 1)
    assert as_edge(("mlp1", "mlp2", "mlp")) == Edge(MLP(1), MLP(2), "mlp")
    assert as_edge(("1.0", "mlp2", "mlp")) == Edge(Head(1, 0), MLP(2), "mlp")
    with pytest.raises(ValueError, match="'mlp'"):
        as_edge(("1.0", "mlp2", "q"))
    with pytest.raises(ValueError, match="'mlp'"):
        as_edge(("1.0", "2.1", "mlp"))
    with pytest.raises(ValueError, match="mlp3"):
        as_node("mlpx")
    with pytest.raises(ValueError, match="add their layers to mlps"):
        Circuit(heads=((1, 0),), edges=(((1, 0), MLP(2), "mlp"),))
