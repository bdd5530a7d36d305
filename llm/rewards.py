"""Verifiable rewards of a completion against a gold answer: flexible, strict, exact, per digit.

`reward(completion, answer)` in {0.0, 1.0} is `extract_answer` + `answers_match`
(`strict_reward` also requires the `####` marker):

- `#### 42` (GSM8K final-answer marker) wins, then the last `\\boxed{...}`
  (MATH, nested braces allowed), then the last number in the text;
- numbers are normalised: `1,000` == `1000`, `42.0` == `42`, `+5` == `5`,
  `$` signs and a trailing period are dropped, and `0.5` == `1/2` ==
  `\\frac{1}{2}` (exact rational comparison);
- anything else is compared as a whitespace-free string.

`exact_reward` compares answer strings (the little-endian, fixed-width addition of the
staleness study), `digits_reward` gives partial credit per digit; `math_verify_reward`
asks HF math-verify (the checker of TRL's and open-r1's accuracy rewards; the optional
`m2po-lab[math]` extra) whether the answers are symbolically equal. `get_reward(mode)`
picks one by `REWARD_MODES` name and `check_reward_available(mode)` says early when a
mode's package is missing. docs/rewards.md compares the rules case by case.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

# ----------------------------------------------------------------------------
# Answer extraction and comparison
# ----------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\d.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_FRAC = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")


def boxed_content(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:].split("{", 1)
    if len(rest) < 2:  # `\boxed 5` form: the next whitespace-free word
        words = text[start + len("\\boxed") :].split()
        return words[0].rstrip("$") if words else None
    depth = 1
    out: list[str] = []
    for ch in rest[1]:
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return "".join(out)
        out.append(ch)
    return None  # unbalanced braces


def extract_answer(text: str) -> str | None:
    """The final answer in a completion or reference solution, or None.

    Priority: text after the last `####` (its first number if it has one),
    then the last `\\boxed{...}`, then the last number anywhere.
    The result is normalised with `normalize_answer`.
    """
    if "####" in text:
        rest = text.rsplit("####", 1)[1].strip().split("\n", 1)[0]
        if _to_number(normalize_answer(rest)) is None and (first := _NUMBER.search(rest)):
            rest = first.group(0)
        return normalize_answer(rest) or None
    boxed = boxed_content(text)
    if boxed is not None:
        return normalize_answer(boxed)
    numbers = _NUMBER.findall(text)
    return normalize_answer(numbers[-1]) if numbers else None


def normalize_answer(ans: str) -> str:
    """Canonical string form: no spaces, `$`, trailing period, thousands commas.

    Numbers become their canonical decimal form (`42.0` -> `42`,
    `+5` -> `5`, `0.50` -> `0.5`); other strings keep their text.
    """
    s = ans.strip().replace("\\$", "").replace("$", "")
    for junk in ("\\left", "\\right", "\\!", "\\,", "\\;", " "):
        s = s.replace(junk, "")
    s = s.rstrip(".")
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    num = _to_number(s)
    if num is not None and num.denominator == 1:
        return str(num.numerator)
    if num is not None and re.fullmatch(r"[-+]?\d*\.\d+", s):
        return s.lstrip("+").rstrip("0").rstrip(".") if "." in s else s
    return s


def _to_number(s: str) -> Fraction | None:
    """Exact value of `12`, `-3.5`, `1/2`, `\\frac{1}{2}`; None otherwise."""
    frac = _FRAC.match(s)
    if frac:
        s = f"{frac.group(1)}/{frac.group(2)}"
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(pred: str, gold: str) -> bool:
    """Equal as exact rationals if both are numbers, else as normalised strings."""
    p, g = normalize_answer(pred), normalize_answer(gold)
    p_num, g_num = _to_number(p), _to_number(g)
    if p_num is not None and g_num is not None:
        return p_num == g_num
    return p == g


MARK = "#### "
"""The answer marker the strict reward requires (GSM8K's), as `mark_answers` writes it."""
REWARD_MODES = ("flexible", "strict", "exact", "digits", "math-verify")
"""How a completion is scored: "flexible" (`reward`), "strict" (`strict_reward`), "exact" (`exact_reward`),
"digits" (`digits_reward`, partial credit per digit) or "math-verify" (`math_verify_reward`, needs the
`m2po-lab[math]` extra)."""


def reward(completion: str, answer: str) -> float:
    """1.0 if the completion's extracted answer matches `answer`, else 0.0.

    `answer` may be a bare final answer ("46") or a full reference solution
    containing `####` or `\\boxed{}`.
    """
    pred = extract_answer(completion)
    if pred is None:
        return 0.0
    gold = extract_answer(answer) if ("####" in answer or "\\boxed" in answer) else answer
    return float(gold is not None and answers_match(pred, gold))


_STRICT = re.compile(r"####[ \t]*([-+]?\d[\d.,]*)")


def strict_reward(completion: str, answer: str) -> float:
    """1.0 only if the completion marks its answer as `#### <number>`, else 0.0.

    GSM8K's strict rule, as in verl's default GSM8K scorer: a right number without the
    marker earns nothing, so the reward also checks the format. The number must follow
    the marker directly (spaces allowed; verl requires exactly one); the last marked
    number counts and is compared as in `reward`.
    """
    marked = _STRICT.findall(completion)
    return reward(f"#### {marked[-1]}", answer) if marked else 0.0


def exact_reward(completion: str, answer: str) -> float:
    """1.0 only if the completion's final answer is the string ``answer`` exactly, else 0.0.

    The final answer is the first word after the last `####`, else the last word of the
    completion. No number normalisation: for tasks whose answers are digit strings that
    are not read as decimal numbers (little-endian arithmetic: `"021"` is 120, `"21"` is 12).
    """
    text = completion.rsplit("####", 1)[1] if "####" in completion else completion
    words = text.split("\n", 1)[0].split() if "####" in completion else text.split()
    return float(bool(words) and words[0 if "####" in completion else -1] == answer.strip())


def digits_reward(completion: str, answer: str) -> float:
    """Partial credit: the fraction of the characters of ``answer`` that the final answer has in the same place.

    The final answer is found as in `exact_reward`; a shorter or longer answer loses the
    missing or misplaced positions (``"975"`` for ``"9751"``: 0.75). 1.0 exactly when
    `exact_reward` is 1.0. With it a response with a wrong digit can still beat its
    group (an advantage > 0): what the toy study's ``partial`` reward does for fixed positions.
    """
    text = completion.rsplit("####", 1)[1].split("\n", 1)[0] if "####" in completion else completion
    words = text.split()
    pred = (words[0] if "####" in completion else words[-1]) if words else ""
    gold = answer.strip()
    if not gold:
        return 0.0
    right = sum(a == b for a, b in zip(pred, gold))
    return right / max(len(gold), len(pred))


# ----------------------------------------------------------------------------
# HF math-verify (optional extra)
# ----------------------------------------------------------------------------

MATH_VERIFY_MISSING = "reward_mode='math-verify' needs the math-verify package: pip install 'm2po-lab[math]'"
_MV_TIMEOUT_S = 5
"""math-verify's own default for `parse(parsing_timeout=)` and `verify(timeout_seconds=)`, in seconds."""


def _math_verify():
    """The `math_verify` module, imported on first use; ValueError (`MATH_VERIFY_MISSING`) if it is not installed."""
    try:
        import math_verify
    except ImportError:
        raise ValueError(MATH_VERIFY_MISSING) from None
    return math_verify


def check_reward_available(mode: str) -> None:
    """ValueError (one line, with the pip command) if `mode` needs a package that cannot be imported.

    Only "math-verify" needs one (`math-verify`, the `m2po-lab[math]` extra); the other modes are
    plain Python and this is a no-op for them.
    """
    if mode == "math-verify":
        _math_verify()


def math_verify_gold(answer: str) -> str:
    """The text `math_verify_reward` hands to `math_verify.parse` as the gold answer.

    The final answer is found as `extract_answer` finds it, but kept as written, then wrapped so
    that math-verify reads it as LaTeX:

    - a GSM8K reference solution (it has `####`) is reduced with `extract_answer` (math-verify
      knows no `####` marker);
    - a MATH reference solution (it has `\\boxed` or `\\fbox`) is reduced to the content of its
      last box, as written (what `llm.data.math_final_answer` gives): math-verify's own
      search anchors on `\\boxed{` only, misses `\\fbox`, and reads nearby boxes as one
      list (`$\\boxed{0.5}$ and $y=\\boxed{2}$` -> {1/2, 2}); a box whose braces do not
      close leaves the text as it is;
    - the answer is then wrapped as `\\boxed{answer}`: unwrapped, math-verify reads
      `2\\sqrt{2}` as 2, `10^{3}` as 10 and `x=2` as 2, and `\\pi`, `\\dfrac{3}{4}` or `(1,2]`
      not at all. An answer that `normalize_answer` reads as a number is first written in
      its canonical form (`1 000` -> `1000`: math-verify reads `\\boxed{1 000}` as 1*0).

    An empty answer gives "" (which parses to nothing, so every completion scores 0.0).
    """
    if "####" in answer:
        answer = extract_answer(answer) or ""
    elif "\\boxed" in answer or "\\fbox" in answer:
        boxed = boxed_content(answer)
        if boxed is None:
            return answer
        answer = boxed
    answer = answer.strip()
    if not answer:
        return ""
    if _to_number(normalize_answer(answer)) is not None:
        answer = normalize_answer(answer)
    return f"\\boxed{{{answer}}}"


def math_verify_reward(completion: str, answer: str) -> float:
    """1.0 if HF math-verify finds the completion's answer equal to the gold `answer`, else 0.0.

    The completion goes to `math_verify.parse` with its default extraction, LaTeX and plain
    numbers or expressions: a "final answer is X. I hope" phrase first, then the rightmost
    `\\boxed{}` (boxes close together are read as one list) or "final answer ... is X", then
    an "answer" word, then the rightmost LaTeX or number. (TRL's accuracy reward reads
    completions as LaTeX only, without the anchorless matches: `#### 46` or `the answer is 46.`
    give nothing there.) The gold is `math_verify_gold(answer)`, parsed the same way;
    `math_verify.verify(gold, pred)` (gold first: it is not symmetric) compares them as
    numbers (to 6 decimals when one is a float), sets, intervals, equations or by
    `sympy.simplify`. A gold that does not parse scores 0.0 for every completion (TRL's
    accuracy reward returns None for it, to skip the example).

    math-verify bounds parsing and comparison with `signal.alarm` (5 s each here, its
    default), which works only in the main thread: in any other thread the timeouts are
    off (`parsing_timeout=None`, `timeout_seconds=None`), so the call works but is not
    bounded. ValueError (`MATH_VERIFY_MISSING`) if math-verify is not installed.
    """
    mv = _math_verify()
    timeout = _MV_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    gold = mv.parse(math_verify_gold(answer), parsing_timeout=timeout)
    if not gold:
        return 0.0
    pred = mv.parse(completion, parsing_timeout=timeout)
    return float(bool(pred) and mv.verify(gold, pred, timeout_seconds=timeout))


def get_reward(mode: str):
    """The reward function of a mode in `REWARD_MODES`; ValueError names the accepted ones.

    "math-verify" also checks that its package imports (`check_reward_available`).
    """
    if mode not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {list(REWARD_MODES)}, got {mode!r}")
    check_reward_available(mode)
    return {"strict": strict_reward, "exact": exact_reward, "digits": digits_reward,
            "math-verify": math_verify_reward}.get(mode, reward)
