"""The baselines APP is compared with: head activation patching is exact, EAP is gradient × difference
taken literally and linearises path patching, EAP-IG reduces to EAP and converges, candidates restrict
both the scores and the passes, and every charged FLOP is one torch counts.

The models run in float64 so that finite differences and first-order comparisons are not drowned by
rounding."""
from contextlib import contextmanager

import pytest
import torch

from app_helpers.baselines import Baselines, ScoreTable, top_heads
from app_helpers.hooks import hook_name
from app_helpers.identities import HEAD_INPUTS, LOGITS, head_input
from app_helpers.patching import PathPatcher
from app_helpers.search import search_circuit
from references import counted_flops, patching_problem

CANDIDATES = [(1, 2), (2, 0), (2, 3)]
QWEN2 = dict(model_type="qwen2", num_hidden_layers=3, hidden_size=64, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=96, max_position_embeddings=128, vocab_size=50257,
             tie_word_embeddings=False)


def _gpt2(seed=0):
    from app_helpers.gpt2_offline import random_gpt2

    return random_gpt2(n_layers=3, n_heads=4, d_model=64, seed=seed).to(torch.float64)


@pytest.fixture(scope="module")
def model():
    return _gpt2()


@pytest.fixture(scope="module")
def qwen():
    """Grouped-query attention (2 key/value heads for 4 query heads), rotary positions, RMSNorm."""
    from app_helpers.gpt2_offline import random_model

    return random_model(**QWEN2).to(torch.float64)


@pytest.fixture(scope="module")
def attention_only():
    """GPT-2-shaped, every MLP's output projection zero: the residual stream carries heads only."""
    m = _gpt2(seed=1)
    for name, p in m.named_parameters():
        if ".mlp." in name and "c_proj" in name:
            p.zero_()
    return m


@pytest.fixture(scope="module")
def problem():
    return patching_problem()


# ---- literal references ------------------------------------------------------------------------------

def _z(model, tokens):
    """Every layer's z [n, seq, H, d_head] of a plain run."""
    zs = {}

    def grab(layer):
        def hook(z, hook):
            zs[layer] = z.clone()
        return hook
    with model.hooks(fwd_hooks=[(f"blocks.{l}.attn.hook_z", grab(l)) for l in range(model.cfg.n_layers)]):
        model(tokens)
    return zs


def _metric_mean(model, problem, hooks):
    """The metric's mean over prompts of a full clean run with ``hooks``."""
    clean, _, end_pos, metric = problem
    with model.hooks(fwd_hooks=hooks):
        logits = model(clean)
    return metric(logits[torch.arange(len(clean)), end_pos]).mean()


def _finite_difference(f, t=1e-4):
    """df/dt at 0 by a central difference (float64 throughout: error ~t², far below the tolerances)."""
    return float((f(t) - f(-t)) / (2 * t))


def _autograd_derivative(f):
    """df/dt at 0 by autograd through the literal forward, for models that compute some of their forward
    in float32 whatever their dtype (the bridge's softmax for rotary models), where a difference
    quotient would measure rounding."""
    t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        return float(torch.autograd.grad(f(t), [t])[0])


def _set_z(layer, head, value):
    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = value
        return z
    return (f"blocks.{layer}.attn.hook_z", hook)


def _freeze_all(model, clean_z, but=None):
    """Every z set to its clean value, except ``but`` = (layer, head, value)."""
    hooks = []
    for layer in range(model.cfg.n_layers):
        def hook(z, hook, layer=layer):
            z = clean_z[layer].clone()
            if but is not None and but[0] == layer:
                z[:, :, but[1]] = but[2]
            return z
        hooks.append((f"blocks.{layer}.attn.hook_z", hook))
    return hooks


def _output_difference(model, problem, corrupted_z, layer, head):
    """What sender (layer, head) adds to the residual stream when its z is corrupted: the change of the
    layer's attention output (measured, not computed from W_O) [n, seq, d_model]."""
    clean = problem[0]
    out = {}

    def grab(key):
        def hook(a, hook):
            out[key] = a.clone()
        return hook
    name = hook_name(layer, "attn_out")
    with model.hooks(fwd_hooks=[(name, grab("clean"))]):
        model(clean)
    with model.hooks(fwd_hooks=[_set_z(layer, head, corrupted_z[layer][:, :, head]), (name, grab("patched"))]):
        model(clean)
    return out["patched"] - out["clean"]


def _group(cfg, head, component):
    """The slice of the q/k/v input hook that head ``head`` reads: its own for q, its key/value group's
    for k and v (``n_heads / n_key_value_heads`` query heads per group)."""
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return head if component == "q" else head // (cfg.n_heads // n_kv)


