"""Every integer code and marker that specifications, kernels and results share, defined once.

The kernels dispatch on these numbers (numba compiles them in as constants); the registries
of :mod:`nqm_mc.spec.optimizers` and :mod:`nqm_mc.spec.noise` attach them to their
specifications, and results use the hitting-time markers.
"""

# optimizer kinds: the update rule a kernel applies (linear ones first: the exact engine
# handles kinds <= KIND_NESTEROV)
KIND_SGD = 0
KIND_HEAVY_BALL = 1
KIND_NESTEROV = 2
KIND_ADAM = 3
KIND_RMSPROP = 4
KIND_ADAGRAD = 5
KIND_SIGN = 6
LAST_LINEAR_KIND = KIND_NESTEROV

# laws of the gradient noise
NOISE_GAUSSIAN = 0
NOISE_STUDENT_T = 1
NOISE_FINITE = 2

#: a loss at or above this value, or not finite, marks a diverged trajectory
DIVERGED = 1e300

# hitting times that are not steps
HIT_NEVER = -1  # the target was never reached
HIT_DIVERGED = -2  # the trajectory diverged before reaching the target
HIT_INTERRUPTED = -3  # stopped (Ctrl-C, SIGTERM) before reaching the target
