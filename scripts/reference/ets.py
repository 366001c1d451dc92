#!/usr/bin/env python3
"""Reference fits for src/forecasting/ets.ts, from statsmodels.

Dev tool, not part of the build. Writes test/fixtures/forecasting/ets-reference.json with, for each
case, the input series, the parameters and initial states statsmodels fitted (converted to the
parameterisation of ets.ts), its SSE, one-step fitted values and forecasts.

    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install statsmodels pandas
    OPENBLAS_NUM_THREADS=1 /tmp/refvenv/bin/python scripts/reference/ets.py

Parameterisation (as in ets.ts, the error-correction form with additive errors, Hyndman et al.):
    L = l + phi*b, yhat = L + s (or L*s), e = y - yhat
    l' = L + alpha*e (/s),  b' = phi*b + beta*e (/s),  s' = s + gamma*e (/L)
    season[j] is the initial seasonal state that goes with y[j].
ETSModel uses the same alpha, beta, gamma (beta <= alpha, gamma <= 1 - alpha, phi in [0.8, 0.98]);
its multiplicative season update differs, so multiplicative cases use holtwinters.ExponentialSmoothing,
whose recursion is the same with beta = alpha * smoothing_trend (it bounds smoothing_trend by alpha,
tighter than ETSModel). So do the period-288 additive cases: ETSModel copies all 288 seasonal states
at every step, too slow to estimate them. ExponentialSmoothing's forecasts at multiples of the period
use the seasonal state of one season too early (statsmodels issue #9538), so tests skip those steps.
"""

import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import statsmodels
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from statsmodels.tsa.holtwinters import ExponentialSmoothing

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT.parent / "shared" / "data" / "traces" / "nab_rds_cpu_utilization_e47b3b.csv"
OUT = ROOT / "test" / "fixtures" / "forecasting" / "ets-reference.json"
SEED = 20240611

TREND_CODE = {"none": "N", "additive": "A", "damped": "Ad"}
SEASON_CODE = {"none": "N", "additive": "A", "multiplicative": "M"}


def synthetic_series():
    """Deterministic synthetic series: (name, period, description, values)."""
    rng = np.random.default_rng(SEED)
    out = []
    n = 300
    level = 20 + np.cumsum(rng.normal(0, 0.5, n))
    out.append(("level_walk", 1, "random-walk level plus noise", level + rng.normal(0, 1, n)))
    t = np.arange(n)
    out.append(("trend_noise", 1, "linear trend 0.3/step plus noise", 10 + 0.3 * t + rng.normal(0, 2, n)))
    n = 24 * 20
    t = np.arange(n)
    season = 8 * np.sin(2 * np.pi * t / 24) + 3 * np.cos(4 * np.pi * t / 24)
    out.append(("seasonal24_add", 24, "trend plus additive period-24 season plus noise",
                50 + 0.05 * t + season + rng.normal(0, 1.5, n)))
    level = 40 + 0.08 * t
    out.append(("seasonal24_mul", 24, "trend times multiplicative period-24 season, plus noise",
                level * (1 + 0.3 * np.sin(2 * np.pi * t / 24)) + rng.normal(0, 1.0, n)))
    return out


def trace_series():
    values = []
    with TRACE.open() as f:
        next(f)
        for line in f:
            values.append(float(line.strip().split(",")[1]))
            if len(values) == 2016:
                break
    return np.asarray(values)


def decomposition_seasonals(y, m, multiplicative):
    """Classical decomposition of the first two seasons, exactly as ets.ts initialises seasons."""
    half = m // 2
    sums = np.zeros(m)
    counts = np.zeros(m)
    for t in range(half, 2 * m - half):
        if m % 2 == 0:
            ma = (0.5 * y[t - half] + y[t - half + 1:t + half].sum() + 0.5 * y[t + half]) / m
        else:
            ma = y[t - half:t + half + 1].sum() / m
        sums[t % m] += y[t] / ma if multiplicative else y[t] - ma
        counts[t % m] += 1
    s = sums / counts
    return s / s.mean() if multiplicative else s - s.mean()


def ec_filter(y, variant, p, init):
    """The ets.ts filter, to check that the converted parameters reproduce statsmodels."""
    alpha, beta, gamma, phi = p["alpha"], p["beta"], p["gamma"], p["phi"]
    mult = variant["season"] == "multiplicative"
    level, trend = init["level"], init["trend"]
    season = list(init["season"]) if variant["season"] != "none" else [0.0]
    fitted = np.empty(len(y))
    for t, obs in enumerate(y):
        j = t % len(season)
        damped = level + phi * trend
        s = season[j]
        yhat = damped * s if mult else damped + s
        e = obs - yhat
        fitted[t] = yhat
        level = damped + alpha * e / (s if mult else 1)
        trend = phi * trend + beta * e / (s if mult else 1)
        season[j] = s + gamma * e / (damped if mult else 1)
    return fitted


def fit_ets_model(y, variant, m):
    """ETSModel (maximum Gaussian likelihood, additive errors) for additive or no season."""
    model = ETSModel(
        y,
        error="add",
        trend=None if variant["trend"] == "none" else "add",
        damped_trend=variant["trend"] == "damped",
        seasonal=None if variant["season"] == "none" else "add",
        seasonal_periods=m if variant["season"] != "none" else None,
        initialization_method="estimated",
    )
    res = model.fit(disp=False, maxiter=5000)
    has_trend = variant["trend"] != "none"
    params = {
        "alpha": float(res.smoothing_level),
        "beta": float(res.smoothing_trend) if has_trend else 0.0,
        "gamma": float(res.smoothing_seasonal) if variant["season"] != "none" else 0.0,
        "phi": float(res.damping_trend) if variant["trend"] == "damped" else 1.0,
    }
    season = []
    if variant["season"] != "none":
        # The results object already lists them oldest first (the first goes with y[0]).
        season = [float(v) for v in np.asarray(res.initial_seasonal)]
    init = {
        "level": float(res.initial_level),
        "trend": float(res.initial_trend) if has_trend else 0.0,
        "season": season,
    }
    return params, init, np.asarray(res.fittedvalues), res


