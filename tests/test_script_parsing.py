"""X/Y/Z axis values, Prompt S/R / order, seeds, Prompts-from-file lines and Prompt matrix prompts
(webui/scripts/axis_values.py, webui/scripts/prompt_lines.py) against A1111 1.10's behaviour."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from webui.scripts.axis_values import (
    cell_index, cell_seed, fix_axis_seeds, iter_cells, parse_axis, parse_float_values, parse_int_values,
    parse_list_values, processing_order, prompt_order, prompt_order_values, prompt_sr,
)
from webui.scripts.prompt_lines import (
    PROMPT_TAGS, combine_prompt, line_seeds, parse_line, parse_prompt_lines, prompt_matrix_combinations,
    prompt_matrix_grid_rows, prompt_matrix_seeds,
)

# ------------------------------------------------------------------ ranges: the A1111 wiki's examples
# (wiki "Features", section X/Y/Z plot: "Simple ranges", "Ranges with increment in bracket",
#  "Ranges with the count in square brackets")


@pytest.mark.parametrize("text, expected", [
    ("1-5", [1, 2, 3, 4, 5]),
    ("1-5 (+2)", [1, 3, 5]),
    ("10-5 (-3)", [10, 7]),
    ("1-10 [5]", [1, 3, 5, 7, 10]),
])
def test_wiki_int_ranges(text, expected):
    assert parse_int_values(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("1-3 (+0.5)", [1, 1.5, 2, 2.5, 3]),
    ("0.0-1.0 [6]", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    ("0.5-1.5 (+0.25)", [0.5, 0.75, 1.0, 1.25, 1.5]),
    ("1-2 [5]", [1.0, 1.25, 1.5, 1.75, 2.0]),
])
def test_wiki_float_ranges(text, expected):
    assert parse_float_values(text) == pytest.approx(expected)


def test_int_range_forms_and_a1111_quirks():
    assert parse_int_values("10-20 [5]") == [10, 12, 15, 17, 20]  # linspace, truncated by int()
    assert parse_int_values("5-1 (-2)") == [5, 3]  # A1111 stops at end + 1, so 1 is not reached
    assert parse_int_values("5-1") == []  # counts up by 1 unless told
    assert parse_int_values("-5--2") == [-5, -4, -3, -2]
    assert parse_int_values(" 1 - 3 ( +1 ) ") == [1, 2, 3]
    assert parse_int_values("1-4 [0]") == []


def test_float_step_range_is_numpy_arange_like_a1111():
    # the overshoot of arange is A1111's too: 0.1-0.3 (+0.1) has four values
    assert parse_float_values("0.1-0.3 (+0.1)") == np.arange(0.1, 0.3 + 0.1, 0.1).tolist()
    assert len(parse_float_values("0.1-0.3 (+0.1)")) == 4


def test_ranges_and_single_values_mix():
    assert parse_int_values("1-3, 7, 10-20 [3], -1") == [1, 2, 3, 7, 10, 15, 20, -1]
    assert parse_float_values("1-2 (+0.5), 7.25, 3") == [1.0, 1.5, 2.0, 7.25, 3.0]
    assert parse_float_values("1e-3") == [0.001]  # a plain number, not a range (A1111's regex mistakes it)


def test_plain_step_without_sign_is_not_a_range():
    with pytest.raises(ValueError, match=r"'1-5 \(2\)'"):
        parse_int_values("1-5 (2)")


@pytest.mark.parametrize("func, text, bad", [
    (parse_int_values, "1, abc, 3", "abc"),
    (parse_int_values, "1.5", "1.5"),
    (parse_int_values, "1-5 (+0)", "1-5 (+0)"),
    (parse_float_values, "0.5, x-y", "x-y"),
    (parse_float_values, "1-2 (+0.0)", "1-2 (+0.0)"),
    (parse_float_values, "1-2 [2.5]", "1-2 [2.5]"),
])
def test_errors_name_the_bad_item(func, text, bad):
    with pytest.raises(ValueError) as e:
        func(text)
    assert repr(bad) in str(e.value)


# ------------------------------------------------------------------ CSV lists


def test_csv_quoting_with_and_without_spaces():
    # 1.10 reads with skipinitialspace, so a quote after ", " opens a quoted item (A1111 PR #15832)
    assert parse_list_values('darkness, "light, green", heat') == ["darkness", "light, green", "heat"]
    assert parse_list_values('darkness,"light, green",heat') == ["darkness", "light, green", "heat"]
    assert parse_list_values("darkness, light, green, heat") == ["darkness", "light", "green", "heat"]
    assert parse_list_values('"say ""hi"""') == ['say "hi"']


