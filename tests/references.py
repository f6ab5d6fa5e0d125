"""Independent references the tests compare the kit against, in one place (test files never import each
other). Each is written the slow, literal way, or measured by torch itself, never with the kit's helpers."""
import torch
from torch.utils.flop_counter import FlopCounterMode


def naive_head_scores(model, clean, corrupted, clean_mask, corrupted_mask):
    """The formulas of method.md §1, written out literally over a full activation cache."""
    cfg = model.cfg
    out = {"flap": torch.zeros(cfg.n_layers, cfg.n_heads), "contrastive": torch.zeros(cfg.n_layers, cfg.n_heads)}
    _, cache_clean = model.run_with_cache(clean)
    _, cache_corr = model.run_with_cache(corrupted)
    for layer in range(cfg.n_layers):
        W_O = model.blocks[layer].attn.W_O.reshape(cfg.n_heads * cfg.d_head, -1).double()
        channel = {}
        xc = cache_clean[f"blocks.{layer}.attn.hook_z"].flatten(2).double()  # [n, pos, C]
        xr = cache_corr[f"blocks.{layer}.attn.hook_z"].flatten(2).double()
        C = xc.shape[-1]
        flap, contrastive = torch.zeros(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
        for j in range(C):
            values = xc[..., j][clean_mask]
            var = values.var(unbiased=True)
            w2 = (W_O[j] ** 2).sum()
            flap[j] = (var * w2) ** 2
            e_clean = torch.stack([(xc[i, :, j][clean_mask[i]] ** 2).sum() for i in range(len(xc))]).mean()
            e_corr = torch.stack([(xr[i, :, j][corrupted_mask[i]] ** 2).sum() for i in range(len(xr))]).mean()
            wifn_clean = W_O[j].abs().mean() * e_clean.sqrt()
            wifn_corr = W_O[j].abs().mean() * e_corr.sqrt()
            contrastive[j] = (wifn_clean**2 - wifn_corr**2).abs()
        channel["flap"], channel["contrastive"] = flap, contrastive
        for name, values in channel.items():
            z = (values - values.mean()) / values.std(unbiased=True)
            for h in range(cfg.n_heads):
                out[name][layer, h] = z[h * cfg.d_head:(h + 1) * cfg.d_head].mean()
    return out


def counted_flops(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` and the matmul FLOPs torch counts while it runs (``FlopCounterMode``).

    Torch counts what the kernels really do — every projection, the attention products over the full
    positions given, the MLP, the unembedding — and nothing of embeddings, layer norms, biases or softmax,
    the same convention as ``app_helpers.costs``; so a counted ``Cost.flops`` must equal it exactly.
    """
    with FlopCounterMode(display=False) as counter:
        out = fn(*args, **kwargs)
    return out, counter.get_total_flops()


def patching_problem():
    """(clean, corrupted, end_pos, metric) for any model with at least 1000 tokens: five prompts of different
    real lengths (right-padded), a two-slot corruption, an A-vs-B metric."""
    gen = torch.Generator().manual_seed(0)
    n, seq = 5, 8
    clean = torch.randint(0, 1000, (n, seq), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(0, 1000, (n,), generator=gen)
    corrupted[:, 4] = corrupted[:, 2]
    end_pos = torch.tensor([7, 2, 7, 3, 6])  # lengths far enough apart for the engine to split them
    a, b = torch.randint(0, 1000, (2, n), generator=gen)

    def metric(logits):  # [..., n, vocab] -> [..., n]
        rows = torch.arange(n)
        return logits[..., rows, a] - logits[..., rows, b]
    return clean, corrupted, end_pos, metric
