"""The four claims of "Bigger is not Always Better: scaling properties of latent diffusion models" (Mei et al. 2024),
judged on the rows of the scaling study (benchmarks/scaling.py) by fixed rules: pure functions over rows, no
measurement here.

A row is a dict with at least ``model`` (the UNet size it belongs to: a family member, also for its students),
``unet_params``, ``method`` ("teacher" | "progressive" | "lcm"), ``sampler``, ``steps``, ``guidance``,
``latency_ms``, ``prompt_accuracy`` and ``fd`` (None when unknown). The *largest* model is the one whose rows have
the most UNet parameters; "smaller" is every other one.

Rule (a): smaller models win under a fixed budget
-------------------------------------------------
Latency budgets ``B_1 < ... < B_K`` (``K = BudgetRule.budgets``, log-spaced) run from the largest model's fastest row
to the slowest row of all: below ``B_1`` the largest model cannot make an image at all, and a comparison there would
be vacuous. At each budget, each model's best row is its highest prompt accuracy among its rows with
``latency_ms <= B``. A smaller model *wins* budget B when its best accuracy exceeds the largest model's by more than
``margin`` (0.005: a tie, or a difference of about one image in 256, goes to the larger model -- the claim is that
smaller is *better*). With ``w_k`` = 1 where a smaller model wins ``B_k``:

- **holds** when there is a budget ``B*`` at or above the ``ceil(min_prefix * K)``-th budget (the lowest quarter of
  the range at least, so one lucky budget is not enough) such that smaller models win a strict majority of the
  budgets ``B_1 .. B*``: the paper's finding is that smaller models are better at small budgets, larger ones once
  the budget is generous, so the rule asks for the low end, not for every budget;
- **does not hold** when no smaller model wins any budget;
- **mixed** otherwise (smaller models win somewhere, but not most of the low budgets).

Rule (b), whichever sampler: rule (a) on the teacher rows of each sampler alone; **holds** when it holds for every
sampler, **does not hold** when it holds for none and does not hold for every one, **mixed** otherwise.

Rule (c), after step distillation: rule (a) on the student rows alone (progressive and LCM students of every size,
pooled).

Rule (d), guidance moves FD more than prompt accuracy: for each model, sampler and step count with two or more
guidance scales (teacher rows), the relative spread of a metric over guidance is ``(max - min) / mean`` (0 when it
does not move). For each (model, sampler), FD "moves more" when the median over step counts of FD's relative spread
exceeds that of prompt accuracy. **holds** when FD moves more for every (model, sampler), **does not hold** when for
none, **mixed** otherwise. (A relative spread compares metrics of different scales as well as one number can; the
evidence lists both medians.)

Any rule whose data is missing (fewer than two models, no student rows, one guidance scale) gives **not measured**
instead of a verdict it could not have computed.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CLAIMS = {
    "a": "Under a fixed sampling (latency) budget, smaller models often give better images than larger ones.",
    "b": "This holds whichever sampler is used.",
    "c": "It still holds after step distillation.",
    "d": "Classifier-free guidance changes visual quality (FD) more than prompt accuracy.",
}
VERDICTS = ("holds", "does not hold", "mixed", "not measured")


@dataclass(frozen=True)
class BudgetRule:
    budgets: int = 24  # K: latency budgets, log-spaced from the largest model's fastest row to the slowest row
    margin: float = 0.005  # a smaller model must beat the largest's prompt accuracy by more than this
    min_prefix: float = 0.25  # B* covers at least this fraction of the budgets (from the low end)


def largest_model(rows: list[dict]) -> str:
    """The model whose rows have the most UNet parameters (ties: the last by name)."""
    return max(rows, key=lambda r: (r["unet_params"], r["model"]))["model"]


def models_by_size(rows: list[dict]) -> list[str]:
    """The models of ``rows``, fewest UNet parameters first."""
    params: dict[str, int] = {}
    for r in rows:
        params[r["model"]] = max(params.get(r["model"], 0), r["unet_params"])
    return sorted(params, key=lambda m: (params[m], m))


def budget_grid(rows: list[dict], n: int) -> list[float]:
    """``n`` latency budgets (ms), log-spaced from the largest model's fastest row to the slowest row, both included."""
    big = largest_model(rows)
    lo = min(r["latency_ms"] for r in rows if r["model"] == big)
    hi = max(r["latency_ms"] for r in rows)
    if n <= 1 or hi <= lo:
        return [hi]
    return [lo] + [lo * (hi / lo) ** (i / (n - 1)) for i in range(1, n - 1)] + [hi]