def test_csv_whitespace_stripped_and_empties_dropped():
    assert parse_list_values("  a  ,b ,, ,c,") == ["a", "b", "c"]
    assert parse_list_values("") == []
    assert parse_list_values("a, b\nc") == ["a", "b", "c"]  # each line is another CSV row
    assert parse_int_values("1, 2,") == [1, 2]


def test_parse_axis_dispatch():
    assert parse_axis("1-3", "int") == [1, 2, 3]
    assert parse_axis("1-2 [3]", "float") == [1.0, 1.5, 2.0]
    assert parse_axis("1-3, Euler a", "str") == ["1-3", "Euler a"]
    with pytest.raises(ValueError, match="axis kind"):
        parse_axis("1", "bool")  # type: ignore[arg-type]


# ------------------------------------------------------------------ Prompt S/R and Prompt order


def test_prompt_sr_wiki_example():
    prompt = "a man holding an apple, 8k clean"
    values = parse_list_values("an apple, a watermelon, a gun")
    got = [prompt_sr(prompt, "", values[0], v)[0] for v in values]
    assert got == ["a man holding an apple, 8k clean", "a man holding a watermelon, 8k clean",
                   "a man holding a gun, 8k clean"]


def test_prompt_sr_replaces_in_both_prompts_everywhere():
    assert prompt_sr("red cat, red hat", "red, blurry", "red", "blue") == ("blue cat, blue hat", "blue, blurry")
    # found only in the negative prompt is enough
    assert prompt_sr("a cat", "ugly", "ugly", "bad") == ("a cat", "bad")


def test_prompt_sr_missing_search_term_is_an_error():
    with pytest.raises(ValueError, match="did not find dog"):
        prompt_sr("a cat", "blurry", "dog", "wolf")


def test_prompt_order_puts_tokens_into_the_slots():
    prompt = "a cat, red hat, blue sky"
    assert prompt_order(prompt, ("cat", "red hat", "blue sky")) == prompt
    assert prompt_order(prompt, ("blue sky", "cat", "red hat")) == "a blue sky, cat, red hat"
    assert prompt_order(prompt, ("red hat", "blue sky", "cat")) == "a red hat, blue sky, cat"


def test_prompt_order_values_are_all_permutations():
    values = prompt_order_values("cat, red hat, blue sky")
    assert len(values) == 6
    assert values[0] == ("cat", "red hat", "blue sky")
    assert set(values) == set(itertools.permutations(["cat", "red hat", "blue sky"]))


def test_prompt_order_missing_token():
    with pytest.raises(ValueError, match="'dog'"):
        prompt_order("a cat", ("cat", "dog"))


# ------------------------------------------------------------------ seeds and cell order


def test_fix_axis_seeds_replaces_minus_one_only():
    draws = iter([111, 222, 333])
    calls = []

    def fake_randrange(n: int) -> int:
        calls.append(n)
        return next(draws)

    assert fix_axis_seeds([5, -1, "", 7, None], randrange=fake_randrange) == [5, 111, 222, 7, 333]
    assert calls == [4294967294] * 3


def test_fix_axis_seeds_default_rng_range():
    got = fix_axis_seeds([-1] * 20)
    assert all(0 <= s < 4294967294 for s in got)


def test_cell_seed_vary_axes():
    nx, ny = 3, 2
    assert cell_seed(100, 2, 1, 1, nx, ny) == 100
    assert cell_seed(100, 2, 1, 1, nx, ny, vary_x=True) == 102
    assert cell_seed(100, 2, 1, 1, nx, ny, vary_y=True) == 101
    assert cell_seed(100, 2, 1, 1, nx, ny, vary_x=True, vary_y=True) == 100 + 2 + 1 * 3
    assert cell_seed(100, 2, 1, 1, nx, ny, True, True, True) == 100 + 2 + 3 + 6
    assert cell_seed(100, 2, 1, 1, nx, ny, vary_z=True) == 101
    # all three varied: every cell gets its own seed, in cell_index order
    seeds = [cell_seed(0, ix, iy, iz, nx, ny, True, True, True) for ix, iy, iz in iter_cells(nx, ny, 2)]
    assert sorted(seeds) == list(range(nx * ny * 2))


