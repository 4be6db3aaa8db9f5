"""Request streams for the routing benchmark (pure, seeded): the same for Envoy and the DES.

- ``mixed``: open-loop Poisson arrivals; prompt and output lengths lognormal with
  a long tail (``Lengths``); 70 % of requests belong to a user session (the hash
  key, ``x-session-id``; users drawn by a Zipf law, as real traffic is skewed),
  the rest carry no key.
- ``multiturn``: users in conversations whose prompt is the whole history so far
  (a shared, growing prefix: ``sluice_prefix`` = the conversation), each turn
  adding a question and the previous answer; the histories of all users exceed
  one pod's prefix cache, so where a turn lands decides whether it hits.
- ``batch``: offline requests, long prompts and outputs, sent as fast as the cap
  lets them (closed loop, retried after ``Retry-After``).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass

__all__ = ["Lengths", "Req", "mixed", "multiturn"]


@dataclass(frozen=True)
class Lengths:
    prompt_median: float = 1200.0
    prompt_sigma: float = 1.0
    prompt_max: int = 8000
    output_median: float = 60.0
    output_sigma: float = 0.9
    output_max: int = 600

    def draw(self, rng: random.Random) -> tuple[int, int]:
        p = rng.lognormvariate(math.log(self.prompt_median), self.prompt_sigma)
        o = rng.lognormvariate(math.log(self.output_median), self.output_sigma)
        return max(16, min(self.prompt_max, round(p))), max(1, min(self.output_max, round(o)))

    def means(self, samples: int = 20_000, seed: int = 7) -> tuple[float, float]:
        rng = random.Random(seed)
        drawn = [self.draw(rng) for _ in range(samples)]
        return (sum(p for p, _ in drawn) / samples, sum(o for _, o in drawn) / samples)


@dataclass(frozen=True)
class Req:
    t: float  # seconds from the start of the run
    prompt: int
    output: int
    key: str | None = None  # hash key (x-session-id)
    prefix: str | None = None  # shared prefix (sluice_prefix): a conversation
    prefix_tokens: int = 0


def _zipf(users: int, s: float, rng: random.Random) -> list[float]:
    weights = [1.0 / (i + 1) ** s for i in range(users)]
    rng.shuffle(weights)
    return weights


def mixed(rate: float, seconds: float, seed: int, lengths: Lengths = Lengths(), *,
          keyed: float = 0.7, users: int = 400, zipf: float = 0.8,
          tag: str = "") -> list[Req]:
    rng = random.Random(seed)
    popularity = list(itertools.accumulate(_zipf(users, zipf, rng)))
    out: list[Req] = []
    t = rng.expovariate(rate)
    while t < seconds:
        prompt, output = lengths.draw(rng)
        key = None
        if rng.random() < keyed:
            user = bisect.bisect(popularity, rng.random() * popularity[-1])
            key = f"{tag}u{min(user, users - 1)}"
        out.append(Req(t, prompt, output, key))
        t += rng.expovariate(rate)
    return out


def multiturn(rate: float, seconds: float, seed: int, *, users: int = 96,
              system_tokens: int = 2500, turn_tokens: int = 150, answer_tokens: int = 80,
              max_history: int = 12_000, tag: str = "") -> tuple[list[Req], list[Req]]:
    """Every user's first turn (one after another at 4 × ``rate``: the warm-up), then
    turns of ``users`` conversations at ``rate`` in total for ``seconds``; each
    conversation starts with a system prompt of its own and grows by a question and
    an answer per turn."""
    rng = random.Random(seed)
    history = {u: system_tokens + rng.randrange(0, 400) for u in range(users)}
    first: list[Req] = []
    for u in range(users):
        prompt = history[u] + turn_tokens
        first.append(Req(u / (4 * rate), prompt, answer_tokens, key=f"u{u}",
                         prefix=f"{tag}u{u}", prefix_tokens=history[u]))
        history[u] = prompt + answer_tokens
    out: list[Req] = []
    t = rng.expovariate(rate)
    while t < seconds:
        u = rng.randrange(users)
        prompt = history[u] + turn_tokens
        if prompt > max_history:  # the user starts a new conversation
            history[u] = system_tokens
            prompt = history[u] + turn_tokens
        out.append(Req(t, prompt, answer_tokens, key=f"u{u}",
                       prefix=f"{tag}u{u}", prefix_tokens=history[u]))
        history[u] = prompt + answer_tokens
        t += rng.expovariate(rate)
    return first, out
