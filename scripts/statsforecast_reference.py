#!/usr/bin/env python3
"""Reference scores from statsforecast (Nixtla) on the traces of `npm run bench -- forecast`.

Dev tool, not part of the product (which never needs Python). Writes bench/fixtures/statsforecast.json,
which the bench prints beside the ensemble.

    python3 -m venv /tmp/sfvenv && /tmp/sfvenv/bin/pip install statsforecast pandas
    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 /tmp/sfvenv/bin/python scripts/statsforecast_reference.py

The protocol is the bench's own, taken from it rather than re-implemented: bench/forecast-protocol.ts
prints the cleaned series (gaps filled as series.ts fills them), the horizon (one hour of steps) and,
for every evaluated origin, its training window, the daily fit it extends and the MASE scale. As in
backtest.ts, each model is fitted once a day on the previous 30 days (or all there is) and extended
to each hourly origin without re-estimating (statsforecast's `forward`); only observed values are
scored; MASE divides by the one-day seasonal naive's in-sample MAE on the origin's training window.

Models, with what statsforecast can do at these season lengths (one day is 48 to 1440 steps):
- AutoETS: statsforecast's ETS takes no season longer than 24 steps (one day here is 48 to 1440), so
  it can only choose among the non-seasonal models; season_length=1 says so and is 25 times faster
  than season_length=day, which tries the seasonal ones in vain and picks the same model.
- AutoARIMA with Fourier terms, in two steps: seasonal ARIMA with a period of 288 or 1440 is out of
  reach, so the seasons are sin/cos terms of the day (10 pairs, at most half the period) and, where
  the fit sees two weeks, of the week (5 pairs), fitted by least squares at each daily fit; AutoARIMA
  (season_length=1, approximation=True as R's auto.arima for long series) models what they leave.
  The terms as AutoARIMA regressors (estimated jointly) took over 6 minutes for one fit of one trace.
- AutoTheta(season_length=day).
- MSTL(season_length=[day, week]) where the fit sees two weeks, else [day]; trend by AutoETS(ZZN).
  Its forward() re-runs STL at every origin: on the 8,640- and 10,080-point windows of the ASG and
  MongoDB traces that took about a minute an origin (168 origins) on the shared machine, so the
  committed fixture has no MSTL for those two.

Runs resume: scores are kept per trace and model in PARTS, and STATSFORECAST_MODELS=MSTL,... limits a
run to some models, so that one trace's models can run in separate processes.
"""

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas
import statsforecast
from statsforecast.models import MSTL, AutoARIMA, AutoETS, AutoTheta

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "fixtures" / "statsforecast.json"
# Scores per trace, kept between runs so that traces can be scored by separate processes.
PARTS = Path("/tmp/statsforecast-reference")
DAILY_HARMONICS = 10
WEEKLY_HARMONICS = 5


def fourier(index: np.ndarray, periods: list[tuple[int, int]]) -> np.ndarray:
    """sin/cos pairs of each (period, harmonics) at the given absolute positions."""
    cols = []
    for period, harmonics in periods:
        for k in range(1, harmonics + 1):
            angle = 2 * math.pi * k * index / period
            cols += [np.sin(angle), np.cos(angle)]
    return np.column_stack(cols)


