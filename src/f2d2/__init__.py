"""f2d2: fast flow joint distillation.

Few-step sampling and few-step log-likelihood from one flow-map network.
Time runs from t = 0 (noise, x0 ~ N(0, I)) to t = 1 (data) everywhere.
"""

__version__ = "0.1.0"
