"""The answer-checking rules, case by case: flexible (`reward`), strict (`strict_reward`), math-verify.

`CASES` is the documentation of the rules: each row is a completion, a gold answer and the
reward each rule gives, written from the rule and checked against the code here. The rows
where the rules disagree (`disagreements()`) are the table of docs/rewards.md, and
`test_doc_table_is_the_test_table` keeps the two the same.
"""

from __future__ import annotations

import inspect
import re
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import pytest
from m2po_lab.llm.rewards import (
    MATH_VERIFY_MISSING,
    REWARD_MODES,
    check_reward_available,
    digits_reward,
    exact_reward,
    extract_answer,
    get_reward,
    math_verify_gold,
    math_verify_reward,
    normalize_answer,
    reward,
    strict_reward,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "rewards.md"


class Case(NamedTuple):
    completion: str
    gold: str
    flexible: int
    strict: int
    math_verify: int
    why: str = ""  # required where the rules disagree: it is the doc table's last column


GSM8K_SOLUTION = ("Natalia sold 48/2 = 24 clips in May.\n"
                  "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72")
MATH_SOLUTION = ("Solving, $x = \\frac{1}{2}$ or $x = \\frac{2}{4}$, the same number, "
                 "so the answer is $\\boxed{\\frac{1}{2}}$.")

CASES = [
    # --- plain numbers and GSM8K `#### N` lines
    Case("#### 46", "46", 1, 1, 1),
    Case("The answer is 46.", "46", 1, 0, 1),
    Case("46", "46", 1, 0, 1),
    Case("The answer is 46, found in 3 steps.", "46", 0, 0, 1,
         "math-verify prefers a number after the word `answer`; flexible's last number is 3"),
    Case("#### 45", "46", 0, 0, 0),
    Case("She has 3 apples and 4 pears, 7 in all.", "7", 1, 0, 1),
    Case("46 is close, but 45 is it", "46", 0, 0, 0),
    Case("#### 46\nThat took 3 steps.", "46", 1, 1, 0,
         "math-verify knows no `####`: it takes the rightmost number, 3"),
    Case("#### 4 #### 46.", "46", 1, 1, 1),
    Case("####46", "46", 1, 1, 0,
         "math-verify reads a bare number only after a space, `=` or the start of the text"),
    Case("#### +5", "5", 1, 1, 0,
         "math-verify's numbers take a `-` sign only: `+5` is not read"),
    Case("#### -3", "-3", 1, 1, 1),
    Case("The temperature fell to -3 degrees.", "3", 0, 0, 0),
    # --- thousands separators, decimals
    Case("#### 1,000", "1000", 1, 1, 1),
    Case("#### 1,234,567", "1234567", 1, 1, 1),
    Case("\\boxed{1,000}", "1000", 1, 0, 1),
    Case("so 1 000 in total", "1000", 0, 0, 1,
         "flexible's last number is `000`; math-verify reads `1 000` as one number"),
    Case("#### 1 000", "1000", 1, 0, 1,
         "strict's number stops at the space (1); flexible drops spaces after the marker"),
    Case("#### 1000", "1 000", 1, 1, 1),
    Case("#### 42.0", "42", 1, 1, 1),
    Case("#### 0.50", "0.5", 1, 1, 1),
    Case("The answer is 3,5", "3.5", 0, 0, 1,
         "math-verify reads a decimal comma in plain text; flexible's last number is 5"),
    Case("\\boxed{3,5}", "3.5", 0, 0, 0),
    # --- currency, units, percent
    Case("It costs $18.", "18", 1, 0, 1),
    Case("#### $18", "18", 1, 0, 1,
         "strict needs a digit right after the marker; flexible drops the `$`"),
    Case("He pays $5$ dollars.", "5", 1, 0, 1),
    Case("#### 5", "\\$5", 1, 1, 1),
    Case("The side is 5 cm.", "5", 1, 0, 1),
    Case("\\boxed{5\\text{ cm}}", "5", 0, 0, 1,
         "math-verify drops units; flexible compares the box as the string `5\\text{cm}`"),
    Case("\\boxed{5}", "5 cm", 0, 0, 1,
         "the same on the gold side: flexible compares `5` with the string `5cm`"),
    Case("\\boxed{50\\%}", "50\\%", 1, 0, 1),
    Case("\\boxed{50\\%}", "50", 0, 0, 1,
         "math-verify counts an integer percent equal to the integer (9% == 9)"),
    Case("The discount is 20%.", "20", 1, 0, 1),
    # --- fractions
    Case("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1, 0, 1),
    Case("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", 1, 0, 1),
    Case("\\boxed{0.5}", "\\frac{1}{2}", 1, 0, 1),
    Case("\\boxed{\\frac{1}{2}}", "0.5", 1, 0, 1),
    Case("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", 1, 0, 1),
    Case("The answer is 1/2.", "\\frac{1}{2}", 0, 0, 1,
         "flexible's numbers have no `/`: its last number is 2"),
    Case("#### 1/2", "1/2", 1, 0, 1,
         "strict's number stops at the `/` (1); flexible reads the whole `1/2`"),
    Case("\\boxed{\\frac12}", "\\frac{1}{2}", 0, 0, 1,
         "flexible reads `\\frac{a}{b}` with braces only; LaTeX's `\\frac12` is a string to it"),
    Case("\\boxed{0.333333}", "\\frac{1}{3}", 0, 0, 1,
         "math-verify compares a float to 6 decimals; flexible compares exact rationals"),
    Case("\\boxed{0.33}", "\\frac{1}{3}", 0, 0, 0),
    Case("\\boxed{0.33333}", "\\frac{1}{3}", 0, 0, 0),
    Case("Final answer: \\boxed{-\\frac{1}{2}}", "-0.5", 0, 0, 1,
         "flexible reads `\\frac` without a sign only: `-\\frac{1}{2}` is a string to it"),
    Case("The answer is \\(\\frac{1}{2}\\)", "0.5", 0, 0, 1,
         "math-verify reads `\\(...\\)` LaTeX; flexible's last number is 2"),
    Case("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}", 0, 0, 1,
         "math-verify reads `$...$` LaTeX; flexible's last number is 4"),
    Case("$$\\frac{7}{2}$$", "3.5", 0, 0, 1,
         "math-verify reads `$$...$$` LaTeX; flexible's last number is 2"),
    # --- LaTeX: nested braces, \left(, \text{}, roots, pi, powers
    Case("$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", "\\left( 3, \\frac{\\pi}{2} \\right)", 1, 0, 1),
    Case("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1, 0, 1),
    Case("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", 1, 0, 1),
    Case("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", 0, 0, 1,
         "the same number written two ways: flexible compares strings"),
    Case("\\boxed{2\\sqrt{2}}", "2\\sqrt{2}", 1, 0, 1),
    Case("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", 0, 0, 1,
         "math-verify simplifies (sympy); flexible compares strings"),
    Case("\\boxed{2.828427}", "2\\sqrt{2}", 0, 0, 1,
         "math-verify compares a float to 6 decimals: `2\\sqrt{2}` = 2.8284271..."),
    Case("\\boxed{2}", "2\\sqrt{2}", 0, 0, 0),
    Case("\\boxed{\\pi}", "\\pi", 1, 0, 1),
    Case("\\boxed{3.14}", "\\pi", 0, 0, 0),
    Case("\\boxed{10^{3}}", "1000", 0, 0, 1,
         "math-verify evaluates `10^{3}`; flexible compares it as a string"),
    Case("\\boxed{\\text{(A)}}", "\\text{(A)}", 1, 0, 1),
    Case("\\boxed{\\text{Tuesday}}", "\\text{Tuesday}", 1, 0, 1),
    Case("\\boxed{Tuesday}", "\\text{Tuesday}", 0, 0, 1,
         "math-verify matches a word with or without `\\text{}`; flexible compares strings"),
    # --- equations, sets, intervals
    Case("\\boxed{x=2}", "2", 0, 0, 1,
         "math-verify compares the right side of an answer equation when the gold is no equation"),
    Case("\\boxed{2}", "x=2", 0, 0, 1,
         "and the value of a gold assignment (`x=2`) when the answer is no equation"),
    Case("x = 2", "2", 1, 0, 1),
    Case("\\boxed{\\{1, 2\\}}", "\\{2, 1\\}", 0, 0, 1,
         "math-verify compares sets, in any order; flexible compares strings"),
    Case("\\boxed{(1, 2]}", "(1,2]", 1, 0, 1),
    Case("\\boxed{[1, 2)}", "(1,2]", 0, 0, 0),
    # --- boxes: several, malformed, empty
    Case("\\boxed{46}", "46", 1, 0, 1),
    Case("\\boxed 46", "46", 1, 0, 1),
    Case("\\boxed{46", "46", 1, 0, 0,
         "an unclosed box: flexible falls back to the last number; math-verify finds no answer"),
    Case("\\boxed{}", "46", 0, 0, 0),
    Case("First \\boxed{3}, then corrected: \\boxed{4}", "4", 1, 0, 0,
         "math-verify reads nearby boxes with a `,` (or `;`, `and`, `or`) between them as one list {3, 4}"),
    Case("I first guessed \\boxed{3}. Checking again gives \\boxed{4}", "4", 1, 0, 1),
    Case("\\boxed{3} is wrong; the answer is 4", "4", 0, 0, 0),
    Case("The final answer is $4$. I hope it is correct. \\boxed{3}", "4", 0, 0, 1,
         "math-verify's first choice is the phrase `final answer is X. I hope`; flexible takes the box"),
    Case("The final answer is 4. \\boxed{3}", "4", 0, 0, 0),
    # --- reference solutions as the gold
    Case("#### 72", GSM8K_SOLUTION, 1, 1, 1),
    Case("\\boxed{72}", GSM8K_SOLUTION, 1, 0, 1),
    Case("#### 24", GSM8K_SOLUTION, 0, 0, 0),
    Case("\\boxed{0.5}", MATH_SOLUTION, 1, 0, 1),
    Case("\\boxed{\\frac{2}{4}}", MATH_SOLUTION, 1, 0, 1),
    Case("#### 7", "Hence \\fbox{7}.", 0, 0, 1,
         "flexible reduces a reference solution only if it has `####` or `\\boxed`; math-verify's gold takes `\\fbox` too"),
    Case("\\boxed{2}", "It is $\\boxed{0.5}$ and $y=\\boxed{2}$", 1, 0, 1),
    # --- wrong formats, no answer, empty text
    Case("", "46", 0, 0, 0),
    Case("I don't know.", "46", 0, 0, 0),
    Case("The answer is forty-six.", "46", 0, 0, 0),
    Case("#### forty-six", "46", 0, 0, 0),
    Case("#### 46", "", 0, 0, 0),
]


def marker_only(case: Case) -> bool:
    """Strict differs from the other two only because the completion has no `####` marker."""
    return "####" not in case.completion and case.strict == 0 and case.flexible == case.math_verify == 1


def disagreements() -> list[Case]:
    """The rows where the three rules do not all agree, other than for the missing marker alone."""
    return [c for c in CASES if len({c.flexible, c.strict, c.math_verify}) > 1 and not marker_only(c)]


def _cell(text: str) -> str:
    """A table cell: code-formatted, newlines shown as ↵, long reference solutions shortened."""
    if text == GSM8K_SOLUTION:
        return "GSM8K solution ending `#### 72`"
    if text == MATH_SOLUTION:
        return "MATH solution ending `$\\boxed{\\frac{1}{2}}$.`"
    return f"`{text.replace(chr(10), '↵')}`" if text else "(empty)"


def doc_row(case: Case) -> str:
    """The docs/rewards.md table row of a case."""
    return (f"| {_cell(case.completion)} | {_cell(case.gold)} | {case.flexible} | {case.strict} "
            f"| {case.math_verify} | {case.why} |")


def _ids(case: Case) -> str:
    return f"{case.completion[:30]!r}-vs-{case.gold[:20]!r}"


# ----------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------


def test_table_size_and_shape():
    assert len(CASES) >= 50
    assert len({(c.completion, c.gold) for c in CASES}) == len(CASES)  # no row twice
    for c in CASES:
        assert {c.flexible, c.strict, c.math_verify} <= {0, 1}
    for c in disagreements():
        assert c.why, f"a disagreement needs its reason: {c}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_flexible_and_strict(case):
    assert reward(case.completion, case.gold) == case.flexible
    assert strict_reward(case.completion, case.gold) == case.strict


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_math_verify(case):
    pytest.importorskip("math_verify")
    assert math_verify_reward(case.completion, case.gold) == case.math_verify


def test_strict_is_zero_without_the_marker():
    """The doc's one-line rule for the rows it leaves out of the table."""
    for c in CASES:
        if "####" not in c.completion:
            assert c.strict == 0, c


def test_the_reasons():
    """The intermediate values the `why` column cites: what each rule extracts."""
    assert extract_answer("so 1 000 in total") == "0"  # its last number, `000`
    assert extract_answer("The answer is 3,5") == "5"
    assert extract_answer("\\boxed{5\\text{ cm}}") == "5\\text{cm}" and normalize_answer("5 cm") == "5cm"
    assert extract_answer("The answer is 1/2.") == "2"
    assert extract_answer("The answer is \\(\\frac{1}{2}\\)") == extract_answer("$$\\frac{7}{2}$$") == "2"
    assert extract_answer("The answer is $\\frac{3}{4}$.") == "4"
    assert extract_answer("\\boxed{\\frac12}") == "\\frac12" and extract_answer("\\boxed{-\\frac{1}{2}}") == "-\\frac{1}{2}"
    assert extract_answer("\\boxed{46") == "46"
    assert extract_answer("#### 1 000") == "1000"
    assert strict_reward("#### 1/2", "1") == strict_reward("#### 1 000", "1") == 1.0  # strict's number: `1`
    assert reward("#### 7", "7") == 1.0  # so in the `\\fbox` row the unreduced gold is the cause
    mv = pytest.importorskip("math_verify")

    def first(text):
        got = mv.parse(text)
        return str(got[0]) if got else None

    assert first("#### 46\nThat took 3 steps.") == "3"
    assert first("####46") is None and first("#### +5") is None and first("\\boxed{46") is None
    assert first("so 1 000 in total") == "1000" and first("The answer is 3,5") == "3.50000000000000"
    assert first("\\boxed{3,5}") == "{3, 5}"  # in LaTeX a comma separates list items
    assert first("First \\boxed{3}, then corrected: \\boxed{4}") == "{3, 4}"
    assert first("I first guessed \\boxed{3}. Checking again gives \\boxed{4}") == "4"
    assert first("\\boxed{5\\text{ cm}}") == "5" and first("\\boxed{10^{3}}") == "10**3"


def test_trl_completion_config_needs_latex():
    """TRL's accuracy_reward parses completions with LaTeX only and no anchorless match: plain
    answers give nothing there. `math_verify_reward` uses math-verify's default extraction instead."""
    mv = pytest.importorskip("math_verify")
    trl = [mv.LatexExtractionConfig(normalization_config=mv.LatexNormalizationConfig(units=True),
                                    boxed_match_priority=0, try_extract_without_anchor=False)]
    for text in ("#### 46", "The answer is 46.", "He pays $5$ dollars."):
        assert mv.parse(text, extraction_config=trl, extraction_mode="first_match") == []
        assert math_verify_reward(text, "46" if "46" in text else "5") == 1.0
    assert str(mv.parse("\\boxed{46}", extraction_config=trl, extraction_mode="first_match")[0]) == "46"


# ----------------------------------------------------------------------------
# How the gold is handed to math-verify
# ----------------------------------------------------------------------------


def test_math_verify_gold():
    assert math_verify_gold("46") == "\\boxed{46}"
    assert math_verify_gold("2\\sqrt{2}") == "\\boxed{2\\sqrt{2}}"
    assert math_verify_gold("1 000") == "\\boxed{1000}"  # numbers in canonical form
    assert math_verify_gold("42.0") == "\\boxed{42}"
    assert math_verify_gold(GSM8K_SOLUTION) == "\\boxed{72}"  # `####` reduced by extract_answer
    assert math_verify_gold(MATH_SOLUTION) == "\\boxed{\\frac{1}{2}}"  # the last box, as written
    assert math_verify_gold("Hence \\fbox{7}.") == "\\boxed{7}"
    assert math_verify_gold("It is $\\boxed{0.5}$ and $y=\\boxed{2}$") == "\\boxed{2}"
    assert math_verify_gold("") == "" and math_verify_gold("  ") == ""


def test_why_the_gold_is_wrapped():
    """What math-verify makes of a bare gold without the box (the reasons in `math_verify_gold`)."""
    mv = pytest.importorskip("math_verify")
    parsed = {text: [str(x) for x in mv.parse(text)] for text in
              ("2\\sqrt{2}", "10^{3}", "x=2", "\\pi", "\\dfrac{3}{4}", "(1,2]", "\\boxed{1 000}")}
    assert parsed["2\\sqrt{2}"][0] == "2" and parsed["10^{3}"][0] == "10" and parsed["x=2"][0] == "2"
    assert parsed["\\pi"] == parsed["\\dfrac{3}{4}"] == parsed["(1,2]"] == []
    assert parsed["\\boxed{1 000}"][0] == "1*0"
    # math-verify's own search on a whole solution: no \fbox, and nearby boxes as one list
    assert mv.parse("Hence \\fbox{7}.") == []
    assert str(mv.parse("It is $\\boxed{0.5}$ and $y=\\boxed{2}$")[0]) == "{1/2, 2}"


# ----------------------------------------------------------------------------
# Threads, modes, the missing package
# ----------------------------------------------------------------------------


def _in_thread(fn, *args):
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001  (handed back to the test)
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_math_verify_from_a_thread():
    """math-verify's signal-based timeouts refuse non-main threads; the reward turns them off there."""
    mv = pytest.importorskip("math_verify")
    with pytest.raises(ValueError, match="doesn't support threaded environment"):
        _in_thread(mv.parse, "$\\frac{1}{2}$")  # the library default, parsing_timeout=5
    assert _in_thread(math_verify_reward, "\\boxed{\\sqrt{8}}", "2\\sqrt{2}") == 1.0
    assert _in_thread(math_verify_reward, "\\boxed{3}", "2\\sqrt{2}") == 0.0


def test_math_verify_timeouts(monkeypatch):
    """5 s parse and verify timeouts in the main thread (math-verify's defaults), none in any other."""
    mv = pytest.importorskip("math_verify")
    assert inspect.signature(mv.parse).parameters["parsing_timeout"].default == 5
    assert inspect.signature(mv.verify).parameters["timeout_seconds"].default == 5
    seen = []
    parse, verify = mv.parse, mv.verify

    def spy_parse(text, **kw):
        seen.append(("parse", kw["parsing_timeout"]))
        return parse(text, **kw)

    def spy_verify(gold, pred, **kw):
        seen.append(("verify", kw["timeout_seconds"]))
        return verify(gold, pred, **kw)

    monkeypatch.setattr(mv, "parse", spy_parse)
    monkeypatch.setattr(mv, "verify", spy_verify)
    assert math_verify_reward("\\boxed{0.5}", "\\frac{1}{2}") == 1.0
    assert seen == [("parse", 5), ("parse", 5), ("verify", 5)]
    seen.clear()
    assert _in_thread(math_verify_reward, "\\boxed{0.5}", "\\frac{1}{2}") == 1.0
    assert seen == [("parse", None), ("parse", None), ("verify", None)]


def test_get_reward():
    assert REWARD_MODES == ("flexible", "strict", "exact", "digits", "math-verify")
    assert get_reward("flexible") is reward and get_reward("strict") is strict_reward
    assert get_reward("exact") is exact_reward and get_reward("digits") is digits_reward
    with pytest.raises(ValueError, match=re.escape(f"reward_mode must be one of {list(REWARD_MODES)}, got 'lenient'")):
        get_reward("lenient")
    pytest.importorskip("math_verify")
    assert get_reward("math-verify") is math_verify_reward
    check_reward_available("math-verify")


def test_missing_math_verify(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # `import math_verify` now raises ImportError
    msg = "reward_mode='math-verify' needs the math-verify package: pip install 'm2po-lab[math]'"
    assert MATH_VERIFY_MISSING == msg and "\n" not in msg
    for call in (lambda: check_reward_available("math-verify"), lambda: get_reward("math-verify"),
                 lambda: math_verify_reward("46", "46")):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == msg
    for mode in REWARD_MODES[:-1]:
        check_reward_available(mode)  # plain Python: nothing to import
        assert get_reward(mode)("#### 46", "46") == 1.0


def test_exact_and_digits():
    """The staleness study's little-endian answers: strings, not numbers (docs/rewards.md)."""
    assert exact_reward("#### 021", "021") == 1.0
    assert exact_reward("#### 21", "021") == 0.0 and reward("#### 21", "021") == 1.0
    assert digits_reward("#### 975", "9751") == 0.75
    assert digits_reward("#### 9751", "9751") == 1.0


# ----------------------------------------------------------------------------
# docs/rewards.md
# ----------------------------------------------------------------------------


def test_doc_table_is_the_test_table():
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- disagreements -->", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| completion")]
    assert rows == [doc_row(c) for c in disagreements()]
    n, n_marker = len(disagreements()), sum(marker_only(c) for c in CASES)
    flat = " ".join(text.split())  # the counts in the prose, whatever the line breaks
    assert f"{len(CASES)} cases" in flat and f"{n} where the rules disagree" in flat
    assert f"{n_marker} more where only strict differs" in flat