@contextmanager
def corrupted_near_clean(model, problem, eps):
    """Every run of the corrupted prompts gets the input embedding clean + eps·(corrupted − clean): the
    corrupted prompts move towards the clean ones, for any method, without its knowing."""
    clean, corrupted = problem[0], problem[1]
    inputs = {}

    def grab(key):
        def hook(x, hook):
            inputs[key] = x.clone()
        return hook
    for key, tokens in (("clean", clean), ("corrupted", corrupted)):
        with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", grab(key))]):
            model(tokens)
    blended = inputs["clean"] + eps * (inputs["corrupted"] - inputs["clean"])

    def pre(module, args, kwargs):
        x = args[0]
        if x.shape == blended.shape and torch.equal(x, inputs["corrupted"]):
            return (blended, *args[1:]), kwargs
    handle = model.blocks[0].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _centred(model, problem):
    """The problem with its metric minus each prompt's clean value: near-clean effects are then small
    numbers, which the engines' float32 metric means keep exact."""
    clean, corrupted, end_pos, metric = problem
    offset = metric(model(clean)[torch.arange(len(clean)), end_pos])

    def centred(final):
        return metric(final) - offset.to(final.dtype)
    return clean, corrupted, end_pos, centred


def _relative_error(estimate, exact):
    mask = ~exact.isnan()
    return float((estimate[mask] - exact[mask]).norm() / exact[mask].norm())


# ---- tests -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["model", "qwen"])
def test_eap_is_gradient_times_difference_taken_literally(which, problem, request):
    """Each EAP score is the derivative of the metric along the corrupted difference, by finite
    differences: a node moves its own z; an edge adds t·(the sender's measured output change) to the
    receiver's pre-norm q/k/v input only (its key/value group under grouped-query attention); a logits
    edge moves the sender's z with every other head frozen. Qwen2's attention softmax runs in float32,
    so there the derivative of the same literal forward is taken by autograd (GPT-2's finite differences
    vouch for autograd through the bridge)."""
    model = request.getfixturevalue(which)
    derivative = _finite_difference if which == "model" else _autograd_derivative
    cfg = model.cfg
    baselines = Baselines(model, *problem)
    eap = baselines.eap()
    clean_z, corrupted_z = _z(model, problem[0]), _z(model, problem[1])
    gap = baselines.gap
    senders = [(0, 1), (1, 3), (2, 2)]
    for layer, head in senders:
        dz = corrupted_z[layer][:, :, head] - clean_z[layer][:, :, head]
        node = derivative(lambda t: _metric_mean(model, problem, [_set_z(layer, head, clean_z[layer][:, :, head]
                                                                          + t * dz)]))
        assert eap.scores[layer, head] == pytest.approx(node / gap, rel=1e-5, abs=1e-9)
        logits = derivative(lambda t: _metric_mean(model, problem, _freeze_all(
            model, clean_z, (layer, head, clean_z[layer][:, :, head] + t * dz))))
        assert eap.edges[LOGITS][layer, head] == pytest.approx(logits / gap, rel=1e-5, abs=1e-9)
    model.set_use_split_qkv_input(True)
    try:
        for layer, head in senders[:2]:
            d_out = _output_difference(model, problem, corrupted_z, layer, head)
            for receiver in [(2, 0), (2, 3)]:
                for c in HEAD_INPUTS:
                    g = _group(cfg, receiver[1], c)

                    def nudged(t):
                        def hook(x, hook):
                            x = x.clone()
                            x[:, :, g] += t * d_out
                            return x
                        return _metric_mean(model, problem, [(f"blocks.{receiver[0]}.hook_{c}_input", hook)])
                    edge = derivative(nudged)
                    assert eap.edges[head_input(receiver, c)][layer, head] == pytest.approx(
                        edge / gap, rel=1e-5, abs=1e-9), (layer, head, receiver, c)
    finally:
        model.set_use_split_qkv_input(False)


def test_built_from_a_task_like_path_patching(model):
    """``from_task``: the task's prompts and metric, and the very baselines and set-up path patching has."""
    from app_helpers.tasks import make_task

    task = make_task("ioi", model, 6, seed=0)
    with pytest.warns(UserWarning):  # random weights: the gap is too small to trust (said, not hidden)
        baselines, patcher = Baselines.from_task(model, task), PathPatcher.from_task(model, task)
    assert (baselines.ld_clean, baselines.ld_corrupted) == (patcher.ld_clean, patcher.ld_corrupted)
    assert baselines.setup_cost.flops == patcher.setup_cost.flops and baselines.metric_name == "logit_diff"
    assert baselines.problems == patcher.problems


