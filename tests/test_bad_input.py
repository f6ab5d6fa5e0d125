"""Bad input, by entry point: every case is refused with an error of the kit's own (not a trace from deep
inside torch) whose message names the offending value; and interrupted runs leave the previous outputs
intact and no temporary files behind."""
import math
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from app_helpers import circuits, cli, evaluation, pruning, search, viz, widgets
from app_helpers.circuits import Circuit
from app_helpers.identities import Method
from app_helpers.models import ModelLoadError, load_model
from app_helpers.patching import PathPatcher
from app_helpers.tasks import MAX_PROMPTS, make_split, make_task

ROOT = Path(__file__).resolve().parent.parent


def refused(call, error, *named):
    """``call()`` raises ``error`` from within the kit, and the message names each of ``named``."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    for text in named:
        assert str(text) in message, f"the message does not name {text!r}: {message}"
    origin = caught.traceback[-1].path
    assert "app_helpers" in str(origin), f"raised from {origin}, not by the kit: {message}"


@pytest.fixture(scope="module")
def ioi(tiny_gpt2):
    return make_task("ioi", tiny_gpt2, n=8, seed=0)


@pytest.fixture(scope="module")
def foreign_task(word_tok):
    """A task built with the word-level tokenizer: its ids are valid GPT-2 ids that mean other words."""
    return make_task("ioi", word_tok, n=8, seed=0)


@pytest.fixture(scope="module")
def engine(tiny_gpt2, ioi):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random model's gap is untrusted; these tests are about input
        return PathPatcher.from_task(tiny_gpt2, ioi)


@pytest.fixture(scope="module")
def evaluator(tiny_gpt2, ioi):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluation.CircuitEvaluator(tiny_gpt2, ioi)


# --- make_task / make_split ------------------------------------------------------------------------------
@pytest.mark.parametrize("n, named", [(10**8, MAX_PROMPTS), (0, "0"), (2.5, "2.5"), (True, "True"), ("8", "'8'")])
def test_make_task_prompt_counts(tiny_gpt2, n, named):
    refused(lambda: make_task("ioi", tiny_gpt2, n=n), ValueError, "n (the number of prompts)", named)


@pytest.mark.parametrize("seed, named", [(None, "None"), ("a", "'a'"), (1.5, "1.5")])
def test_make_task_seeds(tiny_gpt2, seed, named):
    refused(lambda: make_task("ioi", tiny_gpt2, n=4, seed=seed), ValueError, "seed", named)


@pytest.mark.parametrize("kwargs, named", [
    ({"metric": "kl"}, "'kl'"), ({"corruption": "XYZ"}, "'XYZ'"), ({"foo": 1}, "foo"), ({"device": "tpu"}, "'tpu'"),
])
def test_make_task_options(tiny_gpt2, kwargs, named):
    refused(lambda: make_task("ioi", tiny_gpt2, n=4, **kwargs), ValueError, named)


def test_make_task_names_and_models(tiny_gpt2):
    refused(lambda: make_task("ioj", tiny_gpt2, n=4), ValueError, "'ioj'")
    refused(lambda: make_task("ioi", None, n=4), ValueError, "NoneType")


def test_make_split_held_out_count(tiny_gpt2):
    refused(lambda: make_split("ioi", tiny_gpt2, n=4, eval_n=10**8), ValueError, "eval_n", MAX_PROMPTS)
    refused(lambda: make_split("ioi", tiny_gpt2, n=4, eval_n=None), ValueError, "eval_n", "None")


# --- a task on a model it was not built for --------------------------------------------------------------
def test_a_task_from_another_tokenizer_is_refused_everywhere(tiny_gpt2, foreign_task):
    for call in (lambda: evaluation.CircuitEvaluator(tiny_gpt2, foreign_task),
                 lambda: PathPatcher.from_task(tiny_gpt2, foreign_task),
                 lambda: pruning.score_heads(tiny_gpt2, foreign_task)):
        refused(call, ValueError, "another tokenizer", "make_task")


def test_token_ids_beyond_the_vocabulary(ioi):
    word_level = load_model("app-toy", verbose=False)
    refused(lambda: evaluation.CircuitEvaluator(word_level, ioi), ValueError, "50256",
            f"vocabulary of {word_level.cfg.d_vocab}")


# --- load_model ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, named", [
    ({"dtype": "float8"}, ValueError, "'float8'"), ({"device": "tpu"}, ValueError, "'tpu'"),
    ({"spec": "/no/such/dir"}, ModelLoadError, "/no/such/dir"), ({"spec": "gtp2"}, ModelLoadError, "'gtp2'"),
])
def test_load_model_settings(kwargs, error, named):
    refused(lambda: load_model(**{"spec": "random-gpt2", **kwargs}, verbose=False), error, named)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_load_model_on_an_absent_gpu():
    refused(lambda: load_model("random-gpt2", device="cuda", verbose=False), ValueError, "'cuda'", "cpu")


def test_an_encoder_is_refused_by_name(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    BertForMaskedLM(BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                               vocab_size=100)).save_pretrained(tmp_path)
    refused(lambda: load_model(str(tmp_path), verbose=False), ModelLoadError, "BertForMaskedLM", "decoder-only")


def test_non_finite_weights_are_refused(tiny_model_dir, tmp_path):
    import shutil

    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight[3, 2] = math.nan
    model.save_pretrained(tmp_path)
    for f in tiny_model_dir.iterdir():
        if "token" in f.name or f.name in ("vocab.json", "merges.txt"):
            shutil.copy(f, tmp_path)
    refused(lambda: load_model(str(tmp_path), verbose=False), ModelLoadError, "non-finite", "mlp")


# --- pruning ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [-1, 0, 2.5])
def test_scoring_batch_sizes(tiny_gpt2, ioi, batch_size):
    refused(lambda: pruning.score_heads(tiny_gpt2, ioi, batch_size=batch_size), ValueError, "batch_size",
            batch_size)


def test_prune_refuses_nan_scores_an_empty_result_and_bad_shapes():
    refused(lambda: pruning.prune(torch.full((2, 4), math.nan), 0.5), ValueError, "non-finite", "8")
    refused(lambda: pruning.prune(torch.randn(2, 4), 0.95), ValueError, "0.95", "keeps 0 of 8", "0.9375")
    refused(lambda: pruning.prune(torch.randn(8), 0.5), ValueError, "(8,)")
    for sparsity in (math.nan, 1.0, -0.1, "0.5"):
        refused(lambda: pruning.prune(torch.randn(2, 4), sparsity), ValueError, repr(sparsity))


def test_find_cliff_inputs():
    refused(lambda: pruning.find_cliff([0.6, 0.7, 0.8], [90, 50, 10], rule="fixed", fallback=5.0), ValueError, "5.0")
    refused(lambda: pruning.find_cliff([0.6, 0.7, 0.8], [90, math.nan, 10]), ValueError, "nan", "0.7")
    refused(lambda: pruning.find_cliff([0.8, 0.6, 0.7], [90, 50, 10]), ValueError, "[0.8, 0.6, 0.7]")
    refused(lambda: pruning.find_cliff([0.6, 0.7], [90]), ValueError, "1 Perf values for 2")
    refused(lambda: pruning.find_cliff([0.6, 0.7], [90, 10], rule="last"), ValueError, "'last'")


def test_sweeps_and_the_pruning_stage(tiny_gpt2, ioi, evaluator):
    scores = pruning.score_heads(tiny_gpt2, ioi)["flap"]
    refused(lambda: pruning.sparsity_sweep(evaluator, scores, []), ValueError, "[]")
    refused(lambda: pruning.sparsity_sweep(evaluator, scores, [0.5, 1.2]), ValueError, "1.2")
    refused(lambda: pruning.merged_sweep(evaluator, []), ValueError, "sweeps")
    # checked before any scoring pass runs
    refused(lambda: pruning.prune_for_app(tiny_gpt2, ioi, rule="last"), ValueError, "'last'")
    refused(lambda: pruning.prune_for_app(tiny_gpt2, ioi, sparsity={"falp": 0.5}), ValueError, "falp")


# --- search ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale, threshold, named", [(-1.0, 0.0, "-1.0"), (math.nan, 0.0, "nan"),
                                                     (1.0, math.nan, "nan"), (1.0, -1.0, "-1.0"),
                                                     ("big", 0.0, "'big'")])
def test_selection_settings(engine, scale, threshold, named):
    refused(lambda: search.select_heads(torch.randn(2, 4), scale, threshold), ValueError, named)
    refused(lambda: search.search_circuit(engine, scale=scale, min_value_threshold=threshold), ValueError, named)


def test_search_candidates_and_grids(engine):
    refused(lambda: search.search_circuit(engine, candidates=[]), ValueError, "candidate set is empty")
    refused(lambda: search.search_circuit(engine, candidates=[(9, 9)]), ValueError, "9.9", "2x4")
    refused(lambda: search.search_circuit(engine, cap_fraction=0), ValueError, "cap_fraction")
    evaluate = lambda circuits: [0.0] * len(circuits)  # noqa: E731
    refused(lambda: search.grid_search(engine, evaluate, Method.DENSE, None, [], [0.01]), ValueError, "scales")
    refused(lambda: search.grid_search(engine, evaluate, Method.DENSE, None, [1.0], [math.nan]), ValueError, "nan")


def test_pareto_choice_refuses_a_nan_perf():
    refused(lambda: search.pareto_choice([2, 3], [80.0, math.nan], 8, 75.0, 0.5), ValueError, "grid run 1", "nan")
    refused(lambda: search.pareto_choice([2, 3], [80.0], 8, 75.0, 0.5), ValueError, "2 circuits and 1 Perf")


# --- patching --------------------------------------------------------------------------------------------
def test_engine_settings_and_receivers(tiny_gpt2, ioi, engine):
    refused(lambda: PathPatcher.from_task(tiny_gpt2, ioi, chunk_size=2.5), ValueError, "chunk_size", "2.5")
    refused(lambda: PathPatcher.from_task(tiny_gpt2, ioi, memory_mb=-1), ValueError, "memory_mb", "-1")
    refused(lambda: engine.to_head((5, 0), "q"), ValueError, "5.0")
    refused(lambda: engine.to_head((1, 0), "z"), ValueError, "'z'")
    refused(lambda: engine.to_logits([(0, 9)]), ValueError, "0.9")


# --- evaluation ------------------------------------------------------------------------------------------
def test_evaluator_settings_and_circuits(tiny_gpt2, ioi, evaluator):
    refused(lambda: evaluation.CircuitEvaluator(tiny_gpt2, ioi, ablation="zero"), ValueError, "'zero'")
    refused(lambda: evaluation.CircuitEvaluator(tiny_gpt2, ioi, max_batch=2.5), ValueError, "2.5")
    refused(lambda: evaluation.CircuitEvaluator(tiny_gpt2, ioi, metric="kl"), ValueError, "'kl'")
    refused(lambda: evaluator.evaluate([[(5, 0)]]), ValueError, "5.0")
    refused(lambda: evaluator.evaluate([["x"]]), ValueError, "'x'")


# --- Circuit and its JSON --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, named", [
    ("{not json", "not valid JSON"), ("[1, 2]", "list"), ('{"heads": 3}', "3"), ('{"heads": [[0]]}', "[0]"),
    ('{"heads": [[0, 1]], "edges": [[1]]}', "[1]"), ('{"heads": [], "mlps": ["x"]}', "'x'"),
    ('{"heads": [], "colour": 1}', "colour"), ('{"heads": [[0, 1]], "roles": {"2.2": "x"}}', "2.2"),
])
def test_circuit_json(text, named):
    refused(lambda: Circuit.from_json(text), ValueError, named)


def test_circuit_files(tmp_path):
    refused(lambda: Circuit.load(tmp_path / "nope.json"), FileNotFoundError, "nope.json")
    (tmp_path / "bad.json").write_text("{oops")
    refused(lambda: Circuit.load(tmp_path / "bad.json"), ValueError, "bad.json", "not valid JSON")
    refused(lambda: circuits.reference_circuit("foo"), ValueError, "'foo'")
    refused(lambda: Circuit(heads=[(5, 0)]).head_mask(2, 4), ValueError, "5.0")


# --- figures and widgets ---------------------------------------------------------------------------------
def test_figures_refuse_what_they_cannot_draw():
    import matplotlib.pyplot as plt

    refused(lambda: viz.head_heatmap(torch.randn(8)), ValueError, "(8,)")
    refused(lambda: viz.head_heatmap(torch.randn(2, 4), outlined=[(5, 5)]), ValueError, "5.5")
    refused(lambda: viz.kept_heatmap({"a": [(5, 0)]}, 2, 4), ValueError, "5.0")
    refused(lambda: viz.circuit_graph([(5, 0)], [], 2, 4), ValueError, "5.0")
    refused(lambda: viz.circuit_graph([(1, 0)], [((0, 7), (1, 0), "q")], 2, 4), ValueError, "0.7")
    refused(lambda: viz.sweep_curves([]), ValueError, "sweeps")
    refused(lambda: viz.cost_bars({}), ValueError, "costs")
    refused(lambda: widgets.sparsity_explorer(None), ValueError, "NoneType")
    plt.close("all")


# --- the command line ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, named", [
    (["run", "--n", "0"], "at least 1"), (["run", "--n", str(10**8)], str(MAX_PROMPTS)),
    (["run", "--eval-n", "-3"], "-3"), (["run", "--task", "ioj"], "'ioj'"),
    (["run", "--task-option", "corruption=XYZ"], "'XYZ'"), (["run", "--task-option", "foo=1"], "foo"),
    (["run", "--task-option", "metric=kl"], "'kl'"), (["run", "--device", "tpu"], "'tpu'"),
    (["run", "--dtype", "float8"], "'float8'"), (["run", "--model", "gtp2"], "'gtp2'"),
    (["bench", "--n", "0"], "at least 1"), (["info", "--device", "tpu"], "'tpu'"),
    (["run", "--mlps", "--baselines"], "heads only"),
])
def test_cli_bad_input_is_one_line_and_exit_2_before_any_model_loads(argv, named, monkeypatch, capsys, tmp_path):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")
    monkeypatch.setattr(cli.models, "load_model", no_loading)
    assert cli.main(argv + (["--out", str(tmp_path / "out")] if argv[0] == "run" else [])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and named in err, err


def test_cli_refuses_an_output_folder_holding_other_files(monkeypatch, capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    monkeypatch.setattr(cli.models, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    assert cli.main(["run", "--out", str(tmp_path)]) == 2
    assert "mine.txt" in capsys.readouterr().err and (tmp_path / "mine.txt").read_text() == "keep me"


# --- interrupted runs ------------------------------------------------------------------------------------
#: Runs the CLI with a pause at one moment (before the search, or while the figures are written, after the
#: JSON record is in the temporary folder), so a signal is delivered exactly there.
PAUSING_CLI = """
import signal, sys, time
from app_helpers import cli, report
# Ctrl-C as in a terminal: a suite started as a background job inherits SIGINT ignored, and so would this run
signal.signal(signal.SIGINT, signal.default_int_handler)
moment, argv = sys.argv[1], sys.argv[2:]
def paused(original):
    def call(*args, **kwargs):
        print("PAUSED", file=sys.stderr, flush=True)
        time.sleep(300)
        return original(*args, **kwargs)
    return call
