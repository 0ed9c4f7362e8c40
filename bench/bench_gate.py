"""Gate benchmark: how often a worse-than-margin challenger is promoted when the gate is looked
at on the controller's real cadence, for the confidence-sequence gate (controller.gate.evaluate)
and the fixed-horizon paired bootstrap it replaced (controller.gate.fixed_horizon_bootstrap),
side by side on the same simulated cycles; power and median pairs needed at 0 and +margin.

Each simulated cycle: champion and challenger scores from a binormal model (so the true ROC AUC
difference is known exactly), correlated within rows as a retrained model's are; labelled pairs
accrue at ``--pairs-per-hour``; the gate is looked at every ``evaluate_every_seconds`` up to the
``evaluation_timeout`` (the controller's defaults), acting on the first look that decides, as
the controller does. AUC and its DeLong variance are updated incrementally (the same numbers
``evaluate`` computes; checked against it at sampled looks), so a cycle costs far less than
re-running the gate at each of its 4,320 looks. The old gate's percentile interval is replaced by
its normal form (difference +- 1.96 SE) at every look (1,000 resamples at each of millions of
looks would take days); the two are compared on sampled looks, and the page states the gap.

``python -m bench --only gate`` writes docs/bench/gate.md.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from scipy.stats import beta, norm

from bench.common import machine, write_section
from controller.gate import GatePolicy, cs_radius, evaluate, fixed_horizon_bootstrap
from controller.settings import ControllerSettings

COMMAND = "python -m bench --only gate"


@dataclass(frozen=True)
class Setup:
    base_auc: float = 0.75
    prevalence: float = 0.3
    correlation: float = 0.9          # of the two models' latent scores within a class
    pairs_per_hour: float = 200.0
    every_seconds: float = 60.0
    timeout_hours: float = 72.0
    margin: float = 0.01
    confidence: float = 0.95
    min_pairs: int = 200
    tuning_pairs: int = 2000

    @property
    def looks(self) -> int:
        return int(self.timeout_hours * 3600 / self.every_seconds)

    @property
    def total_pairs(self) -> int:
        return int(self.pairs_per_hour * self.timeout_hours)


def _scores(setup: Setup, diff: float, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and latent scores of champion (a) and challenger (b): AUC_a = base_auc and
    AUC_b = base_auc + diff exactly (binormal, unit variances: AUC = Phi(mu / sqrt 2))."""
    n = setup.total_pairs
    y = (rng.random(n) < setup.prevalence).astype(np.int64)
    mu_a = math.sqrt(2) * norm.ppf(setup.base_auc)
    mu_b = math.sqrt(2) * norm.ppf(setup.base_auc + diff)
    e_a = rng.normal(size=n)
    e_b = setup.correlation * e_a + math.sqrt(1 - setup.correlation ** 2) * rng.normal(size=n)
    return y, mu_a * y + e_a, mu_b * y + e_b