@pytest.mark.parametrize("chunk_size", [1, 3, None])
def test_activation_patching_equals_a_one_head_at_a_time_loop(model, problem, chunk_size):
    problem = _centred(model, problem)  # the engines' float32 metric means are exact on small values
    baselines = Baselines(model, *problem, chunk_size=chunk_size)
    result = baselines.activation_patching()
    corrupted_z = _z(model, problem[1])
    clean_value = float(_metric_mean(model, problem, []))
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            patched = float(_metric_mean(model, problem, [_set_z(layer, head, corrupted_z[layer][:, :, head])]))
            assert float(result.scores[layer, head]) == pytest.approx((patched - clean_value) / baselines.gap,
                                                                      abs=1e-5)
    assert result.method == "activation patching" and result.edges == {}


def test_candidates_restrict_the_scores_and_the_passes(model, problem):
    """Outside the candidates: NaN everywhere, no activation-patching pass, no gradient hooks; inside:
    the dense numbers. What is charged is what torch counts."""
    baselines = Baselines(model, *problem, chunk_size=4)
    dense_ap, dense_eap, dense_ig = baselines.activation_patching(), baselines.eap(), baselines.eap_ig(3)
    ap, flops = counted_flops(baselines.activation_patching, CANDIDATES)
    eap, eap_flops = counted_flops(baselines.eap, CANDIDATES)
    inside = torch.zeros(3, 4, dtype=torch.bool)
    for l, h in CANDIDATES:
        inside[l, h] = True
    for restricted, dense in ((ap.scores, dense_ap.scores), (eap.scores, dense_eap.scores),
                              (eap.edges[LOGITS], dense_eap.edges[LOGITS]),
                              (baselines.eap_ig(3, CANDIDATES).scores, dense_ig.scores)):
        assert restricted[~inside].isnan().all()
        assert torch.allclose(restricted[inside], dense[inside], rtol=1e-9, atol=1e-12)
    assert set(eap.edges) == {LOGITS} | {head_input(r, c) for r in CANDIDATES for c in HEAD_INPUTS}
    into = eap.edges[head_input((2, 0), "v")]
    assert into[~inside[:2]].isnan().all() and not into[1, 2].isnan()
    assert into[1, 2] == pytest.approx(float(dense_eap.edges[head_input((2, 0), "v")][1, 2]), rel=1e-9)
    setup = baselines.setup_cost
    work, dense_work = ap.cost - setup, dense_ap.cost - setup
    assert (work.forward_passes, dense_work.forward_passes) == (2, 3)  # layers 1 and 2; every layer
    assert work.sender_evaluations == 3 and work.flops == flops < dense_work.flops
    assert (eap.cost - setup).flops == eap_flops < (dense_eap.cost - setup).flops  # starts at layer 1
    assert (eap.cost - setup).forward_passes == 1


def test_every_charged_flop_is_one_torch_counts(model, problem):
    """The set-up, the batched patching passes, EAP's forward and backward (input gradients only) and
    the scoring matmuls: charged FLOPs equal FlopCounterMode's, pass counts are as documented."""
    baselines, flops = counted_flops(Baselines, model, *problem, chunk_size=3)
    assert baselines.setup_cost.flops == flops and baselines.setup_cost.forward_passes == 2
    for work, passes in ((baselines.activation_patching, 6), (baselines.eap, 1),
                         (lambda: baselines.eap_ig(3), 3)):
        result, flops = counted_flops(work)
        assert (result.cost - baselines.setup_cost).flops == flops > 0
        assert (result.cost - baselines.setup_cost).forward_passes == passes


def test_eap_linearises_exact_patching_near_clean(model, attention_only, problem):
    """With corrupted inputs eps of the way from clean, EAP's error against the exact scores shrinks
    like eps: nodes against activation patching, logits edges against path patching's ``to_logits``
    (MLPs on its path included), and, where no MLP stands between heads, head edges against ``to_head``.
    A direct-only logits edge, or a wrong gradient, would leave an error that does not shrink — as the
    direct head edges do in the model with MLPs, whose paths through them they leave out."""
    errors = {}
    receivers = [head_input((l, h), c) for l in (1, 2) for h in range(4) for c in HEAD_INPUTS]
    for eps in (0.1, 0.01):
        for name, m in (("gpt2", model), ("attention-only", attention_only)):
            centred = _centred(m, problem)
            with corrupted_near_clean(m, centred, eps):
                baselines, patcher = Baselines(m, *centred), PathPatcher(m, *centred)
            eap = baselines.eap()
            errors[name, "nodes", eps] = _relative_error(eap.scores, baselines.activation_patching().scores)
            errors[name, "logits", eps] = _relative_error(eap.edges[LOGITS], patcher.to_logits())
            errors[name, "heads", eps] = _relative_error(
                torch.cat([eap.edges[r].flatten() for r in receivers]),
                torch.cat([patcher.to_head(r.head, r.component).flatten() for r in receivers]))
    for name, kind in [("gpt2", "nodes"), ("gpt2", "logits"), ("attention-only", "nodes"),
                       ("attention-only", "logits"), ("attention-only", "heads")]:
        large, small = errors[name, kind, 0.1], errors[name, kind, 0.01]
        assert small < 0.15 * large and small < 0.01, (name, kind, large, small)  # measured: ~0.1x, ~2e-4
    large, small = errors["gpt2", "heads", 0.1], errors["gpt2", "heads", 0.01]
    assert small > 0.5 * large and small > 0.05  # the MLP paths: measured ~0.38 at both


