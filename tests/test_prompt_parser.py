"""Prompt syntax as A1111 reads it: emphasis, editing/alternation schedules, AND, extra networks, styles.

Expected values follow A1111's `modules/prompt_parser.py` (lark grammar in webui/prompts/scheduling.py's
docstring), `extra_networks.py` and `styles.py`; the doctest examples from A1111 are among them. Notable
A1111 behaviours pinned here: a prompt the grammar rejects (a stray `|`, a dangling backslash) is used
unchanged for every step; `when` with a `.` is a fraction and `int()` truncates; a boundary below 1 adds
no entry; the hires pass counts on from the first pass; BREAK inside brackets gets its -1 multiplied.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from webui.prompts.attention import (EMPHASIS_MODES, apply_emphasis, parse_prompt_attention,
                                     parse_prompt_attention_for_mode)
from webui.prompts.extra_networks import ExtraNetworkParams, parse_extra_networks, parse_prompt, parse_prompts
from webui.prompts.scheduling import (PromptSchedule, get_learned_conditioning_prompt_schedules,
                                      get_multicond_prompt_list, get_prompt_schedules, schedule_index_at,
                                      schedule_text_at)
from webui.prompts.styles import PromptStyle, StyleDatabase, apply_styles_to_prompt, merge_prompts

# (prompt, expected [[text, weight], ...])
ATTENTION_CASES = [
    ('', [['', 1.0]]),
    ('normal text', [['normal text', 1.0]]),
    ('an (important) word', [['an ', 1.0], ['important', 1.1], [' word', 1.0]]),
    ('(unbalanced', [['unbalanced', 1.1]]),
    ('\\(literal\\]', [['(literal]', 1.0]]),
    ('(unnecessary)(parens)', [['unnecessaryparens', 1.1]]),
    ('a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).', [['a ', 1.0], ['house', 1.5730000000000004], [' ', 1.1], ['on', 1.0], [' a ', 1.1], ['hill', 0.55], [', sun, ', 1.1], ['sky', 1.4641000000000006], ['.', 1.1]]),
    ('(a:1.5) [b] ((c))', [['a', 1.5], [' ', 1.0], ['b', 0.9090909090909091], [' ', 1.0], ['c', 1.2100000000000002]]),
    ('(a:.5)', [['a', 0.5]]),
    ('(a:-1)', [['a', -1.0]]),
    ('(a :1.2)', [['a ', 1.2]]),
    ('(a: 1.2 )', [['a', 1.2]]),
    ('((a))', [['a', 1.2100000000000002]]),
    ('[[a]]', [['a', 0.8264462809917354]]),
    ('[a', [['a', 0.9090909090909091]]),  # unclosed `[` divides at the end
    ('a)', [['a)', 1.0]]),
    ('a]', [['a]', 1.0]]),
    ('(a[b)c]', [['a', 1.1], ['b', 1.0], ['c', 0.9090909090909091]]),  # interleaved brackets: each closer multiplies its own span
    ('\\\\', [['\\', 1.0]]),
    ('a\\b', [['ab', 1.0]]),  # a lone backslash is dropped
    ('a:b', [['a:b', 1.0]]),
    ('a:1.2', [['a:1.2', 1.0]]),
    (':1.2)', [[':1.2)', 1.0]]),
    ('(a:b)', [['a:b', 1.1]]),  # not a number: the `:` is text, `)` is 1.1
    ('(a:1.2:1.3)', [['a:1.2', 1.3]]),  # only the last `:number)` is a weight
    ('a BREAK b', [['a', 1.0], ['BREAK', -1], ['b', 1.0]]),
    ('BREAK', [['', 1.0], ['BREAK', -1], ['', 1.0]]),  # A1111 keeps the empty texts on both sides
    ('(a BREAK b:1.3)', [['a', 1.3], ['BREAK', -1.3], ['b', 1.3]]),  # inside brackets the -1 is multiplied (no longer a break)
    ('aBREAKb', [['aBREAKb', 1.0]]),
    ('a BREAK\nb', [['a', 1.0], ['BREAK', -1], ['b', 1.0]]),
    ('[a BREAK b]', [['a', 0.9090909090909091], ['BREAK', -0.9090909090909091], ['b', 0.9090909090909091]]),
    ('(猫:1.2) 🐱', [['猫', 1.2], [' 🐱', 1.0]]),
    ('((a:2))', [['a', 2.2]]),
    ('(a)(b:1.1)', [['ab', 1.1]]),
    ('[(a)]', [['a', 1.0]]),
    ('(a:0)', [['a', 0.0]]),
    ('(a:+2)', [['a', 2.0]]),
    ('((a) b', [['a', 1.2100000000000002], [' b', 1.1]]),
    ('\\(a:1.2\\)', [['(a:1.2)', 1.0]]),
    ('(a:1e2)', [['a:1e2', 1.1]]),  # `[.\d]+` stops at `e`: literal text, outer `)` is 1.1
    ('a BREAK BREAK b', [['a', 1.0], ['BREAK', -1], ['', 1.0], ['BREAK', -1], ['b', 1.0]]),
    ('(a]', [['a]', 1.1]]),
    ('x\\:y', [['x:y', 1.0]]),
]

# (prompt, args after the prompt list, expected schedule); args = (base_steps[, hires_steps[, use_old]])
SCHEDULE_CASES = [
    ('test', (10,), [[10, 'test']]),
    ('a [b:3]', (10,), [[3, 'a '], [10, 'a b']]),
    ('a [b: 3]', (10,), [[3, 'a '], [10, 'a b']]),
    ('a [[[b]]:2]', (10,), [[2, 'a '], [10, 'a [[b]]']]),
    ('[(a:2):3]', (10,), [[3, ''], [10, '(a:2)']]),
    ('a [b : c : 1] d', (10,), [[1, 'a b  d'], [10, 'a  c  d']]),
    ('a[b:[c:d:2]:1]e', (10,), [[1, 'abe'], [2, 'ace'], [10, 'ade']]),
    ('a [unbalanced', (10,), [[10, 'a [unbalanced']]),
    ('a [b:.5] c', (10,), [[5, 'a  c'], [10, 'a b c']]),
    ('((a][:b:c [d:3]', (10,), [[3, '((a][:b:c '], [10, '((a][:b:c d']]),
    ('[a|(b:1.1)]', (10,), [[1, 'a'], [2, '(b:1.1)'], [3, 'a'], [4, '(b:1.1)'], [5, 'a'], [6, '(b:1.1)'], [7, 'a'], [8, '(b:1.1)'], [9, 'a'], [10, '(b:1.1)']]),
    ('[fe|]male', (10,), [[1, 'female'], [2, 'male'], [3, 'female'], [4, 'male'], [5, 'female'], [6, 'male'], [7, 'female'], [8, 'male'], [9, 'female'], [10, 'male']]),
    ('[fe|||]male', (10,), [[1, 'female'], [2, 'male'], [3, 'male'], [4, 'male'], [5, 'female'], [6, 'male'], [7, 'male'], [8, 'male'], [9, 'female'], [10, 'male']]),
    ('[from::5]', (10,), [[5, 'from'], [10, '']]),
    ('a [b:c:0.25] d', (10,), [[2, 'a b d'], [10, 'a c d']]),
    ('[b:c:1.0]', (10,), [[10, 'b']]),
    ('[b:c:0]', (10,), [[10, 'c']]),
    ('[b:c:-1]', (10,), [[10, 'c']]),
    ('[b:c:100]', (10,), [[10, 'b']]),
    ('[b:c:1e1]', (10,), [[10, 'b']]),  # no `.`: absolute 10
    ('[ red : green : 0.5 ]', (10,), [[5, ' red '], [10, ' green ']]),
    ('[a:b:c:d]', (10,), [[10, '[a:b:c:d]']]),
    ('[a:b:]', (10,), [[10, '[a:b:]']]),
    ('[:]', (10,), [[10, '[:]']]),
    ('(a:b)', (10,), [[10, '(a:b)']]),  # emphasis stays text for parse_prompt_attention
    ('a:1.2', (10,), [[10, 'a:1.2']]),
    ('[a:3', (10,), [[10, '[a:3']]),
    ('a|b [c:3]', (10,), [[10, 'a|b [c:3]']]),  # `|` outside an alternation: unparsable, scheduling ignored
    ('\\[a:3]', (10,), [[10, '\\[a:3]']]),  # escaped bracket is plain text
    ('a [b:3] \\', (10,), [[10, 'a [b:3] \\']]),  # dangling backslash: unparsable
    ('[a|b] [c:3]', (4,), [[1, 'a '], [2, 'b '], [3, 'a '], [4, 'b c']]),
    ('[a|[b:c:2]]', (4,), [[1, 'a'], [2, 'b'], [3, 'a'], [4, 'c']]),
    ('[[a|b]:c:2]', (4,), [[1, 'a'], [2, 'b'], [3, 'c'], [4, 'c']]),
    ('[a||b]', (4,), [[1, 'a'], [2, ''], [3, 'b'], [4, 'a']]),
    ('[|]', (3,), [[1, ''], [2, ''], [3, '']]),
    ('[a:b:3][c:d:3]', (10,), [[3, 'ac'], [10, 'bd']]),
    ('[[a:2]:3]', (10,), [[2, ''], [3, ''], [10, 'a']]),  # duplicate texts are not merged
    ('[a:1.5]', (10,), [[10, '']]),  # 15 clamps to 10: `from` (empty) for every step
    ('猫 [犬:鳥:0.5]', (10,), [[5, '猫 犬'], [10, '猫 鳥']]),
    ('a\n[b:c:2]', (10,), [[2, 'a\nb'], [10, 'a\nc']]),
    ('[a:b:2.5e-1]', (10,), [[2, 'a'], [10, 'b']]),  # int(2.5) == 2
    ('[a:b:.]', (10,), [[10, '[a:b:.]']]),
    ('[(a|b):3]', (10,), [[10, '[(a|b):3]']]),  # inner `(a|b)` is no construct, so the outer fails and `|` is stray
    ('[a:(b:1.2):3]', (10,), [[3, 'a'], [10, '(b:1.2)']]),
    ('[a:b:3.]', (10,), [[10, 'a']]),  # `3.` is a fraction: 30 clamps to 10
    ('[a:[b:c:7]:3]', (10,), [[3, 'a'], [7, 'b'], [10, 'c']]),
    ('[a:b:+3]', (10,), [[3, 'a'], [10, 'b']]),
    ('[a:b:3 ]', (10,), [[3, 'a'], [10, 'b']]),
    ('a [b:c:3] d [e:f:6]', (10,), [[3, 'a b d e'], [6, 'a c d e'], [10, 'a c d f']]),
    ('[a [b:c:2]]', (10,), [[2, '[a b]'], [10, '[a c]']]),
    ('(x [b:c:2])', (10,), [[2, '(x b)'], [10, '(x c)']]),
    ('[a:b:1.5e]', (10,), [[10, '[a:b:1.5e]']]),
    ('[a\\:b:c:2]', (10,), [[2, 'a\\:b'], [10, 'c']]),
    ('a [b:.5] c', (10, 10), [[10, 'a b c']]),  # hires: .5 is before hires starts
    ('a [b:1.5] c', (10, 10), [[5, 'a  c'], [10, 'a b c']]),
    ('a [b:c:15]', (10, 20), [[5, 'a b'], [20, 'a c']]),
    ('[b:c:5]', (10, 20), [[20, 'c']]),  # hires: step 5 of the first pass is already over
    ('[b:c:2.0]', (10, 20), [[20, 'b']]),
    ('[b:c:12]', (10, 4), [[2, 'b'], [4, 'c']]),
    ('a [b:.5] c', (10, None, True), [[5, 'a  c'], [10, 'a b c']]),
    ('[b:c:1.5]', (10, None, True), [[1, 'b'], [10, 'c']]),
    ('[b:c:3]', (10, 20, True), [[3, 'b'], [10, 'c']]),
    ('[b:c:0.5]', (10, 20, True), [[5, 'b'], [10, 'c']]),  # old timelines ignore hires offsets and use base steps
    ('[b:c:0]', (10, None, True), [[10, 'c']]),
    ('[a|b]', (3, 2), [[1, 'a'], [2, 'b']]),
    ('[b:c:2]', (0,), [[0, 'b']]),
]

# (prompts, expected (res_indexes, flat texts, text -> index))
MULTICOND_CASES = [
    (['a cat AND a dog:0.5 AND fog :1.2', 'a cat'], ([[(0, 1.0), (1, 0.5), (2, 1.2)], [(0, 1.0)]], ['a cat', ' a dog', ' fog'], {'a cat': 0, ' a dog': 1, ' fog': 2})),
    (['a AND b'], ([[(0, 1.0), (1, 1.0)]], ['a', ' b'], {'a': 0, ' b': 1})),
    (['a:2'], ([[(0, 2.0)]], ['a'], {'a': 0})),
    (['(a:1.2)'], ([[(0, 1.0)]], ['(a:1.2)'], {'(a:1.2)': 0})),
    (['ANDROID AND x'], ([[(0, 1.0), (1, 1.0)]], ['ANDROID', ' x'], {'ANDROID': 0, ' x': 1})),
    (['a AND'], ([[(0, 1.0), (1, 1.0)]], ['a', ''], {'a': 0, '': 1})),
    (['a  AND  b : -0.5 '], ([[(0, 1.0), (1, -0.5)]], ['a', '  b'], {'a': 0, '  b': 1})),  # leading whitespace kept, trailing dropped
    (['a:1.5.'], ([[(0, 1.0)]], ['a:1.5.'], {'a:1.5.': 0})),
    (['x AND x', 'x'], ([[(0, 1.0), (1, 1.0)], [(0, 1.0)]], ['x', ' x'], {'x': 0, ' x': 1})),
    (['a\nb:2'], ([[(0, 2.0)]], ['a\nb'], {'a\nb': 0})),
    ([''], ([[(0, 1.0)]], [''], {'': 0})),
    (['a:.5 AND b:1.'], ([[(0, 0.5), (1, 1.0)]], ['a', ' b'], {'a': 0, ' b': 1})),
    (['a: 2', 'a :3'], ([[(0, 2.0)], [(0, 3.0)]], ['a'], {'a': 0})),
]


def _assert_weights(got: list[list], expected: list[list]) -> None:
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("text, expected", ATTENTION_CASES, ids=[repr(c[0]) for c in ATTENTION_CASES])
def test_parse_prompt_attention(text: str, expected: list[list]) -> None:
    _assert_weights(parse_prompt_attention(text), expected)


def test_attention_weights_are_bit_identical_to_a1111() -> None:
    # Same multiplication order as A1111, so even the float noise matches its doctest.
    got = parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    assert got[1] == ["house", 1.5730000000000004] and got[7] == ["sky", 1.4641000000000006]
    assert parse_prompt_attention("a BREAK b")[1] == ["BREAK", -1]


def test_attention_tolerates_a_malformed_weight() -> None:
    # A1111 raises ValueError on float('1.2.3'); we keep the token as text instead.
    assert parse_prompt_attention("(a:1.2.3)") == [["a:1.2.3)", pytest.approx(1.1)]]


@pytest.mark.parametrize("mode, text, expected", [
    ("None", "(a:1.2) BREAK [b]", [["(a:1.2) BREAK [b]", 1.0]]),
    ("Ignore", "(a:1.2) b", [["a", 1.2], [" b", 1.0]]),
    ("Original", "[a]", [["a", 1 / 1.1]]),
    ("No norm", "", [["", 1.0]]),
])
def test_parse_for_emphasis_mode(mode: str, text: str, expected: list[list]) -> None:
    assert mode in EMPHASIS_MODES
    _assert_weights(parse_prompt_attention_for_mode(text, mode), expected)


@pytest.mark.parametrize("prompt, args, expected", SCHEDULE_CASES,
                         ids=[f"{c[0]!r}-{c[1]}" for c in SCHEDULE_CASES])
def test_prompt_schedules(prompt: str, args: tuple, expected: list[list]) -> None:
    assert get_learned_conditioning_prompt_schedules([prompt], *args) == [expected]


def test_schedules_keep_batch_order_and_duplicates() -> None:
    got = get_learned_conditioning_prompt_schedules(["a [b:3]", "c", "a [b:3]"], 10)
    assert got == [[[3, "a "], [10, "a b"]], [[10, "c"]], [[3, "a "], [10, "a b"]]]
    assert get_learned_conditioning_prompt_schedules([], 10) == []


def test_schedule_construct_next_to_a_stray_bracket() -> None:
    # A1111's Earley parse is ambiguous here and its choice depends on PYTHONHASHSEED; we always
    # take the construct, which is one of the outcomes A1111 gives.
    assert get_learned_conditioning_prompt_schedules(["[b:3]]"], 10) == [[[3, "]"], [10, "b]"]]]


def test_long_unbalanced_prompt_parses_quickly() -> None:
    prompt = "(" * 2000 + "[a:b:3" * 500 + " [c:d:5]"
    assert get_learned_conditioning_prompt_schedules([prompt], 10)[0][0][0] == 5


@pytest.mark.parametrize("prompts, expected", MULTICOND_CASES, ids=[repr(c[0]) for c in MULTICOND_CASES])
def test_multicond_prompt_list(prompts: list[str], expected: tuple) -> None:
    assert get_multicond_prompt_list(prompts) == expected


@pytest.mark.parametrize("step, expected", [(0, "a "), (1, "a "), (3, "a "), (4, "a b"), (9, "a b"), (10, "a b"),
                                            (11, "a ")])  # past the last end A1111 falls back to entry 0
def test_schedule_text_at(step: int, expected: str) -> None:
    raw = [[3, "a "], [10, "a b"]]
    assert schedule_text_at(raw, step) == expected
    assert schedule_text_at(PromptSchedule.from_list(raw), step) == expected


def test_prompt_schedule_objects() -> None:
    (sched,) = get_prompt_schedules(["a [b:c:.5]"], 10)
    assert sched.texts == ["a b", "a c"]
    assert [e.end_at_step for e in sched.entries] == [5, 10]
    assert sched.text_at(5) == "a b" and sched.text_at(6) == "a c"
    assert schedule_index_at(sched, 0) == 0 and sched.index_at(6) == 1


# --- extra networks -----------------------------------------------------------------------------

def test_extra_networks_reference_example() -> None:
    text, data = parse_prompt("a cat <lora:foo:0.8>, <lora:bar:te=0.5:unet=1:dyn=8> <hypernet:h1> <lyco:x:1:0.5>")
    assert text == "a cat ,   "
    assert isinstance(data, defaultdict)
    assert [p.items for p in data["lora"]] == [["foo", "0.8"], ["bar", "te=0.5", "unet=1", "dyn=8"]]
    assert data["lora"][1].positional == ["bar"]
    assert data["lora"][1].named == {"te": "0.5", "unet": "1", "dyn": "8"}
    assert [p.items for p in data["hypernet"]] == [["h1"]]
    assert [p.items for p in data["lyco"]] == [["x", "1", "0.5"]]


@pytest.mark.parametrize("prompt, text, expected", [
    ("<lora:name:0.8>", "", {"lora": [(["name", "0.8"], ["name", "0.8"], {})]}),
    ("x <lora:name:te=0.5:unet=1>", "x ", {"lora": [(["name", "te=0.5", "unet=1"], ["name"], {"te": "0.5", "unet": "1"})]}),
    ("<lora:n:a=b=c>", "", {"lora": [(["n", "a=b=c"], ["n", "a=b=c"], {})]}),  # two `=`: positional
    ("<lora:猫:1>", "", {"lora": [(["猫", "1"], ["猫", "1"], {})]}),
    ("<lora:a::>", "", {"lora": [(["a", "", ""], ["a", "", ""], {})]}),
    ("no tags here", "no tags here", {}),
    ("<lora:> <lo-ra:x> <bad tag> <lora x>", "<lora:> <lo-ra:x> <bad tag> <lora x>", {}),
    ("<a:1><b:2>", "", {"a": [(["1"], ["1"], {})], "b": [(["2"], ["2"], {})]}),
])
def test_parse_extra_networks(prompt: str, text: str, expected: dict) -> None:
    got_text, data = parse_extra_networks(prompt)
    assert got_text == text
    assert {k: [(p.items, p.positional, p.named) for p in v] for k, v in data.items()} == expected


def test_parse_prompts_uses_the_first_prompt_networks() -> None:
    texts, data = parse_prompts(["a <lora:x:1>", "b <lora:y:0.5> <hypernet:h>"])
    assert texts == ["a ", "b  "]
    assert list(data) == ["lora"] and data["lora"] == [ExtraNetworkParams(["x", "1"])]
    assert parse_prompts([]) == ([], {})


def test_extra_network_params_equality_is_by_items() -> None:
    assert ExtraNetworkParams(["a", "k=v"]) == ExtraNetworkParams(["a", "k=v"])
    assert ExtraNetworkParams(["a"]) != ExtraNetworkParams(["b"])
    assert ExtraNetworkParams().items == [] and ExtraNetworkParams(None).named == {}


# --- styles -------------------------------------------------------------------------------------

@pytest.mark.parametrize("style, prompt, expected", [
    ("masterpiece", "a cat", "a cat, masterpiece"),
    ("{prompt}, masterpiece", "a cat", "a cat, masterpiece"),
    ("best, {prompt}, {prompt}", "x", "best, x, x"),
    ("  masterpiece ", " a cat ", "a cat, masterpiece"),
    ("masterpiece", "", "masterpiece"),
    ("", " a cat ", "a cat"),  # an empty style still strips (A1111)
    ("{prompt}", "", ""),
])
def test_merge_prompts(style: str, prompt: str, expected: str) -> None:
    assert merge_prompts(style, prompt) == expected


def test_styles_apply_in_order() -> None:
    assert apply_styles_to_prompt("cat", ["photo of {prompt}", "8k"]) == "photo of cat, 8k"
    assert apply_styles_to_prompt("cat", ["8k", "photo of {prompt}"]) == "photo of cat, 8k"


REAL_CSV = (
    '\ufeffname,prompt,negative_prompt\n'
    'Photo,"photo of {prompt}, 35mm, ""sharp""","blurry, lowres"\n'
    '"Multi, line","line one\nline two",\n'
    '# comment,ignored,ignored\n'
    'Plain,masterpiece,\n'
    'Ünïcode,猫 (cat:1.2),"bad, worse"\n'
)


