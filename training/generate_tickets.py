"""Synthetic support tickets (short texts over five classes) with switchable drift scenarios.

The label process is known: a ticket's class picks a problem phrase of that class, wrapped
in an opener, a time phrase and a closer shared by every class. It is learnable from the
words but not perfectly: some tickets mention a second problem (the label stays the first),
some are too vague to tell, some phrases are shared by two classes (a router that is
physically broken, a login to the billing page), a few have a typo, and a share of labels is
noise; a TF-IDF + logistic regression reaches a macro-F1 of about 0.87. Deterministic by
seed, one generator per day as in training/generate.py; a scenario switches on at
``onset_day`` and stays on, and changes only what it names (a second generator per day draws
its changes, so the rows it leaves alone are those of ``none``).
docs/scenarios.md says what each one should trigger. The spec: examples/tickets/spec.yaml.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from training.generate import DEFAULT_START, Scenario

CLASSES = ("network", "billing", "account", "hardware", "other")
#: The class shares before any scenario (``class_mix`` moves billing to ``MIX_BILLING``).
PRIORS = (0.30, 0.20, 0.22, 0.20, 0.08)
CHANNELS = ("email", "chat", "phone", "app")

SCENARIOS: dict[str, str] = {
    "none": "no change: a correct monitor raises nothing",
    "slang": "network tickets in new slang the training vocabulary never had ('wifi kaput', "
    "'rip net'): 40% of them on the onset day, 5 points more each day (at most 80%); OOV "
    "share, OOD rate and text drift rise, realised performance on network falls",
    "new_topic": "a quarter of tickets are about a new crypto wallet feature, labelled other "
    "(8% of tickets before), in billing's money words: content drift, class drift (more "
    "predicted billing), realised performance falls",
    "class_mix": "billing goes from 20% to 50% of tickets, the words of every class unchanged: "
    "class (prediction and label) drift without OOV change",
    "length": "60% of tickets carry a pasted log or a long signature: text length, word "
    "count and non-letter share drift (log lines are out of vocabulary too)",
}

SLANG_SHARE = 0.4          # share of network tickets in slang on the onset day
SLANG_GROWTH = 0.05        # added each day after it
SLANG_MAX = 0.8
NEW_TOPIC_SHARE = 0.25
MIX_BILLING = 0.5
LENGTH_SHARE = 0.6
#: Share of tickets whose label is redrawn at random, whatever the text says (label noise).
LABEL_NOISE = 0.05
#: Share of tickets that also mention a problem of another class (the label is the first).
SECOND_PROBLEM = 0.2
#: Share of tickets with one typo (two letters swapped or one dropped): the few unseen words
#: every day has, so the OOD threshold set from validation rows is not zero.
TYPO_SHARE = 0.05
#: Share of tickets too vague to tell their class from the words (``VAGUE``).
VAGUE_SHARE = 0.08

PROBLEMS: dict[str, tuple[str, ...]] = {
    "network": (
        "my wifi keeps dropping", "the internet is really slow", "no internet connection at all",
        "the router lights are blinking red", "connection times out every few minutes",
        "cannot connect to the network", "wifi signal is very weak upstairs",
        "pages take forever to load", "video calls keep freezing", "lost connection again",
        "the modem keeps restarting", "internet goes offline every evening",
        "latency is terrible when gaming", "mobile data is not working",
        "my phone has no signal at home", "the connection drops when it rains",
        "broadband speed is a fraction of what i pay for", "dns errors on every website",
        "streaming buffers all the time", "the fibre line seems down in my street",
    ),
    "billing": (
        "i was charged twice this month", "my invoice is wrong", "i want a refund",
        "the payment did not go through", "why did my bill go up", "i was overcharged",
        "cancel my subscription please", "there is a fee i do not recognise",
        "my card was declined", "please update my payment method",
        "the discount was not applied", "i need a copy of last month's invoice",
        "direct debit was taken on the wrong date", "charged after i cancelled",
        "the price is higher than advertised", "refund has not arrived yet",
        "i cannot log in to the billing page", "late payment fee is unfair",
    ),
    "account": (
        "i forgot my password", "cannot log in to my account", "my account is locked",
        "the password reset email never arrives", "i want to change my email address",
        "someone else logged in to my account", "two factor code is not accepted",
        "please delete my account", "my username was changed", "cannot verify my identity",
        "the profile page shows the wrong name", "login keeps failing in the app",
        "i want to add a second user", "the verification link expired",
        "how do i merge two accounts", "my account was suspended",
    ),
    "hardware": (
        "the screen is cracked", "battery drains in an hour", "the device will not turn on",
        "keyboard keys are stuck", "the charger stopped working", "my laptop overheats",
        "the speaker crackles", "the camera is blurry", "the phone will not charge",
        "the router is physically broken", "the power button is loose",
        "the touchscreen does not respond", "the device is making a buzzing noise",
        "i need a repair for my tablet", "the headset has no sound", "the fan is very loud",
        "the replacement unit arrived damaged", "the set top box keeps rebooting",
    ),
    "other": (
        "how do i change the language settings", "i have a question about your opening hours",
        "i want to give some feedback", "where is your nearest store",
        "can i speak to a manager", "i would like to compliment the technician",
        "how do i recycle my old equipment", "is there a student offer",
        "i want to move house next month", "do you have a careers page",
        "the app notifications are annoying", "how do i donate to your charity partner",
    ),
}
VAGUE = ("it is not working", "something is wrong", "nothing works", "it stopped working",
         "i have a problem", "same issue as before", "it is broken again", "please call me back")
OPENERS = ("", "", "hi", "hello", "hey", "hi there", "good morning", "urgent", "help",
           "dear support", "hello team", "please help", "ok so", "not happy")
WHEN = ("", "", "", "since yesterday", "again", "for two days now", "this morning",
        "since the update", "every day this week", "after the storm", "since last week",
        "for the third time", "right now", "since i moved")
CLOSERS = ("", "", "", "thanks", "thank you", "please fix", "please advise", "asap",
           "what can i do", "can someone call me", "very frustrating", "any ideas",
           "this is not acceptable", "cheers")

#: Network problems in words the training data never has: slang and new spellings, beside
#: words the old model knows from other classes (a phone, the app, paying), as people write.
SLANG = (
    "wifi kaput", "5g gone on my phone", "rip net", "net ded fr", "phone got no bars lol",
    "zero bars smh", "net is cooked", "app wont even load smh", "interwebz borked",
    "ping thru the roof ngl", "cant even load tiktok on my phone", "lagging so bad fr fr",
    "net went poof", "yeeted offline on my laptop", "bruh no net", "paying for nothing lol",
    "the box is vibing but no net", "screen just spins no net",
)
#: The new feature's tickets: its own words (crypto, wallet, nft, tokens...), none of them in
#: any class's phrases, beside the money words of billing the old model knows.
NEW_TOPIC = (
    "my crypto wallet shows zero after the payment", "i want a refund of my crypto tokens",
    "charged a fee to withdraw tokens from the wallet", "nft payment is not showing in my wallet",
    "staking rewards are missing from my invoice", "my card was charged for an nft i never got",
    "blockchain transfer stuck pending after payment", "the price of the nft was charged twice",
    "crypto wallet top up with my card failed", "my tokens vanished after the swap",
)
SIGNATURES = (
    " -- Sent from my phone. This email and any attachments are confidential and intended "
    "solely for the addressee. If you received it in error please notify the sender.",
    " -- Kind regards, Alex Morgan | Senior Operations Coordinator | Northwind Logistics Ltd "
    "| Unit 4, Harbour Park | +44 20 7946 0958 | Please consider the environment before "
    "printing this email.",
    " -- Best wishes, Sam. Customer since 2016. Reference number 00451-22871-XZ. Office hours "
    "Monday to Friday nine to five, replies may be delayed.",
)
LOG_LINES = (
    "[2026-01-09 10:22:13] ERROR conn_mgr: timeout after 30000ms (code=0x1F)",
    "[2026-01-09 10:22:14] WARN dhcp: lease renewal failed, retrying in 5s",
    "[2026-01-09 10:22:19] INFO link: state=DOWN iface=wlan0 rssi=-91dBm",
    "[2026-01-09 10:22:21] ERROR app/v4.2.1: HTTP 503 on /api/session id=7f3a9c",
    "[2026-01-09 10:22:30] DEBUG sync: queue=118 pending, backoff=2^4",
)


def _priors(mix: bool) -> np.ndarray:
    p = np.asarray(PRIORS, dtype=float)
    if mix:
        billing = CLASSES.index("billing")
        rest = np.delete(np.arange(len(CLASSES)), billing)
        p[rest] *= (1 - MIX_BILLING) / p[rest].sum()
        p[billing] = MIX_BILLING
    return p / p.sum()


def _compose(opener: str, problem: str, when: str, closer: str) -> str:
    parts = [part for part in (opener, problem, when) if part]
    text = " ".join(parts)
    if closer:
        text += f", {closer}"
    return text[0].upper() + text[1:]


def _typo(text: str, where: float, at: float, drop: bool) -> str:
    """``text`` with a typo in its ``where``-th long word (as fractions of the choices)."""
    tokens = text.split(" ")
    long = [i for i, token in enumerate(tokens) if len(token) >= 4 and token.isalpha()]
    if not long:
        return text
    i = long[int(where * len(long))]
    token = tokens[i]
    j = 1 + int(at * (len(token) - 2))           # never the first letter
    tokens[i] = token[:j] + token[j + 1:] if drop else \
        token[:j - 1] + token[j] + token[j - 1] + token[j + 1:]
    return " ".join(tokens)


def _tickets(rng: np.random.Generator, n: int, priors: np.ndarray) -> pd.DataFrame:
    """One day's tickets before any scenario changes them."""
    intents = rng.choice(len(CLASSES), size=n, p=priors)
    problem_draws = rng.random(n)
    vague = rng.random(n) < VAGUE_SHARE
    vague_draws = rng.integers(0, len(VAGUE), size=n)
    second = rng.random(n) < SECOND_PROBLEM
    second_class = rng.integers(0, len(CLASSES), size=n)
    second_draws = rng.random(n)
    opener = rng.integers(0, len(OPENERS), size=n)
    when = rng.integers(0, len(WHEN), size=n)
    closer = rng.integers(0, len(CLOSERS), size=n)
    bang = rng.random(n) < 0.15
    typo = rng.random(n) < TYPO_SHARE
    typo_draws = rng.random((n, 3))
    noisy = rng.random(n) < LABEL_NOISE
    noise_class = rng.integers(0, len(CLASSES), size=n)
    channel_draws = rng.random(n)
    age = rng.exponential(500.0, n)
    bodies = []
    for i in range(n):
        own = PROBLEMS[CLASSES[intents[i]]]
        problem = VAGUE[vague_draws[i]] if vague[i] else own[int(problem_draws[i] * len(own))]
        if second[i] and second_class[i] != intents[i]:
            other = PROBLEMS[CLASSES[second_class[i]]]
            problem += " and " + other[int(second_draws[i] * len(other))]
        text = _compose(OPENERS[opener[i]], problem, WHEN[when[i]], CLOSERS[closer[i]])
        if typo[i]:
            text = _typo(text, typo_draws[i, 0], typo_draws[i, 1], bool(typo_draws[i, 2] < 0.5))
        bodies.append(text + ("!" if bang[i] else ""))
    labels = np.where(noisy, noise_class, intents)
    # Account tickets come from new accounts and the app more often; the rest evenly.
    is_account = intents == CLASSES.index("account")
    age = np.where(is_account, age * 0.4, age)
    channel_p = np.where(is_account[:, None], [0.2, 0.2, 0.1, 0.5], [0.3, 0.3, 0.2, 0.2])
    channel = (channel_draws[:, None] > np.cumsum(channel_p, axis=1)).sum(axis=1)
    return pd.DataFrame({
        "body": bodies,
        "channel": np.asarray(CHANNELS)[np.minimum(channel, len(CHANNELS) - 1)],
        "account_age_days": np.clip(age.round(), 0, 5000).astype(int),
        "label": np.asarray(CLASSES)[labels],
    })


