"""Real-model tasks from Hugging Face ``datasets``: GSM8K, MATH and any question/answer set.

``train-llm --dataset NAME_OR_PATH`` reads its prompts with ``datasets.load_dataset``, the
library every RL engine (TRL, verl, open-r1) loads GSM8K, MATH and DAPO-style sets with:
a hub name (``openai/gsm8k`` with ``--dataset-config main``) works where the hub is
reachable; a local JSON, JSONL, CSV or parquet file, a directory of them (split names from
the file names: ``train.jsonl``, ``test.jsonl``) or a ``save_to_disk`` directory works
offline. Reference answers are reduced to their final answer by the task's format:
:func:`gsm8k_final_answer` (the text after ``####``) or :func:`math_final_answer` (the last
``\\boxed{...}``); a column that already holds bare answers is used as it is.
"""

from __future__ import annotations

from pathlib import Path

from .rewards import boxed_content
from .tasks import JsonlTask

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
"""Local file suffixes ``--dataset`` reads, and the ``datasets`` builder of each."""
DEFAULT_FIELDS = {"gsm8k": ("question", "answer"), "math": ("problem", "solution"), "jsonl": ("question", "answer")}
"""(question field, answer field) of each task when ``--question-field`` / ``--answer-field`` are not given."""


def gsm8k_final_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the first line after its last ``####``, thousands commas dropped.

    ``"... so 3 + 4 = 7.\\n#### 1,007"`` gives ``"1007"``. ValueError if there is no ``####``.
    """
    if "####" not in solution:
        raise ValueError("a GSM8K solution ends with '#### <answer>'; this one has no '####'")
    line = solution.rsplit("####", 1)[1].strip().split("\n", 1)[0].strip()
    return line.replace(",", "")


def math_final_answer(solution: str) -> str:
    """The final answer of a MATH (Hendrycks) solution: the content of its last ``\\boxed{...}`` (or ``\\fbox``).

    Nested braces are kept (``\\boxed{\\frac{1}{2}}`` gives ``"\\frac{1}{2}"``); the LaTeX is
    not rewritten, so math-verify sees what the dataset wrote. ValueError if there is no
    box or its braces do not close.
    """
    if "\\boxed" not in solution and "\\fbox" not in solution:
        raise ValueError("a MATH solution puts its answer in \\boxed{...}; this one has none")
    content = boxed_content(solution)
    if content is None:
        raise ValueError("a \\boxed{...} whose braces do not close")
    return content.strip()


def final_answer(raw: str, task: str) -> str:
    """A reference field reduced to its final answer by ``task``'s format; a bare answer is kept as it is."""
    text = str(raw)
    if task == "gsm8k" and "####" in text:
        return gsm8k_final_answer(text)
    if task == "math" and ("\\boxed" in text or "\\fbox" in text):
        return math_final_answer(text)
    return text.strip()


def _load_split(name: str, config: str | None, split: str, progress: bool = False):
    """One split of a dataset (hub name, local file, directory, or ``save_to_disk`` directory); one-line errors.

    ``datasets``' own progress bars (downloads, "Generating train split") only with ``progress``.
    """
    try:
        import datasets
    except ImportError as err:
        raise ValueError("dataset: reading --dataset needs the datasets package: pip install 'm2po-lab[data]'") from err
    was_on = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if progress else datasets.disable_progress_bars)()
    try:
        return _read(datasets, name, config, split)
    finally:
        (datasets.enable_progress_bars if was_on else datasets.disable_progress_bars)()


def _read(datasets, name: str, config: str | None, split: str):
    p = Path(name).expanduser()
    try:
        if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists()):
            loaded = datasets.load_from_disk(str(p))  # a save_to_disk directory
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ValueError(f"split: {split!r} is not a split of {name!r}; splits: {', '.join(loaded)}")
                return loaded[split]
            if split != "train":
                raise ValueError(f"split: {name!r} holds one split; give --split train")
            return loaded
        if p.is_file():
            builder = FILE_BUILDERS.get(p.suffix.lower())
            if builder is None:
                raise ValueError(f"dataset: {name!r} is not a {', '.join(sorted(FILE_BUILDERS))} file")
            if split != "train":
                raise ValueError(f"split: a single file holds the split 'train', got {split!r} (a directory of "
                                 "train.jsonl / test.jsonl holds both)")
            return datasets.load_dataset(builder, data_files=str(p), split="train")
        if p.exists() is False and (name.startswith((".", "/", "~")) or p.suffix.lower() in FILE_BUILDERS):
            raise ValueError(f"dataset: {name!r} does not exist")
        return datasets.load_dataset(str(p) if p.is_dir() else name, config, split=split)
    except ValueError as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if msg.startswith(("dataset:", "split:")):
            raise ValueError(msg) from None
        raise ValueError(f"dataset: cannot read split {split!r} of {name!r} ({msg})") from None
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds (no network, no such dataset, bad file)
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"dataset: cannot read split {split!r} of {name!r} ({type(err).__name__}: {msg})") from None


def load_dataset_task(name: str, task: str, *, split: str = "train", config: str | None = None,
                      question_field: str | None = None, answer_field: str | None = None,
                      prompt_template: str = "{question}", seed: int = 0, progress: bool = False) -> JsonlTask:
    """One split of a dataset as a task of (prompt, final answer) pairs (``task``: "gsm8k", "math" or "jsonl").

    ValueError, one line naming the option, for a missing file or split, a field that is
    not a column (the columns are listed), an empty split, or a record whose answer has
    no final answer in the task's format.
    """
    if task not in DEFAULT_FIELDS:
        raise ValueError(f"task: --dataset reads the tasks {', '.join(DEFAULT_FIELDS)}, got {task!r}")
    q_field, a_field = question_field or DEFAULT_FIELDS[task][0], answer_field or DEFAULT_FIELDS[task][1]
    rows = _load_split(name, config, split, progress)
    columns = list(rows.column_names)
    for option, field in (("question_field", q_field), ("answer_field", a_field)):
        if field not in columns:
            raise ValueError(f"{option}: {field!r} is not a column of {name!r} (split {split!r}); columns: "
                             f"{', '.join(columns)}")
    if len(rows) == 0:
        raise ValueError(f"dataset: split {split!r} of {name!r} has no records")
    items = []
    for i, (q, a) in enumerate(zip(rows[q_field], rows[a_field])):
        try:
            answer = final_answer(a, task)
        except ValueError as err:
            raise ValueError(f"answer_field: record {i} of {name!r} (split {split!r}): {err}") from None
        items.append((prompt_template.format(question=q), answer))
    return JsonlTask(items=tuple(items), seed=seed)
