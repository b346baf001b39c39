"""The math: one flow-map step, one divergence estimator, the likelihood integrators, sampling and
self-guidance. Time runs from t = 0 (noise) to t = 1 (data). Depends on ``nets`` only."""