def _slang(frame: pd.DataFrame, rng: np.random.Generator, share: float) -> None:
    network = np.flatnonzero((frame["label"] == "network").to_numpy())
    chosen = network[rng.random(len(network)) < share]
    opener = rng.integers(0, len(OPENERS), size=len(chosen))
    when = rng.integers(0, len(WHEN), size=len(chosen))
    phrase = rng.integers(0, len(SLANG), size=len(chosen))
    second = rng.integers(0, len(SLANG), size=len(chosen))
    double = rng.random(len(chosen)) < 0.3
    bodies = [_compose(OPENERS[o], SLANG[p] + (f" {SLANG[s]}" if d and s != p else ""),
                       WHEN[w], "")
              for o, w, p, s, d in zip(opener, when, phrase, second, double, strict=True)]
    frame.loc[frame.index[chosen], "body"] = bodies


def _new_topic(frame: pd.DataFrame, rng: np.random.Generator) -> None:
    chosen = np.flatnonzero(rng.random(len(frame)) < NEW_TOPIC_SHARE)
    opener = rng.integers(0, len(OPENERS), size=len(chosen))
    phrase = rng.integers(0, len(NEW_TOPIC), size=len(chosen))
    when = rng.integers(0, len(WHEN), size=len(chosen))
    closer = rng.integers(0, len(CLOSERS), size=len(chosen))
    frame.loc[frame.index[chosen], "body"] = [
        _compose(OPENERS[o], NEW_TOPIC[p], WHEN[w], CLOSERS[c])
        for o, p, w, c in zip(opener, phrase, when, closer, strict=True)]
    frame.loc[frame.index[chosen], "label"] = "other"


