"""m2po-lab explorer: home page. Run with ``m2po-lab app`` (or ``streamlit run app/Home.py``)."""

import streamlit as st
from _common import PAPER, PAPER_URL, page_setup

page_setup("m2po-lab explorer")

st.markdown(
    f"""
RL on LLMs with **stale rollouts**: the batch trained at update *t* was sampled by the
policy of update *t − k*. Every token then carries an importance ratio
`r = π_θ(a|s) / π_behav(a|s)`, and `log_ratio = logp − old_logp` drifts away from 0 as
the staleness *k* grows.

- **GRPO / PPO** clip `r` to `[1 − ε, 1 + ε]`: with stale data the clip zeroes the gradient
  of many tokens, and the paper finds those are the informative, high-entropy ones (entropy
  rises with `|r − 1|`: each study here checks it as its phenomenon 5).
- **No trust region** (plain `r·A`) uses every token; in the paper it prospers, then
  collapses (in this package's toy and tiny-transformer studies it prospers, then stalls:
  the study page shows each study's verdicts).
- **M2PO** ([{PAPER}]({PAPER_URL}), Algorithm 1) bounds the second moment
  `M2 = mean (log r)²` of the trust-region tokens by masking those with the largest
  `(log r)²` until `M2 ≤ τ` (τ = 0.04 in every experiment of the paper, where it masks
  0.06% of tokens; the study page shows how many it masks here).

The pages below let you move the knobs and watch what each method does to each token.
All computation comes from the `m2po_lab` package: the same registered losses a trainer runs.
"""
)

st.subheader("Pages")
st.page_link(
    "pages/1_Importance_weights.py",
    label="1 · Importance weights and masking: which tokens each method keeps, clips or masks",
    icon="⚖️",
)
st.page_link(
    "pages/2_Staleness_study.py",
    label="2 · Staleness study: train the toy task live (or open a study) and compare methods by staleness",
    icon="⏳",
)
st.page_link(
    "pages/3_Run_browser.py",
    label="3 · Run browser: any metric of any run (toy or LLM), log-ratio quantile bands, masked tokens",
    icon="🗂️",
)
st.page_link("pages/4_Systems.py", label="4 · Systems: what staleness an RL system produces, and its speed-up", icon="🖥️")
st.caption("Pages 2 and 3 read run directories; see docs/run_format.md.")
