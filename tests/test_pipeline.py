"""APP end to end on a tiny random model: restriction holds, costs add up, outputs are written."""
import json
import os

import pytest
import torch

from app_helpers import report
from app_helpers.cli import main
from app_helpers.circuits import Circuit
from app_helpers.pipeline import run_comparison
from app_helpers.validate import InputError


@pytest.fixture(scope="module")
def comparison(tiny_gpt2):
    loose = dict(scales=(0.0, 1.0), thresholds=(0.0,))  # a random model: select generously
    return run_comparison(tiny_gpt2, "ioi", n=12, eval_n=12, seed=0, model_name="tiny", show_progress=False,
                          **loose)


def test_app_searches_only_the_merged_set(comparison):
    merged = comparison.pruning.merged
    assert comparison.app.candidates == merged
    assert set(comparison.app.circuit.heads) <= merged
    for run in comparison.app.grid.runs:
        for key, matrix in run.scores.items():
            evaluated = {(l, h) for l, h in (~matrix.isnan()).nonzero().tolist()}
            assert evaluated <= merged, key
    assert comparison.app.cost.sender_evaluations <= comparison.dense.cost.sender_evaluations
    assert len(comparison.dense.grid.runs) == 2


def test_costs_and_table_are_consistent(comparison):
    rows = {label: (d, a) for label, d, a in report.comparison_rows(comparison)}
    d, a = comparison.dense.cost, comparison.app.cost
    assert rows["sender evaluations (grid)"] == (d.sender_evaluations, a.sender_evaluations)
    assert rows["speed-up: evaluations"][1] == pytest.approx(d.sender_evaluations / a.sender_evaluations)
    assert rows["heads in circuit"] == (len(comparison.dense.circuit), len(comparison.app.circuit))
    for run in (comparison.dense, comparison.app):
        assert run.cost.flops - run.setup_cost.flops >= run.cost.flops_lower_bound > 0
    assert "dense PP" in report.comparison_table(comparison)