def _length(frame: pd.DataFrame, rng: np.random.Generator) -> None:
    chosen = np.flatnonzero(rng.random(len(frame)) < LENGTH_SHARE)
    kind = rng.random(len(chosen)) < 0.5
    signature = rng.integers(0, len(SIGNATURES), size=len(chosen))
    lines = rng.integers(3, 9, size=len(chosen))
    first = rng.integers(0, len(LOG_LINES), size=len(chosen))
    extra = [SIGNATURES[s] if k else " Log: " + " ".join(
        LOG_LINES[(f + j) % len(LOG_LINES)] for j in range(n))
        for k, s, n, f in zip(kind, signature, lines, first, strict=True)]
    rows = frame.index[chosen]
    frame.loc[rows, "body"] = [body + tail for body, tail in
                               zip(frame.loc[rows, "body"], extra, strict=True)]


def generate(
    days: int,
    *,
    scenario: Scenario = Scenario(),
    rows_per_day: int = 1000,
    seed: int = 7,
    start: datetime = DEFAULT_START,
) -> pd.DataFrame:
    """``days`` days of labelled support tickets, ordered by timestamp."""
    if scenario.name not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario.name!r}; choose from {sorted(SCENARIOS)}")
    if days < 1 or rows_per_day < 1:
        raise ValueError("days and rows_per_day must be at least 1")
    frames = []
    for day in range(days):
        rng = np.random.default_rng([seed, day])
        on = scenario.active(day)
        frame = _tickets(rng, rows_per_day, _priors(on and scenario.name == "class_mix"))
        seconds = np.sort(rng.uniform(0, 86_400, rows_per_day))
        changes = np.random.default_rng([seed, day, 1])
        if on and scenario.name == "slang":
            share = min(SLANG_MAX, SLANG_SHARE + SLANG_GROWTH * (day - scenario.onset_day))
            _slang(frame, changes, share)
        if on and scenario.name == "new_topic":
            _new_topic(frame, changes)
        if on and scenario.name == "length":
            _length(frame, changes)
        frame.insert(0, "ts", pd.Timestamp(start + timedelta(days=day))
                     + pd.to_timedelta(seconds, "s"))
        frame.insert(0, "ticket_id", [f"t{seed}-{day:04d}-{i:06d}" for i in range(rows_per_day)])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
