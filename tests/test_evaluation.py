"""Circuit evaluation on a tiny random GPT-2-shaped model (no trained model needed)."""
import dataclasses

import pytest
import torch

from app_helpers.circuits import Circuit
from app_helpers.costs import layer_flops_per_token, unembed_flops
from app_helpers.evaluation import CircuitEvaluator, evaluate_circuit, evaluate_circuits
from app_helpers.metrics import logit_diff
from app_helpers.tasks import make_task
from references import counted_flops

ALL_HEADS = [(layer, head) for layer in range(2) for head in range(4)]


@pytest.fixture(scope="module")
def ioi(tiny_gpt2):
    task = make_task("ioi", tiny_gpt2, 12, seed=0)
    assert task.lengths.unique().numel() > 1  # several lengths: padding is exercised
    return task


def test_padded_batch_gives_each_prompt_its_own_logits(tiny_gpt2, ioi):
    # GPT-2 pads with <|endoftext|>, the same id as BOS: harmless only because a token tensor is given
    # without a mask (the bridge builds none) and padding sits right of every real token.
    assert tiny_gpt2.tokenizer.pad_token_id == ioi.clean_tokens[0, 0] == 50256
    batch = tiny_gpt2(ioi.clean_tokens)
    for i in range(len(ioi)):
        n = int(ioi.lengths[i])
        alone = tiny_gpt2(ioi.clean_tokens[i:i + 1, :n])[0]
        assert torch.allclose(batch[i, :n], alone, atol=1e-5)


def test_task_tokens_are_what_the_model_makes_of_the_prompt(tiny_gpt2, ioi):
    for i in range(len(ioi)):
        n = int(ioi.lengths[i])
        assert torch.equal(tiny_gpt2.to_tokens(ioi.clean_prompts[i])[0], ioi.clean_tokens[i, :n])


