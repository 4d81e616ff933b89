"""Continual pre-training of causal language models: corpora, replay, budget-free schedules, forgetting per
domain.

Python API::

    from lifelong.lm import LMConfig, run_lm
    result = run_lm(LMConfig(corpora=["fortunes-en", "fortunes-de"], replay=0.05, schedule="infinite"))
    result = resume_lm("runs/lm-...")  # finish an interrupted run from its last checkpoint
"""

__all__ = ["LMConfig", "resume_lm", "run_lm"]


def __getattr__(name: str):  # lazy: `import lifelong.lm` (and its submodules without torch) stays light
    if name in __all__:
        from lifelong.lm import train

        return getattr(train, name)
    raise AttributeError(name)
