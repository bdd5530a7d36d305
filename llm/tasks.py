"""Tasks with verifiable rewards: synthetic arithmetic and GSM8K/MATH-style JSONL.

Every task offers `sample(n, generator) -> list[(prompt, answer)]`; the rewards live in
`rewards.py` (re-exported here: `reward`, `strict_reward`, `exact_reward`,
`digits_reward`, `get_reward`, `extract_answer`, `answers_match`, ...). Also here: the
warm-start teachers' helpers (`mark_answers`, `carry_sum`, `drop_carries`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .rewards import (  # noqa: F401  (re-exported: the task API users import from here)
    MARK,
    REWARD_MODES,
    answers_match,
    digits_reward,
    exact_reward,
    extract_answer,
    get_reward,
    normalize_answer,
    reward,
    strict_reward,
)


def mark_answers(pairs: list[tuple[str, str]], frac: float, generator: torch.Generator) -> list[tuple[str, str]]:
    """Write each answer as `#### <answer>` with probability `frac` (one draw per pair from `generator`).

    The tiny-arith warm start uses it to imitate a teacher that uses the marked format
    only some of the time (see `TrainConfig.warm_start_marked_frac`). `frac` 0 draws nothing.
    """
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"frac must be in [0, 1], got {frac!r}")
    if frac == 0.0:
        return list(pairs)
    draws = torch.rand(len(pairs), generator=generator).tolist()
    return [(p, MARK + a if u < frac else a) for (p, a), u in zip(pairs, draws)]


def carry_sum(a: int, b: int, dropped: list[bool]) -> str:
    """``a + b`` written column by column (units first), where the carry out of column i is lost if ``dropped[i]``.

    ``dropped`` all False gives the true sum (95 + 17: ``"112"``); losing the units carry
    gives ``"102"``, losing both ``"2"`` (a lost final carry loses the leading 1).
    """
    da, db = str(a)[::-1], str(b)[::-1]
    digits, carry = [], 0
    for i in range(max(len(da), len(db))):
        s = int(da[i] if i < len(da) else 0) + int(db[i] if i < len(db) else 0) + carry
        digits.append(s % 10)
        carry = int(s >= 10 and not (i < len(dropped) and dropped[i]))
    if carry:
        digits.append(1)
    return str(int("".join(str(d) for d in reversed(digits))))


def drop_carries(pairs: list[tuple[str, str]], frac: float, generator: torch.Generator,
                 task: "ArithmeticTask | None" = None) -> list[tuple[str, str]]:
    """Rewrite ``"a+b="`` demonstrations as a student who forgets each carry with probability ``frac``.

    The warm-start teacher of the LLM staleness study (``m2po_lab.llm.study``): every
    carry is a *fork* (the SFT model learns to write the carried digit with probability
    1 - frac), every other token is fixed. One uniform per pair and column is drawn from
    ``generator`` whatever the outcome (a fixed number of draws per batch); ``frac`` 0
    draws nothing and returns the true sums. Pairs that are not additions are refused.
    ``task`` says how numbers are written (default: most-significant digit first).
    """
    task = task if task is not None else ArithmeticTask()
    if not isinstance(task, ArithmeticTask):
        raise ValueError(f"drop_carries: task must be an ArithmeticTask, got {type(task).__name__}")
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"carry drop frac must be in [0, 1], got {frac!r}")
    if frac == 0.0:
        return list(pairs)
    parsed = []
    for prompt, _ in pairs:
        m = re.fullmatch(r"(\d+)\+(\d+)=", prompt)
        if m is None:
            raise ValueError(f"drop_carries: {prompt!r} is not an addition prompt 'a+b='")
        parsed.append((task.read(m.group(1)), task.read(m.group(2))))
    cols = max(len(str(max(a, b))) for a, b in parsed) if parsed else 0
    draws = (torch.rand(len(pairs), cols, generator=generator) < frac).tolist()
    width = task.max_answer_chars
    return [(p, task.write(carry_sum(a, b, d), width)) for (p, _), (a, b), d in zip(pairs, parsed, draws)]


# ----------------------------------------------------------------------------
# Synthetic arithmetic
# ----------------------------------------------------------------------------

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@dataclass(frozen=True)
class ArithmeticTask:
    """Prompts `"12+34="` with answer `"46"`; difficulty = digits and operators.

    ``little_endian``: every number is written least-significant digit first (`"21+43="`,
    answer `"64"`), so each answer digit depends only on digits already seen and the carry
    just written: the order in which a tiny transformer learns addition reliably. Score it
    with `exact_reward` (`"01"` and `"1"` are different little-endian numbers).
    """

    n_digits: int = 2
    """Operands are uniform in [0, 10**n_digits - 1]."""
    ops: tuple[str, ...] = ("+",)
    """Operators drawn uniformly from this subset of "+", "-", "*"."""
    seed: int = 0
    """Seed used by `sample` when no generator is passed."""
    little_endian: bool = False
    """Write operands and answers least-significant digit first (not with "-": no signs)."""
    fixed_width: bool = False
    """Zero-pad operands to n_digits and answers to `max_answer_chars`: one length for every prompt and answer."""

    def __post_init__(self) -> None:
        if self.n_digits < 1:
            raise ValueError(f"n_digits must be >= 1, got {self.n_digits}")
        bad = [op for op in self.ops if op not in _OPS]
        if bad or not self.ops:
            raise ValueError(f"ops must be a non-empty subset of {list(_OPS)}, got {self.ops}")
        if (self.little_endian or self.fixed_width) and "-" in self.ops:
            raise ValueError("little_endian / fixed_width: the ops must not include '-' (these numbers have no sign)")

    def write(self, number: int | str, width: int = 0) -> str:
        """A non-negative number as this task writes it: zero-padded to ``width`` digits when fixed-width, then
        reversed when little-endian."""
        text = str(number).zfill(width if self.fixed_width else 0)
        return text[::-1] if self.little_endian else text

    def read(self, text: str) -> int:
        """The number a digit string written by this task stands for."""
        return int(text[::-1] if self.little_endian else text)

    @property
    def max_answer_chars(self) -> int:
        """Longest possible answer string (sign included)."""
        return 2 * self.n_digits if "*" in self.ops else self.n_digits + 1

    def sample(self, n: int, generator: torch.Generator | None = None) -> list[tuple[str, str]]:
        """`n` (prompt, answer) pairs; without a generator, seeded by `self.seed`."""
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        operands = torch.randint(0, 10**self.n_digits, (n, 2), generator=gen).tolist()
        op_idx = torch.randint(0, len(self.ops), (n,), generator=gen).tolist()
        pairs = []
        for (a, b), k in zip(operands, op_idx):
            op = self.ops[k]
            n, w = self.n_digits, self.max_answer_chars
            pairs.append((f"{self.write(a, n)}{op}{self.write(b, n)}=", self.write(_OPS[op](a, b), w)))
        return pairs

    @staticmethod
    def reward(completion: str, answer: str) -> float:
        """1.0 for the right number, else 0.0 (see module `reward`)."""
        return reward(completion, answer)


# ----------------------------------------------------------------------------
# GSM8K / MATH-style problems from JSONL
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonlTask:
    """A fixed list of (prompt, final answer) pairs, sampled with replacement."""

    items: tuple[tuple[str, str], ...]
    """(prompt, final answer) pairs."""
    seed: int = 0
    """Seed used by `sample` when no generator is passed."""

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, n: int, generator: torch.Generator | None = None) -> list[tuple[str, str]]:
        """`n` pairs drawn uniformly with replacement."""
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        idx = torch.randint(0, len(self.items), (n,), generator=gen).tolist()
        return [self.items[i] for i in idx]

    @staticmethod
    def reward(completion: str, answer: str) -> float:
        """1.0 if the completion's final answer matches, else 0.0."""
        return reward(completion, answer)