def fit_holt_winters(y, variant, m, fixed_season=None):
    """holtwinters.ExponentialSmoothing (least squares), for multiplicative or long seasons."""
    model = ExponentialSmoothing(
        y,
        trend=None if variant["trend"] == "none" else "add",
        damped_trend=variant["trend"] == "damped",
        seasonal="mul" if variant["season"] == "multiplicative" else "add",
        seasonal_periods=m,
        initialization_method="estimated",
        bounds={"damping_trend": (0.8, 0.98)},
    )
    effort = {"options": {"maxiter": 20000, "maxfun": 10**7}}
    if fixed_season is not None:
        with model.fix_params({f"initial_seasonal.{k}": fixed_season[k] for k in range(m)}):
            res = model.fit(minimize_kwargs=effort)
    else:
        res = model.fit(minimize_kwargs=effort)
    p = res.params
    has_trend = variant["trend"] != "none"
    params = {
        "alpha": float(p["smoothing_level"]),
        "beta": float(p["smoothing_level"] * p["smoothing_trend"]) if has_trend else 0.0,
        "gamma": float(p["smoothing_seasonal"]),
        "phi": float(p["damping_trend"]) if variant["trend"] == "damped" else 1.0,
    }
    init = {
        "level": float(p["initial_level"]),
        "trend": float(p["initial_trend"]) if has_trend else 0.0,
        "season": [float(v) for v in p["initial_seasons"]],
    }
    return params, init, np.asarray(res.fittedvalues), res


def reference_case(series_name, y, m, variant, horizon, fixed_season=None):
    period = m if variant["season"] != "none" else 1
    if variant["season"] == "multiplicative" or period > 200:
        params, init, fitted, res = fit_holt_winters(y, variant, period, fixed_season)
    else:
        params, init, fitted, res = fit_ets_model(y, variant, period)
    forecast = np.asarray(res.forecast(horizon))
    if fixed_season is not None and np.max(np.abs(np.asarray(init["season"]) - fixed_season)) > 1e-12:
        sys.exit(f"{series_name} {variant}: statsmodels did not keep the fixed initial seasons")
    check = ec_filter(y, variant, params, init)
    err = np.max(np.abs(check - fitted) / np.maximum(1.0, np.abs(fitted)))
    if err > 1e-9:
        sys.exit(f"{series_name} {variant}: converted parameters do not reproduce statsmodels ({err:g})")
    code = f"ETS(A,{TREND_CODE[variant['trend']]},{SEASON_CODE[variant['season']]})"
    return {
        "name": f"{series_name} {code}",
        "series": series_name,
        "variant": variant,
        "period": period,
        "library": type(res.model).__name__,
        "initialSeason": "estimated" if fixed_season is None else "decomposition",
        "params": params,
        "initial": init,
        "sse": float(np.sum((y - fitted) ** 2)),
        "fitted": [float(v) for v in fitted],
        "forecast": [float(v) for v in forecast],
    }


def dumps(obj):
    """Indented JSON with number arrays kept on one line."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s+([-0-9.eE,\s]+?)\s+\]", lambda mt: "[" + re.sub(r",\s+", ", ", mt.group(1)) + "]", text)


def main():
    warnings.simplefilter("ignore")
    v = lambda trend, season: {"trend": trend, "season": season}  # noqa: E731
    series = {}
    cases = []
    for name, m, description, y in synthetic_series():
        series[name] = {"period": m, "description": description, "values": [float(x) for x in y]}
    plan = [
        ("level_walk", [v("none", "none")], 24),
        ("trend_noise", [v("additive", "none"), v("damped", "none")], 24),
        ("seasonal24_add", [v("none", "additive"), v("additive", "additive"), v("damped", "additive")], 48),
        ("seasonal24_mul", [v("none", "multiplicative"), v("additive", "multiplicative"),
                            v("damped", "multiplicative")], 48),
    ]
    for name, variants, horizon in plan:
        y = np.asarray(series[name]["values"])
        for variant in variants:
            cases.append(reference_case(name, y, series[name]["period"], variant, horizon))

    y = trace_series()
    series["nab_rds_cpu"] = {
        "period": 288,
        "description": "first 2016 points (7 days at 5 minutes) of nab_rds_cpu_utilization_e47b3b.csv",
        "values": [float(x) for x in y],
    }
    cases.append(reference_case("nab_rds_cpu", y, 288, v("none", "none"), 288))
    for variant in [v("none", "additive"), v("damped", "additive")]:
        cases.append(reference_case("nab_rds_cpu", y, 288, variant, 288))
    # ets.ts keeps multiplicative seasonal states of period 288 at the decomposition: so does this fit.
    cases.append(reference_case("nab_rds_cpu", y, 288, v("none", "multiplicative"), 288,
                                decomposition_seasonals(y, 288, True)))

    for case in cases:
        print(f"{case['name']:40s} sse={case['sse']:.6g} params={case['params']}")
    doc = {
        "generator": "scripts/reference/ets.py",
        "statsmodels": statsmodels.__version__,
        "seed": SEED,
        "series": series,
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(dumps(doc) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
