"""Routing for quality and cost: ``python -m bench.cost [--quick] [--seeds N] [--plot PATH]``.

A simulated platform (4 task types, one request every 2 simulated seconds)
where the strongest agent is expensive and cheaper agents are as good on
some task types and clearly worse on others (see :data:`PROFILES` and
:data:`PRICES`). Halfway, the cheapest agent's price doubles (a provider
changes its price), so on ``doc_summary`` another agent becomes the
cheapest adequate one. Every policy decides on the same request stream with
the same per-request draws (common random numbers), as in ``bench.decisions``.

Per policy, over seeds (median): quality per decision (success x accuracy of
the chosen agent's run) and cost per decision, each also as a share of
always-the-strongest's, and for the price change: the decisions of the task
type ``doc_summary`` after the change until the new cheapest adequate agent
carries most of them (over the trailing :data:`SWITCH_WINDOW` of them), and
the repriced agent's runs on that task type in that time.

Policies: autoretrain (the default exponential strategy, monitor
auto-retraining, 10 % Thompson sampling) under the ``constrained`` objective
for several ``quality_tolerance`` values and under ``weighted`` with
``cost_weight`` :data:`COST_WEIGHT`; the oracle's frontier (the true
cheapest agent within each tolerance of the truly best, at the true prices);
always the strongest; always the cheapest (by the prices of the moment);
random routing between those two at the same cost as each autoretrain point
(its quality is the straight line between them: a share ``p`` of requests to
the strongest costs and earns ``p`` of the difference); and River and Vowpal
Wabbit policies fed the cost-adjusted reward ``quality - COST_WEIGHT * cost``.

Targets (issue 18): one autoretrain setting keeps >= 95 % of
always-the-strongest's quality at <= 50 % of its cost, and after the price
change the new cheapest adequate agent carries most of ``doc_summary``'s
traffic within a bounded number of decisions.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoretrain.webhook.updater import UpdateStrategy
from autoretrain.webhook.updater.objective import Objective
from examples.platform_sim import SimClock

from .decisions import (
    ACCURACY_LOGIT_SD,
    ERROR_SHARE,
    EXPLORE_SHARE,
    MONITOR,
    SECONDS_PER_DECISION,
    TIMEOUT_MS,
    TIMEOUT_SHARE,
    UPDATER_KWARGS,
)
from .harness import machine, table, write_results
from .policies import (
    AutoretrainPolicy,
    Draws,
    Outcome,
    Policy,
    RiverBandit,
    VowpalWabbitCB,
    vowpalwabbit_available,
)

SHARE_TARGET = 0.95
COST_SHARE_TARGET = 0.50
#: Quality one unit of cost is worth: the weighted objective's ``cost_weight``
#: and the River / VW policies' reward ``quality - COST_WEIGHT * cost``.
COST_WEIGHT = 2.0
TOLERANCES = (0.0, 0.02, 0.05, 0.10, 0.20)
#: Tolerances of the oracle's frontier.
FRONTIER = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.10, 0.15, 0.20, 0.30, 0.50)
#: "Most of the traffic": more than half of the trailing this many decisions.
SWITCH_WINDOW = 40
SWITCH_TASK = "doc_summary"
TOKEN_LOGNORMAL_SD = 0.2

AGENTS = (
    ("frontier-xl", "llm"),
    ("mid-7b", "llm"),
    ("mini-3b", "llm"),
    ("coder-13b", "llm"),
)
TASK_TYPES = ("support_triage", "doc_summary", "sales_forecast", "code_review")
TASK_MIX = (0.30, 0.30, 0.20, 0.20)
STRONGEST = "frontier-xl"
REPRICED = "mini-3b"
#: Price per run before the change (the cost of a run is this times a
#: lognormal token-count factor of mean 1).
PRICES = {"frontier-xl": 0.060, "mid-7b": 0.010, "mini-3b": 0.006, "coder-13b": 0.015}
LATENCY_MS = {"frontier-xl": 3500.0, "mid-7b": 1200.0, "mini-3b": 600.0, "coder-13b": 1500.0}
_GOOD, _STRONG = (0.97, 0.91), (0.97, 0.92)
#: (success rate, median accuracy) per (task type, agent): the strongest is
#: best everywhere (~0.88); mid-7b is as good on support and summaries;
#: mini-3b on summaries; coder-13b on code review; each is clearly worse
#: (0.45-0.65) elsewhere, and only the strongest is good on sales forecasts.
PROFILES: dict[tuple[str, str], tuple[float, float]] = {
    **{(t, STRONGEST): _STRONG for t in TASK_TYPES},
    ("support_triage", "mid-7b"): _GOOD,
    ("doc_summary", "mid-7b"): _GOOD,
    ("sales_forecast", "mid-7b"): (0.90, 0.70),
    ("code_review", "mid-7b"): (0.85, 0.62),
    ("support_triage", "mini-3b"): (0.85, 0.70),
    ("doc_summary", "mini-3b"): _GOOD,
    ("sales_forecast", "mini-3b"): (0.85, 0.60),
    ("code_review", "mini-3b"): (0.75, 0.55),
    ("support_triage", "coder-13b"): (0.90, 0.72),
    ("doc_summary", "coder-13b"): (0.90, 0.72),
    ("sales_forecast", "coder-13b"): (0.88, 0.66),
    ("code_review", "coder-13b"): _GOOD,
}


@dataclass(frozen=True)
class Sizes:
    decisions: int
    price_change_at: int


FULL = Sizes(6000, 3000)
QUICK = Sizes(2000, 1000)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class CostOutcome(Outcome):
    """A run's outcome; ``reward`` is the cost-adjusted one the peer policies
    learn from, ``quality`` what every policy is judged by."""

    cost_weight: float = COST_WEIGHT

    @property
    def quality(self) -> float:
        return 0.0 if self.accuracy is None else self.accuracy

    @property
    def reward(self) -> float:
        return self.quality - self.cost_weight * self.cost


@dataclass
class CostStream:
    """Requests, draws, true qualities and prices, one entry per decision."""

    sizes: Sizes
    task: np.ndarray
    u: np.ndarray  # [n, 2] success and failure-kind draws
    z: np.ndarray  # [n, 3] accuracy, latency, token-count draws
    draws: list[Draws]
    quality: np.ndarray  # [task, agent] true expected quality
    prices: np.ndarray  # [n, agent] price per run at each decision
    onboarding: list[int | None]

    @classmethod
    def build(cls, sizes: Sizes, seed: int, onboarding_rounds: int = 2) -> CostStream:
        rng = np.random.default_rng(seed)
        n = sizes.decisions
        u = rng.random((n, 6))
        z = rng.standard_normal((n, 3))
        task = np.minimum(np.searchsorted(np.cumsum(TASK_MIX), u[:, 0], side="right"),
                          len(TASK_TYPES) - 1)
        agents = [a for a, _ in AGENTS]
        success = np.array([[PROFILES[(t, a)][0] for a in agents] for t in TASK_TYPES])
        median = np.array([[PROFILES[(t, a)][1] for a in agents] for t in TASK_TYPES])
        nodes, weights = np.polynomial.hermite_e.hermegauss(32)
        weights = weights / weights.sum()
        logit = np.log(median / (1.0 - median))
        quality = success * np.tensordot(
            _sigmoid(logit[..., None] + ACCURACY_LOGIT_SD * nodes), weights, axes=1)
        prices = np.repeat(np.array([[PRICES[a] for a in agents]]), n, axis=0)
        prices[sizes.price_change_at:, agents.index(REPRICED)] *= 2.0
        draws = [Draws(route=float(r), reward=float(c), pick=float(p))
                 for r, c, p in zip(u[:, 3], u[:, 4], u[:, 5], strict=True)]
        forced: list[int | None] = []
        trials = np.zeros((len(TASK_TYPES), len(agents)), dtype=int)
        for t in task:
            if trials[t].min() < onboarding_rounds:
                a = int(np.argmin(trials[t]))
                trials[t, a] += 1
                forced.append(a)
            else:
                forced.append(None)
        return cls(sizes, task, u[:, 1:3], z, draws, quality, prices, forced)

    def execute(self, i: int, agent_index: int) -> CostOutcome:
        t = int(self.task[i])
        name, agent_type = AGENTS[agent_index]
        success, median = PROFILES[(TASK_TYPES[t], name)]
        latency = LATENCY_MS[name] * math.exp(0.35 * float(self.z[i, 1]))
        tokens = math.exp(TOKEN_LOGNORMAL_SD * float(self.z[i, 2])
                          - TOKEN_LOGNORMAL_SD**2 / 2.0)
        cost = float(self.prices[i, agent_index]) * tokens
        acc: float | None = None
        if self.u[i, 0] < success:
            status = "success"
            logit = math.log(median / (1.0 - median))
            acc = 1.0 / (1.0 + math.exp(-(logit + ACCURACY_LOGIT_SD * float(self.z[i, 0]))))
        elif self.u[i, 1] < TIMEOUT_SHARE:
            status, latency = "timeout", TIMEOUT_MS
        elif self.u[i, 1] < TIMEOUT_SHARE + ERROR_SHARE:
            status = "error"
        else:
            status = "failure"
        return CostOutcome(f"task-{i:06d}", TASK_TYPES[t], name, agent_type, status,
                           round(latency, 1), int(1500 * tokens), cost, acc)

    def cheapest_within(self, i: int, tolerance: float) -> np.ndarray:
        """Per task type, the agent the oracle picks at decision ``i``: the
        cheapest (at the true prices) within ``tolerance`` of the truly best."""
        adequate = self.quality >= self.quality.max(axis=1, keepdims=True) - tolerance - 1e-12
        price = np.where(adequate, self.prices[i][None, :], np.inf)
        return np.argmin(price, axis=1)


# -- policies -----------------------------------------------------------------------


class Fixed(Policy):
    """Always the agent ``pick(stream, i)`` names (strongest, cheapest, oracle)."""

    def __init__(self, name: str, pick: Callable[[int, int], int], stream: CostStream) -> None:
        super().__init__(AGENTS)
        self.name = name
        self._pick = pick
        self._stream = stream
        self.i = 0

    def choose(self, task_type: str, draws: Draws) -> str:
        return self.agents[self._pick(self.i, TASK_TYPES.index(task_type))]


def autoretrain(objective: Objective, name: str) -> Callable[[SimClock, int, CostStream], Policy]:
    return lambda clock, seed, stream: AutoretrainPolicy(
        AGENTS, clock=clock, settings=MONITOR, strategy=UpdateStrategy.EXPONENTIAL, auto=True,
        explore_share=EXPLORE_SHARE, seed=seed,
        updater_kwargs={**UPDATER_KWARGS, "objective": objective}, name=name)


def autoretrain_name(objective: Objective) -> str:
    if objective.mode == "constrained":
        return f"autoretrain constrained, tolerance {objective.quality_tolerance:g}"
    if objective.mode == "weighted":
        return f"autoretrain weighted, cost_weight {objective.cost_weight:g}"
    return "autoretrain quality (default)"


OBJECTIVES = (Objective(),
              *(Objective("constrained", quality_tolerance=t) for t in TOLERANCES),
              Objective("weighted", cost_weight=COST_WEIGHT))


def policy_factories(include_vw: bool) -> dict[str, Callable[[SimClock, int, CostStream], Policy]]:
    from river import bandit, stats

    agents = [a for a, _ in AGENTS]
    strongest = agents.index(STRONGEST)
    out: dict[str, Callable[[SimClock, int, CostStream], Policy]] = {
        "always the strongest": lambda clock, seed, s: Fixed(
            "always the strongest", lambda i, t: strongest, s),
        "always the cheapest": lambda clock, seed, s: Fixed(
            "always the cheapest", lambda i, t: int(np.argmin(s.prices[i])), s),
    }
    for objective in OBJECTIVES:
        out[autoretrain_name(objective)] = autoretrain(objective, autoretrain_name(objective))

    def river(name: str, make: Callable[[int], Any]) -> Callable[..., Policy]:
        return lambda clock, seed, s: RiverBandit(AGENTS, TASK_TYPES, name=name, factory=make,
                                                  seed=seed)

    out["River UCB(delta=1, EWMean 0.05), cost-adjusted"] = river(
        "River UCB", lambda s: bandit.UCB(delta=1.0, reward_obj=stats.EWMean(0.05), seed=s))
    out["River EpsilonGreedy(0.1, EWMean 0.05), cost-adjusted"] = river(
        "River EpsilonGreedy",
        lambda s: bandit.EpsilonGreedy(0.1, reward_obj=stats.EWMean(0.05), seed=s))
    if include_vw:
        out["VW cb_explore_adf (epsilon 0.05), cost-adjusted"] = (
            lambda clock, seed, s: VowpalWabbitCB(AGENTS, seed=seed))
    return out


# -- running ------------------------------------------------------------------------


def play(stream: CostStream, policy: Policy) -> dict[str, np.ndarray]:
    n = stream.sizes.decisions
    column = {a: i for i, (a, _) in enumerate(AGENTS)}
    quality, cost = np.zeros(n), np.zeros(n)
    chosen = np.zeros(n, dtype=int)
    clock = getattr(policy, "clock", None)
    for i in range(n):
        if clock is not None:
            clock.advance(SECONDS_PER_DECISION)
        if isinstance(policy, Fixed):
            policy.i = i
        t = int(stream.task[i])
        forced = stream.onboarding[i]
        a = forced if forced is not None else column[
            policy.choose(TASK_TYPES[t], stream.draws[i])]
        outcome = stream.execute(i, a)
        quality[i], cost[i], chosen[i] = outcome.quality, outcome.cost, a
        policy.observe(outcome, stream.draws[i])
        policy.tick()
    policy.close()
    return {"quality": quality, "cost": cost, "chosen": chosen}


def switch(stream: CostStream, chosen: np.ndarray) -> dict[str, Any]:
    """After the price change, on :data:`SWITCH_TASK`: decisions of that task type
    until the new cheapest adequate agent carries more than half of the trailing
    :data:`SWITCH_WINDOW` (and stays so, except for dips of exploration, for the
    rest of the run: the first point after which its trailing share never falls
    to a quarter), and the repriced agent's runs on it meanwhile."""
    at = stream.sizes.price_change_at
    t = TASK_TYPES.index(SWITCH_TASK)
    agents = [a for a, _ in AGENTS]
    target = agents.index("mid-7b")
    rows = np.flatnonzero((stream.task == t) & (np.arange(len(stream.task)) >= at))
    picks = chosen[rows]
    hits = (picks == target).astype(float)
    c = np.concatenate([[0.0], np.cumsum(hits)])
    idx = np.arange(1, len(hits) + 1)
    share = (c[idx] - c[np.maximum(idx - SWITCH_WINDOW, 0)]) / np.minimum(idx, SWITCH_WINDOW)
    over = np.flatnonzero((share > 0.5) & (idx >= SWITCH_WINDOW // 2))
    if not len(over):
        return {"decisions": None, "repriced_runs": int((picks == agents.index(REPRICED)).sum()),
                "share_after": float(hits.mean()) if len(hits) else 0.0}
    k = int(over[0]) + 1
    return {"decisions": k,
            "repriced_runs": int((picks[:k] == agents.index(REPRICED)).sum()),
            "share_after": float(hits[k:].mean()) if k < len(hits) else 1.0}


def frontier(stream: CostStream) -> list[dict[str, float]]:
    """The oracle's quality and cost per decision at each tolerance of :data:`FRONTIER`
    (expected values: true qualities, true prices)."""
    out = []
    n = stream.sizes.decisions
    for tol in FRONTIER:
        q = c = 0.0
        for i in (0, stream.sizes.price_change_at):
            end = stream.sizes.price_change_at if i == 0 else n
            pick = stream.cheapest_within(i, tol)
            tasks = stream.task[i:end]
            q += float(stream.quality[tasks, pick[tasks]].sum())
            c += float(stream.prices[i, pick[tasks]].sum())
        out.append({"tolerance": tol, "quality": q / n, "cost": c / n})
    return out


def run(quick: bool = False, seeds: int | None = None, sizes: Sizes | None = None
        ) -> dict[str, Any]:
    """Every policy on every seed's stream; the JSON-ready results."""
    seeds = seeds or (2 if quick else 3)
    sizes = sizes or (QUICK if quick else FULL)
    vw_error = vowpalwabbit_available()
    factories = policy_factories(include_vw=vw_error is None)
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in factories}
    frontiers = []
    for seed in range(1, seeds + 1):
        stream = CostStream.build(sizes, seed)
        frontiers.append(frontier(stream))
        for name, make in factories.items():
            started = time.perf_counter()
            played = play(stream, make(SimClock(), seed, stream))
            per[name].append({
                "seed": seed,
                "quality": float(played["quality"].mean()),
                "cost": float(played["cost"].mean()),
                "switch": switch(stream, played["chosen"]),
                "seconds": time.perf_counter() - started,
            })
    policies: dict[str, Any] = {}
    strongest = per["always the strongest"]
    for name, runs in per.items():
        q_share = [r["quality"] / s["quality"] for r, s in zip(runs, strongest, strict=True)]
        c_share = [r["cost"] / s["cost"] for r, s in zip(runs, strongest, strict=True)]
        decisions = [r["switch"]["decisions"] for r in runs]
        policies[name] = {
            "runs": runs,
            "quality": statistics.median(r["quality"] for r in runs),
            "cost": statistics.median(r["cost"] for r in runs),
            "quality_share": statistics.median(q_share),
            "cost_share": statistics.median(c_share),
            "switch_decisions": (None if any(d is None for d in decisions)
                                 else statistics.median(decisions)),
            "switch_decisions_max": (None if any(d is None for d in decisions)
                                     else max(decisions)),
            "repriced_runs": statistics.median(r["switch"]["repriced_runs"] for r in runs),
        }
    cheap, strong = policies["always the cheapest"], policies["always the strongest"]
    for name, p in policies.items():
        if name.startswith("autoretrain"):
            share = (p["cost"] - cheap["cost"]) / (strong["cost"] - cheap["cost"])
            share = min(max(share, 0.0), 1.0)
            p["random_same_cost_quality"] = cheap["quality"] + share * (
                strong["quality"] - cheap["quality"])
    front = [{"tolerance": tol,
              "quality": statistics.median(f[k]["quality"] for f in frontiers),
              "cost": statistics.median(f[k]["cost"] for f in frontiers)}
             for k, tol in enumerate(FRONTIER)]
    return {
        "quick": quick,
        "seeds": list(range(1, seeds + 1)),
        "settings": {"sizes": sizes.__dict__, "prices": PRICES, "repriced": REPRICED,
                     "cost_weight": COST_WEIGHT, "tolerances": list(TOLERANCES),
                     "explore_share": EXPLORE_SHARE, "updater": UPDATER_KWARGS,
                     "switch_window": SWITCH_WINDOW},
        "vowpalwabbit": "included" if vw_error is None else f"left out: {vw_error}",
        "oracle_frontier": front,
        "policies": policies,
        "targets": _targets(policies),
    }


def _targets(policies: dict[str, Any]) -> dict[str, Any]:
    meets = [name for name, p in policies.items() if name.startswith("autoretrain")
             and p["quality_share"] >= SHARE_TARGET and p["cost_share"] <= COST_SHARE_TARGET]
    switched = {name: p["switch_decisions_max"] for name, p in policies.items()
                if name.startswith("autoretrain") and name in meets}
    return {"quality_at_half_cost": meets, "switch_decisions_max": switched,
            "met": bool(meets) and all(v is not None for v in switched.values())}


def report(r: dict[str, Any]) -> str:
    strong = r["policies"]["always the strongest"]
    rows = []
    for name, p in r["policies"].items():
        rows.append([
            name, f"{p['quality']:.3f}", f"{p['quality_share']:.3f}", f"{p['cost']:.4f}",
            f"{p['cost_share']:.3f}",
            f"{p['random_same_cost_quality'] / strong['quality']:.3f}"
            if "random_same_cost_quality" in p else "",
            "never" if p["switch_decisions"] is None
            else f"{p['switch_decisions']:.0f} (max {p['switch_decisions_max']})",
            f"{p['repriced_runs']:.0f}",
        ])
    parts = [table(["policy", "quality / decision", "x strongest", "cost / decision",
                    "x strongest", "random at same cost (x strongest)",
                    f"{SWITCH_TASK} decisions to switch", f"{REPRICED} runs meanwhile"], rows)]
    parts.append(table(
        ["oracle tolerance", "quality / decision", "x strongest", "cost / decision",
         "x strongest"],
        [[f"{f['tolerance']:g}", f"{f['quality']:.3f}",
          f"{f['quality'] / strong['quality']:.3f}", f"{f['cost']:.4f}",
          f"{f['cost'] / strong['cost']:.3f}"] for f in r["oracle_frontier"]]))
    t = r["targets"]
    parts.append(f"Target >= {SHARE_TARGET:.0%} of the strongest's quality at <= "
                 f"{COST_SHARE_TARGET:.0%} of its cost: met by "
                 f"{', '.join(t['quality_at_half_cost']) or 'none'}; after the price change "
                 f"the new cheapest adequate agent on {SWITCH_TASK} carries most of its "
                 f"traffic within (max over seeds) {t['switch_decisions_max']} decisions of it.")
    return "\n\n".join(parts)


def plot(r: dict[str, Any], path: Path) -> Path:
    """The quality-cost curve (as shares of the strongest's) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strong = r["policies"]["always the strongest"]
    cheap = r["policies"]["always the cheapest"]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    front = r["oracle_frontier"]
    ax.plot([f["cost"] / strong["cost"] for f in front],
            [f["quality"] / strong["quality"] for f in front], "k--", marker=".",
            label="oracle frontier (cheapest within tolerance, true values)")
    ax.plot([cheap["cost_share"], 1.0], [cheap["quality_share"], 1.0], ":", color="grey",
            label="random routing strongest / cheapest (same cost)")
    constrained = [(name, p) for name, p in r["policies"].items()
                   if name.startswith("autoretrain constrained")]
    ax.plot([p["cost_share"] for _, p in constrained],
            [p["quality_share"] for _, p in constrained], "o-", color="tab:blue",
            label="autoretrain constrained (quality_tolerance)")
    for name, p in constrained:
        ax.annotate(name.rsplit(" ", 1)[-1], (p["cost_share"], p["quality_share"]),
                    textcoords="offset points", xytext=(5, -12), fontsize=8, color="tab:blue")
    markers = {"autoretrain quality (default)": ("s", "tab:green"),
               "always the strongest": ("*", "black"), "always the cheapest": ("v", "black")}
    peers = iter(("x", "P", "^", "h", "d"))
    for name, p in r["policies"].items():
        if name.startswith("autoretrain constrained"):
            continue
        if name in markers:
            marker, color = markers[name]
        elif name.startswith("autoretrain"):
            marker, color = "D", "tab:red"
        else:
            marker, color = next(peers, "x"), "tab:orange"
        ax.scatter([p["cost_share"]], [p["quality_share"]], marker=marker, color=color,
                   label=name, zorder=3)
    ax.axhline(SHARE_TARGET, color="tab:green", lw=0.6)
    ax.axvline(COST_SHARE_TARGET, color="tab:green", lw=0.6)
    ax.set_xlabel("cost per decision / always-the-strongest's")
    ax.set_ylabel("quality per decision / always-the-strongest's")
    ax.set_title("Routing for quality and cost (bench.cost, median over seeds)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, two seeds (CI)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 1..N (default 3; quick 2)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="write the quality-cost curve to this PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    started = time.perf_counter()
    result = run(args.quick, args.seeds)
    result["runtime_seconds"] = round(time.perf_counter() - started, 1)
    print("## Routing for quality and cost\n")
    print(report(result))
    print(f"\nVowpal Wabbit: {result['vowpalwabbit']}; {result['runtime_seconds']} s; "
          f"{machine()['cpu']}")
    print(f"written to {write_results('cost', result, quick=args.quick)}")
    if args.plot is not None:
        print(f"plot written to {plot(result, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