def test_record_is_json_and_written_atomically(comparison, tmp_path):
    path = report.write_json_atomic(report.comparison_record(comparison), tmp_path / "c.json")
    data = json.loads(path.read_text())
    assert data["task"] == "ioi" and data["app"]["circuit"]["heads"] == [f"{l}.{h}" for l, h in
                                                                        comparison.app.circuit.heads]
    assert sorted(data["pruning"]["sweeps"]) == ["contrastive", "flap", "merged"]
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temporary file left behind
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # an ordinary file, not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_record_json_is_standard_nan_becomes_null(tmp_path):
    data = {"perf": float("nan"), "scores": [[1.0, float("inf")], torch.tensor(2.5)], "n": 3, "name": "x"}
    path = report.write_json_atomic(data, tmp_path / "r.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"perf": None, "scores": [[1.0, None], 2.5], "n": 3, "name": "x"}


def test_figures_are_written(comparison, tmp_path):
    paths = report.save_figures(comparison, tmp_path, 2, 4)
    assert len(paths) == 8 and all(p.stat().st_size > 1000 for p in paths)


def test_run_command_rejects_an_unknown_task(capsys):
    assert main(["run", "--model", "random-gpt2", "--task", "tic-tac-toe", "--out", "unused"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_comparison_keeps_its_held_out_prompts(comparison, tiny_gpt2):
    from app_helpers.tasks import make_task

    held_out = comparison.eval_task
    assert len(held_out) == comparison.eval_n
    searched = make_task("ioi", tiny_gpt2, n=comparison.n, seed=comparison.seed)
    pairs = set(zip(searched.clean_prompts, searched.corrupted_prompts))
    assert not pairs & set(zip(held_out.clean_prompts, held_out.corrupted_prompts))  # held out: no repeats


def test_pruning_cost_is_counted_from_the_passes_it_ran(comparison, tiny_gpt2):
    """Scoring: one pass over the clean and one over the corrupted prompts (n <= batch size); the sweeps'
    evaluator: two baselines, then one pass per 256 rows of each sweep's distinct kept sets."""
    n = comparison.n
    sweeps = comparison.pruning.sweeps.values()
    evaluation_passes = sum(-(-len(set(s.kept)) * n // 256) for s in sweeps)
    assert comparison.pruning_cost.forward_passes == 2 + 2 + evaluation_passes
    assert comparison.pruning_cost.seconds > 0 and comparison.pruning_cost.flops > 0


def test_table2_rows_and_the_paper_beside_them(comparison, tiny_gpt2):
    from app_helpers.circuits import PAPER_TABLE2, overlap
    from app_helpers.evaluation import evaluate_circuit

    rows = report.table2_rows(comparison)
    assert list(rows) == ["PP", "FLAP", "Contrastive", "Merged"]
    assert rows["PP"] == (comparison.dense.perf, len(comparison.dense.circuit), None)
    merged = comparison.pruning.merged
    perf, size, tpr = rows["Merged"]
    assert size == len(merged)
    assert tpr == pytest.approx(100 * overlap(merged, comparison.dense.circuit).tpr, nan_ok=True)
    assert perf == pytest.approx(evaluate_circuit(tiny_gpt2, comparison.eval_task, merged).perf)
    table = report.paper_table(comparison)
    assert f"{PAPER_TABLE2['ioi']['Merged'][0]:.2f}" in table and "×5.6" in table
    import dataclasses

    with pytest.raises(ValueError, match="no held-out Perf"):
        report.table2_rows(dataclasses.replace(comparison, pruned_perf={}))


def test_task_options_reach_both_prompt_sets_and_the_record(tiny_gpt2):
    c = run_comparison(tiny_gpt2, "ioi", n=8, eval_n=8, seed=0, show_progress=False, scales=(1.0,),
                       thresholds=(0.0,), task_options={"corruption": "ABA"})
    held = c.eval_task  # ABA: the corrupted prompt's S2 is the IO name
    rows = torch.arange(len(held))
    assert held.options["corruption"] == "ABA"
    assert torch.equal(held.corrupted_tokens[rows, held.word_pos["S2"]], held.clean_tokens[rows, held.word_pos["IO"]])
    assert report.comparison_record(c)["task_options"] == {"corruption": "ABA", "prepend_bos": True,
                                                          "metric": "logit_diff"}


def test_the_same_seed_gives_byte_identical_circuits(comparison, tiny_gpt2):
    """A second run with the same settings writes the same circuits, byte for byte, into the JSON record
    (and a different seed draws other prompts, so the check is not between two constants)."""
    def circuits(c):
        record = report.comparison_record(c)
        return json.dumps({m: (record[m]["circuit"], [g["heads"] for g in record[m]["grid"]])
                           for m in ("dense", "app")}, sort_keys=True).encode()

    again = run_comparison(tiny_gpt2, "ioi", n=12, eval_n=12, seed=0, model_name="tiny", show_progress=False,
                           scales=(0.0, 1.0), thresholds=(0.0,))
    assert circuits(again) == circuits(comparison)
    assert report.comparison_record(again)["pruning"]["scores"] == report.comparison_record(comparison)["pruning"]["scores"]
    other = run_comparison(tiny_gpt2, "ioi", n=12, eval_n=12, seed=1, model_name="tiny", show_progress=False,
                           scales=(0.0, 1.0), thresholds=(0.0,))
    assert other.eval_task.clean_prompts != comparison.eval_task.clean_prompts


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_outputs_are_one_set_replaced_whole(comparison, tmp_path, monkeypatch):
    import subprocess

    out = tmp_path / "run"
    first = report.write_outputs(comparison, out, 2, 4)
    assert {p.name for p in first} == set(_listing(out)) and "comparison.json" in _listing(out)
    before = {name: (out / name).read_bytes() for name in _listing(out)}
    # a run killed while writing left its temporary folder (a dead pid), and one killed between the two
    # renames left only the previous set, moved aside
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".run.tmp-{dead.pid}").mkdir()
    (tmp_path / f".run.tmp-{dead.pid}" / "comparison.json").write_text("{half")
    # an interrupted figure phase: the previous set survives intact and no temporary folder remains
    monkeypatch.setattr(report, "save_figures", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        report.write_outputs(comparison, out, 2, 4)
    monkeypatch.undo()
    assert {name: (out / name).read_bytes() for name in _listing(out)} == before
    assert _listing(tmp_path) == ["run"]  # the stale folder went too
    os.replace(out, tmp_path / f".run.old-{dead.pid}")
    report.write_outputs(comparison, out, 2, 4)  # restores the moved-aside set, then replaces it
    assert _listing(tmp_path) == ["run"] and set(_listing(out)) == set(before)


def test_an_output_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"notes\.txt.*new or empty folder"):
        report.check_output_folder(tmp_path)
    with pytest.raises(ValueError, match="is a file"):
        report.check_output_folder(tmp_path / "notes.txt")
    report.check_output_folder(tmp_path / "new")  # a new folder is fine


def test_path_patching_can_score_kl_while_perf_keeps_the_task_metric(tmp_path, capsys):
    from app_helpers.cli import main

    out = tmp_path / "kl"
    assert main(["run", "--model", "app-toy", "--task", "ioi", "--n", "8", "--eval-n", "8", "--size", "tutorial",
                 "--patching-metric", "kl", "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "comparison.json").read_text())
    assert record["dense"]["patching_metric"] == record["app"]["patching_metric"] == "kl"
    assert record["task_options"]["metric"] == "logit_diff"
    assert record["dense"]["cost"]["forward_passes"] > 0 and "WARNING" not in capsys.readouterr().out


def test_run_with_mlp_nodes_carries_mlps_into_the_record_the_table_and_the_figures(tmp_path, capsys):
    from app_helpers.cli import main
    from app_helpers.identities import MLP, as_edge

    out = tmp_path / "mlps"
    assert main(["run", "--model", "app-toy", "--task", "ioi", "--n", "8", "--eval-n", "8", "--size", "tutorial",
                 "--mlps", "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "comparison.json").read_text())
    circuit = Circuit.from_dict(record["dense"]["circuit"])
    assert circuit.mlps, "app-toy's IOI search with MLP nodes selects some MLP (else the test shows nothing)"
    edges = [as_edge(e) for e in record["dense"]["circuit"]["edges"]]
    assert {n.layer for e in edges for n in (e.sender, e.receiver) if isinstance(n, MLP)} <= set(circuit.mlps)
    assert "MLPs in circuit" in capsys.readouterr().out
    assert (out / "circuit_dense.png").stat().st_size > 0
    with pytest.raises(InputError, match="heads only"):
        run_comparison(None, engine_kwargs={"mlps": True}, baselines=True)


def test_baselines_run_beside_pp_and_app_with_the_same_selection_and_evaluation(tiny_gpt2):
    from app_helpers.baselines import Baselines
    from app_helpers.evaluation import CircuitEvaluator
    from app_helpers.search import select_heads
    from app_helpers.tasks import make_task

    loose = dict(scales=(0.0, 1.0), thresholds=(0.0,))
    c = run_comparison(tiny_gpt2, "ioi", n=12, eval_n=12, seed=0, model_name="tiny", show_progress=False,
                       baselines=True, **loose)
    names = [r.name for r in c.baselines]
    assert names == [f"{m}{s}" for m in ("activation patching", "EAP", "EAP-IG") for s in ("", " on the pruned set")]
    merged = c.pruning.merged
    for run in c.baselines:
        restricted = run.name.endswith("pruned set")
        assert run.candidates == (merged if restricted else None)
        if restricted:
            assert set(run.circuit.heads) <= merged
        assert run.cost.flops > 0 and len(run.grid.runs) == 2
    # activation patching: the chosen circuit is the selection rule applied to its head scores, at the
    # chosen setting, and its Perf is the held-out evaluator's
    ap = c.baselines[0]
    search_task = make_task(c.task, tiny_gpt2, n=c.n, seed=c.seed)  # make_split's search prompts
    scores = Baselines.from_task(tiny_gpt2, search_task).activation_patching().scores
    best = ap.grid.best
    assert list(ap.circuit.heads) == sorted(select_heads(scores, best.scale, best.min_value_threshold))
    assert ap.perf == pytest.approx(CircuitEvaluator(tiny_gpt2, c.eval_task).evaluate([ap.circuit])[0].perf)
    table = report.comparison_table(c)
    assert "EAP-IG on the pruned set" in table and "+ pruning" in table
    record = report.comparison_record(c)
    assert set(record["baselines"]) == set(names)
    json.dumps(report.standard_json(record))

