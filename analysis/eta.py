"""How long until a metric can decide, from the evidence so far and the current traffic.

Pure and approximate by design (an estimate shown to people, never used to
decide). A metric passes when its interval's upper end (on the ratio) reaches
``1 + nonInferiorityMargin`` and fails when its lower end clears
``1 + harmMargin``; the interval's half-widths shrink, to first order, like the
standard error of a two-sample contrast, sqrt(1/n_c + 1/n_b), and each arm
grows at its current rate. Anytime-valid intervals shrink a little slower
(a logarithmic factor, the shape of mixture boundaries). If the estimate
is on the wrong side of a margin, that outcome does not come at the current
effect (``None``). Minimum samples and soak add their own floors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analysis.rates import ErrorRateState, bernoulli_cs
from analysis.sequential import RateRatioCS, _logsumexp, rate_ratio_loglik
from analysis.spec import Direction
from analysis.verdicts import MetricVerdict, Verdict

HORIZON_S = 30 * 24 * 3600.0  # beyond a month: "not at this traffic"
# Early estimates are noisy and the true effect of most candidates is small, so
# the effect is shrunk toward none (a normal prior on the log ratio, sd TAU)
# before extrapolating; the interval's half-width stands in for 2.5 standard errors.
TAU = 0.2
LOG_OFFSET = 3.0  # keeps the log factor positive at small counts


@dataclass(frozen=True)
class Eta:
    metric: str
    verdict: str
    evidence: str  # the numbers so far, in words
    pass_in_s: float | None  # None: not at the current effect and traffic
    fail_in_s: float | None
    decide_in_s: float | None  # the sooner of the two, floors included

    def to_json(self) -> dict[str, object]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 1)

        return {"metric": self.metric, "verdict": self.verdict, "evidence": self.evidence,
                "passInS": r(self.pass_in_s), "failInS": r(self.fail_in_s),
                "decideInS": r(self.decide_in_s)}


def _shrink(n_c: float, n_b: float, r_c: float, r_b: float, t: float) -> float:
    """Width after t more seconds relative to now (<= 1): sqrt(log(n) / n) in the
    effective count n of a two-sample contrast (the mixture boundaries' shape)."""
    def width(a: float, b: float) -> float:
        n = 1 / (1 / a + 1 / b)
        return math.sqrt(math.log(n + LOG_OFFSET) / n)

    return width(n_c + r_c * t, n_b + r_b * t) / width(n_c, n_b)


def _time_to(width_now: float, needed: float, n_c: float, n_b: float, r_c: float,
             r_b: float) -> float | None:
    """Seconds until the half-width is at most ``needed`` (None beyond the horizon)."""
    if needed <= 0:
        return None
    if width_now <= needed:
        return 0.0
    if _shrink(n_c, n_b, r_c, r_b, HORIZON_S) * width_now > needed:
        return None
    lo, hi = 0.0, HORIZON_S
    for _ in range(60):
        mid = (lo + hi) / 2
        if _shrink(n_c, n_b, r_c, r_b, mid) * width_now <= needed:
            hi = mid
        else:
            lo = mid
    return hi


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def eta(v: MetricVerdict, direction: Direction, rate_c: float, rate_b: float,
        min_samples: int = 0, soak_left_s: float = 0.0, min_effect: float = 0.0,
        interval_s: float = 0.0, state: ErrorRateState | None = None,
        alpha: float = 0.05) -> Eta:
    """The estimate for one metric; rates in observations per second per version.

    With an error rate's accumulated ``state`` the tests themselves are
    projected (``project_error_rate``; ``alpha`` is the experiment's, which its
    intervals use); otherwise interval widths are. Decisions
    happen only at looks, so times are rounded up to the next look
    (``interval_s`` apart)."""
    found = _eta(v, direction, rate_c, rate_b, min_samples, soak_left_s, min_effect)
    # No traffic for a version this look (rate 0): nothing to project, as in ``_eta``.
    if (state is not None and v.verdict not in (Verdict.PASS, Verdict.FAIL)
            and rate_c > 0 and rate_b > 0):
        pass_in, fail_in = project_error_rate(state, alpha, v.alpha,
                                              v.non_inferiority_margin, min_effect,
                                              rate_c, rate_b)
        floor = max(soak_left_s, _samples_in(min_samples, state.n_c, state.n_b, rate_c,
                                             rate_b))
        pass_in = None if pass_in is None else max(pass_in, floor)
        options = [x for x in (pass_in, fail_in) if x is not None]
        found = Eta(v.name, v.verdict.value, found.evidence, pass_in, fail_in,
                    min(options) if options else None)
    if interval_s <= 0:
        return found

    def at_look(x: float | None) -> float | None:
        return None if x is None else math.ceil(x / interval_s - 1e-9) * interval_s

    return Eta(found.metric, found.verdict, found.evidence, at_look(found.pass_in_s),
               at_look(found.fail_in_s), at_look(found.decide_in_s))


def _eta(v: MetricVerdict, direction: Direction, rate_c: float, rate_b: float,
         min_samples: int, soak_left_s: float, min_effect: float) -> Eta:
    n_c, n_b = float(v.n.get("candidate", 0.0)), float(v.n.get("baseline", 0.0))
    lo, hi = v.interval
    evidence = _evidence(v)
    if v.verdict in (Verdict.FAIL, Verdict.PASS):
        done = 0.0 if v.verdict is Verdict.FAIL else max(0.0, soak_left_s)
        return Eta(v.name, v.verdict.value, evidence, done if v.verdict is Verdict.PASS
                   else None, 0.0 if v.verdict is Verdict.FAIL else None, done)
    if n_c <= 0 or n_b <= 0 or rate_c <= 0 or rate_b <= 0 or not math.isfinite(v.estimate):
        return Eta(v.name, v.verdict.value, evidence + "; not enough traffic to estimate",
                   None, None, None)
    floor = max(soak_left_s, _samples_in(min_samples, n_c, n_b, rate_c, rate_b))
    events = _events(v, n_c, n_b, rate_c, rate_b)
    if events is not None:  # a rate's interval is as wide as its events allow
        n_c, n_b, rate_c, rate_b = events
    est = _log(v.estimate)
    if math.isfinite(_log(lo)) and math.isfinite(_log(hi)):
        se = (_log(hi) - _log(lo)) / 5.0
        est *= TAU * TAU / (TAU * TAU + se * se)
    worse = direction is Direction.HIGHER_IS_WORSE
    sign = 1.0 if worse else -1.0
    pass_edge = sign * _log(1 + sign * v.non_inferiority_margin)
    harm_edge = sign * _log(1 + sign * v.harm_margin)
    e = sign * est
    up, down = (hi, lo) if worse else (lo, hi)
    upper_w = sign * (_log(up) - est) if math.isfinite(_log(up)) and up < math.inf else None
    lower_w = sign * (est - _log(down)) if down > 0 else None
    pass_in = fail_in = None
    if upper_w is not None and e < pass_edge:
        pass_in = _time_to(upper_w, pass_edge - e, n_c, n_b, rate_c, rate_b)
    by_effect = _pass_by_min_effect(v, min_effect, n_c, n_b, rate_c, rate_b)
    if by_effect is not None:
        pass_in = by_effect if pass_in is None else min(pass_in, by_effect)
    if lower_w is not None and e > harm_edge:
        fail_in = _time_to(lower_w, e - harm_edge, n_c, n_b, rate_c, rate_b)
    by_evidence = _fail_by_evalue(v, n_c, n_b, rate_c, rate_b)
    if by_evidence is not None:
        fail_in = by_evidence if fail_in is None else min(fail_in, by_evidence)
    pass_in = None if pass_in is None else max(pass_in, floor)
    fail_in = None if fail_in is None else max(fail_in, _samples_in(0, n_c, n_b, rate_c,
                                                                     rate_b))
    options = [x for x in (pass_in, fail_in) if x is not None]
    return Eta(v.name, v.verdict.value, evidence, pass_in, fail_in,
               min(options) if options else None)


def _fail_by_evalue(v: MetricVerdict, n_c: float, n_b: float, r_c: float,
                    r_b: float) -> float | None:
    """Harm: under a fixed effect log e grows about linearly in the observations."""
    if v.evalue is None or v.evalue <= 1 or v.alpha <= 0:
        return None
    need, have = math.log(1 / v.alpha), math.log(v.evalue)
    if have >= need:
        return 0.0
    n = n_c + n_b
    seconds = (need - have) / (have / n) / (r_c + r_b)
    return seconds if seconds <= HORIZON_S else None


def _pass_by_min_effect(v: MetricVerdict, min_effect: float, n_c: float, n_b: float,
                        r_c: float, r_b: float) -> float | None:
    """Error rates: passing because the absolute difference's bound reaches minEffect."""
    upper = v.details.get("diff_upper")
    rc, rb = v.details.get("rate_candidate"), v.details.get("rate_baseline")
    if min_effect <= 0 or upper is None or rc is None or rb is None:
        return None
    diff = rc - rb
    if not (math.isfinite(upper) and math.isfinite(diff)) or diff >= min_effect:
        return None
    return _time_to(upper - diff, min_effect - diff, n_c, n_b, r_c, r_b)


def _events(v: MetricVerdict, n_c: float, n_b: float, r_c: float,
            r_b: float) -> tuple[float, float, float, float] | None:
    ec, eb = v.details.get("events_candidate"), v.details.get("events_baseline")
    if ec is None or eb is None:
        return None
    ec, eb = ec + 0.5, eb + 0.5
    return ec, eb, r_c * ec / n_c, r_b * eb / n_b


def _samples_in(need: int, n_c: float, n_b: float, r_c: float, r_b: float) -> float:
    return max(0.0, (need - n_c) / r_c, (need - n_b) / r_b) if need else 0.0


def _evidence(v: MetricVerdict) -> str:
    lo, hi = v.interval
    shown = f"{v.estimate:.3g}" if math.isfinite(v.estimate) else "n/a"
    parts = [f"estimate {shown} ({lo:.3g}-{hi:.3g}) vs non-inferiority "
             f"{1 + v.non_inferiority_margin:.3g} and harm {1 + v.harm_margin:.3g}"]
    if v.evalue is not None and v.alpha > 0:
        parts.append(f"e-value {v.evalue:.3g} of {1 / v.alpha:.3g} needed for harm")
    else:
        parts.append(f"p={v.pvalue:.2g} vs {v.alpha:.2g}")
    return "; ".join(parts)


def describe(seconds: float | None) -> str:
    if seconds is None:
        return "not at the current effect and traffic"
    if seconds < 90:
        return f"~{seconds:.0f}s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f}m"
    return f"~{seconds / 3600:.1f}h"


# --- error rates: project the tests themselves ---------------------------------------


def project_error_rate(state: ErrorRateState, alpha: float, alpha_harm: float,
                       ni_margin: float, min_effect: float, rate_c: float,
                       rate_b: float) -> tuple[float | None, float | None]:
    """(seconds to PASS, seconds to FAIL) if events keep arriving at the estimated rates.

    Rather than guess how intervals shrink, feed the tests the *expected*
    counts of t more seconds (fractional events split as the current estimate
    says) and ask them: the harm e-process for FAIL, the ratio confidence
    sequence or the absolute-difference bound for PASS.
    """
    n_c, n_b = state.n_c, state.n_b
    if n_c <= 0 or n_b <= 0 or rate_c <= 0 or rate_b <= 0:
        return None, None
    p_b = (state.events_b + 0.5) / (n_b + 1.0)
    p_c = (state.events_c + 0.5) / (n_c + 1.0)
    # "At the current effect": a candidate that has so far done no worse than the
    # baseline is not projected to fail (the smoothing above alone would make 0 errors
    # in 7 requests look ten times worse than 0 in 77).
    harmful_now = state.events_c * n_b > state.events_b * n_c
    rho = rate_c / (rate_c + rate_b)

    def counts(t: float) -> tuple[float, float, float, float]:
        return rate_c * t * p_c, rate_b * t * p_b, rate_c * t, rate_b * t

    def fails(t: float) -> bool:
        x_c, x_b, m_c, m_b = counts(t)
        h = state.harm
        alt = h.loglik_alt + rate_ratio_loglik(x_c, x_b, rho, h.log_alt)
        null = h.loglik_null + float(rate_ratio_loglik(x_c, x_b, rho,
                                                       np.array([h.log_r0]))[0])
        log_m = float(_logsumexp(alt - null)) - math.log(alt.size)
        rates = (state.events_c + x_c) / (n_c + m_c) - (state.events_b + x_b) / (n_b + m_b)
        return max(log_m, h.log_sup) >= math.log(1 / alpha_harm) and rates > min_effect

    def passes(t: float) -> bool:
        x_c, x_b, m_c, m_b = counts(t)
        cs = state.cs
        ll = cs.loglik + rate_ratio_loglik(x_c, x_b, rho, cs.log_r)
        projected = RateRatioCS(cs.log_r, cs.log_prior, ll, cs.lower, cs.upper)
        if projected.interval(alpha / 2)[1] <= 1 + ni_margin:
            return True
        if min_effect <= 0:
            return False
        _, up_c = bernoulli_cs(state.events_c + x_c, n_c + m_c, alpha / 4)
        lo_b, _ = bernoulli_cs(state.events_b + x_b, n_b + m_b, alpha / 4)
        return up_c - lo_b <= min_effect

    return _first(passes), (_first(fails) if harmful_now else None)


def _first(holds: Callable[[float], bool]) -> float | None:
    """The first t in [0, HORIZON_S] at which ``holds`` (assumed monotone), or None."""
    if holds(0.0):
        return 0.0
    if not holds(HORIZON_S):
        return None
    lo, hi = 0.0, HORIZON_S
    while hi - lo > max(1.0, 0.01 * lo):
        mid = (lo + hi) / 2
        if holds(mid):
            hi = mid
        else:
            lo = mid
    return hi
