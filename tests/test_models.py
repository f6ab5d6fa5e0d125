"""The one model loader: local directories, hub names offline, the auto choice, and its errors."""
import time
from types import SimpleNamespace

import pytest
import torch

from app_helpers import devices, models
from app_helpers.models import ModelLoadError


@pytest.fixture(autouse=True)
def _fresh_caches():
    models.hub_reachable.cache_clear()
    yield
    models.hub_reachable.cache_clear()


def test_local_directory_loads_ready_for_patching(tiny_model_dir):
    bridge = models.load_model(str(tiny_model_dir), verbose=False)
    assert (bridge.cfg.n_layers, bridge.cfg.n_heads, bridge.cfg.d_head) == (2, 4, 16)
    assert not any(p.requires_grad for p in bridge.parameters())
    assert not bridge.training
    # The tokenizer came from the directory: GPT-2's ids.
    assert bridge.to_tokens(" Mary", prepend_bos=False).tolist() == [[5335]]
    _, cache = bridge.run_with_cache(torch.tensor([[50256, 5335, 1757]]))
    assert cache["blocks.1.attn.hook_z"].shape == (1, 3, 4, 16)


def test_optional_hooks_switch_on(tiny_model_dir):
    bridge = models.load_model(str(tiny_model_dir), attn_result=True, split_qkv_input=True,
                               verbose=False)
    _, cache = bridge.run_with_cache(torch.tensor([[50256, 5335]]))
    assert cache["blocks.0.attn.hook_result"].shape == (1, 2, 4, 64)
    assert cache["blocks.0.hook_q_input"].shape == (1, 2, 4, 64)


def test_directory_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no config.json and weights"):
        models.load_model(str(tmp_path), verbose=False)


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(ModelLoadError, match="no model directory"):
        models.choose_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="unknown model 'gtp2'.*Did you mean 'gpt2'"):
        models.choose_model("gtp2")


def test_aliases_resolve_to_the_hub_id():
    assert models.choose_model("gpt2-small").location == "gpt2"
    assert models.choose_model("gpt2").kind == "hub"


def test_uncached_hub_name_fails_fast_offline_and_names_the_bundled_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: gpt2 cannot be there
    monkeypatch.setattr(models, "hub_cached", lambda name: False)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match=f"unreachable.*{models.BUNDLED_DEFAULT}"):
        models.load_model("gpt2", verbose=False)
    assert time.perf_counter() - start < 5


def test_hub_is_unreachable_when_offline_is_set():
    assert models.hub_offline()
    assert models.hub_reachable() is False


@pytest.mark.parametrize("gpu, cached, expect_kind, why", [
    (False, True, None, "no GPU"),
    (True, False, None, "unreachable"),
    (True, True, "hub", "GPU is available"),
])
def test_auto_choice_and_its_reason(monkeypatch, gpu, cached, expect_kind, why):
    monkeypatch.setattr(models, "has_gpu", lambda: gpu)
    monkeypatch.setattr(models, "hub_cached", lambda name: cached)
    choice = models.choose_model("auto")
    assert why in choice.reason
    if expect_kind == "hub":
        assert choice.location == "gpt2"
    else:
        assert choice.kind in {"bundled", "random"}
        assert choice.spec == models.bundled_or_random().spec


def test_auto_offline_picks_the_bundled_model_for_the_task(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setattr(models, "has_gpu", lambda: False)
    monkeypatch.setattr(models, "BUNDLED_MODELS", {"app-toy": tiny_model_dir, "app-planted": tiny_model_dir})
    assert models.choose_model("auto", "ioi").spec == "app-planted"
    assert "known by construction" in models.choose_model("auto", "ioi").reason
    assert models.choose_model("auto", "greater_than").spec == "app-toy"
    assert models.choose_model("auto", "pronouns").spec == "app-toy"  # aliases resolve
    assert models.choose_model("auto").spec == "app-toy"
    # a checkout without app-planted's weights falls back to app-toy, then to the random stand-in
    monkeypatch.setattr(models, "BUNDLED_MODELS", {"app-toy": tiny_model_dir, "app-planted": tmp_path})
    assert models.choose_model("auto", "ioi").spec == "app-toy"
    monkeypatch.setattr(models, "BUNDLED_MODELS", {"app-toy": tmp_path, "app-planted": tmp_path})
    assert models.choose_model("auto", "ioi").spec == models.RANDOM_GPT2
    with pytest.raises(ValueError, match="unknown task"):
        models.choose_model("auto", "chess")


def test_architecture_without_per_head_hooks_is_rejected():
    stub = SimpleNamespace(cfg=SimpleNamespace(n_layers=2), hook_dict={"blocks.0.attn.hook_z": None})
    with pytest.raises(ModelLoadError, match="per-head attention hooks.*blocks.0.attn.hook_q"):
        models.check_patchable(stub, "stub")


def test_device_and_dtype_choice():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_dtype(None) is torch.float32
    assert devices.resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        devices.resolve_dtype("float17")
    with pytest.raises(ValueError, match="floating-point"):
        devices.resolve_dtype(torch.int64)


def test_dtype_override_reaches_the_weights(tiny_model_dir):
    bridge = models.load_model(str(tiny_model_dir), dtype="float64", verbose=False)
    assert models.describe(bridge)["dtype"] == "float64"


def test_notebook_model_reports_shape_and_gpu_hint(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(models, "has_gpu", lambda: False)
    model, facts = models.notebook_model(str(tiny_model_dir), verbose=False)
    out = capsys.readouterr().out
    assert "2 layers × 4 heads = 8 heads" in out and models.GPU_HINT in out
    assert facts["is_gpt2_small"] is False and facts["heads"] == 8