def _better(a: dict, b: dict) -> bool:
    """Row a beats row b: higher prompt accuracy, then lower FD, then lower latency."""
    fa = a["fd"] if a["fd"] is not None else math.inf
    fb = b["fd"] if b["fd"] is not None else math.inf
    return (a["prompt_accuracy"], -fa, -a["latency_ms"]) > (b["prompt_accuracy"], -fb, -b["latency_ms"])


def best_under(rows: list[dict], budget_ms: float) -> dict[str, dict]:
    """Each model's best row (:func:`_better`) among its rows with ``latency_ms <= budget_ms``; models without one
    are absent."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["latency_ms"] <= budget_ms and (r["model"] not in best or _better(r, best[r["model"]])):
            best[r["model"]] = r
    return best


def budget_table(rows: list[dict], rule: BudgetRule = BudgetRule()) -> list[dict]:
    """Per budget of :func:`budget_grid`: ``budget_ms``, ``best`` (model -> its best row under the budget),
    ``winner`` (the model with the best accuracy, the largest keeping ties within the margin) and ``smaller_wins``."""
    big = largest_model(rows)
    out = []
    for b in budget_grid(rows, rule.budgets):
        best = best_under(rows, b)
        ref = best[big]["prompt_accuracy"]
        challengers = [m for m, r in best.items() if m != big and r["prompt_accuracy"] > ref + rule.margin]
        winner = max(challengers, key=lambda m: best[m]["prompt_accuracy"]) if challengers else big
        out.append({"budget_ms": b, "best": best, "winner": winner, "smaller_wins": bool(challengers)})
    return out


def _verdict(claim: str, verdict: str, evidence: str, rule: str, statistic: dict | None = None) -> dict:
    return {"claim": claim, "statement": CLAIMS[claim], "verdict": verdict, "evidence": evidence, "rule": rule,
            "statistic": statistic or {}}


def smaller_wins(rows: list[dict], rule: BudgetRule = BudgetRule(), claim: str = "a",
                 subject: str = "teacher rows") -> dict:
    """Rule (a) (module docstring) on ``rows``: a verdict row {claim, statement, verdict, evidence, rule, statistic}."""
    text = (f"over {rule.budgets} log-spaced latency budgets from the largest model's fastest row to the slowest row: "
            f"holds if smaller models beat the largest's best prompt accuracy by more than {rule.margin:g} at a strict "
            f"majority of the budgets up to some B* covering at least the lowest {rule.min_prefix:.0%}; does not hold "
            f"if they never do; mixed otherwise")
    models = models_by_size(rows)
    if len(models) < 2:
        return _verdict(claim, "not measured", f"{subject}: {len(models)} model size(s); two or more are needed", text)
    table = budget_table(rows, rule)
    wins = [t["smaller_wins"] for t in table]
    k_total, n_wins = len(table), sum(wins)
    big = largest_model(rows)
    stat = {"subject": subject, "largest": big, "budgets_ms": [t["budget_ms"] for t in table], "smaller_wins": wins,
            "winners": [t["winner"] for t in table], "fraction": n_wins / k_total}
    if n_wins == 0:
        return _verdict(claim, "does not hold",
                        f"{subject}: the largest model ({big}) has the best prompt accuracy (within {rule.margin:g}) "
                        f"at all {k_total} budgets ({table[0]['budget_ms']:.1f}-{table[-1]['budget_ms']:.1f} ms)",
                        text, stat)
    first = max(1, math.ceil(rule.min_prefix * k_total))
    prefix = next((k for k in range(k_total, first - 1, -1) if 2 * sum(wins[:k]) > k), None)
    stat["last_win_ms"] = max(t["budget_ms"] for t in table if t["smaller_wins"])  # highest budget a smaller one wins
    winners = sorted({t["winner"] for t in table if t["smaller_wins"]}, key=models.index)
    where = (f"{subject}: a smaller model ({', '.join(winners)}) beats the largest ({big}) at {n_wins} of {k_total} "
             f"budgets")
    if prefix is not None:
        stat["b_star_ms"] = table[prefix - 1]["budget_ms"]  # the highest B* of the rule
        return _verdict(claim, "holds", f"{where}, and at {sum(wins[:prefix])} of the {prefix} budgets up to "
                                        f"{table[prefix - 1]['budget_ms']:.1f} ms", text, stat)
    return _verdict(claim, "mixed", f"{where}, but not at a majority of the lowest budgets "
                                    f"({sum(wins[:first])} of the lowest {first})", text, stat)


def claim_a(rows: list[dict], rule: BudgetRule = BudgetRule()) -> dict:
    """(a): rule (a) on the teacher rows of every sampler, pooled."""
    return smaller_wins([r for r in rows if r["method"] == "teacher"], rule, "a", "teacher rows, all samplers")


def claim_b(rows: list[dict], rule: BudgetRule = BudgetRule()) -> dict:
    """(b): rule (a) per sampler on the teacher rows; the verdicts combined (module docstring)."""
    teacher = [r for r in rows if r["method"] == "teacher"]
    samplers = sorted({r["sampler"] for r in teacher})
    per = {s: smaller_wins([r for r in teacher if r["sampler"] == s], rule, "b", f"{s}") for s in samplers}
    text = ("rule (a) per sampler (teacher rows): holds if it holds for every sampler, does not hold if for none, "
            "mixed otherwise")
    measured = {s: v for s, v in per.items() if v["verdict"] != "not measured"}
    stat = {"per_sampler": {s: v["verdict"] for s, v in per.items()}}
    if not measured:
        return _verdict("b", "not measured", "no sampler has rows of two or more model sizes", text, stat)
    verdicts = {v["verdict"] for v in measured.values()}
    verdict = ("holds" if verdicts == {"holds"} else "does not hold" if verdicts == {"does not hold"} else "mixed")
    evidence = "; ".join(v["evidence"] + f" ({v['verdict']})" for v in measured.values())
    if len(samplers) < 2:
        evidence += f"; only one sampler ({samplers[0]}) was measured"
    return _verdict("b", verdict, evidence, text, stat)


def claim_c(rows: list[dict], rule: BudgetRule = BudgetRule()) -> dict:
    """(c): rule (a) on the student rows (every distillation method, pooled)."""
    students = [r for r in rows if r["method"] != "teacher"]
    if not students:
        return _verdict("c", "not measured", "no student rows", "rule (a) on the student rows")
    v = smaller_wins(students, rule, "c", "student rows")
    v["rule"] = "rule (a) on the student rows (progressive and LCM, pooled): " + v["rule"]
    return v


def relative_spread(values: list[float]) -> float:
    """``(max - min) / mean`` of ``values``: 0 when they do not move, infinite when they move around a mean of 0."""
    lo, hi = min(values), max(values)
    if hi == lo:
        return 0.0
    mean = sum(values) / len(values)
    return (hi - lo) / abs(mean) if mean else math.inf


def claim_d(rows: list[dict]) -> dict:
    """(d): per (model, sampler), the median over step counts of the relative spread over guidance of FD against
    that of prompt accuracy (module docstring)."""
    text = ("per model, sampler and step count with >= 2 guidance scales: relative spread (max - min) / mean of FD and "
            "of prompt accuracy over guidance; per (model, sampler) FD moves more if its median over step counts is "
            "larger; holds if it does for every (model, sampler), does not hold if for none, mixed otherwise")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["method"] == "teacher" and r["fd"] is not None:
            groups.setdefault((r["model"], r["sampler"], r["steps"]), []).append(r)
    spreads: dict[tuple, list[tuple[float, float]]] = {}
    for (model, sampler, _), rs in groups.items():
        if len({r["guidance"] for r in rs}) >= 2:
            spreads.setdefault((model, sampler), []).append(
                (relative_spread([r["fd"] for r in rs]), relative_spread([r["prompt_accuracy"] for r in rs])))
    if not spreads:
        return _verdict("d", "not measured", "no model, sampler and step count was measured at two or more guidance "
                                             "scales", text)
    per = {}
    for (model, sampler), pairs in spreads.items():
        fd, acc = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        per[f"{model} / {sampler}"] = {"fd_spread": fd, "accuracy_spread": acc, "fd_moves_more": fd > acc}
    n_more = sum(p["fd_moves_more"] for p in per.values())
    verdict = "holds" if n_more == len(per) else "does not hold" if n_more == 0 else "mixed"
    fds = statistics.median(p["fd_spread"] for p in per.values())
    accs = statistics.median(p["accuracy_spread"] for p in per.values())
    evidence = (f"FD's relative spread over guidance exceeds prompt accuracy's for {n_more} of {len(per)} (model, "
                f"sampler) pairs (medians {fds:.3g} vs {accs:.3g})")
    return _verdict("d", verdict, evidence, text, {"per_model_sampler": per})


def verdicts(rows: list[dict], rule: BudgetRule = BudgetRule()) -> list[dict]:
    """The verdict rows of claims a..d, in that order."""
    return [claim_a(rows, rule), claim_b(rows, rule), claim_c(rows, rule), claim_d(rows)]
