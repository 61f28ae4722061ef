"""A theory to check: SGD's closed-form expected loss on the noisy quadratic model.

    nqm-mc validate --theory examples/sgd_theory.py:sgd_mean -c examples/sgd_theory.toml

Per direction, E[l(t)] = q^t l(0) + (1 - q^t) a c / (2 B (2 - a h)) with q = (1 - a h)^2, for
constant learning rate a, batch size B and no preconditioning or EMA. ``sgd_mean`` returns
that sum; ``sgd_mean_and_variance`` also predicts Var[L_t] (the loss is a sum of independent
scaled chi-squares); ``sgd_missing_factor`` forgets the 2 - a h of the noise floor: the check
rejects it.
"""



def _moments(model, optimizer, batch_size, steps):
    h, c = model.curvatures, model.noise_variances
    a = optimizer.base_learning_rate
    q = (1 - a * h)[None, :] ** (2 * steps[:, None])
    mean = model.initial_mean * (1 - a * h)[None, :] ** steps[:, None]
    second = q * (model.initial_mean ** 2 + model.initial_variance) + (1 - q) * a * a * c / (
        batch_size * (1 - (1 - a * h) ** 2))
    return h, mean, second


def sgd_mean(model, optimizer, batch_size, steps):
    """Return E[L_t] at the steps."""
    h, _, second = _moments(model, optimizer, batch_size, steps)
    return (model.multiplicities * h / 2 * second).sum(axis=1)


def sgd_mean_and_variance(model, optimizer, batch_size, steps):
    """Return E[L_t] and Var[L_t] (theta ~ N(mean, var) per direction, independent)."""
    h, mean, second = _moments(model, optimizer, batch_size, steps)
    var = second - mean ** 2
    n = model.multiplicities
    return {"mean": (n * h / 2 * second).sum(axis=1),
            "variance": (n * h * h * (var * var / 2 + mean * mean * var)).sum(axis=1)}


def sgd_missing_factor(model, optimizer, batch_size, steps):
    """Return a wrong theory: the noise floor a c / (2B) without its 1 / (2 - a h)."""
    h, c, n = model.curvatures, model.noise_variances, model.multiplicities
    a = optimizer.base_learning_rate
    q = (1 - a * h)[None, :] ** (2 * steps[:, None])
    start = h / 2 * (model.initial_mean ** 2 + model.initial_variance)
    return (n * (q * start + (1 - q) * a * c / (2 * batch_size))).sum(axis=1)