class Running:
    """Paired AUC difference and the gate's variance estimate, updated as pairs arrive.

    Per positive i, ``dc[i]`` = (negatives below it by the challenger) - (by the champion);
    per negative j, ``dd[j]`` = (positives above it, challenger) - (champion); with their sums
    and sums of squares kept exact (integers), each look costs O(1) and each arrival O(n)."""

    def __init__(self, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        self.y = y
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        self.pos, self.neg = pos, neg
        self.ap, self.bp, self.an, self.bn = a[pos], b[pos], a[neg], b[neg]
        self.dc = np.zeros(len(pos), dtype=np.int64)
        self.dd = np.zeros(len(neg), dtype=np.int64)
        self.s1p = self.s2p = self.s1n = self.s2n = 0
        self.p = self.q = self.n = 0

    def add(self, upto: int) -> None:
        q2 = int(np.searchsorted(self.neg, upto))
        p2 = int(np.searchsorted(self.pos, upto))
        if q2 > self.q:  # new negatives: each below some positives
            self.s1p, self.s2p, self.s1n, self.s2n = _arrive(
                (self.ap, self.bp, self.dc, self.p), (self.an, self.bn, self.dd, self.q, q2),
                (self.s1p, self.s2p, self.s1n, self.s2n), above=True)
            self.q = q2
        if p2 > self.p:  # new positives: each above some negatives
            self.s1n, self.s2n, self.s1p, self.s2p = _arrive(
                (self.an, self.bn, self.dd, self.q), (self.ap, self.bp, self.dc, self.p, p2),
                (self.s1n, self.s2n, self.s1p, self.s2p), above=False)
            self.p = p2
        self.n = upto

    def estimate(self) -> tuple[float, float]:
        """(AUC_b - AUC_a, per-pair standard deviation) as controller.gate computes them:
        the sample variance of the DeLong per-pair terms."""
        p, q, n = self.p, self.q, self.n
        diff = self.s1p / (p * q)
        pos = self.s2p / q ** 2 - 2 * diff * self.s1p / q + p * diff ** 2
        neg = self.s2n / p ** 2 - 2 * diff * self.s1n / p + q * diff ** 2
        var = (pos * (n / p) ** 2 + neg * (n / q) ** 2) / (n - 1)
        return diff, math.sqrt(max(var, 0.0))


def _arrive(old: tuple[np.ndarray, np.ndarray, np.ndarray, int],
            new: tuple[np.ndarray, np.ndarray, np.ndarray, int, int],
            sums: tuple[int, int, int, int], *, above: bool) -> tuple[int, int, int, int]:
    """Rows ``new[3]:new[4]`` of one class arrive; ``old`` (the other class, its first
    ``old[3]`` rows) gain one count per arrival ranked below (``above``: arrivals are negatives,
    counted when the old positive scores higher) or above them."""
    oa, ob, odelta, m = old
    na, nb, ndelta, start, stop = new
    s1o, s2o, s1n, s2n = sums
    delta = np.zeros(m, dtype=np.int64)
    for j in range(start, stop):
        gb = ob[:m] > nb[j] if above else ob[:m] < nb[j]
        ga = oa[:m] > na[j] if above else oa[:m] < na[j]
        own = int(np.count_nonzero(gb)) - int(np.count_nonzero(ga))
        ndelta[j] = own
        s1n, s2n = s1n + own, s2n + own * own
        delta += gb
        delta -= ga
    s2o += int(2 * (odelta[:m] @ delta) + delta @ delta)
    s1o += int(delta.sum())
    odelta[:m] += delta
    return s1o, s2o, s1n, s2n


@dataclass
class Outcome:
    outcome: str = "timeout"
    pairs: int = 0


def simulate(setup: Setup, diff: float, seed: int) -> tuple[Outcome, Outcome]:
    """One cycle: (confidence-sequence gate, old fixed-horizon gate) outcomes."""
    rng = np.random.default_rng(seed)
    run = Running(*_scores(setup, diff, rng))
    alpha, z = 1 - setup.confidence, float(norm.ppf(1 - (1 - setup.confidence) / 2))
    new, old = Outcome(), Outcome()
    for look in range(1, setup.looks + 1):
        n = int(look * setup.pairs_per_hour * setup.every_seconds / 3600)
        if n < setup.min_pairs or n == run.n:
            continue
        run.add(n)
        if run.p < 2 or run.q < 2:
            continue
        d, sd = run.estimate()
        for gate, half in ((new, cs_radius(n, sd, alpha, setup.tuning_pairs)),
                           (old, z * sd / math.sqrt(n))):
            if gate.outcome != "timeout":
                continue
            if d - half >= -setup.margin:
                gate.outcome, gate.pairs = "promote", n
            elif d + half < -setup.margin:
                gate.outcome, gate.pairs = "reject", n
        if new.outcome != "timeout" and old.outcome != "timeout":
            break
    return new, old


def _chunk(args: tuple[Setup, float, int, int]) -> list[tuple[Outcome, Outcome]]:
    setup, diff, start, count = args
    return [simulate(setup, diff, seed) for seed in range(start, start + count)]


def check_against_gate(setup: Setup, seeds: int = 3) -> tuple[float, float]:
    """Largest gap, at sampled looks, between the simulation's bounds and (1) the real
    ``evaluate`` and (2) the real bootstrap interval vs its normal form, relative to the
    bootstrap interval's half-width."""
    policy = GatePolicy(min_pairs=setup.min_pairs, margin=setup.margin,
                        confidence=setup.confidence, tuning_pairs=setup.tuning_pairs)
    alpha, z = 1 - setup.confidence, float(norm.ppf(1 - (1 - setup.confidence) / 2))
    worst_new = worst_old = 0.0
    for seed in range(seeds):
        y, a, b = _scores(setup, -setup.margin, np.random.default_rng(10_000 + seed))
        pa, pb = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))
        run = Running(y, a, b)
        for n in (300, 1000, 3000):
            run.add(n)
            d, sd = run.estimate()
            half = cs_radius(n, sd, alpha, setup.tuning_pairs)
            real = evaluate(y[:n], pa[:n], pb[:n], metric="roc_auc", policy=policy)
            assert real.ci_low is not None and real.ci_high is not None
            worst_new = max(worst_new, abs(real.ci_low - (d - half)),
                            abs(real.ci_high - (d + half)))
            low, high = fixed_horizon_bootstrap("roc_auc", y[:n], pa[:n], pb[:n], seed=seed)
            normal = z * sd / math.sqrt(n)
            worst_old = max(worst_old, abs(low - (d - normal)) / normal,
                            abs(high - (d + normal)) / normal)
    return worst_new, worst_old


