"""Direct logit attribution against a literal computation from the Hugging Face weights (GPT-2's LayerNorm,
Qwen2's RMSNorm and grouped-query attention), its completeness over every component, and Wang et al.'s
minimality against separate evaluations, with a case where the choice of K decides the answer."""
from types import SimpleNamespace

import pytest
import torch

from app_helpers import validate
from app_helpers.attribution import (MINIMALITY_THRESHOLD, direct_effect, direct_logit_attribution, end_outputs,
                                     minimality, minimality_sets)
from app_helpers.circuits import Circuit
from app_helpers.evaluation import CircuitEvaluator
from app_helpers.identities import Head
from app_helpers.metrics import UntrustedMetricWarning, logit_diff
from app_helpers.tasks import make_task

# a random model does not do IOI: its Perf % is noise, which these exactness checks do not mind
pytestmark = pytest.mark.filterwarnings(
    f"ignore::{UntrustedMetricWarning.__module__}.{UntrustedMetricWarning.__name__}")


@pytest.fixture(scope="module")
def gpt2():
    """A tiny random GPT-2 whose final LayerNorm, attention output biases and W_O are far from their
    initial values (weight 1, bias 0), so the norm's weight and the excluded biases matter."""
    from app_helpers.gpt2_offline import random_gpt2

    model = random_gpt2(n_layers=2, n_heads=4, d_model=64, seed=3)
    hf = model.original_model
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        ln_f = hf.transformer.ln_f
        ln_f.weight.copy_(1 + 0.5 * torch.randn(ln_f.weight.shape, generator=g))
        ln_f.bias.copy_(0.2 * torch.randn(ln_f.bias.shape, generator=g))
        for block in hf.transformer.h:
            block.attn.c_proj.bias.copy_(0.3 * torch.randn(block.attn.c_proj.bias.shape, generator=g))
            block.attn.c_proj.weight.mul_(4)  # louder heads than the 0.02-std initialisation
    return model


@pytest.fixture(scope="module")
def ioi(gpt2):
    return make_task("ioi", gpt2, 10, seed=0)


def _captured_run(hf, tokens, projections, final_norm):
    """Run the HF model itself, keeping each output projection's input (the heads' z, concatenated) and
    the final norm's input: the literal reference, with no bridge or kit code involved."""
    z, resid, handles = {}, {}, []
    for layer, proj in enumerate(projections):
        handles.append(proj.register_forward_pre_hook(
            lambda _m, args, layer=layer: z.__setitem__(layer, args[0].detach().clone())))
    handles.append(final_norm.register_forward_pre_hook(lambda _m, args: resid.__setitem__(0, args[0].detach())))
    try:
        with torch.no_grad():
            hf(tokens)
    finally:
        for h in handles:
            h.remove()
    return z, resid[0]


def _literal_dla(task, z, resid, head_out, norm_weight, eps, lm_head_weight, centre):
    """DLA by the definition, prompt by prompt and head by head: [n_layers, n_heads]."""
    n_layers, n_heads = len(z), len(head_out(0))
    total = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for i in range(len(task)):
        end = int(task.end_pos[i])
        x = resid[i, end].double()
        if centre:
            x = x - x.mean()
        scale = torch.sqrt(x.pow(2).mean() + eps)
        c, w = int(task.answers.correct_ids[i, 0]), int(task.answers.wrong_ids[i, 0])
        direction = (lm_head_weight[c] - lm_head_weight[w]).double()
        for layer in range(n_layers):
            for head, w_o in enumerate(head_out(layer)):
                d_head = w_o.shape[0]
                out = z[layer][i, end, head * d_head:(head + 1) * d_head].double() @ w_o.double()
                if centre:
                    out = out - out.mean()
                total[layer, head] += (out / scale * norm_weight.double()) @ direction
    return (total / len(task)).float()


