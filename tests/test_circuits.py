"""Circuits: normalisation, JSON round trip, overlap scores, reference circuits."""
import math

import pytest
import torch

from app_helpers.circuits import Circuit, overlap, reference_circuit


def test_heads_are_normalised_so_order_and_spelling_do_not_matter():
    a = Circuit(heads=((9, 9), "0.1", [10, 0], (9, 9)))
    b = Circuit(heads=("10.0", (0, 1), "9.9"))
    assert a == b and a.heads == ((0, 1), (9, 9), (10, 0)) and len(a) == 3
    assert "9.9" in a and (10, 0) in a and (1, 1) not in a


def test_json_round_trip_keeps_roles_edges_and_mlps(tmp_path):
    c = Circuit(heads=("9.9", "7.3", "0.1"), name="toy", description="hand-made",
                roles={"9.9": "name mover", (7, 3): "s-inhibition"},
                edges=[("7.3", "9.9", "q"), ("9.9", None, "logits"), ((0, 1), (7, 3), "k")], mlps=[9, 8])
    assert c.roles == {(7, 3): "s-inhibition", (9, 9): "name mover"}
    assert c.mlps == (8, 9) and len(c.edges) == 3
    again = Circuit.from_json(c.to_json())
    assert again == c
    path = c.save(tmp_path / "sub" / "toy.json")
    assert Circuit.load(path) == c
    assert '"9.9": "name mover"' in path.read_text()


def test_head_mask_and_from_mask():
    c = Circuit(heads=((1, 2), (0, 0)))
    mask = c.head_mask(2, 3)
    assert mask.tolist() == [[True, False, False], [False, False, True]]
    assert Circuit.from_mask(mask) == c
    with pytest.raises(ValueError, match="outside a 2x2 model: 1.2"):
        c.head_mask(2, 2)


def test_overlap_on_constructed_sets():
    c, r = [(0, 0), (1, 1), (2, 2)], [(1, 1), (2, 2), (3, 3), (4, 4)]
    o = overlap(c, r)
    assert (o.true_positives, o.false_positives, o.false_negatives) == (2, 1, 2)
    assert o.tpr == 0.5 and not hasattr(o, "recall")  # one name for one number
    assert o.precision == pytest.approx(2 / 3) and o.iou == pytest.approx(2 / 5)
    assert overlap(r, r).iou == 1.0 and overlap(c, [(9, 9)]).iou == 0.0
    empty = overlap([], [])
    assert math.isnan(empty.tpr) and math.isnan(empty.precision) and math.isnan(empty.iou)


def test_reference_circuits_load_with_their_roles():
    wang = reference_circuit("ioi_wang")
    assert len(wang) == 26 and len(wang.roles) == 26
    sizes = {role: len(heads) for role, heads in wang.by_role().items()}
    assert sizes == {"name mover": 3, "backup name mover": 8, "negative name mover": 2, "s-inhibition": 4,
                     "induction": 4, "duplicate token": 3, "previous token": 2}
    assert wang.roles[(9, 9)] == "name mover" and wang.roles[(10, 7)] == "negative name mover"
    app = reference_circuit("ioi_app_pp")
    assert len(app) == 21
    # by hand: 18 shared heads; APP adds 4.3, 6.0, 7.1
    assert set(app.heads) - set(wang.heads) == {(4, 3), (6, 0), (7, 1)}
    o = overlap(app, wang)
    assert o.tpr == pytest.approx(18 / 26) and o.precision == pytest.approx(18 / 21)
    assert o.iou == pytest.approx(18 / 29)
    gt = reference_circuit("greater_than_hanna")
    assert gt.heads == ((5, 1), (5, 5), (6, 9), (7, 10), (8, 8), (8, 11), (9, 1)) and gt.mlps == (8, 9, 10, 11)
    assert Circuit.from_json(wang.to_json()) == wang
    assert wang.head_mask(12, 12).sum() == 26


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="layer.head"):
        Circuit(heads=("9",))
    with pytest.raises(ValueError, match="non-negative"):
        Circuit(heads=((-1, 2),))
    with pytest.raises(ValueError, match="roles given for heads not in the circuit"):
        Circuit(heads=("1.1",), roles={"2.2": "x"})
    with pytest.raises(ValueError, match="component must be one of"):
        Circuit(heads=("1.1",), edges=[("1.1", "2.2", "z")])
    with pytest.raises(ValueError, match="receiver None"):
        Circuit(heads=("1.1", "2.2"), edges=[("1.1", "2.2", "logits")])
    with pytest.raises(ValueError, match=r"edges touch heads not in the circuit: 2\.2$"):
        Circuit(heads=("1.1",), edges=[("1.1", "2.2", "v")])
    with pytest.raises(ValueError, match="not a circuit"):
        Circuit.from_dict({"nodes": []})
    with pytest.raises(ValueError, match="unknown reference circuit 'ioi'; known: ioi_wang"):
        reference_circuit("ioi")
    assert torch.equal(Circuit(heads=()).head_mask(1, 1), torch.zeros(1, 1, dtype=torch.bool))
