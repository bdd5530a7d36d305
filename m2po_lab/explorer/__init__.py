"""The explorer's back end: everything ``app/`` shows, computed here (the pages only draw).

- :mod:`.weights`: what each registered loss does to each token (effective weights, fates).
- :mod:`.synthetic`: synthetic batches of log-ratios and advantages.
- :mod:`.probe`: log-ratios of a real toy policy trained on stale data.
- :mod:`.analysis`: series, seed bands and tables of run and study directories.
- :mod:`.systems`: a simulated system and its synchronous baseline, for the Systems page.
- :mod:`.launcher`: ``m2po-lab app`` (Streamlit in a subprocess).
"""