def test_processing_order_puts_costly_axis_outside():
    assert processing_order(0, 0, 0) == ("z", "y")
    assert processing_order(1.0, 0, 0) == ("x", "z")  # y not strictly above z -> z second
    assert processing_order(1.0, 0.7, 0) == ("x", "y")
    assert processing_order(0, 1.0, 0.5) == ("y", "z")
    assert processing_order(0.5, 1.0, 0) == ("y", "x")
    assert processing_order(0.7, 0, 1.0) == ("z", "x")
    assert processing_order(1.0, 1.0, 0) == ("z", "y")  # a tie for first keeps the default


def test_iter_cells_order_and_index():
    cells = list(iter_cells(2, 3, 2, "x", "z"))
    assert cells[:4] == [(0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 0, 1)]
    assert sorted(cells) == sorted(itertools.product(range(2), range(3), range(2)))
    assert [cell_index(*c, 2, 3) for c in iter_cells(2, 3, 2, "z", "y")] == list(range(12))
    with pytest.raises(ValueError):
        list(iter_cells(1, 1, 1, "x", "x"))


# ------------------------------------------------------------------ Prompts from file


def test_tag_table_matches_a1111_1_10():
    assert list(PROMPT_TAGS) == [
        "sd_model", "outpath_samples", "outpath_grids", "prompt_for_display", "prompt", "negative_prompt",
        "styles", "seed", "subseed_strength", "subseed", "seed_resize_from_h", "seed_resize_from_w",
        "sampler_index", "sampler_name", "batch_size", "n_iter", "steps", "cfg_scale", "width", "height",
        "restore_faces", "tiling", "do_not_save_samples", "do_not_save_grid",
    ]
    ints = {"seed", "subseed", "seed_resize_from_h", "seed_resize_from_w", "sampler_index", "batch_size",
            "n_iter", "steps", "width", "height"}
    assert {t for t, k in PROMPT_TAGS.items() if k == "int"} == ints
    assert {t for t, k in PROMPT_TAGS.items() if k == "float"} == {"subseed_strength", "cfg_scale"}
    assert {t for t, k in PROMPT_TAGS.items() if k == "bool"} == {
        "restore_faces", "tiling", "do_not_save_samples", "do_not_save_grid"}


def test_parse_line_full():
    line = ('--prompt "a red circle" at the left --negative_prompt blurry, ugly --steps 10 --seed 5 '
            '--width 64 --height 48 --cfg_scale 6.5 --subseed_strength 0.25 --sampler_name "Euler a" '
            '--batch_size 2 --n_iter 3 --styles "my style" --tiling true --do_not_save_grid false')
    assert parse_line(line) == {
        "prompt": "a red circle at the left", "negative_prompt": "blurry, ugly", "steps": 10, "seed": 5,
        "width": 64, "height": 48, "cfg_scale": 6.5, "subseed_strength": 0.25, "sampler_name": "Euler a",
        "batch_size": 2, "n_iter": 3, "styles": "my style", "tiling": True, "do_not_save_grid": False,
    }


def test_parse_line_plain_prompt_and_types():
    assert parse_line("  a yellow star on a black background ") == {"prompt": "a yellow star on a black background"}
    got = parse_line("--seed -1 --steps 20")
    assert got == {"seed": -1, "steps": 20} and isinstance(got["steps"], int)
    # A1111: only the exact word "true" is True
    assert parse_line("--tiling True --restore_faces yes --do_not_save_samples true") == {
        "tiling": False, "restore_faces": False, "do_not_save_samples": True}
    assert parse_line("--steps 5 --steps 7") == {"steps": 7}
    assert parse_line("--prompt 'it''s' --seed 1")["prompt"] == "its"  # shell quoting rules