def test_eap_ig_with_one_step_is_eap_and_more_steps_converge(model, problem):
    baselines = Baselines(model, *problem)

    def flat(result):
        return torch.cat([result.scores.flatten(), *[m.flatten() for m in result.edges.values()]])
    eap = baselines.eap()
    assert torch.equal(flat(baselines.eap_ig(1)), flat(eap))
    ig = {steps: flat(baselines.eap_ig(steps)) for steps in (2, 4, 8, 16)}
    assert (ig[2] - flat(eap)).norm() > 1e-3 * flat(eap).norm()
    # a Riemann sum of the path integral: the change from m to 2m points falls like 1/m
    assert (ig[16] - ig[8]).norm() < 0.5 * (ig[4] - ig[2]).norm()
    assert baselines.eap_ig(4).method == "EAP-IG (4 steps)" and eap.method == "EAP"


def test_eap_agrees_with_transformer_lens_attribution_patching(model):
    """TransformerLens 4.x's ``attribution_patch`` (bridge-native; denoising: gradient at the corrupted
    run, times clean − corrupted, per position) is our EAP with the roles of the prompts swapped, summed
    over positions and times the gap. It checks nodes and direct head → q/k/v edges (its logits edge is
    direct, ours runs through the MLPs; it needs weights that require grad, and refuses grouped-query
    attention)."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, Node, attribution_patch

    gen = torch.Generator().manual_seed(2)
    clean = torch.randint(0, 1000, (3, 6), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(0, 1000, (3,), generator=gen)
    end = torch.full((3,), 5)
    ours = Baselines(model, corrupted, clean, end, lambda final: final[..., 11] - final[..., 12])
    eap = ours.eap()
    model.requires_grad_(True)
    try:
        with torch.enable_grad():
            theirs = attribution_patch(model, clean, corrupted, lambda logits: logits[0, 5, 11] - logits[0, 5, 12],
                                       EdgeAttributionConfig(granularity="edge"))
    finally:
        model.requires_grad_(False)

    def node(l, h, p):
        return Node("attn_head_out", p, l, h)
    for l in range(3):
        for h in range(4):
            total = sum(theirs.node_scores[node(l, h, p)] for p in range(6))
            assert float(eap.scores[l, h]) * ours.gap == pytest.approx(total, rel=1e-6, abs=1e-10)
    for l, h, receiver, c in [(0, 1, (1, 2), "q"), (0, 3, (2, 0), "k"), (1, 2, (2, 3), "v")]:
        total = sum(theirs.edge_scores[node(l, h, p), Node(f"{c}_input", p, *receiver)] for p in range(6))
        assert float(eap.edges[head_input(receiver, c)][l, h]) * ours.gap == pytest.approx(total, rel=1e-6,
                                                                                            abs=1e-10)


def test_the_kits_search_runs_on_eap_edges(model, problem):
    eap = Baselines(model, *problem).eap(CANDIDATES)
    run = search_circuit(eap.as_engine(model.cfg), CANDIDATES, min_value_threshold=0.0)
    assert set(run.heads) <= set(CANDIDATES) and run.cost.forward_passes == 0
    assert torch.equal(run.scores[LOGITS].isnan(), eap.edges[LOGITS].isnan())
    table = ScoreTable(model.cfg, eap.edges)
    with pytest.raises(ValueError, match="not scored"):
        table.to_head((2, 1), "q")
    assert table.to_logits([(2, 0)]).isnan().sum() == 11
    with pytest.raises(ValueError, match="no edges"):
        Baselines(model, *problem).activation_patching(CANDIDATES).as_engine(model.cfg)


def test_top_heads_ranks_by_size_and_skips_unscored():
    scores = torch.tensor([[0.1, float("nan")], [-0.5, 0.3]])
    assert top_heads(scores, 2) == [(1, 0), (1, 1)]
    assert top_heads(scores, 10) == [(1, 0), (1, 1), (0, 0)]
    with pytest.raises(ValueError):
        top_heads(scores, -1)
