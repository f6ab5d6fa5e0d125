"""The high-level IOI model planted in app-planted: known answers for every kind of intervention."""
import pytest

from app_helpers.circuits import reference_circuit
from app_helpers.toy.ioi_algorithm import ABLATED, ROLE_EDGES, ROLES, Story, run, run_upto

ABBA = Story(("Mary", "John"), "John")  # "Mary and John ... John gave it to" → Mary
BABA = Story(("John", "Mary"), "John")  # "John and Mary ... John gave it to" → Mary
ABC = Story(("Kate", "Tom"), "Ann")  # no name repeats


def test_unpatched_answer_is_the_name_that_does_not_repeat():
    assert run(ABBA) == {"Mary": 1.0}
    assert run(BABA) == {"Mary": 1.0}
    assert run(ABC) == {"Kate": 0.5, "Tom": 0.5}
    assert ABBA.answer == "Mary" and ABC.answer is None


@pytest.mark.parametrize("role", ["induction", "s-inhibition"])
def test_middle_roles_carry_the_repeated_name(role):
    # the source repeats Mary: the base now suppresses Mary → John
    assert run(ABBA, {role: Story(("John", "Mary"), "Mary")}) == {"John": 1.0}
    # the source repeats John, in the other order: same name, same answer
    assert run(ABBA, {role: BABA}) == {"Mary": 1.0}
    # a repeated name the base does not contain, or none at all (ABC): both names equally
    assert run(ABBA, {role: Story(("Ann", "Tom"), "Tom")}) == {"Mary": 0.5, "John": 0.5}
    assert run(ABBA, {role: ABC}) == {"Mary": 0.5, "John": 0.5}


def test_previous_token_heads_decide_whether_the_repeat_is_found():
    # a source that remembers John (the base's S2 name) at any slot: found, answer unchanged
    assert run(ABBA, {"previous token": Story(("John", "Ann"), "Ann")}) == {"Mary": 1.0}
    # neither of the source's names is John: no repeat found, no inhibition
    assert run(ABBA, {"previous token": Story(("Ann", "Mary"), "Mary")}) == {"Mary": 0.5, "John": 0.5}


def test_name_movers_output_the_sources_answer():
    assert run(ABBA, {"name mover": Story(("Ann", "Tom"), "Tom")}) == {"Ann": 1.0}
    assert run(ABBA, {"name mover": ABC}) == {"Kate": 0.5, "Tom": 0.5}


@pytest.mark.parametrize("role", list(ROLES))
def test_ablating_any_role_leaves_no_preference(role):
    assert run(ABBA, {role: ABLATED}) == {"Mary": 0.5, "John": 0.5}


def test_later_patches_override_earlier_ones():
    assert run(ABBA, {"induction": ABBA, "s-inhibition": Story(("Tom", "Mary"), "Mary")}) == {"John": 1.0}
    assert run_upto(ABBA, "induction") == "John" and run_upto(ABC, "s-inhibition") is None


def test_bad_patches_are_refused():
    with pytest.raises(ValueError, match="unknown role"):
        run(ABBA, {"mover": ABC})
    with pytest.raises(ValueError, match="source Story or ABLATED"):
        run(ABBA, {"induction": "John"})


def test_the_map_meets_the_issue_shape_and_matches_the_reference_circuit():
    heads = [h for hs in ROLES.values() for h in hs]
    assert len(heads) == len(set(heads)) >= 10
    assert len({layer for layer, _ in heads}) >= 4 and len(ROLES) >= 4
    assert sum(len(hs) >= 2 for hs in ROLES.values()) >= 2
    truth = reference_circuit("ioi_planted")
    assert set(truth.heads) == set(heads)
    assert {r: sorted(h) for r, h in truth.by_role().items()} == {r: sorted(h) for r, h in ROLES.items()}
    for sender, receiver, component in ROLE_EDGES:
        for s in ROLES[sender]:
            for r in (ROLES[receiver] if receiver else [None]):
                assert (s, r, component) in truth.edges
    # information flows forward: every edge goes to a later layer
    assert all(e.receiver is None or e.sender[0] < e.receiver[0] for e in truth.edges)
