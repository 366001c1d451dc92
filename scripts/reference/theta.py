"""Reference forecasts for src/forecasting/theta.ts, from statsforecast's Theta models.

For a few deterministic series, runs statsforecast's `auto_theta` with each model type (STM, OTM,
DSTM, DOTM) at fixed parameters (α, θ and the initial level given, so that nothing is estimated and
both sides run the same filter), with and without the multiplicative seasonal decomposition, and
writes the inputs and 12-step forecasts to test/fixtures/forecasting/theta-reference.json.
statsforecast keeps its states in float32, so the test compares at a relative 1e-5.

Dev only, not run by the tests. Run from the repository root with statsforecast in a venv outside it:
    python3 -m venv /tmp/sfvenv && /tmp/sfvenv/bin/pip install statsforecast pandas
    /tmp/sfvenv/bin/python scripts/reference/theta.py
"""

import json
import math
from pathlib import Path

import numpy as np
import statsforecast
from statsforecast.theta import auto_theta, forecast_theta

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test" / "fixtures" / "forecasting" / "theta-reference.json"
HORIZON = 12
SEED = 20261202


def series(n: int, period: int, trend: float, rng: np.random.Generator) -> list[float]:
    t = np.arange(n, dtype=float)
    season = 1 + 0.3 * np.sin(2 * math.pi * t / period) if period > 1 else np.ones(n)
    walk = np.cumsum(rng.normal(0, 0.5, n))
    return [round(float(v), 6) for v in (50 + trend * t + walk) * season]


def main() -> None:
    rng = np.random.default_rng(SEED)
    cases = []
    for name, n, period, trend in [("flat", 80, 1, 0.0), ("trend", 120, 1, 0.2), ("seasonal", 144, 12, 0.1)]:
        y = series(n, period, trend, rng)
        for model in ["STM", "OTM", "DSTM", "DOTM"]:
            alpha, theta = 0.35, (2.0 if model in ("STM", "DSTM") else 3.5)
            level0 = y[0] / 2
            fit = auto_theta(np.array(y), period, model=model, initial_smoothed=level0, alpha=alpha, theta=theta)
            forecast = forecast_theta(fit, HORIZON)["mean"]
            cases.append({
                "name": f"{name}-{model}",
                "period": period,
                "variant": model,
                "alpha": alpha,
                "theta": theta,
                "level0": level0,
                "decomposed": bool(fit.get("decompose", False)),
                "y": y,
                "forecast": [float(v) for v in forecast],
            })
    OUT.write_text(json.dumps({"generatedBy": "scripts/reference/theta.py", "statsforecast": statsforecast.__version__, "seed": SEED, "horizon": HORIZON, "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
