"""Tasks: exact prompts, positions and answers with GPT-2's BPE and with the word-level tokenizer."""
import dataclasses
import random

import pytest
import torch

from app_helpers import tasks
from app_helpers.tasks import TASKS, generate_sentences, make_task, words
from app_helpers.tasks.base import Tok, fill, pieces
from app_helpers.wordlevel import build_word_level_tokenizer, load_word_level_tokenizer, word_level_tokenizer

WORD_LEVEL_TASKS = [name for name, spec in TASKS.items() if not spec.bpe_only]
#: every (task, tokenizer) pair that must work: all tasks with GPT-2, all but Docstring word-level
CASES = [(name, "gpt2") for name in TASKS] + [(name, "word") for name in WORD_LEVEL_TASKS]


@pytest.fixture
def tokenizers(gpt2_tok, word_tok):
    return {"gpt2": gpt2_tok, "word": word_tok}


@pytest.fixture(params=["gpt2", "word"])
def tok(request, tokenizers):
    return tokenizers[request.param]


def decoded(task, i, corrupted=False):
    return task.str_tokens(i, corrupted)


# --- hand-checked examples ------------------------------------------------------------------------------
def test_ioi_gpt2_by_hand(gpt2_tok):
    t = make_task("ioi", gpt2_tok, 4, seed=0)
    assert t.clean_prompts[0] == "Then, Sean and George were cleaning the river. George handed the bag to"
    assert t.corrupted_prompts[0] == "Then, Jane and Lily were cleaning the river. Sam handed the bag to"
    # <|endoftext|> Then , Sean and George were cleaning the river . George handed the bag to
    assert t.clean_tokens[0, :16].tolist() == [50256, 6423, 11, 11465, 290, 4502, 547, 12724, 262, 7850, 13,
                                               4502, 10158, 262, 6131, 284]
    assert (t.clean_tokens[0, 16:] == 50256).all() and not t.attention_mask[0, 16:].any()  # right padding
    assert {k: int(v[0]) for k, v in t.word_pos.items()} == {"IO": 3, "S1": 5, "S2": 11, "S1+1": 6, "END": 15}
    assert t.correct[0] == 11465 and t.wrong[0] == 4502  # " Sean", " George"
    assert decoded(t, 0, corrupted=True)[3:6] == [" Jane", " and", " Lily"]


def test_ioi_word_level_by_hand(word_tok):
    t = make_task("ioi", word_tok, 4, seed=0)
    assert decoded(t, 0) == ["<|bos|>", "Then", ",", "Sean", "and", "George", "were", "cleaning", "the", "river",
                             ".", "George", "handed", "the", "bag", "to"]
    assert {k: int(v[0]) for k, v in t.word_pos.items()} == {"IO": 3, "S1": 5, "S2": 11, "S1+1": 6, "END": 15}
    assert word_tok.convert_ids_to_tokens([int(t.correct[0]), int(t.wrong[0])]) == ["Sean", "George"]


def test_greater_than_by_hand(gpt2_tok, word_tok):
    g = make_task("greater_than", gpt2_tok, 4, seed=0)
    assert g.clean_prompts[0] == "The epidemic went on from 1767 until 17"
    assert g.corrupted_prompts[0] == "The epidemic went on from 1701 until 17"
    assert decoded(g, 0) == ["<|endoftext|>", "The", " epidemic", " went", " on", " from", " 17", "67", " until",
                             " 17"]
    assert g.clean_tokens[0, 6] == 1596 and g.corrupted_tokens[0, 7] == 486  # " 17", "01"
    assert {k: int(v[0]) for k, v in g.word_pos.items()} == {"NOUN": 2, "YY": 7, "END": 9}
    a = g.answers
    assert [gpt2_tok.decode([i]) for i in a.correct_ids[0][a.correct_mask[0]]] == [f"{y}" for y in range(68, 100)]
    assert [gpt2_tok.decode([i]) for i in a.wrong_ids[0][a.wrong_mask[0]]] == [f"{y:02d}" for y in range(67)]
    w = make_task("greater_than", word_tok, 4, seed=0)
    assert decoded(w, 0) == ["<|bos|>", "The", "epidemic", "went", "on", "from", "17", "67", "until", "17"]
    assert decoded(w, 0, corrupted=True)[7] == "01"
    assert w.answers.correct_mask[0].sum() == 32 and w.answers.wrong_mask[0].sum() == 67