def test_dla_of_gpt2_equals_the_literal_layernorm_computation(gpt2, ioi):
    hf = gpt2.original_model
    assert not getattr(gpt2.cfg, "layer_norm_folding", False)  # the bridge reads HF's unfolded weights
    blocks, ln_f = hf.transformer.h, hf.transformer.ln_f
    z, resid = _captured_run(hf, ioi.clean_tokens, [b.attn.c_proj for b in blocks], ln_f)
    d_head = gpt2.cfg.d_head

    def head_out(layer):  # Conv1D stores [in, out]: rows h*d_head.. are head h's W_O
        w = blocks[layer].attn.c_proj.weight
        return [w[h * d_head:(h + 1) * d_head] for h in range(gpt2.cfg.n_heads)]
    want = _literal_dla(ioi, z, resid, head_out, ln_f.weight, ln_f.eps, hf.lm_head.weight, centre=True)
    got = direct_logit_attribution(gpt2, ioi)
    assert got.shape == (2, 4) and want.abs().max() > 5e-3  # heads write measurably (1e-5 is far below)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    per_prompt = direct_logit_attribution(gpt2, ioi, per_prompt=True, batch_size=3)  # batches of 3 change nothing
    assert per_prompt.shape == (2, 4, len(ioi))
    torch.testing.assert_close(per_prompt.mean(-1), got, atol=1e-6, rtol=0)


