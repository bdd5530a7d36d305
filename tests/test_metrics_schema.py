"""One metric schema: every key written has a merge rule, docs/metrics.md lists exactly those keys,
and merging the parts of a mini-batch gives the mini-batch's own metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from m2po_lab.losses import LOSSES, LossConfig, get_loss
from m2po_lab.metrics import MERGE_RULES, SCHEMA, WEIGHTED, importance_metrics, merge_parts

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def _documented_keys() -> set[str]:
    """The keys in the first column of docs/metrics.md's metrics.jsonl tables (summary.json's excluded)."""
    text = DOCS.read_text().split("## summary.json")[0]
    keys = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return keys


def test_every_rule_is_known_and_docs_list_exactly_the_schema():
    for m in SCHEMA.values():
        assert m.merge in MERGE_RULES, m
        assert (m.merge == WEIGHTED) == (m.weight is not None) and (m.weight is None or m.weight in SCHEMA), m
    assert _documented_keys() == set(SCHEMA)


def _batch(B=6, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g) * 3
    old = logp + 0.4 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    mask = torch.rand(B, T, generator=g) > 0.2
    mask[:, 0] = True
    return logp, old, adv, mask


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_writes_only_schema_keys(name):
    _, metrics = get_loss(name)(*_batch(), LossConfig(dual_clip_c=3.0))
    assert set(metrics) <= set(SCHEMA), set(metrics) - set(SCHEMA)


def test_runs_write_only_schema_keys(study_dir):
    for p in (study_dir / "runs").glob("*/metrics.jsonl"):
        for line in p.read_text().splitlines():
            unknown = set(json.loads(line)) - set(SCHEMA)
            assert not unknown, (p, unknown)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_merged_micro_batches_equal_the_whole_batch(name):
    """Split a batch in three, merge the parts' metrics: the whole batch's metrics, for a shared decision."""
    logp, old, adv, mask = _batch(B=9, seed=1)
    cfg = LossConfig(tau=0.02)
    loss = get_loss(name)
    from m2po_lab.losses import batch_state, slice_state

    state = batch_state(name, logp, old, adv, mask, cfg)
    _, whole = loss(logp, old, adv, mask, cfg, **state)
    parts, tokens, seqs = [], [], []
    for rows in (slice(0, 2), slice(2, 6), slice(6, 9)):
        st = slice_state(state, rows)
        if "kept_scale" in st:  # m2po_areal: the mini-batch's scale is part of its decision
            st["kept_scale"] = state["kept_scale"]
        parts.append(loss(logp[rows], old[rows], adv[rows], mask[rows], cfg, **st)[1])
        tokens.append(int(mask[rows].sum()))
        seqs.append(int(mask[rows].any(-1).sum()))
    merged = merge_parts(parts, tokens, seqs, recomputed=importance_metrics(logp - old, mask))
    assert set(merged) == set(whole)
    for k in whole:
        if k == "m2po/threshold":  # the smallest masked |log r|: the min over parts is the whole's
            assert float(merged[k]) == pytest.approx(float(whole[k]))
            continue
        assert float(merged[k]) == pytest.approx(float(whole[k]), rel=1e-5, abs=1e-7), k


def test_a_quantile_is_never_averaged():
    parts = [{"is/log_ratio_abs_p99": torch.tensor(1.0)}, {"is/log_ratio_abs_p99": torch.tensor(3.0)}]
    with pytest.raises(KeyError, match="recomputed on the whole batch"):
        merge_parts(parts, [1, 1], [1, 1])
    with pytest.raises(KeyError, match="no merge rule"):
        merge_parts([{"made/up": torch.tensor(1.0)}], [1], [1])
