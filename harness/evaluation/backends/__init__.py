"""The runner's backend seam: where the model computations of the runner's requests happen.

:class:`~dpo_harness.evaluation.runner.ModelRunner` owns everything about *requests* — removing
duplicates, the order of the candidate's and the reference's work, the generation cache, parity,
sharding across processes, turning scores into responses — and asks a backend
(:class:`~dpo_harness.evaluation.backends.base.ModelBackend`) only for the computations:

- :mod:`~dpo_harness.evaluation.backends.hf` — :class:`HFBackend`, a model loaded in this
  process (transformers): both roles, one model resident at a time;
- :mod:`~dpo_harness.evaluation.backends.endpoint` — :class:`EndpointBackend`, a model behind an
  OpenAI-compatible server (``--endpoint URL --model NAME``): the candidate's generations through
  ``/v1/chat/completions``, log-likelihoods through ``/v1/completions`` with ``echo`` and
  ``logprobs`` where the server returns prompt log-probabilities; the reference, if any, stays in
  process;
- :mod:`~dpo_harness.evaluation.backends.client` — the HTTP client under it: concurrency limit,
  retries with backoff, timeouts, the on-disk answer cache, one-line errors.

A backend says which request kinds it cannot compute, and why
(:meth:`~dpo_harness.evaluation.backends.base.ModelBackend.unsupported`); suites see those
reasons in their :class:`~dpo_harness.evaluation.suite.SuiteContext` and mark the metrics skipped.
"""