def _db(tmp_path: Path, content: str, encoding: str = "utf-8") -> StyleDatabase:
    path = tmp_path / "styles.csv"
    path.write_text(content, encoding=encoding, newline="")
    return StyleDatabase(path)


def test_styles_load_a1111_csv(tmp_path: Path) -> None:
    db = _db(tmp_path, REAL_CSV)
    assert list(db.styles) == ["Photo", "Multi, line", "Plain", "Ünïcode"]
    assert db.styles["Photo"] == PromptStyle("Photo", 'photo of {prompt}, 35mm, "sharp"', "blurry, lowres",
                                             str(tmp_path / "styles.csv"))
    assert db.styles["Multi, line"].prompt == "line one\nline two"
    assert db.styles["Multi, line"].negative_prompt == ""
    assert db.apply_styles_to_prompt("a dog", ["Photo", "Plain", "missing"]) == \
        'photo of a dog, 35mm, "sharp", masterpiece'
    assert db.apply_negative_styles_to_prompt("ugly", ["Photo", "Ünïcode"]) == "ugly, blurry, lowres, bad, worse"


def test_styles_without_bom_and_with_missing_columns(tmp_path: Path) -> None:
    db = _db(tmp_path, "name,prompt\nA,one\nB\n", encoding="utf-8")
    assert db.styles["A"] == PromptStyle("A", "one", "", str(tmp_path / "styles.csv"))
    assert db.styles["B"].prompt == "" and db.styles["B"].negative_prompt == ""
    old = _db(tmp_path, "name,text\nOld,legacy text\n")  # A1111's oldest header
    assert old.styles["Old"].prompt == "legacy text"
    assert _db(tmp_path, "title,prompt\nX,y\n").styles == {}