def test_pronouns_by_hand(gpt2_tok, word_tok):
    g = make_task("gendered_pronouns", gpt2_tok, 4, seed=0)
    assert g.clean_prompts[0] == "So Frank is the best player on the team, isn't"
    assert g.corrupted_prompts[0] == "That person is the best player on the team, isn't"
    assert g.clean_tokens[0, :3].tolist() == [50256, 2396, 5278] and g.corrupted_tokens[0, :3].tolist() == [
        50256, 2504, 1048]  # So Frank / That person
    assert (int(g.correct[0]), int(g.wrong[0])) == (339, 673)  # " he", " she"
    assert decoded(g, 0)[int(g.end_pos[0])] == "'t"
    w = make_task("gendered_pronouns", word_tok, 4, seed=0)
    assert decoded(w, 0)[-4:] == [",", "isn", "'", "t"] and decoded(w, 0, corrupted=True)[1:3] == ["That", "person"]
    assert word_tok.convert_ids_to_tokens([int(w.correct[0]), int(w.wrong[0])]) == ["he", "she"]


def test_name_induction_by_hand(gpt2_tok, word_tok):
    g = make_task("name_induction", gpt2_tok, 4, seed=0)
    assert g.clean_prompts[0] == "After dinner, Henrietta walked to the library. There, Henri"
    assert decoded(g, 0)[4:6] == [" Henri", "etta"] and decoded(g, 0)[-1] == " Henri"
    assert decoded(g, 0, corrupted=True)[4:6] == [" Urs", "ula"] and decoded(g, 0, corrupted=True)[-1] == " Rox"
    assert gpt2_tok.decode([int(g.correct[0])]) == "etta" and gpt2_tok.decode([int(g.wrong[0])]) == "anne"
    w = make_task("name_induction", word_tok, 4, seed=0)
    assert w.clean_prompts[0] == "After dinner, Karen Adams walked to the library. There, Karen"
    assert w.corrupted_prompts[0] == "After dinner, Roger Rogers walked to the library. There, Julia"
    # correct: the repeated name's surname; wrong: the surname of the name whose first token ends the
    # corrupted prompt (Julia Davis), which the clean prompt never mentions
    assert word_tok.convert_ids_to_tokens([int(w.correct[0]), int(w.wrong[0])]) == ["Adams", "Davis"]


def test_docstring_gpt2_by_hand(gpt2_tok):
    t = make_task("docstring", gpt2_tok, 4, seed=0)
    assert t.clean_prompts[0] == ('def compute(self, format, color, state, parent):\n    """Do the work.\n\n'
                                  "    :param format: next input\n    :param color: maximum table\n    :param")
    toks = decoded(t, 0)
    assert toks[int(t.word_pos["A"][0])] == toks[int(t.word_pos["A_DOC"][0])] == " format"
    assert toks[-2:] == [" :", "param"]
    a = t.answers
    assert gpt2_tok.decode(a.correct_ids[0, :1]) == " state"
    assert sorted(gpt2_tok.decode([i]) for i in a.wrong_ids[0][a.wrong_mask[0]]) == [" color", " format", " parent"]


# --- invariants for every task and both tokenizers --------------------------------------------------------
@pytest.mark.parametrize("name, which", CASES)
def test_tokens_are_bos_plus_the_prompt_right_padded(name, which, tokenizers):
    tok = tokenizers[which]
    t = make_task(name, tok, 12, seed=3)
    assert t.clean_tokens.shape == t.corrupted_tokens.shape and t.clean_tokens.dtype == torch.long
    for i in range(len(t)):
        n = int(t.lengths[i])
        for prompts, tokens in ((t.clean_prompts, t.clean_tokens), (t.corrupted_prompts, t.corrupted_tokens)):
            assert tokens[i, :n].tolist() == [tok.bos_token_id] + tok.encode(prompts[i], add_special_tokens=False)
        assert not t.attention_mask[i, n:].any() and t.attention_mask[i, :n].all()
        assert int(t.end_pos[i]) == n - 1 == int(t.word_pos["END"][i])
    # a group is one template: one length, so per-position group means are well defined
    for g in t.groups.unique():
        assert t.lengths[t.groups == g].unique().numel() == 1


