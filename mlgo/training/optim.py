"""Adam on a flat parameter vector, in numpy so its state checkpoints as plain arrays."""

from __future__ import annotations

import numpy as np


class Adam:
    def __init__(self, size: int, lr: float, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8) -> None:
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = np.zeros(size, dtype=np.float64)
        self.v = np.zeros(size, dtype=np.float64)
        self.t = 0

    def step(self, grad: np.ndarray) -> np.ndarray:
        """The update to ADD to the parameters for a gradient of a loss to MINIMIZE."""
        self.t += 1
        g = np.asarray(grad, dtype=np.float64)
        self.m = self.beta1 * self.m + (1 - self.beta1) * g
        self.v = self.beta2 * self.v + (1 - self.beta2) * g * g
        m_hat = self.m / (1 - self.beta1 ** self.t)
        v_hat = self.v / (1 - self.beta2 ** self.t)
        return -self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def state(self) -> dict[str, np.ndarray]:
        return {"adam_m": self.m, "adam_v": self.v, "adam_t": np.asarray(self.t)}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self.m = np.asarray(arrays["adam_m"], dtype=np.float64)
        self.v = np.asarray(arrays["adam_v"], dtype=np.float64)
        self.t = int(arrays["adam_t"])