def test_styles_round_trip_with_backup(tmp_path: Path) -> None:
    db = _db(tmp_path, REAL_CSV)
    path = tmp_path / "styles.csv"
    db.save()
    with open(tmp_path / "styles.csv.bak", encoding="utf-8", newline="") as f:
        assert f.read() == REAL_CSV
    reloaded = StyleDatabase(path)
    assert reloaded.styles == db.styles
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # utf-8-sig, as A1111 writes
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "prompt", "negative_prompt"]
    assert ["Multi, line", "line one\nline two", ""] in rows

    first_saved = path.read_bytes()
    reloaded.styles["New"] = PromptStyle("New", "n", "m")
    reloaded.save()
    assert (tmp_path / "styles.csv.bak").read_bytes() == first_saved
    assert StyleDatabase(path).styles["New"].prompt == "n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["styles.csv", "styles.csv.bak"]  # no temp left


def test_styles_missing_file(tmp_path: Path) -> None:
    db = StyleDatabase(tmp_path / "sub" / "styles.csv")
    assert db.styles == {}
    assert db.apply_styles_to_prompt("x ", ["nope"]) == "x"
    db.styles["S"] = PromptStyle("S", "s", "")
    db.save()
    assert not (tmp_path / "sub" / "styles.csv.bak").exists()
    db.load()
    assert db.styles["S"].prompt == "s"