def _rate(k: int, n: int) -> str:
    """k/n as a percentage with its exact (Clopper-Pearson) 95% interval."""
    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return f"{100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _row(label: str, diff_label: str, outcomes: list[Outcome]) -> str:
    n = len(outcomes)
    promoted = [o.pairs for o in outcomes if o.outcome == "promote"]
    rejected = [o.pairs for o in outcomes if o.outcome == "reject"]
    timeouts = sum(o.outcome == "timeout" for o in outcomes)

    def median(values: list[int]) -> str:
        return f"{int(np.median(values)):,}" if values else "–"

    return (f"| {diff_label} | {label} | {_rate(len(promoted), n)} | {median(promoted)} | "
            f"{100 * len(rejected) / n:.1f}% | {median(rejected)} | {100 * timeouts / n:.1f}% |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_gate", description=__doc__)
    parser.add_argument("--cycles", type=int, default=400, help="simulated cycles per difference")
    parser.add_argument("--pairs-per-hour", type=float, default=200.0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    settings = ControllerSettings()
    setup = Setup(pairs_per_hour=args.pairs_per_hour,
                  every_seconds=settings.controller_evaluate_every_seconds,
                  timeout_hours=settings.controller_evaluation_timeout_seconds / 3600,
                  margin=settings.controller_margin, confidence=settings.controller_confidence,
                  min_pairs=settings.controller_min_pairs,
                  tuning_pairs=settings.controller_gate_tuning_pairs)
    started = time.perf_counter()
    diffs = [(-2 * setup.margin, "−2·margin"), (-setup.margin, "−margin"), (0.0, "0"),
             (setup.margin, "+margin")]
    chunk = 25
    tasks = [(setup, d, 1_000_000 * i + s, min(chunk, args.cycles - s))
             for i, (d, _) in enumerate(diffs) for s in range(0, args.cycles, chunk)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(_chunk, tasks))
    by_diff: dict[float, list[tuple[Outcome, Outcome]]] = {d: [] for d, _ in diffs}
    for (_, d, _, _), part in zip(tasks, results, strict=True):
        by_diff[d].extend(part)
    gap_new, gap_old = check_against_gate(setup)
    seconds = time.perf_counter() - started
    rows = []
    for d, label in diffs:
        pairs = by_diff[d]
        rows.append(_row("confidence sequence (new)", f"{label} ({d:+.3f})", [p[0] for p in pairs]))
        rows.append(_row("fixed-horizon bootstrap (old)", f"{label} ({d:+.3f})",
                         [p[1] for p in pairs]))
    write_section("gate", _page(setup, args.cycles, args.workers, rows, gap_new, gap_old, seconds))
    print("\n".join(rows))
    return 0


def _page(setup: Setup, cycles: int, workers: int, rows: list[str], gap_new: float,
          gap_old: float, seconds: float) -> str:
    alpha = 1 - setup.confidence
    se = 100 * math.sqrt(alpha * (1 - alpha) / cycles)
    return f"""## Gate

Command: `{COMMAND}` (`--cycles {cycles} --pairs-per-hour {setup.pairs_per_hour:g}`). Machine:
{machine()}; {workers} worker processes, {seconds:.0f} s. Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.

Each of {cycles} simulated cycles per true difference: ROC AUC, champion {setup.base_auc}
(binormal scores, so the challenger's true AUC is exactly champion + difference), prevalence
{setup.prevalence}, the two models' latent scores correlated {setup.correlation} within a class;
{setup.pairs_per_hour:g} labelled pairs per hour from the first look, a look every
{setup.every_seconds:g} s (`DRIFTLOOP_CONTROLLER_EVALUATE_EVERY_SECONDS`) from `min_pairs`
{setup.min_pairs} until the evaluation timeout {setup.timeout_hours:g} h ({setup.looks:,} looks,
at most {setup.total_pairs:,} pairs); the first look that decides ends the cycle, as in the
controller; margin {setup.margin}, confidence {setup.confidence}. Both gates see the same pairs.

| true difference | gate | promoted [exact 95% CI] | median pairs to promote | rejected | median pairs to reject | timed out (rejected) |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Reading it: at −2·margin and −margin a promotion is an error; the confidence sequence must keep
it at or below 1 − confidence = {alpha:.0%} over all the looks, the fixed-horizon interval holds
{alpha / 2:.1%} (one side of a 95% interval) at *one* look only. At 0 and +margin a promotion
is right (power), and the median pairs are what it costs. Monte-Carlo error: a rate near
{alpha:.0%} over {cycles} cycles has a standard error of {se:.1f} points; the brackets are exact
Clopper-Pearson intervals.

How faithful the simulation is: the incremental AUC difference and its variance give the same
bounds as `controller.gate.evaluate` to within {gap_new:.1e} (sampled looks at 300, 1,000 and
3,000 pairs); the old gate is simulated by its normal form (difference ± 1.96 SE, DeLong), whose
endpoints differ from the real 1,000-resample percentile interval
(`controller.gate.fixed_horizon_bootstrap`) by at most {100 * gap_old:.0f}% of its half-width
at those looks. What is not simulated: labels arriving out of order (the pairs are a growing
uniform sample here), drift during the evaluation, and the sliding `max_pairs` window (not
reached). The confidence sequence is asymptotic (a central-limit argument), so its guarantee at
a few hundred pairs is approximate: the −margin row is the check.
"""
