"""Synthetic churn data with switchable drift scenarios.

The label process is known (``churn_logit``), so tests and the demo know what a
correct monitor must see. Deterministic by seed. Each scenario switches on at
``onset_day`` and stays on; docs/scenarios.md says what each one should trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

CONTRACTS = ("month-to-month", "one-year", "two-year")
PAYMENTS = ("electronic-check", "mailed-check", "bank-transfer", "credit-card")
INTERNET = ("dsl", "fiber", "none")

SCENARIOS: dict[str, str] = {
    "none": "no change: a correct monitor raises nothing",
    "covariate": "price rise, newer cohort and more month-to-month contracts: data drift on "
    "monthly_charges, tenure_months, total_charges and contract_type",
    "concept": "the label process changes while the inputs do not: no data drift, realised "
    "performance falls",
    "unit_bug": "monthly_charges arrives in cents (x100): out-of-range values and drift on that column",
    "new_category": "payment_method gets an unseen category 'crypto-wallet': data quality flags it",
    "missing": "total_charges is missing for 40% of rows: data quality flags the missing share",
    "weekend": "a weekly pattern, no change: on Saturdays and Sundays (UTC) newer, "
    "month-to-month customers with more support tickets write in; P(churn | inputs) is "
    "unchanged. Compared with the whole reference every weekend drifts; with "
    "drift.segments by weekend nothing does",
}

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Scenario:
    name: str = "none"
    onset_day: int = 0

    def active(self, day: int) -> bool:
        return self.name != "none" and day >= self.onset_day


def churn_logit(frame: pd.DataFrame, *, concept: bool = False) -> np.ndarray:
    """The true log-odds of churn; ``concept=True`` is the changed world."""
    m2m = (frame["contract_type"] == "month-to-month").to_numpy(float)
    two_year = (frame["contract_type"] == "two-year").to_numpy(float)
    echeck = (frame["payment_method"] == "electronic-check").to_numpy(float)
    fiber = (frame["internet_service"] == "fiber").to_numpy(float)
    tenure = frame["tenure_months"].to_numpy(float)
    charges = np.nan_to_num(frame["monthly_charges"].to_numpy(float), nan=70.0)
    tickets = frame["support_tickets"].to_numpy(float)
    if not concept:
        return (-1.2 + 1.3 * m2m - 0.9 * two_year - 0.035 * tenure + 0.025 * (charges - 70)
                + 0.45 * tickets + 0.6 * echeck + 0.5 * fiber)
    # A competitor targets long-tenure fibre customers; tickets no longer predict churn.
    return (-1.0 + 0.3 * m2m - 0.2 * two_year + 0.03 * tenure - 0.02 * (charges - 70)
            - 0.1 * tickets + 0.0 * echeck + 1.4 * fiber)


def _features(rng: np.random.Generator, n: int, covariate: bool,
              weekend: bool = False) -> pd.DataFrame:
    contract_p = ([0.75, 0.15, 0.10] if covariate else [0.64, 0.2, 0.16] if weekend
                  else [0.5, 0.25, 0.25])
    contract = rng.choice(CONTRACTS, size=n, p=contract_p)
    tenure_scale = 10.0 if covariate else 17.0 if weekend else 24.0
    tenure = np.clip(rng.exponential(tenure_scale, n).round(), 0, 72).astype(int)
    base = rng.normal(70.0, 20.0, n).clip(18, 120)
    charges = base * (1.25 if covariate else 1.0)
    internet = rng.choice(INTERNET, size=n, p=[0.35, 0.45, 0.20])
    charges = np.where(internet == "none", charges * 0.4, charges).round(2)
    total = (charges * np.maximum(tenure, 1) * rng.uniform(0.9, 1.1, n)).round(2)
    return pd.DataFrame({
        "tenure_months": tenure,
        "monthly_charges": charges,
        "total_charges": total,
        "support_tickets": rng.poisson(1.55 if weekend else 1.2, n),
        "contract_type": contract,
        "payment_method": rng.choice(PAYMENTS, size=n, p=[0.35, 0.2, 0.2, 0.25]),
        "internet_service": internet,
    })


def generate(
    days: int,
    *,
    scenario: Scenario = Scenario(),
    rows_per_day: int = 1000,
    seed: int = 7,
    start: datetime = DEFAULT_START,
) -> pd.DataFrame:
    """``days`` days of labelled churn rows, ordered by timestamp."""
    if scenario.name not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario.name!r}; choose from {sorted(SCENARIOS)}")
    if days < 1 or rows_per_day < 1:
        raise ValueError("days and rows_per_day must be at least 1")
    frames = []
    for day in range(days):
        rng = np.random.default_rng([seed, day])
        on = scenario.active(day)
        weekend = on and scenario.name == "weekend" and (start + timedelta(days=day)).weekday() >= 5
        frame = _features(rng, rows_per_day, covariate=on and scenario.name == "covariate",
                          weekend=weekend)
        logit = churn_logit(frame, concept=on and scenario.name == "concept")
        frame["churned"] = (rng.random(rows_per_day) < 1 / (1 + np.exp(-logit))).astype(int)
        if on and scenario.name == "unit_bug":
            frame["monthly_charges"] = (frame["monthly_charges"] * 100).round(2)
        if on and scenario.name == "new_category":
            swap = rng.random(rows_per_day) < 0.25
            frame.loc[swap, "payment_method"] = "crypto-wallet"
        if on and scenario.name == "missing":
            frame.loc[rng.random(rows_per_day) < 0.4, "total_charges"] = np.nan
        seconds = np.sort(rng.uniform(0, 86_400, rows_per_day))
        frame.insert(0, "ts", pd.Timestamp(start + timedelta(days=day)) + pd.to_timedelta(seconds, "s"))
        frame.insert(0, "customer_id", [f"c{seed}-{day:04d}-{i:06d}" for i in range(rows_per_day)])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