def test_word_level_model(word_tok, tmp_path):
    """The bundled model's setting: a word-level tokenizer attached to a GPT-2-architecture bridge."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=32, vocab_size=len(word_tok),
                                    bos_token_id=word_tok.bos_token_id, eos_token_id=word_tok.eos_token_id))
    model = TransformerBridge.boot_transformers("gpt2", hf_model=hf.eval(), tokenizer=word_tok, device="cpu")
    task = make_task("name_induction", model, 8, seed=0)
    assert torch.equal(model.to_tokens(task.clean_prompts[0])[0], task.clean_tokens[0, :int(task.lengths[0])])
    batch = model(task.clean_tokens)
    for i in range(len(task)):
        n = int(task.lengths[i])
        assert torch.allclose(batch[i, :n], model(task.clean_tokens[i:i + 1, :n])[0], atol=1e-5)
    assert evaluate_circuit(model, task, ALL_HEADS).perf == pytest.approx(100.0, abs=1e-3)
    ioi = make_task("ioi", model, 8, seed=0)  # END token shared by clean and corrupted prompts (see below)
    full, empty = evaluate_circuits(model, ioi, [ALL_HEADS, []], ablation="resample")
    assert full.perf == pytest.approx(100.0, abs=1e-3)
    assert empty.ld_circuit == pytest.approx(empty.ld_corrupted, abs=1e-5)


def test_baselines_are_the_metric_of_plain_runs(tiny_gpt2, ioi):
    ev = CircuitEvaluator(tiny_gpt2, ioi)
    assert ev.ld_full == pytest.approx(logit_diff(tiny_gpt2(ioi.clean_tokens), ioi).mean().item(), abs=1e-5)
    assert ev.ld_corrupted == pytest.approx(logit_diff(tiny_gpt2(ioi.corrupted_tokens), ioi).mean().item(),
                                            abs=1e-5)


@pytest.mark.parametrize("ablation", ["mean", "resample"])
def test_full_circuit_scores_100(tiny_gpt2, ioi, ablation):
    r = evaluate_circuit(tiny_gpt2, ioi, ALL_HEADS, ablation=ablation)
    assert r.perf == pytest.approx(100.0, abs=1e-3) and r.n_heads == 8 and r.ablation == ablation


def test_empty_circuit_with_resampling_is_exactly_the_corrupted_run(tiny_gpt2, ioi):
    # Every head's output comes from the corrupted prompt, the END token is the same in both IOI prompts
    # and MLPs act per position: the END residual stream, hence the logits, are those of the corrupted run.
    # (Not so for name induction, whose corruption changes the END token itself.)
    r = evaluate_circuit(tiny_gpt2, ioi, [], ablation="resample")
    assert r.ld_circuit == pytest.approx(r.ld_corrupted, abs=1e-5)
    assert r.perf == pytest.approx(r.corrupted_perf, abs=1e-3) and r.perf != pytest.approx(100.0, abs=1)


def test_mean_ablation_equals_a_prompt_by_prompt_reference(tiny_gpt2, ioi):
    circuit = [(0, 2), (1, 1), (1, 3)]
    keep = Circuit(heads=circuit).head_mask(2, 4)
    z = {}
    hooks = [(f"blocks.{layer}.attn.hook_z", lambda act, hook, layer=layer: z.__setitem__(layer, act.clone()))
             for layer in range(2)]
    tiny_gpt2.run_with_hooks(ioi.corrupted_tokens, fwd_hooks=hooks)
    lds = []
    for i in range(len(ioi)):
        same = (ioi.groups == ioi.groups[i]).nonzero().flatten()
        n = int(ioi.lengths[i])

        def ablate(act, hook, layer):
            mean = z[layer][same, :n].mean(0)
            for head in range(4):
                if not keep[layer, head]:
                    act[0, :, head] = mean[:, head]
            return act

        logits = tiny_gpt2.run_with_hooks(ioi.clean_tokens[i:i + 1, :n], fwd_hooks=[
            (f"blocks.{layer}.attn.hook_z", lambda act, hook, layer=layer: ablate(act, hook, layer))
            for layer in range(2)])
        lds.append(logits[0, n - 1, ioi.correct[i]] - logits[0, n - 1, ioi.wrong[i]])
    r = evaluate_circuit(tiny_gpt2, ioi, circuit, ablation="mean")
    assert r.ld_circuit == pytest.approx(torch.stack(lds).mean().item(), abs=1e-5)


@pytest.mark.parametrize("ablation", ["mean", "resample"])
def test_order_spelling_and_batching_do_not_change_perf(tiny_gpt2, ioi, ablation):
    a = [(1, 3), (0, 0), (1, 1)]
    spelled = ["1.1", "0.0", (1, 3), "1.3"]
    mask = Circuit(heads=a).head_mask(2, 4)
    circuits = [a, list(reversed(a)), spelled, mask, Circuit(heads=a, name="c"), [(0, 1)], ALL_HEADS, []]
    together = evaluate_circuits(tiny_gpt2, ioi, circuits, ablation=ablation)
    assert len({round(r.perf, 6) for r in together[:5]}) == 1 and together[4].name == "c"
    one_by_one = [evaluate_circuit(tiny_gpt2, ioi, c, ablation=ablation).perf for c in circuits]
    assert [r.perf for r in together] == pytest.approx(one_by_one, abs=1e-4)
    small_chunks = CircuitEvaluator(tiny_gpt2, ioi, ablation, max_batch=7).evaluate(circuits)
    assert [r.perf for r in small_chunks] == pytest.approx(one_by_one, abs=1e-4)


def test_set_valued_task_with_probability_metric(tiny_gpt2):
    gt = make_task("greater_than", tiny_gpt2, 6, seed=1, metric="prob_diff")
    full, empty = evaluate_circuits(tiny_gpt2, gt, [ALL_HEADS, []], ablation="resample")
    assert full.perf == pytest.approx(100.0, abs=1e-3)
    assert empty.ld_circuit == pytest.approx(empty.ld_corrupted, abs=1e-6)


def test_no_hidden_cache_a_changed_model_gets_fresh_baselines(tiny_gpt2, ioi):
    before = evaluate_circuit(tiny_gpt2, ioi, ALL_HEADS).ld_full
    weight = tiny_gpt2.blocks[1].attn.W_O
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(3.0)
        after = evaluate_circuit(tiny_gpt2, ioi, ALL_HEADS).ld_full
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert after != pytest.approx(before, abs=1e-4)
    assert evaluate_circuit(tiny_gpt2, ioi, ALL_HEADS).ld_full == pytest.approx(before, abs=1e-6)


def test_the_evaluator_counts_the_passes_it_runs(tiny_gpt2, ioi):
    """Baselines: two passes over [n, seq]; then one pass per ``max_batch`` rows, cut to the batch's longest
    prompt; FLOPs by the analytic per-token count of every layer plus one unembedding per row, and by
    torch's count of the matmuls it ran."""
    ev, setup_flops = counted_flops(CircuitEvaluator, tiny_gpt2, ioi, max_batch=10)
    cfg, (n, seq) = tiny_gpt2.cfg, ioi.clean_tokens.shape
    full = n * (seq * cfg.n_layers * layer_flops_per_token(cfg, seq) + unembed_flops(cfg))
    assert ev.cost.forward_passes == 2 and ev.cost.flops == 2 * full
    _, eval_flops = counted_flops(ev.evaluate, [ALL_HEADS, []])  # 24 rows: passes of 10, 10 and 4 rows
    rows = torch.arange(2 * n)
    expected = 0
    for start in range(0, 2 * n, 10):
        prompts = rows[start:start + 10] % n
        width = int(ioi.lengths[prompts].max())
        expected += len(prompts) * (width * cfg.n_layers * layer_flops_per_token(cfg, width) + unembed_flops(cfg))
    assert ev.cost.forward_passes == 2 + 3 and ev.cost.flops == 2 * full + expected
    assert (setup_flops, eval_flops) == (2 * full, expected)  # and torch's own count agrees


def test_bad_input_is_a_clear_error(tiny_gpt2, ioi):
    with pytest.raises(ValueError, match="unknown ablation 'zero'"):
        evaluate_circuit(tiny_gpt2, ioi, [], ablation="zero")
    with pytest.raises(ValueError, match="outside a 2x4 model: 2.0"):
        evaluate_circuit(tiny_gpt2, ioi, [(2, 0)])
    with pytest.raises(ValueError, match=r"head mask must be \[2, 4\]"):
        evaluate_circuit(tiny_gpt2, ioi, torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_batch"):
        CircuitEvaluator(tiny_gpt2, ioi, max_batch=0)
    too_big = dataclasses.replace(ioi, clean_tokens=ioi.clean_tokens + tiny_gpt2.cfg.d_vocab)
    with pytest.raises(ValueError, match="beyond the model's vocabulary"):
        CircuitEvaluator(tiny_gpt2, too_big)
