"""Paper Eq. 4, measured: ``|CE_main - E_Θ[CE_sub]| < (ε2 + log N) · e^{ε1} + ε1``.

The paper writes the bound as ``(ε2 + log N) / e^{-ε1} + ε1``, which is the same number:
the whole ``ε2 + log N`` is multiplied by ``e^{ε1}``. Here ε1 is the full network's
cross-entropy (paper Eq. 2), ε2 the mean KL(main || sub) over the sub-networks Θ (Eq. 3)
and N the number of classes. The paper states it for the training losses; :func:`eq4` takes
whatever split the results were measured on (see the results' own description)."""

from __future__ import annotations

import math


def eq4_bound(eps1: float, eps2: float, num_classes: int) -> float:
    """``(ε2 + log N) · e^{ε1} + ε1``."""
    return (eps2 + math.log(num_classes)) * math.exp(eps1) + eps1


def eq4(results: dict, bn: str) -> dict:
    """Eq. 4's terms from a results file's ``by_bn[bn]`` entry: ε1, ε2, the measured gap,
    the bound, whether the gap is below it, and the slack (bound - gap)."""
    r = results["by_bn"][bn]
    per = r["subnets"]["per_subnet"]
    num_classes = results.get("num_classes", 10)
    eps1 = r["main"]["ce"]
    eps2 = sum(p["kl"] for p in per) / len(per)
    gap = abs(eps1 - sum(p["ce"] for p in per) / len(per))
    bound = eq4_bound(eps1, eps2, num_classes)
    return {"eps1": eps1, "eps2": eps2, "gap": gap, "bound": bound, "holds": gap < bound, "slack": bound - gap}