def test_every_component_together_gives_the_logit_difference(gpt2, ioi):
    """The split is complete: heads (DLA) + attention biases + embeddings + MLPs through the frozen norm,
    plus the norm's bias on the answer direction, is the model's own logit difference."""
    rows = torch.arange(len(ioi))
    names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{l}.hook_{p}" for l in range(2) for p in ("attn_out",
                                                                                                    "mlp_out")]
    logits, cache = gpt2.run_with_cache(ioi.clean_tokens, names_filter=names)
    at_end = {name: cache[name][rows, ioi.end_pos] for name in names}
    _, resid_end = end_outputs(gpt2, ioi)
    torch.testing.assert_close(sum(at_end.values()), resid_end, atol=1e-4, rtol=0)  # the residual is their sum

    biases = torch.stack([gpt2.blocks[l].attn.b_O.detach() for l in range(2)]).sum(0).expand_as(resid_end)
    others = at_end["hook_embed"] + at_end["hook_pos_embed"] + biases + sum(
        at_end[f"blocks.{l}.hook_mlp_out"] for l in range(2))
    hf = gpt2.original_model
    u = hf.lm_head.weight[ioi.answers.correct_ids[:, 0]] - hf.lm_head.weight[ioi.answers.wrong_ids[:, 0]]
    norm_bias = (u * hf.transformer.ln_f.bias).sum(-1)  # the one term that is no component's
    total = (direct_logit_attribution(gpt2, ioi, per_prompt=True).sum((0, 1))
             + direct_effect(gpt2, ioi.answers, others, resid_end) + norm_bias)
    torch.testing.assert_close(total, logit_diff(logits, ioi), atol=1e-4, rtol=0)
    # and b_O is not a head's: the heads alone fall short of each layer's attention output by exactly it
    for l in range(2):
        heads_only = direct_effect(gpt2, ioi.answers, at_end[f"blocks.{l}.hook_attn_out"] - gpt2.blocks[l].attn.b_O,
                                   resid_end)
        torch.testing.assert_close(direct_logit_attribution(gpt2, ioi, per_prompt=True)[l].sum(0), heads_only,
                                   atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from app_helpers.gpt2_offline import gpt2_tokenizer
    from app_helpers.models import load_model

    torch.manual_seed(0)
    config = Qwen2Config(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=96, max_position_embeddings=128, tie_word_embeddings=False,
                         vocab_size=50257)
    hf = Qwen2ForCausalLM(config)
    with torch.no_grad():
        hf.model.norm.weight.copy_(1 + 0.5 * torch.randn(64))
        for layer in hf.model.layers:
            layer.self_attn.o_proj.weight.mul_(4)
    folder = tmp_path_factory.mktemp("qwen2-dla")
    hf.save_pretrained(folder)
    gpt2_tokenizer().save_pretrained(folder)
    return load_model(str(folder), verbose=False)


def test_dla_of_qwen2_equals_the_literal_rmsnorm_computation(qwen2):
    task = make_task("ioi", qwen2, 8, seed=1)
    hf = qwen2.original_model
    layers, norm = hf.model.layers, hf.model.norm
    z, resid = _captured_run(hf, task.clean_tokens, [layer.self_attn.o_proj for layer in layers], norm)
    d_head = qwen2.cfg.d_head

    def head_out(layer):  # nn.Linear stores [out, in]: every query head has its own W_O columns
        w = layers[layer].self_attn.o_proj.weight
        return [w[:, h * d_head:(h + 1) * d_head].T for h in range(qwen2.cfg.n_heads)]
    want = _literal_dla(task, z, resid, head_out, norm.weight, norm.variance_epsilon, hf.lm_head.weight,
                        centre=False)
    got = direct_logit_attribution(qwen2, task)
    assert got.shape == (2, 4) and want.abs().max() > 0.05
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# --- Minimality ----------------------------------------------------------------------------------------------
ROLES = {"0.1": "previous token", "0.3": "previous token", "1.0": "mover", "1.2": "mover", "1.3": "mover"}


def test_minimality_equals_separate_evaluations(gpt2, ioi):
    circuit = Circuit(heads=(*ROLES, "1.1"), roles=ROLES, name="made up")  # 1.1 has no role: K is empty
    evaluator = CircuitEvaluator(gpt2, ioi)
    result = minimality(gpt2, ioi, circuit, evaluator=evaluator)
    assert set(result.scores) == set(circuit.heads) and result.threshold == MINIMALITY_THRESHOLD
    assert result.k[Head(1, 2)] == (Head(1, 0), Head(1, 3)) and result.k[Head(1, 1)] == ()
    everything = set(circuit.heads)
    for v, k in result.k.items():
        ld_k = evaluator.evaluate([sorted(everything - set(k))])[0].ld_circuit
        ld_kv = evaluator.evaluate([sorted(everything - set(k) - {v})])[0].ld_circuit
        assert result.ld_without_k[v] == ld_k
        assert result.ld_without_kv[v] == ld_kv
        assert result.scores[v] == pytest.approx(100 * abs(ld_k - ld_kv) / abs(evaluator.ld_full), rel=1e-5)
    assert result.not_needed == [v for v in circuit.heads if result.scores[v] < MINIMALITY_THRESHOLD]
    assert {row["head"] for row in result.rows()} == {str(h) for h in circuit.heads}
    # without an evaluator one is built: same numbers
    again = minimality(gpt2, ioi, circuit, heads=["1.2"])
    assert again.scores[Head(1, 2)] == pytest.approx(result.scores[Head(1, 2)], rel=1e-5)


class _TwinsEvaluator:
    """A stand-in evaluator for a model with two fully redundant heads: LD is 2 when either twin is in the
    circuit and 0 when neither is (the OR behind backup name movers), plus 0.5 for head 2.0."""

    def __init__(self, model, task):
        self.model, self.task, self.ld_full, self.problems = model, task, 2.5, []
        self.calls = 0

    def evaluate(self, circuits):
        self.calls += 1
        out = []
        for heads in circuits:
            heads = set(heads)
            ld = 2.0 * bool(heads & {Head(0, 0), Head(1, 0)}) + 0.5 * (Head(2, 0) in heads)
            out.append(SimpleNamespace(ld_circuit=ld))
        return out


def test_with_redundant_twins_only_k_per_role_shows_they_are_needed():
    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=3, n_heads=2))
    task = SimpleNamespace(clean_prompts=["a prompt"])
    heads = ("0.0", "1.0", "2.0")
    stub = _TwinsEvaluator(model, task)
    alone = minimality(model, task, Circuit(heads=heads), evaluator=stub)  # no roles: K = ∅
    assert alone.scores == {Head(0, 0): 0.0, Head(1, 0): 0.0, Head(2, 0): pytest.approx(20.0)}
    assert alone.not_needed == [Head(0, 0), Head(1, 0)]  # each twin covers for the other
    twins = Circuit(heads=heads, roles={"0.0": "mover", "1.0": "mover"})
    assert minimality_sets(twins, list(twins.heads))[Head(0, 0)] == (Head(1, 0),)
    paired = minimality(model, task, twins, evaluator=stub)
    assert paired.scores[Head(0, 0)] == paired.scores[Head(1, 0)] == pytest.approx(80.0)  # 2.0 of 2.5
    assert paired.passed and stub.calls == 2  # one batched evaluate per minimality call


def test_minimality_refuses_heads_outside_the_circuit(gpt2, ioi):
    circuit = Circuit(heads=("0.1", "1.2"), name="small")
    with pytest.raises(validate.InputError, match=r"heads not in circuit 'small': 1\.3.*pass heads from it: 0\.1, "
                                                  r"1\.2"):
        minimality(gpt2, ioi, circuit, heads=["1.2", "1.3"])
    with pytest.raises(validate.InputError, match="outside a 2x4 model"):
        minimality(gpt2, ioi, ["0.1", "5.0"])
    with pytest.raises(validate.InputError, match="circuit is empty"):
        minimality(gpt2, ioi, [])
    with pytest.raises(validate.InputError, match="threshold"):
        minimality(gpt2, ioi, circuit, threshold=float("nan"))
