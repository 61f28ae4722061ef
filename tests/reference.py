"""Slow, obviously correct references used by the tests (NumPy only, no numba)."""

import numpy as np


def step_rule(opt_name, theta, m, ema, g, lr, beta, gamma):
    """One optimizer update as written in docs/theory.md, section 2.2 (g already preconditioned)."""
    if opt_name == "sgd":
        theta = theta - lr * g
    elif opt_name == "heavy_ball":
        m = beta * m + g
        theta = theta - lr * m
    elif opt_name == "nesterov":
        m = beta * m + g
        theta = theta - lr * (g + beta * m)
    else:
        raise ValueError(opt_name)
    if gamma is not None:
        ema = gamma * ema + (1.0 - gamma) * theta
    return theta, m, ema


def moments_reference(h, c, mu0, v0, opt_name, lr_t, batch_t, beta=0.0, gamma=None, p=0.0):
    """Exact per-step mean loss for t = 0..T by pushing the moments through the update rule.

    The linear map is read off the update rule by applying it to basis states (theta, m, ema)
    and to a unit noise, so it does not share code with the engine's linear forms.
    Returns (mean_loss_readout[T+1], mean_loss_theta[T+1]).
    """
    h = np.asarray(h, float)
    G = h.size
    hp = h ** (-p)
    T = len(lr_t)
    mean = np.zeros((G, 3))
    mean[:, 0] = mu0
    mean[:, 2] = mu0
    S = np.zeros((G, 3, 3))
    s0 = mu0 ** 2 + v0
    for i, j in [(0, 0), (0, 2), (2, 0), (2, 2)]:
        S[:, i, j] = s0
    ro = 2 if gamma is not None else 0
    out = np.zeros(T + 1)
    out_th = np.zeros(T + 1)
    out[0] = 0.5 * np.sum(h * S[:, ro, ro])
    out_th[0] = 0.5 * np.sum(h * S[:, 0, 0])
    for t in range(T):
        A = np.zeros((G, 3, 3))
        for col in range(3):
            e = np.zeros(3)
            e[col] = 1.0
            g = hp * (h * e[0])
            th, mm, em = step_rule(opt_name, e[0], e[1], e[2], g, lr_t[t], beta, gamma)
            A[:, 0, col], A[:, 1, col], A[:, 2, col] = th, mm, em
        g = hp * 1.0
        th, mm, em = step_rule(opt_name, 0.0, 0.0, 0.0, g, lr_t[t], beta, gamma)
        b = np.stack(np.broadcast_arrays(th, mm, em), axis=1)
        if gamma is None:
            A[:, 2, :] = 0.0
            b[:, 2] = 0.0
        q = c / batch_t[t]
        S = A @ S @ A.transpose(0, 2, 1) + q[:, None, None] * b[:, :, None] * b[:, None, :]
        if gamma is None:
            S[:, 2, :] = S[:, 0, :]
            S[:, :, 2] = S[:, :, 0]
            S[:, 2, 2] = S[:, 0, 0]
        out[t + 1] = 0.5 * np.sum(h * S[:, ro, ro])
        out_th[t + 1] = 0.5 * np.sum(h * S[:, 0, 0])
    return out, out_th


def notebook_loss(h, counts, B, lr, k, kind, momentum=0.0, decay=0.0, p=0.0):
    """E[L(k)] as the reference notebook computes it (its moment recurrences, diagonalised).

    Written from the notebook's published equations: state (theta^2, v^2, theta v) for
    momentum with v the velocity, (theta^2, u^2, theta u) with u = ema / (1 - decay) for EMA;
    SGD uses (1 - rho + 1e-8).
    """
    h = np.asarray(h, float)
    sigma_sq = h / B
    prec = h ** (-p)
    x = lr * prec * h
    nz = (prec * lr) ** 2 * sigma_sq
    if kind == "sgd":
        rho = (1 - x) ** 2
        s_star = nz / (1 - rho + 1e-8)
        s = s_star + rho ** k * (1.0 - s_star)
        return 0.5 * np.sum(h * s * counts)
    M = np.zeros((h.size, 3, 3))
    init = np.zeros((h.size, 3))
    if kind == "momentum":
        init[:, 0] = 1.0
        M[:, :, 1] = momentum ** 2
        M[:, 0, 0] = (1 - x) ** 2
        M[:, 1, 0] = x ** 2
        M[:, 2, 0] = -(1 - x) * x
        M[:, 0, 2] = 2 * (1 - x) * momentum
        M[:, 1, 2] = -2 * x * momentum
        M[:, 2, 2] = (1 - 2 * x) * momentum
        read, scale = 0, 1.0
    else:
        init[:, 0] = 1.0
        init[:, 1] = 1.0 / (1 - decay) ** 2
        init[:, 2] = 1.0 / (1 - decay)
        M[:, :, 0] = ((1 - x) ** 2)[:, None]
        M[:, 1, 1] = decay ** 2
        M[:, 1, 2] = 2 * decay * (1 - x)
        M[:, 2, 2] = decay * (1 - x)
        read, scale = 1, (1 - decay) ** 2
    noise = np.repeat(nz[:, None], 3, axis=1)
    e, v = np.linalg.eig(M)
    vi = np.linalg.inv(v)
    ti = np.einsum("gij,gj->gi", vi, init)
    tn = np.einsum("gij,gj->gi", vi, noise)
    ps = tn / (1 - e)
    fin = np.einsum("gij,gj->gi", v, e ** k * (ti - ps) + ps)
    s = fin[:, read].real * scale
    return 0.5 * np.sum(h * s * counts)


def notebook_steps(h, counts, B, lr, target, kind, momentum=0.0, decay=0.0, p=0.0):
    """The reference notebook's bisection for steps to target."""
    high = 10 ** 9 if kind == "sgd" else 10 ** 7
    low = 0
    while low < high - 1:
        mid = (low + high) // 2
        if notebook_loss(h, counts, B, lr, mid, kind, momentum, decay, p) < target:
            high = mid
        else:
            low = mid
    return max(low, 1) if kind == "sgd" else low


class AdaptiveStepper:
    """Adaptive rules and clipping as written in their docstrings, in NumPy (float64)."""

    def __init__(self, opt, d):
        self.opt = opt
        self.m = np.zeros(d)
        self.v = np.zeros(d)
        self.t = 0

    def step(self, theta, g, lr):
        o = self.opt
        if o.clip_norm is not None:
            norm = np.sqrt(np.sum(g * g))
            if norm > o.clip_norm:
                g = g * (o.clip_norm / norm)
        self.t += 1
        if o.name == "adam":
            self.m = o.beta1 * self.m + (1 - o.beta1) * g
            self.v = o.beta2 * self.v + (1 - o.beta2) * g * g
            mh = self.m / (1 - o.beta1 ** self.t)
            vh = self.v / (1 - o.beta2 ** self.t)
            return theta - lr * mh / (np.sqrt(vh) + o.eps)
        if o.name == "rmsprop":
            self.v = o.decay * self.v + (1 - o.decay) * g * g
            return theta - lr * g / (np.sqrt(self.v) + o.eps)
        if o.name == "adagrad":
            self.v = self.v + g * g
            return theta - lr * g / (np.sqrt(self.v) + o.eps)
        if o.name == "sign_sgd":
            return theta - lr * np.sign(g)
        beta = getattr(o, "momentum", 0.0)
        if o.name == "sgd":
            return theta - lr * g
        self.m = beta * self.m + g
        if o.name == "heavy_ball":
            return theta - lr * self.m
        return theta - lr * (g + beta * self.m)