# --- emphasis numerics --------------------------------------------------------------------------

def test_emphasis_original_restores_the_mean() -> None:
    z = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    m = torch.tensor([[1.0, 2.0]])
    out = apply_emphasis(z, m, "Original")
    # z*m = [[1,2],[6,8]] (mean 4.25), scaled by 2.5/4.25
    expected = torch.tensor([[[1.0, 2.0], [6.0, 8.0]]]) * (2.5 / 4.25)
    assert torch.allclose(out, expected)
    assert out.mean().item() == pytest.approx(2.5)
    assert torch.equal(z, torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))  # input untouched


def test_emphasis_original_mean_is_over_the_whole_batch() -> None:
    # A1111 uses z.mean() of the whole chunk batch, not one mean per prompt.
    z = torch.stack([torch.ones(2, 3), torch.full((2, 3), 2.0)])
    m = torch.tensor([[2.0, 2.0], [1.0, 1.0]])
    out = apply_emphasis(z, m, "Original")
    assert torch.allclose(out, torch.full((2, 2, 3), 1.5))


def test_emphasis_no_norm_multiplies() -> None:
    z = torch.tensor([[[1.0, -2.0], [3.0, 4.0]]])
    out = apply_emphasis(z, torch.tensor([[0.5, 1.1]]), "No norm")
    assert torch.allclose(out, torch.tensor([[[0.5, -1.0], [3.3, 4.4]]]))


@pytest.mark.parametrize("mode", ["Ignore", "None"])
def test_emphasis_ignore_and_none_leave_z(mode: str) -> None:
    z = torch.randn(2, 4, 3)
    assert torch.equal(apply_emphasis(z, torch.full((2, 4), 3.0), mode), z)


def test_emphasis_unknown_mode_falls_back_to_original() -> None:
    z, m = torch.randn(1, 3, 2), torch.tensor([[1.0, 1.2, 0.9]])
    assert torch.equal(apply_emphasis(z, m, "bogus"), apply_emphasis(z, m, "Original"))
    assert EMPHASIS_MODES == ("Original", "No norm", "Ignore", "None")
