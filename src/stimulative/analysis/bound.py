"""Paper Eq. 4, measured: |CE_main − E_Θ[CE_sub]| < ε2 + log(N)·e^{ε1} + ε1, with ε1 the full
network's cross-entropy and ε2 the mean KL(main || sub) over the sub-networks Θ, all on the
test set after training."""

from __future__ import annotations

import math


def eq4(results: dict, bn: str) -> dict:
    r = results["by_bn"][bn]
    per = r["subnets"]["per_subnet"]
    num_classes = results.get("num_classes", 10)
    eps1 = r["main"]["ce"]
    eps2 = sum(p["kl"] for p in per) / len(per)
    gap = abs(eps1 - sum(p["ce"] for p in per) / len(per))
    bound = eps2 + math.log(num_classes) * math.exp(eps1) + eps1
    return {"eps1": eps1, "eps2": eps2, "gap": gap, "bound": bound, "holds": gap < bound, "slack": bound - gap}
