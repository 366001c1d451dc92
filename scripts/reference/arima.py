"""Reference fits for src/forecasting/arima.ts, from statsmodels.

Fits `statsmodels.tsa.arima.model.ARIMA` (exact Gaussian likelihood via its Kalman filter) with the
same Fourier regressors as arima.ts on a few deterministic series, and writes the inputs, estimated
coefficients, log-likelihood and 12-step forecasts to test/fixtures/forecasting/arima-reference.json.

Dev only, not run by the tests. Run from the repository root with statsmodels in a venv outside it:
    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install statsmodels pandas
    /tmp/refvenv/bin/python scripts/reference/arima.py
"""

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels
from statsmodels.tsa.arima.model import ARIMA

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test" / "fixtures" / "forecasting" / "arima-reference.json"
TRACE = ROOT.parent / "shared" / "data" / "traces" / "nab_rds_cpu_utilization_e47b3b.csv"
HORIZON = 12
SEED = 20240501


def fourier(start: int, n: int, period: int, k: int) -> pd.DataFrame:
    """sin/cos pairs for harmonics 1..k at steps start..start+n-1, ordered as in arima.ts."""
    t = np.arange(start, start + n, dtype=float)
    cols = {}
    for j in range(1, k + 1):
        angle = 2 * math.pi * j * t / period
        cols[f"sin{j}_{period}"] = np.sin(angle)
        cols[f"cos{j}_{period}"] = np.cos(angle)
    return pd.DataFrame(cols)


def arma(rng: np.random.Generator, n: int, phi: float, theta: float, burn: int = 200) -> np.ndarray:
    """ARMA(1,1) with unit-variance Gaussian innovations, after a burn-in."""
    e = rng.standard_normal(n + burn)
    x = np.zeros(n + burn)
    for t in range(1, n + burn):
        x[t] = phi * x[t - 1] + e[t] + theta * e[t - 1]
    return x[burn:]


def series() -> list[dict]:
    rng = np.random.default_rng(SEED)
    t48 = np.arange(480)
    cases = [
        dict(name="ar1", y=10 + arma(rng, 500, 0.7, 0.0), order=(1, 0, 0), trend="c"),
        dict(name="arma11", y=5 + arma(rng, 600, 0.6, 0.3), order=(1, 0, 1), trend="c"),
        dict(name="rw_drift", y=np.cumsum(0.2 + rng.standard_normal(400)), order=(0, 1, 0), trend="t"),
        dict(name="arima111_drift", y=np.cumsum(0.1 + arma(rng, 500, 0.5, -0.3)), order=(1, 1, 1), trend="t"),
        dict(
            name="sine48_ar",
            y=20 + 5 * np.sin(2 * np.pi * t48 / 48) + 2 * np.cos(4 * np.pi * t48 / 48) + arma(rng, 480, 0.5, 0.0),
            order=(1, 0, 0),
            trend="c",
            period=48,
            k=2,
        ),
        dict(
            name="sine48_ima",
            y=20 + 5 * np.sin(2 * np.pi * t48 / 48) + np.cumsum(arma(rng, 480, 0.0, -0.6)),
            order=(0, 1, 1),
            trend="n",
            period=48,
            k=2,
        ),
    ]
    for case in cases:
        # Inputs are rounded so that the JSON holds exactly the series that was fitted.
        case["y"] = np.round(case["y"], 6)
    with open(TRACE, newline="") as f:
        values = [float(row["value"]) for row in csv.DictReader(f)][:2016]
    cases.append(dict(name="nab_rds_cpu", y=np.array(values), order=(1, 0, 1), trend="c", period=288, k=3))
    return cases


def fit(case: dict) -> dict:
    y = np.asarray(case["y"], dtype=float)
    n = len(y)
    period, k = case.get("period"), case.get("k", 0)
    exog = fourier(0, n, period, k) if k else None
    future = fourier(n, HORIZON, period, k) if k else None
    model = ARIMA(y, exog=exog, order=case["order"], trend=case["trend"])
    res = model.fit(method="statespace", method_kwargs={"maxiter": 1000})
    params = dict(zip(model.param_names, (float(v) for v in res.params)))
    p, _, q = case["order"]
    return dict(
        name=case["name"],
        order=list(case["order"]),
        trend=case["trend"],
        period=period or 0,
        k=k,
        y=[float(v) for v in y],
        params=params,
        ar=[params[f"ar.L{i}"] for i in range(1, p + 1)],
        ma=[params[f"ma.L{i}"] for i in range(1, q + 1)],
        exog={c: params[c] for c in (exog.columns if exog is not None else [])},
        sigma2=params["sigma2"],
        llf=float(res.llf),
        nobs=int(res.nobs),
        forecast=[float(v) for v in res.forecast(HORIZON, exog=future)],
    )


def dumps(doc: dict) -> str:
    """JSON with one line per field of a case, so that a diff shows which numbers moved."""
    head = {k: v for k, v in doc.items() if k != "cases"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()] + [' "cases": [']
    for i, case in enumerate(doc["cases"]):
        fields = [f"   {json.dumps(k)}: {json.dumps(v)}" for k, v in case.items()]
        lines += ["  {", ",\n".join(fields), "  }" + ("," if i < len(doc["cases"]) - 1 else "")]
    return "\n".join(lines + [" ]", "}"]) + "\n"


def main() -> None:
    cases = [fit(c) for c in series()]
    doc = dict(
        generatedBy="scripts/reference/arima.py",
        statsmodels=statsmodels.__version__,
        seed=SEED,
        horizon=HORIZON,
        cases=cases,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(dumps(doc))
    for c in cases:
        print(c["name"], c["order"], c["trend"], {k: round(v, 4) for k, v in c["params"].items()}, "llf", round(c["llf"], 3))
    print("wrote", os.path.relpath(OUT, ROOT))


if __name__ == "__main__":
    main()