@pytest.mark.parametrize("line, fragment", [
    ("--foo 1", "--foo"),
    ("--steps ten", "'ten'"),
    ("--cfg_scale high", "'high'"),
    ("--width 64.5", "'64.5'"),
    ("--steps", "missing argument"),
    ("--prompt a cat --seed", "missing argument"),
    ("a cat -- dog", "'a'"),
    ("--sampler_name Euler a", "'a'"),
    ('--prompt "unclosed', "No closing quotation"),
])
def test_parse_line_errors(line, fragment):
    with pytest.raises(ValueError) as e:
        parse_line(line)
    assert fragment in str(e.value)


def test_parse_line_resolvers():
    samplers = {"euler a": "Euler a", "dpm++ 2m": "DPM++ 2M"}
    assert parse_line("--sampler_name 'euler A'", sampler_resolver=lambda s: samplers.get(s.lower())) == {
        "sampler_name": "Euler a"}
    with pytest.raises(ValueError, match="unknown sampler"):
        parse_line("--sampler_name nope", sampler_resolver=lambda s: samplers.get(s.lower()))
    assert parse_line("--sd_model shapes") == {"sd_model": "shapes"}
    assert parse_line("--sd_model shapes", model_resolver=lambda m: "shapes-demo-v4.safetensors") == {
        "sd_model": "shapes-demo-v4.safetensors"}
    with pytest.raises(ValueError, match="Unknown checkpoint: x"):
        parse_line("--sd_model x", model_resolver=lambda m: None)


def test_parse_prompt_lines_lenient_and_strict(caplog):
    text = "a red circle\n\n   \n--prompt 'a square' --steps 3\n--bogus 1\n"
    jobs = parse_prompt_lines(text)
    assert jobs == [{"prompt": "a red circle"}, {"prompt": "a square", "steps": 3}, {"prompt": "--bogus 1"}]
    assert "--bogus" in caplog.text
    with pytest.raises(ValueError, match="line 3: unknown commandline option: --bogus"):
        parse_prompt_lines(text, strict=True)


def test_combine_prompt():
    assert combine_prompt("base", None) == "base"
    assert combine_prompt("base", "line") == "base line"
    assert combine_prompt("base", "line", "start") == "line base"
    assert combine_prompt("", "line", "start") == "line"
    assert combine_prompt("base", "") == ""  # an explicit empty --prompt wins, as setattr does in A1111


def test_line_seeds():
    assert line_seeds(10, 3) == [10, 10, 10]
    assert line_seeds(-1, 2) == [-1, -1]
    assert line_seeds(10, 3, iterate_every_line=True, batch_size=2, n_iter=3) == [10, 16, 22]
    assert line_seeds(-1, 2, same_seed_for_all=True, randrange=lambda n: 42) == [42, 42]
    assert line_seeds(-1, 2, iterate_every_line=True, randrange=lambda n: 42) == [42, 43]


# ------------------------------------------------------------------ Prompt matrix


def test_prompt_matrix_wiki_example():
    got = prompt_matrix_combinations("a busy city street in a modern city|illustration|cinematic lighting")
    assert got == [
        "a busy city street in a modern city",
        "a busy city street in a modern city, illustration",
        "a busy city street in a modern city, cinematic lighting",
        "a busy city street in a modern city, illustration, cinematic lighting",
    ]


def test_prompt_matrix_binary_counter_order_and_options():
    got = prompt_matrix_combinations("cat|a| b,|c", joiner="space")
    assert len(got) == 8
    assert got == ["cat", "cat a", "cat b", "cat a b", "cat c", "cat a c", "cat b c", "cat a b c"]
    assert prompt_matrix_combinations("cat|red|blue", variations_at_start=True) == [
        "cat", "red, cat", "blue, cat", "red, blue, cat"]
    # the fixed part is kept as written, and variable parts lose spaces, then commas, like A1111
    assert prompt_matrix_combinations("a cat |red")[1] == "a cat , red"
    assert prompt_matrix_combinations("a|b ,")[1] == "a, b "
    assert prompt_matrix_combinations("just one") == ["just one"]
    assert prompt_matrix_combinations("x|y", joiner=" + ") == ["x", "x + y"]


def test_prompt_matrix_grid_rows_and_seeds():
    assert [prompt_matrix_grid_rows("a" + "|b" * n) for n in range(6)] == [1, 1, 2, 2, 4, 4]
    assert prompt_matrix_seeds(7, 4) == [7, 7, 7, 7]
    assert prompt_matrix_seeds(7, 4, different_seeds=True) == [7, 8, 9, 10]