@pytest.mark.parametrize("name, which", CASES)
def test_clean_and_corrupted_differ_exactly_in_the_corrupted_slots(name, which, tokenizers):
    spec, tok = TASKS[name], tokenizers[which]
    t = make_task(name, tok, 10, seed=5)
    # Re-draw the same examples (sampling is deterministic) to know which slots were changed.
    opts = spec.resolve(Tok(tok), dict(spec.option_defaults))
    examples = spec.sample(random.Random(5), 10, spec.pools(Tok(tok), **opts), **opts)
    for i, ex in enumerate(examples):
        expected, pos = set(), 1  # after BOS
        for (text, slot), (text2, _) in zip(pieces(t.templates[ex.group], ex.clean),
                                            pieces(t.templates[ex.group], ex.corrupted)):
            n = len(tok.encode(text, add_special_tokens=False))
            if text != text2:
                expected |= set(range(pos, pos + n))
            pos += n
        differ = (t.clean_tokens[i] != t.corrupted_tokens[i]).nonzero().flatten().tolist()
        assert set(differ) == expected and expected


@pytest.mark.parametrize("corruption, changed", [("ABC", {"IO", "S1", "S2"}), ("ABA", {"S2"}), ("ABD", {"S2"})])
def test_ioi_corruptions_touch_only_their_name_slots(gpt2_tok, corruption, changed):
    t = make_task("ioi", gpt2_tok, 20, seed=1, corruption=corruption)
    rows = torch.arange(len(t))
    at = {k: (t.clean_tokens[rows, v], t.corrupted_tokens[rows, v]) for k, v in t.word_pos.items()}
    for slot, (clean, corrupt) in at.items():
        assert ((clean != corrupt).all() if slot in changed else (clean == corrupt).all()), slot
    assert (at["S1"][0] == at["S2"][0]).all() and (at["IO"][0] != at["S1"][0]).all()
    assert (t.correct == at["IO"][0]).all() and (t.wrong == at["S1"][0]).all()
    if corruption == "ABC":  # three fresh distinct names, none of them a clean name
        names = torch.stack([at[s][1] for s in ("IO", "S1", "S2")] + [at["IO"][0], at["S1"][0]], 1)
        assert all(len(set(r)) == 5 for r in names.tolist())
    if corruption == "ABA":
        assert (at["S2"][1] == at["IO"][0]).all()


