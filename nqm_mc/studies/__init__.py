"""Studies built on the engines.

Batch-size scaling, optimal schedules, the paper's figures, Adam against its preconditioned
proxy, and noise laws:

- :mod:`~nqm_mc.studies.scaling` -- tuned steps to target against batch size;
- :mod:`~nqm_mc.studies.schedule_opt` -- optimal learning-rate schedules;
- :mod:`~nqm_mc.studies.reproduce` -- the paper's NQM figures;
- :mod:`~nqm_mc.studies.adam_proxy` -- Adam against P = H^p, and the noise-law study.
"""

from nqm_mc.studies.adam_proxy import adam_proxy_study, mc_steps_to_target, noise_study

__all__ = ["adam_proxy_study", "mc_steps_to_target", "noise_study"]
