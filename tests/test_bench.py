"""The benchmark's claims that are not timings: both engines find the same circuits; the table lines up."""
import pytest

from app_helpers.bench import engine_vs_naive, format_table


@pytest.fixture(scope="module")
def tiny():
    from app_helpers.gpt2_offline import random_gpt2
    from app_helpers.tasks import make_task

    model = random_gpt2(n_layers=2, n_heads=2, d_model=32, seed=0)
    return model, make_task("ioi", model, n=4, seed=0)


def test_engine_and_naive_rows_report_identical_circuits(tiny):
    rows = engine_vs_naive(*tiny, grid=True)
    assert [r[0] for r in rows] == ["one search: naive vs engine", "16-run grid: naive vs engine"]
    assert "same circuit: True" in rows[0][4]
    assert "same 16 circuits: True" in rows[1][4]
    assert all(r[3].endswith("x") and float(r[3][:-1]) > 0 for r in rows)


def test_table_columns_line_up():
    table = format_table([("a", "1 s", "2 s", "0.5x", "note"), ("longer name", "10 s", "1 s", "10.0x", "")])
    header, rule, first, second = table.splitlines()
    column = header.index("baseline")
    assert first.index("1 s") == second.index("10 s") == column
    assert rule.split()[0] == "-" * len("longer name")


def test_a_scale_row_measures_both_engines_on_a_random_grouped_query_model():
    from app_helpers.bench import scale_row
    from app_helpers.gpt2_offline import QWEN25_05B_CONFIG, random_model

    tiny_qwen = random_model(**{**QWEN25_05B_CONFIG, "num_hidden_layers": 3, "hidden_size": 56,
                                "intermediate_size": 64, "vocab_size": 50257})
    assert (tiny_qwen.cfg.n_heads, tiny_qwen.cfg.n_key_value_heads) == (14, 2)
    label, naive, fast, ratio, notes = scale_row("Qwen", tiny_qwen, 4, [(0, 0), (1, 3)], ((2, 5),))
    assert label == "Qwen-shaped (random), 2 senders x 4 receivers"
    assert "3x14 heads; 8 evaluations, N=4" in notes  # 2 into the logits, 2 x 3 into head 2.5
    assert naive.endswith(" s") and fast.endswith(" s") and float(ratio[:-1]) > 0
