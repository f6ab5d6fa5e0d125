"""One way to load a model: a hub name, a local Hugging Face directory, or the kit's bundled model.

Everything downstream (scores, patching, evaluation) takes the ``TransformerBridge`` this returns, so the
same notebook cell serves GPT-2 small on Colab and the bundled model offline. The loader fails fast and
says what to do when the hub is unreachable, rather than letting ``transformers`` retry for half a minute.
"""
from __future__ import annotations

import difflib
import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .devices import has_gpu, prepare_for_patching, resolve_device, resolve_dtype
from .gpt2_offline import random_gpt2
from .hooks import hook_name
from .tasks import get_task


def _data_dir() -> Path:
    """Where the bundled models live: ``data/`` beside the package in a checkout, ``app_helpers/bundled``
    (the same files, shipped as package data) in an installed wheel."""
    here = Path(__file__).resolve().parent
    installed = here / "bundled"
    return installed if installed.is_dir() else here.parent / "data"


DATA_DIR = _data_dir()
#: Short names of the models shipped in ``data/`` (name → directory), each trained by the kit.
BUNDLED_MODELS: dict[str, Path] = {"app-toy": DATA_DIR / "app-toy", "app-planted": DATA_DIR / "app-planted"}
#: The bundled model ``"auto"`` picks offline: app-planted for IOI (its circuit is known by construction),
#: app-toy for every other task (app-planted was trained on IOI only).
BUNDLED_FOR_TASK = {"ioi": "app-planted"}
#: What a bundled model's choice line adds to say why it is worth using.
BUNDLED_NOTES = {"app-planted": "its IOI circuit is known by construction"}
BUNDLED_DEFAULT = "app-toy"
#: Stand-in while no bundled model is shipped: a GPT-2-shaped model with random weights (see gpt2_offline).
RANDOM_GPT2 = "random-gpt2"
AUTO = "auto"
#: Class-name endings of the Hugging Face models the kit can patch: decoder-only language models.
CAUSAL_LM_CLASSES = ("ForCausalLM", "LMHeadModel")
#: Hook names every path-patching step relies on (per-head outputs and inputs).
PER_HEAD_HOOKS = ("z", "q", "k", "v")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do instead."""


@dataclass(frozen=True)
class ModelChoice:
    """Which model a spec resolves to, and why (printed by notebooks and ``python -m app_helpers info``)."""

    spec: str
    kind: str  # "hub", "local", "bundled" or "random"
    location: str
    reason: str


def hub_offline() -> bool:
    """True when the user told Hugging Face libraries not to touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers a TCP connection within ``timeout`` seconds (cached per session)."""
    if hub_offline():
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_cached(name: str) -> bool:
    """Whether the Hugging Face cache already holds ``name``'s config (then no network is needed)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def choose_model(spec: str = AUTO, task: str | None = None) -> ModelChoice:
    """Resolve a model spec without loading anything.

    ``"auto"``: GPT-2 small when a GPU is present and the hub reachable (or GPT-2 cached); otherwise the
    bundled model for ``task`` (``BUNDLED_FOR_TASK``: app-planted for IOI, app-toy for the rest), or, in
    a checkout without weights, a random-weight GPT-2-shaped stand-in.
    """
    spec = str(spec).strip()
    if spec == AUTO:
        gpu = has_gpu()
        if gpu and (hub_cached("gpt2") or hub_reachable()):
            return ModelChoice("gpt2", "hub", "gpt2", "a GPU is available and GPT-2 small can be loaded")
        why = "no GPU found" if not gpu else "the model hub is unreachable and GPT-2 is not cached"
        fallback = bundled_or_random(task)
        return ModelChoice(fallback.spec, fallback.kind, fallback.location,
                           f"{why}, so the kit uses {fallback.reason}")
    if spec == RANDOM_GPT2:
        return ModelChoice(spec, "random", spec, "a GPT-2-shaped model with RANDOM weights (no circuits "
                           "to find; for plumbing and cost checks only)")
    if spec in BUNDLED_MODELS:
        path = BUNDLED_MODELS[spec]
        if not _is_model_dir(path):
            raise ModelLoadError(f"the bundled model {spec!r} is not shipped in this checkout ({path} has no "
                                 f"weights); use {RANDOM_GPT2!r} or a hub name such as 'gpt2'")
        note = f" ({BUNDLED_NOTES[spec]})" if spec in BUNDLED_NOTES else ""
        return ModelChoice(spec, "bundled", str(path), f"the bundled model {spec!r} shipped with the kit{note}")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not _is_model_dir(path):
            raise ModelLoadError(f"{path} has no config.json and weights ({', '.join(WEIGHT_FILES[::2])}); "
                                 "save a model there with save_pretrained(dir) and its tokenizer too")
        return ModelChoice(spec, "local", str(path.resolve()), f"the local model directory {path}")
    if spec.startswith((".", "/", "~")) or os.sep in spec and not _looks_like_hub_id(spec):
        raise ModelLoadError(f"no model directory at {spec!r}")
    known = _known_hub_names()
    if spec.lower() not in known:
        close = difflib.get_close_matches(spec, sorted(set(known.values())) + list(BUNDLED_MODELS), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ModelLoadError(f"unknown model {spec!r}: not a local directory, not a bundled model "
                             f"({', '.join(BUNDLED_MODELS)}) and not a model TransformerLens supports.{hint}")
    official = known[spec.lower()]
    return ModelChoice(spec, "hub", official, f"{official!r} from the Hugging Face hub")


def bundled_for(task: str | None = None) -> str:
    """The bundled model's name for ``task`` (task names as ``make_task`` takes them; None: the default)."""
    return BUNDLED_FOR_TASK.get(get_task(task).name if task else "", BUNDLED_DEFAULT)


def bundled_or_random(task: str | None = None) -> ModelChoice:
    """The bundled model for ``task`` when shipped, else the random-weight stand-in (said loudly)."""
    for name in dict.fromkeys((bundled_for(task), BUNDLED_DEFAULT)):
        if _is_model_dir(BUNDLED_MODELS[name]):
            return choose_model(name)
    return choose_model(RANDOM_GPT2)


def load_model(spec: str = AUTO, device=None, dtype=None, attn_result: bool = False,
               split_qkv_input: bool = False, verbose: bool = True, task: str | None = None,
               device_map: str | dict | None = None, max_memory: dict | None = None):
    """Load ``spec`` as a ``TransformerBridge`` ready for patching work.

    ``spec``: ``"auto"``, a hub name (``"gpt2"``, ``"gpt2-medium"`` …), a local HF model directory, a
    bundled model's short name, or ``"random-gpt2"``; ``task`` decides which bundled model ``"auto"``
    picks offline (see ``choose_model``). ``attn_result`` / ``split_qkv_input`` switch on
    ``hook_result`` and ``hook_{q,k,v}_input`` (they cost memory, so they are off by default).

    ``device_map`` / ``max_memory``: for a model that does not fit one GPU (Qwen2.5-7B in float16 needs
    about 15 GB), placement is handed to Hugging Face's own machinery (``"auto"``, ``"balanced"`` or a
    module → device mapping); ``device`` is then left to it. The engines keep every tensor they inject on
    the device of the activation it replaces, so a model spread over devices patches the same way.
    """
    choice = choose_model(spec, task)
    if device_map is not None and device is not None:
        raise ValueError(f"give device={device!r} or device_map={device_map!r}, not both: a device map places "
                         "every module itself")
    if device_map is not None and choice.kind == "random":
        raise ValueError(f"device_map applies to models loaded from the hub or a directory, not {choice.spec!r}")
    device = resolve_device(device) if device_map is None else None
    dtype = resolve_dtype(dtype)
    if verbose:
        where = f"device {device}" if device_map is None else f"device map {device_map!r}"
        print(f"[app_helpers] model: {choice.spec} — {choice.reason}; {where}, {str(dtype)[6:]}")
    if choice.kind == "random":
        bridge = random_gpt2(device=device, dtype=dtype)
    else:
        if choice.kind == "hub" and not hub_cached(choice.location) and not hub_reachable():
            raise ModelLoadError(
                f"{choice.location!r} is not cached and the model hub is unreachable"
                f"{' (HF_HUB_OFFLINE is set)' if hub_offline() else ''}. Use the bundled model "
                f"({BUNDLED_DEFAULT!r}, or spec 'auto') or run where the hub is reachable (e.g. Colab).")
        from transformer_lens.model_bridge import TransformerBridge

        try:
            placement = {"device": device} if device_map is None else {"device_map": device_map,
                                                                       "max_memory": max_memory}
            bridge = TransformerBridge.boot_transformers(choice.location, dtype=dtype, **placement)
        except (OSError, ValueError, KeyError) as err:
            raise ModelLoadError(f"could not load {choice.spec!r}: {err}") from err
    check_patchable(bridge, choice.spec)
    bridge = prepare_for_patching(bridge)
    if attn_result:
        bridge.set_use_attn_result(True)
    if split_qkv_input:
        bridge.set_use_split_qkv_input(True)
    return bridge


def check_patchable(bridge, name: str = "model") -> None:
    """Fail clearly if the model is not a decoder-only language model with the per-head hooks that scores
    and path patching use, or if its weights are not finite.

    The hooks alone do not tell: TransformerBridge gives an encoder such as BERT the same per-head hook
    names, and patching would run on it and print numbers about a masked-LM that has no next token.
    """
    original = getattr(bridge, "original_model", None)
    if original is not None:
        kind = type(original).__name__
        if not kind.endswith(CAUSAL_LM_CLASSES):
            raise ModelLoadError(f"{name} is a {kind}, not a decoder-only causal language model: the kit reads "
                                 "the next-token prediction, which encoders and encoder-decoders do not make; use "
                                 "a GPT-2, Qwen2 or Llama-style model (a *ForCausalLM / *LMHeadModel)")
        for pname, param in original.named_parameters():
            if not bool(param.isfinite().all()):
                bad = int((~param.isfinite()).sum())
                raise ModelLoadError(f"{name} has {bad} non-finite weight(s) (NaN or inf) in {pname!r}: every "
                                     "score and Perf % would be NaN; retrain or re-save the model")
    hooks = set(getattr(bridge, "hook_dict", {}))
    n_layers = getattr(getattr(bridge, "cfg", None), "n_layers", 0) or 0
    missing = [hook_name(layer, point) for layer in range(n_layers) for point in PER_HEAD_HOOKS
               if hook_name(layer, point) not in hooks]
    if n_layers == 0 or missing:
        shown = ", ".join(missing[:4]) if missing else "any transformer blocks"
        raise ModelLoadError(f"{name} has no per-head attention hooks ({shown} missing): path patching "
                             "needs a decoder-only architecture with per-head z/q/k/v hooks, such as GPT-2")


def describe(bridge) -> dict:
    """Size facts a user wants to see before running anything heavy."""
    cfg = bridge.cfg
    n_params = sum(p.numel() for p in bridge.original_model.parameters())
    return {"layers": cfg.n_layers, "heads_per_layer": cfg.n_heads, "heads": cfg.n_layers * cfg.n_heads,
            "d_model": cfg.d_model, "d_head": cfg.d_head, "vocab": cfg.d_vocab, "params": n_params,
            "device": str(next(bridge.original_model.parameters()).device),
            "dtype": str(next(bridge.original_model.parameters()).dtype).replace("torch.", "")}


GPU_HINT = ("No GPU here. On Colab: Runtime → Change runtime type → GPU, then run all cells again; "
            "MODEL = 'auto' will then load GPT-2 small.")


def notebook_model(spec: str = AUTO, task: str | None = None, **kwargs):
    """Load the model a notebook's parameters cell names and say what it is — and how to get GPT-2.

    Returns ``(model, facts)`` where ``facts`` is ``describe(model)`` plus ``is_gpt2_small`` (notebooks
    show the paper's GPT-2 numbers only beside GPT-2 small's), ``location`` (for
    ``circuits.references_for``) and ``spec`` (the model's name, for tables: ``"auto"`` resolved for
    ``task``). ``task``: which bundled model ``"auto"`` picks offline.
    """
    model = load_model(spec, task=task, **kwargs)
    choice = choose_model(spec, task)
    facts = {**describe(model), "is_gpt2_small": choice.location == "gpt2", "location": choice.location,
             "spec": choice.spec}
    print(f"{facts['layers']} layers × {facts['heads_per_layer']} heads = {facts['heads']} heads, d_model "
          f"{facts['d_model']}, {facts['params'] / 1e6:.1f} M parameters, on {facts['device']}")
    if not has_gpu():
        print(GPU_HINT)
    return model, facts


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / f).is_file() for f in WEIGHT_FILES)


def _looks_like_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith("/")


@functools.lru_cache(maxsize=1)
def _known_hub_names() -> dict[str, str]:
    """Lower-cased name or TransformerLens alias (``gpt2-small``) → the hub id to load."""
    from transformer_lens import supported_models as sm
    from transformer_lens.model_bridge import TransformerBridge

    names = {m.lower(): m for m in TransformerBridge.list_supported_models()}
    names.update({m.lower(): m for m in sm.OFFICIAL_MODEL_NAMES})
    names.update({a.lower(): official for official, aliases in sm.MODEL_ALIASES.items() for a in aliases})
    return names