GSM8K_KEYS = dict(question_key="question", answer_key="answer")
"""GSM8K records: `answer` is a worked solution ending in `#### <number>`."""
MATH_KEYS = dict(question_key="problem", answer_key="solution")
"""MATH (Hendrycks) records: `solution` contains the final `\\boxed{...}`."""


def _final_answer(raw: str) -> str:
    """Final answer of a reference field: extracted if marked, else as given."""
    if "####" in raw or "\\boxed" in raw or "\\fbox" in raw:
        return extract_answer(raw) or raw.strip()
    return raw.strip()


def load_jsonl_task(
    path: str | Path,
    question_key: str = "question",
    answer_key: str = "answer",
    prompt_template: str = "{question}\n",
    seed: int = 0,
) -> JsonlTask:
    """Read one JSON object per line into a `JsonlTask`.

    Use `**GSM8K_KEYS` or `**MATH_KEYS` for those datasets' field names.
    Reference answers are reduced to their final answer (`####` / `\\boxed`).
    Blank lines are skipped.

    Raises:
        FileNotFoundError: the path does not exist (message names it).
        ValueError: invalid JSON, a non-object line, or a missing key (message
            names the file and the 1-based line number), or no records at all.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"JSONL task file not found: {str(p)!r}")
    items = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{p}: line {lineno}: invalid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise ValueError(f"{p}: line {lineno}: expected a JSON object")
            for key in (question_key, answer_key):
                if key not in record:
                    raise ValueError(f"{p}: line {lineno}: missing key {key!r}")
            prompt = prompt_template.format(question=record[question_key])
            items.append((prompt, _final_answer(str(record[answer_key]))))
    if not items:
        raise ValueError(f"{p}: no records")
    return JsonlTask(items=tuple(items), seed=seed)


def load_hf_task(
    name: str,
    split: str = "train",
    config: str | None = None,
    question_key: str = "question",
    answer_key: str = "answer",
    prompt_template: str = "{question}\n",
    seed: int = 0,
) -> JsonlTask:
    """Same as `load_jsonl_task` from a `datasets` dataset (optional dependency).

    Example: `load_hf_task("openai/gsm8k", config="main", **GSM8K_KEYS)`.
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError("load_hf_task needs `pip install datasets`") from err
    rows = datasets.load_dataset(name, config, split=split)
    items = tuple(
        (prompt_template.format(question=r[question_key]), _final_answer(str(r[answer_key])))
        for r in rows
    )
    return JsonlTask(items=items, seed=seed)