def test_ioi_mixes_abba_and_baba_half_and_half_over_many_templates(gpt2_tok):
    assert len(words.IOI_TEMPLATES) >= 15
    t = make_task("ioi", gpt2_tok, 40, seed=0)
    assert t.n_groups == 2 * len(words.IOI_TEMPLATES)
    baba = t.groups % 2 == 1
    assert int(baba.sum()) == 20
    # ABBA: IO before S1; BABA: S1 before IO
    assert (t.word_pos["IO"][~baba] < t.word_pos["S1"][~baba]).all()
    assert (t.word_pos["S1"][baba] < t.word_pos["IO"][baba]).all()
    assert len(set((t.groups // 2).tolist())) == len(words.IOI_TEMPLATES)  # 40 prompts cover all 16


def test_pronoun_answers_follow_the_name(gpt2_tok):
    t = make_task("gendered_pronouns", gpt2_tok, 20, seed=2)
    he, she = gpt2_tok.encode(" he"), gpt2_tok.encode(" she")
    names = {gpt2_tok.encode(" " + n)[0]: g for g, ns in (("m", words.MALE_NAMES), ("f", words.FEMALE_NAMES))
             for n in ns}
    genders = [names[int(x)] for x in t.clean_tokens[torch.arange(20), t.word_pos["NAME"]]]
    assert genders.count("m") == genders.count("f") == 10
    assert t.correct.tolist() == [he[0] if g == "m" else she[0] for g in genders]
    assert t.wrong.tolist() == [she[0] if g == "m" else he[0] for g in genders]


def test_name_induction_answer_is_the_second_token_of_the_repeated_name(tok):
    t = make_task("name_induction", tok, 16, seed=4)
    rows = torch.arange(16)
    clean = t.clean_tokens
    assert (clean[rows, t.word_pos["NAME"]] == clean[rows, t.end_pos]).all()
    assert (clean[rows, t.word_pos["NAME+1"]] == t.correct).all()
    assert (t.correct != t.wrong).all()
    assert (t.corrupted_tokens[rows, t.word_pos["NAME"]] != t.corrupted_tokens[rows, t.end_pos]).all()


def test_name_induction_name_styles(gpt2_tok, word_tok):
    full = make_task("name_induction", gpt2_tok, 6, seed=0, names="full")
    rows = torch.arange(6)
    firsts = [gpt2_tok.decode([int(x)]) for x in full.clean_tokens[rows, full.word_pos["NAME"]]]
    lasts = [gpt2_tok.decode([int(x)]) for x in full.correct]
    assert all(f[1:] in words.NAMES and s[1:] in words.SURNAMES for f, s in zip(firsts, lasts))
    split = make_task("name_induction", gpt2_tok, 6, seed=0)  # auto: GPT-2 splits enough rare names
    assert all(gpt2_tok.decode(x).strip() in words.RARE_NAMES
               for x in split.clean_tokens[rows[:, None], split.word_pos["NAME"][:, None] + torch.arange(2)])
    with pytest.raises(ValueError, match="exactly two tokens"):
        make_task("name_induction", word_tok, 4, names="single")


def test_greater_than_answer_sets_partition_the_years(gpt2_tok):
    t = make_task("greater_than", gpt2_tok, 30, seed=0, metric="prob_diff")
    assert t.metric == "prob_diff"
    years = [int(gpt2_tok.decode([int(x)])) for x in t.clean_tokens[torch.arange(30), t.word_pos["YY"]]]
    a = t.answers
    for i, yy in enumerate(years):
        assert 2 <= yy <= 98
        correct = {int(gpt2_tok.decode([x])) for x in a.correct_ids[i][a.correct_mask[i]].tolist()}
        wrong = {int(gpt2_tok.decode([x])) for x in a.wrong_ids[i][a.wrong_mask[i]].tolist()}
        assert correct == set(range(yy + 1, 100)) and wrong == set(range(yy))


@pytest.fixture(scope="module")
def digit_tok(tmp_path_factory):
    """A word-level tokenizer that writes numbers digit by digit, as Qwen's does (" 1732" → 1, 7, 3, 2)."""
    return build_word_level_tokenizer(tmp_path_factory.mktemp("digits"), digits="single")


def test_greater_than_digit_by_digit_by_hand(digit_tok, capsys):
    t = make_task("greater_than", digit_tok, 40, seed=0)
    assert "two positions" in capsys.readouterr().out and t.options["digits"] == "single"
    k = len(words.GREATER_THAN_TEMPLATES)
    assert t.templates[k:] == [x + "{TENS}" for x in t.templates[:k]]
    a = t.answers
    for i, (clean, corrupted) in enumerate(zip(t.clean_prompts, t.corrupted_prompts)):
        yy = decoded(t, i)[int(t.word_pos["YY"][i])] + decoded(t, i)[int(t.word_pos["YY"][i]) + 1]
        second = int(t.groups[i]) >= k
        digit = int(yy[1] if second else yy[0])  # the digit of YY asked for at END
        # the prompt ends at "17" (tens digit asked) or at "17" + YY's tens digit (units digit asked)
        assert clean.endswith(" 17" + (yy[0] if second else "")) and decoded(t, i)[-1] == (yy[0] if second else "7")
        assert corrupted == clean.replace("17" + yy, "1701", 1)
        correct = [int(x) for x in digit_tok.convert_ids_to_tokens(a.correct_ids[i][a.correct_mask[i]].tolist())]
        wrong = [int(x) for x in digit_tok.convert_ids_to_tokens(a.wrong_ids[i][a.wrong_mask[i]].tolist())]
        assert correct == list(range(digit + 1, 10)) and wrong == list(range(digit)) and 0 < digit < 9
    assert {int(g) >= k for g in t.groups} == {False, True}  # both positions present
    pairs = make_task("greater_than", word_level_tokenizer(), 4, seed=0)
    assert pairs.options["digits"] == "pairs" and len(pairs.templates) == k


def test_greater_than_digit_modes_fail_clearly(digit_tok, gpt2_tok):
    with pytest.raises(ValueError, match="two-digit year endings.*digits='single'"):
        make_task("greater_than", digit_tok, 4, digits="pairs")
    with pytest.raises(ValueError, match="one token per digit"):
        make_task("greater_than", gpt2_tok, 4, digits="single")
    with pytest.raises(ValueError, match="unknown year-digit mode"):
        make_task("greater_than", gpt2_tok, 4, digits="three")


def test_greater_than_split_resolves_digits_once(digit_tok, capsys):
    split = tasks.make_split("greater_than", digit_tok, 10, 10, seed=0)
    assert capsys.readouterr().out.count("two positions") == 1
    assert split.held_out.options["digits"] == "single" and split.held_out.templates == split.search.templates


def test_seeded_and_deterministic(gpt2_tok):
    a, b = make_task("ioi", gpt2_tok, 10, seed=7), make_task("ioi", gpt2_tok, 10, seed=7)
    assert a.clean_prompts == b.clean_prompts and torch.equal(a.corrupted_tokens, b.corrupted_tokens)
    assert make_task("ioi", gpt2_tok, 10, seed=8).clean_prompts != a.clean_prompts


def test_model_gives_its_tokenizer_and_device(tiny_gpt2):
    t = make_task("ioi", tiny_gpt2, 3)
    assert t.clean_tokens[0, 0] == 50256 and t.device == torch.device(tiny_gpt2.cfg.device)


# --- the data object ------------------------------------------------------------------------------------
def test_subset_slice_and_to(gpt2_tok):
    t = make_task("ioi", gpt2_tok, 10, seed=0)
    s = t.subset([2, 5])
    assert len(s) == 2 and s.clean_prompts == [t.clean_prompts[2], t.clean_prompts[5]]
    assert s.clean_tokens.shape[1] == int(t.lengths[[2, 5]].max())  # trailing padding trimmed
    assert torch.equal(s.word_pos["S2"], t.word_pos["S2"][[2, 5]])
    assert torch.equal(t[:3].end_pos, t.end_pos[:3]) and len(t[torch.tensor([1])]) == 1
    assert t.to("cpu") is t and len(t) == 10


def test_mismatched_tensors_are_rejected(gpt2_tok):
    t = make_task("ioi", gpt2_tok, 4, seed=0)
    with pytest.raises(ValueError, match="differ in shape"):
        dataclasses.replace(t, corrupted_tokens=t.corrupted_tokens[:, :-1])
    with pytest.raises(ValueError, match="rows for 4 prompts"):
        dataclasses.replace(t, end_pos=t.end_pos[:3])
    short = int(t.lengths.argmin())
    assert t.lengths[short] < t.clean_tokens.shape[1]
    bad_end = t.end_pos.clone()
    bad_end[short] = t.clean_tokens.shape[1] - 1
    with pytest.raises(ValueError, match="padding position"):
        dataclasses.replace(t, end_pos=bad_end)
    with pytest.raises(ValueError, match="sets of correct answers"):
        make_task("greater_than", gpt2_tok, 2).correct


# --- bad input ------------------------------------------------------------------------------------------
def test_bad_input_is_a_clear_error(gpt2_tok, word_tok):
    with pytest.raises(ValueError, match="unknown task 'iol'; known tasks: ioi, greater_than"):
        make_task("iol", gpt2_tok, 4)
    for n in (0, -3, 2.5):
        with pytest.raises(ValueError, match=r"n \(the number of prompts\) must be (at least 1|an integer)"):
            make_task("ioi", gpt2_tok, n)
    with pytest.raises(ValueError, match="unknown IOI corruption 'XYZ'"):
        make_task("ioi", gpt2_tok, 4, corruption="XYZ")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['names'\] for task 'ioi'"):
        make_task("ioi", gpt2_tok, 4, names="full")
    with pytest.raises(ValueError, match="not available for this tokenizer"):
        make_task("docstring", word_tok, 4)
    with pytest.raises(ValueError, match="unknown metric"):
        make_task("ioi", gpt2_tok, 4, metric="accuracy")


def test_tokenizer_lacking_the_words_lists_the_rejected_ones(tmp_path, gpt2_tok):
    small = build_word_level_tokenizer(tmp_path, texts=["Then, Mary and John went to the store. gave a drink"])
    with pytest.raises(ValueError) as err:
        make_task("ioi", small, 4)
    msg = str(err.value)
    assert "only 2 of 119 IOI names" in msg and "'Sarah'" in msg and "'Mary'" not in msg
    # GPT-2 splits " Ella" in two: it is filtered out, and the task still builds
    female = tasks.get_task("gendered_pronouns").pools(Tok(gpt2_tok))["female"]
    assert "Ella" not in female and len(female) == len(words.FEMALE_NAMES) - 1


# --- tokenizer-free sentences and the word-level tokenizer ------------------------------------------------
@pytest.mark.parametrize("name", WORD_LEVEL_TASKS)
def test_generated_sentences_are_the_word_level_prompts(name, word_tok):
    sentences = generate_sentences(name, 8, seed=11)
    t = make_task(name, word_tok, 8, seed=11)
    assert [s.text for s in sentences] == t.clean_prompts and [s.group for s in sentences] == t.groups.tolist()
    for i, s in enumerate(sentences):
        answer = word_tok.encode(s.answer, add_special_tokens=False)
        assert len(answer) == 1 and answer[0] in t.answers.correct_ids[i][t.answers.correct_mask[i]].tolist()
    assert generate_sentences(name, 8, seed=11) == sentences


def test_word_level_tokenizer_covers_every_task_word(word_tok):
    tok = Tok(word_tok)
    for name in WORD_LEVEL_TASKS:
        spec = TASKS[name]
        raw, kept = spec.pools(None), spec.pools(tok, **spec.option_defaults)
        for key in raw:
            assert len(kept[key]) == len(raw[key]), (name, key)
    ids = word_tok.encode
    assert len(ids(" Mary", add_special_tokens=False)) == 1
    assert word_tok.convert_ids_to_tokens(ids("Mary,", add_special_tokens=False)) == ["Mary", ","]
    assert word_tok.convert_ids_to_tokens(ids(" 1732", add_special_tokens=False)) == ["17", "32"]
    assert ids(" Zanzibar", add_special_tokens=False) == [word_tok.unk_token_id]
    assert [word_tok.bos_token, word_tok.pad_token] == ["<|bos|>", "<|pad|>"]


def test_word_level_tokenizer_round_trips_through_its_directory(tmp_path, monkeypatch):
    built = build_word_level_tokenizer(tmp_path / "wl", extra_words=["Zanzibar"])
    loaded = load_word_level_tokenizer(tmp_path / "wl")
    text = "Then, Mary went to Zanzibar in 1732."
    assert loaded.encode(text) == built.encode(text)
    assert loaded.unk_token_id not in loaded.encode(text)
    monkeypatch.setenv("APP_HELPERS_CACHE", str(tmp_path / "cache"))
    word_level_tokenizer.cache_clear()
    try:
        cached = word_level_tokenizer()
        assert cached.get_vocab() == build_word_level_tokenizer(tmp_path / "again").get_vocab()
        assert any(p.name.startswith("word-level-") for p in (tmp_path / "cache").iterdir())
    finally:
        word_level_tokenizer.cache_clear()


def test_templates_fill_as_written():
    assert fill("Then, {IO} and {S1} went", {"IO": "Mary", "S1": "John"}) == "Then, Mary and John went"
    assert pieces("17{YY} to", {"YY": "32"}) == [("17", None), ("32", "YY"), (" to", None)]


# --- search / held-out splits -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ioi", "greater_than", "gendered_pronouns", "name_induction", "docstring"])
def test_held_out_prompts_never_repeat_a_search_prompt(name, word_tok, gpt2_tok):
    from app_helpers.tasks import get_task, make_split

    tok = gpt2_tok if get_task(name).bpe_only else word_tok
    split = make_split(name, tok, n=100, eval_n=200, seed=0)
    search = set(zip(split.search.clean_prompts, split.search.corrupted_prompts))
    held = list(zip(split.held_out.clean_prompts, split.held_out.corrupted_prompts))
    assert len(held) == 200 and not search & set(held)
    assert split.search.clean_prompts == make_task(name, tok, n=100, seed=0).clean_prompts


def test_a_plain_second_seed_would_have_overlapped(word_tok):
    """Why the split exists: gendered pronouns have few distinct prompts, so an independent draw repeats
    search prompts (the split test above would fail on it)."""
    search = make_task("gendered_pronouns", word_tok, n=100, seed=0)
    naive = make_task("gendered_pronouns", word_tok, n=200, seed=1000)
    assert set(search.clean_prompts) & set(naive.clean_prompts)


def test_a_split_that_cannot_be_held_out_says_so(word_tok, monkeypatch):
    from app_helpers import tasks

    monkeypatch.setattr(tasks, "MAX_HELD_OUT_DRAWS", 1)
    with pytest.raises(ValueError, match="held-out prompts that differ"):
        tasks.make_split("gendered_pronouns", word_tok, n=700, eval_n=700, seed=0)