if moment == "search":
    cli.run_comparison = paused(cli.run_comparison)
else:
    report.save_figures = paused(report.save_figures)
raise SystemExit(cli.main(argv))
"""


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def run_args(tiny_model_dir):
    return ["run", "--model", str(tiny_model_dir), "--task", "ioi", "--n", "6", "--eval-n", "6", "--quiet"]


def _interrupt(run_args, out: Path, moment: str, sig: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", PAUSING_CLI, moment, *run_args, "--seed", "1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines = []
    for line in proc.stderr:  # wait until the run is paused at the moment asked for
        lines.append(line)
        if line.startswith("PAUSED"):
            break
    else:
        proc.wait()
        pytest.fail(f"the run ended before pausing at {moment}: {''.join(lines)}")
    proc.send_signal(sig)
    stdout, rest = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, rest)


def test_interrupted_runs_keep_the_previous_outputs_and_leave_no_temporary_files(run_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(run_args + ["--out", str(out)]) == 0
    capsys.readouterr()
    previous = _listing(out)
    assert "comparison.json" in previous and len(previous) > 1
    for moment, sig in [("search", signal.SIGINT), ("figures", signal.SIGINT), ("search", signal.SIGKILL),
                        ("figures", signal.SIGKILL)]:
        done = _interrupt(run_args, out, moment, sig)
        assert _listing(out) == previous, f"{moment}/{sig}: the previous outputs changed"
        if sig == signal.SIGINT:
            assert done.returncode == 130
            assert done.stderr.count("\n") == 1 and done.stderr.startswith("interrupted"), done.stderr
            assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "an interrupted run left files"
        else:
            assert done.returncode == -signal.SIGKILL
            left = [p.name for p in tmp_path.iterdir() if p.name != "run"]
            if moment == "search":
                assert left == []  # killed before writing anything
            else:  # killed while writing: its temporary folder stays (nothing can clean up after SIGKILL)
                assert len(left) == 1 and left[0].startswith(".run.tmp-")
    # the next run removes the killed run's temporary folder and replaces the set whole
    assert cli.main(run_args + ["--seed", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert set(_listing(out)) == set(previous) and _listing(out)["comparison.json"] != previous["comparison.json"]
    assert oct(os.stat(out / "comparison.json").st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