class Harmonic:
    """AutoARIMA on what an OLS fit of Fourier terms of the day (and the week) leaves; the terms' fit added back. By absolute position."""

    def __init__(self, daily: int, weekly: int | None):
        self.periods = [(daily, min(DAILY_HARMONICS, daily // 2 - 1))]
        if weekly:
            self.periods.append((weekly, WEEKLY_HARMONICS))
        # CSS for the search, MLE for the chosen model: R's auto.arima does so by default for series this long.
        self.model = AutoARIMA(season_length=1, approximation=True)

    def _design(self, start: int, end: int) -> np.ndarray:
        return np.column_stack([np.ones(end - start), fourier(np.arange(start, end), self.periods)])

    def fit(self, y: np.ndarray, start: int):
        X = self._design(start, start + len(y))
        self.beta = np.linalg.lstsq(X, y, rcond=None)[0]
        self.model.fit(y - X @ self.beta)
        return self

    def forward(self, y: np.ndarray, start: int, h: int) -> np.ndarray:
        end = start + len(y)
        rest = y - self._design(start, end) @ self.beta
        return self.model.forward(y=rest, h=h)["mean"] + self._design(end, end + h) @ self.beta

    def describe(self) -> str:
        return f"AutoARIMA on the rest of Fourier {self.periods}"


class Plain:
    """A statsforecast model without regressors."""

    def __init__(self, model):
        self.model = model

    def fit(self, y: np.ndarray, start: int):
        self.model.fit(y)
        return self

    def forward(self, y: np.ndarray, start: int, h: int) -> np.ndarray:
        return self.model.forward(y=y, h=h)["mean"]

    def describe(self) -> str:
        return repr(self.model)


def make(name: str, daily: int, weekly: int | None):
    if name == "AutoETS":
        return Plain(AutoETS(season_length=daily if daily <= 24 else 1))
    if name == "AutoARIMA":
        return Harmonic(daily, weekly)
    if name == "AutoTheta":
        return Plain(AutoTheta(season_length=daily))
    if name == "MSTL":
        return Plain(MSTL(season_length=[daily, weekly] if weekly else daily, trend_forecaster=AutoETS(model="ZZN")))
    raise ValueError(name)


# STATSFORECAST_MODELS=MSTL,... scores only those (so that one trace's models can run in parallel).
MODELS = [m for m in ["AutoETS", "AutoARIMA", "AutoTheta", "MSTL"] if m in os.environ.get("STATSFORECAST_MODELS", m).split(",")]


def seasonal_naive(y: np.ndarray, m: int, h: int) -> np.ndarray:
    return np.array([y[len(y) - m + (i % m)] for i in range(h)])


def score(trace: dict, name: str) -> dict:
    y = np.asarray(trace["values"], dtype=float)
    observed = trace["observed"]
    h = trace["horizon"]
    daily = trace["dailyPeriod"]
    total, count, failures, fit_seconds = 0.0, 0, [], 0.0
    fitted, fit_at, description = None, None, ""
    started = time.perf_counter()
    for o in trace["origins"]:
        origin, train_start = o["origin"], o["trainStart"]
        if o["fitOrigin"] != fit_at:
            fit_at = o["fitOrigin"]
            t0 = time.perf_counter()
            try:
                fitted = make(name, daily, o["weeklyPeriod"]).fit(y[train_start:fit_at], train_start)
                description = fitted.describe()
            except Exception as err:  # noqa: BLE001 - recorded, the seasonal naive stands in as in backtest.ts
                fitted = None
                failures.append(f"fit at {fit_at}: {err}")
            fit_seconds += time.perf_counter() - t0
        train = y[train_start:origin]
        forecast = None
        if fitted is not None:
            try:
                forecast = np.asarray(fitted.forward(train, train_start, h), dtype=float)
                if forecast.shape != (h,) or not np.all(np.isfinite(forecast)):
                    forecast = None
            except Exception as err:  # noqa: BLE001
                failures.append(f"forward at {origin}: {err}")
        if forecast is None:
            forecast = seasonal_naive(train, daily, h)
        for i in range(h):
            if observed[origin + i]:
                total += abs(y[origin + i] - forecast[i]) / o["scale"]
                count += 1
    return {
        "mase": round(float(total / count), 4),
        "scored": count,
        "fit_seconds": round(fit_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "model": description,
        "failures": failures[:5],
        "failure_count": len(failures),
    }


def main() -> None:
    """Scores the traces named on the command line (all without), each into PARTS, then writes OUT from every part there is."""
    only = set(sys.argv[1:])
    protocol = json.loads(
        subprocess.run(["npx", "tsx", "bench/forecast-protocol.ts"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    )
    PARTS.mkdir(parents=True, exist_ok=True)
    for trace in protocol["traces"]:
        if only and trace["trace"] not in only:
            continue
        part = PARTS / f"{trace['trace']}.json"
        entry = {"step_seconds": trace["stepSeconds"], "horizon": trace["horizon"], "origins": len(trace["origins"]), "models": {}}
        # A model already scored under the same protocol is kept (runs can be interrupted and resumed).
        if part.exists():
            done = json.loads(part.read_text())
            if (done["horizon"], done["origins"]) == (entry["horizon"], entry["origins"]):
                entry["models"] = done["models"]
        for name in MODELS:
            if name in entry["models"]:
                continue
            entry["models"][name] = score(trace, name)
            # Another process may have scored other models of the trace meanwhile: keep theirs too.
            if part.exists():
                done = json.loads(part.read_text())
                if (done["horizon"], done["origins"]) == (entry["horizon"], entry["origins"]):
                    entry["models"] = {**done["models"], **entry["models"]}
            part.write_text(json.dumps(entry))
            print(trace["trace"], name, entry["models"][name], file=sys.stderr, flush=True)
    traces = {part.stem: json.loads(part.read_text()) for part in sorted(PARTS.glob("*.json"))}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "generated_by": "scripts/statsforecast_reference.py",
                "protocol": "npm run bench -- forecast: hourly origins over the last 7 days (20% of a shorter series), one-hour horizon, daily fits on up to 30 days extended by forward(), MASE on observed values (scale: one-day seasonal naive in-sample MAE of the origin's window)",
                "versions": {
                    "statsforecast": statsforecast.__version__,
                    "numpy": np.__version__,
                    "pandas": pandas.__version__,
                    "python": platform.python_version(),
                },
                "traces": traces,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {OUT} ({len(traces)} traces)", file=sys.stderr)


if __name__ == "__main__":
    main()
