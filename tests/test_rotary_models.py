"""Rotary, RMSNorm, gated-MLP and grouped-query models (Qwen2, Llama): the fast engine equals the naive
reference, FLOPs are what torch counts, grouped-query k/v receivers mean what the docs say, and the kit's
``run`` works on them offline."""
import pytest
import torch

from app_helpers.identities import HEAD_INPUTS
from app_helpers.models import load_model
from app_helpers.patching import NaivePathPatcher, PathPatcher
from app_helpers.patching.base import input_head
from references import counted_flops, naive_head_scores, patching_problem

SHAPE = dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, intermediate_size=96,
             max_position_embeddings=128, tie_word_embeddings=False)


def _save(model, folder):
    from app_helpers.gpt2_offline import gpt2_tokenizer

    model.save_pretrained(folder)
    gpt2_tokenizer().save_pretrained(folder)  # the real Qwen tokenizer is not available offline
    return folder


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**SHAPE, num_key_value_heads=2, vocab_size=50257)
    return _save(Qwen2ForCausalLM(config), tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def rotary_model(request, qwen_dir, tmp_path_factory):
    if request.param == "qwen2":
        return load_model(str(qwen_dir), verbose=False)
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(**SHAPE, num_key_value_heads=4, vocab_size=50257)
    return load_model(str(_save(LlamaForCausalLM(config), tmp_path_factory.mktemp("llama"))), verbose=False)


@pytest.fixture(scope="module")
def problem():
    return patching_problem()


def test_the_models_are_what_they_claim(rotary_model):
    cfg = rotary_model.cfg
    assert cfg.positional_embedding_type == "rotary" and cfg.gated_mlp and cfg.normalization_type == "RMS"


@pytest.mark.parametrize("start", [1, 2])
def test_run_blocks_resumes_exactly_with_the_rotary_positions(rotary_model, problem, start):
    from app_helpers.hooks import block_kwargs, cut_block_kwargs, final_residual, hook_name, run_blocks

    tokens = problem[0]
    _, cache = rotary_model.run_with_cache(tokens, names_filter=[hook_name(start, "resid_pre")])
    want = final_residual(rotary_model, tokens)
    resumed = run_blocks(rotary_model, cache[hook_name(start, "resid_pre")], start)
    torch.testing.assert_close(resumed, want, atol=1e-5, rtol=0)
    prefix = run_blocks(rotary_model, cache[hook_name(start, "resid_pre")][:, :5], start,
                        kwargs=cut_block_kwargs(block_kwargs(rotary_model, 8), 5))
    torch.testing.assert_close(prefix, want[:, :5], atol=1e-5, rtol=0)  # causal: a prefix is exact


@pytest.mark.parametrize("chunk_size,mlps", [(1, False), (3, False), (1, True), (3, True)])
def test_engine_equals_naive_reference(rotary_model, problem, chunk_size, mlps):
    naive = NaivePathPatcher(rotary_model, *problem, mlps=mlps)
    fast = PathPatcher(rotary_model, *problem, chunk_size=chunk_size, mlps=mlps)
    want = naive.to_logits()
    assert want.abs().max() > 1e-3  # real effects, not zeros
    assert want.shape == (3, 4 + mlps)
    torch.testing.assert_close(fast.to_logits(), want, atol=1e-5, rtol=0)
    for receiver in [(1, 3), (2, 0)]:
        for component in HEAD_INPUTS:
            torch.testing.assert_close(fast.to_head(receiver, component), naive.to_head(receiver, component),
                                       atol=1e-5, rtol=0, equal_nan=mlps)
    if mlps:  # gated MLPs as senders (the last column) and as receivers
        assert want[:, 4].abs().min() > 1e-4
        for layer in (0, 2):
            torch.testing.assert_close(fast.to_mlp(layer), naive.to_mlp(layer), atol=1e-5, rtol=0, equal_nan=True)


def test_counted_flops_are_what_torch_counts(rotary_model, problem):
    """The FLOP model knows grouped-query k/v projections and the gated MLP's third matrix."""
    engine, flops = counted_flops(PathPatcher, rotary_model, *problem, chunk_size=2)
    assert engine.cost.flops == flops
    before = engine.cost.flops
    _, flops = counted_flops(lambda: [engine.to_head((2, 1), c) for c in HEAD_INPUTS] + [engine.to_logits()])
    assert engine.cost.flops - before == flops > 0


def test_grouped_query_k_and_v_receivers_are_the_group(qwen_dir, problem):
    """4 query heads share 2 key/value heads: heads 0, 1 form group 0, heads 2, 3 group 1. A k or v
    receiver is its group (same score for both heads of a group); q stays per head. Patching group 0's
    k by hand changes heads 0 and 1's attention and leaves heads 2 and 3's exactly as they were."""
    model = load_model(str(qwen_dir), verbose=False)
    cfg = model.cfg
    assert [input_head(cfg, h, "k") for h in range(4)] == [0, 0, 1, 1] == [input_head(cfg, h, "v") for h in range(4)]
    assert [input_head(cfg, h, "q") for h in range(4)] == [0, 1, 2, 3]
    engine = PathPatcher(model, *problem)
    for component in ("k", "v"):
        torch.testing.assert_close(engine.to_head((2, 0), component), engine.to_head((2, 1), component))
        assert not torch.equal(engine.to_head((2, 1), component), engine.to_head((2, 2), component))
    assert not torch.equal(engine.to_head((2, 0), "q"), engine.to_head((2, 1), "q"))

    tokens = problem[0]
    _, clean = model.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_pattern"])

    def shuffle_group_0(k, hook):  # noqa: ARG001
        k = k.clone()
        k[:, :, 0] = k[:, :, 0].flip(1)  # another key at every position, for group 0 only
        return k
    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_k", shuffle_group_0)]):
        _, patched = model.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_pattern"])
    before, after = clean["blocks.1.attn.hook_pattern"], patched["blocks.1.attn.hook_pattern"]
    assert before.shape[1] == 4  # [batch, query heads, query pos, key pos]
    for head in (0, 1):
        assert (after[:, head] - before[:, head]).abs().max() > 1e-3
    torch.testing.assert_close(after[:, 2:], before[:, 2:], atol=0, rtol=0)


def test_head_scores_equal_the_literal_formulas(rotary_model, problem):
    from app_helpers import pruning

    clean, corrupted, _, _ = problem
    mask = torch.ones_like(clean, dtype=torch.bool)
    got = pruning.score_heads_from_tokens(rotary_model, clean, corrupted, mask, mask, batch_size=2)
    want = naive_head_scores(rotary_model, clean, corrupted, mask, mask)
    for method in pruning.METHODS:
        torch.testing.assert_close(got[method].scores, want[method].float(), atol=1e-5, rtol=0)


def test_run_completes_offline_on_a_local_qwen2_directory(qwen_dir, tmp_path, capsys):
    import json

    from app_helpers.cli import main

    out = tmp_path / "run"
    assert main(["run", "--model", str(qwen_dir), "--task", "ioi", "--n", "8", "--eval-n", "8", "--quiet",
                 "--size", "tutorial", "--out", str(out)]) == 0
    record = json.loads((out / "comparison.json").read_text())
    assert record["dense"]["cost"]["sender_evaluations"] > 0 and "APP" in capsys.readouterr().out


def test_a_device_map_reaches_the_loader_and_the_engine_still_agrees(qwen_dir, problem, monkeypatch):
    """Placement is handed to Hugging Face's machinery; here every module is mapped to the CPU by name
    (the one device this machine has), which exercises the same path as a map over several GPUs."""
    from transformer_lens.model_bridge import TransformerBridge

    boot, seen = TransformerBridge.boot_transformers, {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return boot(*args, **kwargs)
    monkeypatch.setattr(TransformerBridge, "boot_transformers", spy)
    layers = {f"model.layers.{i}": "cpu" for i in range(SHAPE["num_hidden_layers"])}
    mapping = {"model.embed_tokens": "cpu", **layers, "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    model = load_model(str(qwen_dir), device_map=mapping, max_memory={"cpu": "2GiB"}, verbose=False)
    assert seen["device_map"] == mapping and seen["max_memory"] == {"cpu": "2GiB"} and "device" not in seen
    fast, naive = PathPatcher(model, *problem), NaivePathPatcher(model, *problem)
    torch.testing.assert_close(fast.to_head((2, 1), "v"), naive.to_head((2, 1), "v"), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not both"):
        load_model(str(qwen_dir), device="cpu", device_map="auto", verbose=False)
    with pytest.raises(ValueError, match="'random-gpt2'"):
        load_model("random-gpt2", device_map="auto", verbose=False)


def test_a_grouped_key_patch_equals_a_literal_computation_on_a_one_layer_model(tmp_path):
    """What 'patching head 0's k' does, computed by hand from the weights of a 1-layer Qwen2 (4 query heads,
    2 key/value heads): RMSNorm, the q/k/v projections, rotary positions, causal softmax per query head
    reading its group's keys and values. Group 0's keys come from the corrupted prompt; the bridge, with
    ``hook_k`` patched at ``input_head(cfg, 0, "k")``, must give the same z for every head."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(2)
    hf = Qwen2ForCausalLM(Qwen2Config(**{**SHAPE, "num_hidden_layers": 1}, num_key_value_heads=2, vocab_size=50257))
    model = load_model(str(_save(hf, tmp_path)), verbose=False)
    clean, corrupted = patching_problem()[:2]
    H, H_kv, d_head = 4, 2, SHAPE["hidden_size"] // 4
    layer = hf.model.layers[0]

    def literal(tokens, keys_from=None):
        def project(x, proj, heads):
            return proj(x).view(*x.shape[:2], heads, d_head)  # [batch, pos, heads, d_head]
        x = hf.model.embed_tokens(tokens)
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + hf.config.rms_norm_eps) * layer.input_layernorm.weight
        q, k, v = project(h, layer.self_attn.q_proj, H), project(h, layer.self_attn.k_proj, H_kv), \
            project(h, layer.self_attn.v_proj, H_kv)
        if keys_from is not None:
            k = k.clone()
            k[:, :, 0] = keys_from[:, :, 0]  # group 0 = query heads 0 and 1
        seq = tokens.shape[1]
        inv = 1.0 / (hf.config.rope_parameters["rope_theta"] ** (torch.arange(0, d_head, 2).float() / d_head))
        angles = torch.arange(seq).float()[:, None] * inv[None]  # [pos, d_head / 2]
        cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

        def rotate(t):  # t [batch, pos, heads, d_head]
            half = t.shape[-1] // 2
            turned = torch.cat([-t[..., half:], t[..., :half]], -1)
            return t * cos[None, :, None] + turned * sin[None, :, None]
        q, k = rotate(q), rotate(k)
        causal = torch.ones(seq, seq, dtype=torch.bool).tril()
        z = torch.empty_like(q)
        for head in range(H):
            group = head // (H // H_kv)
            scores = q[:, :, head] @ k[:, :, group].transpose(-1, -2) / d_head ** 0.5  # [batch, pos, pos]
            pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
            z[:, :, head] = pattern @ v[:, :, group]
        return z, project(h, layer.self_attn.k_proj, H_kv)

    with torch.no_grad():
        _, corrupted_keys = literal(corrupted)
        want, _ = literal(clean, keys_from=corrupted_keys)
        clean_z, _ = literal(clean)
    _, cache = model.run_with_cache(corrupted, names_filter=["blocks.0.attn.hook_k"])
    group = input_head(model.cfg, 0, "k")

    def patch(k, hook):  # noqa: ARG001
        k = k.clone()
        k[:, :, group] = cache["blocks.0.attn.hook_k"][:, :, group]
        return k
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_k", patch)]):
        _, got = model.run_with_cache(clean, names_filter=["blocks.0.attn.hook_z"])
    torch.testing.assert_close(got["blocks.0.attn.hook_z"], want, atol=1e-5, rtol=0)
    assert (want[:, :, :2] - clean_z[:, :, :2]).abs().max() > 1e-3  # the group's heads changed ...
    torch.testing.assert_close(want[:, :, 2:], clean_z[:, :, 2:], atol=0, rtol=0)  # ... the other group's did not
