"""Reports people read: ``report.html``, one self-contained page per evaluation, gate, baseline
update and training run (:mod:`~dpo_harness.reports.html`; see docs/report-html.md)."""
