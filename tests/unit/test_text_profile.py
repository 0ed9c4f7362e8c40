from __future__ import annotations

import math

import pytest

from kernel.text import TextProfile, descriptors, non_letter_share, oov_share, words


def test_words_are_letter_or_digit_runs_lower_cased():
    assert words("WiFi kaput!! 5g gone") == ["wifi", "kaput", "5", "g", "gone"]
    assert words("") == [] and words(None) == []


def test_oov_share_and_non_letters():
    vocab = frozenset({"wifi", "down"})
    assert oov_share(["wifi", "kaput"], vocab) == 0.5
    assert oov_share([], vocab) == 0.0
    assert non_letter_share("ab 12") == pytest.approx(2 / 5)
    assert non_letter_share("") == 0.0


def test_profile_threshold_from_validation_and_patterns():
    train = ["wifi is down", "the wifi is slow", "invoice is wrong", "wrong invoice again"] * 5
    validation = ["wifi is down", "invoice wrong"] * 50 + ["wifi kaput"]
    profile = TextProfile.fit("body", train, validation, min_df=2, patterns=[r"\brip\b"])
    assert "wifi" in profile.vocabulary and "kaput" not in profile.vocabulary
    assert profile.threshold_source == "validation" and profile.ood_oov_share == 0.0
    assert profile.is_ood("wifi kaput") and not profile.is_ood("the wifi is down")
    assert profile.is_ood("RIP the wifi is down")  # pattern, case-insensitive
    again = TextProfile.from_dict(profile.to_dict())
    assert again == profile and again.is_ood("rip")
    fixed = TextProfile.fit("body", train, validation, ood_oov_share=0.6)
    assert fixed.threshold_source == "spec" and not fixed.is_ood("wifi kaput")


def test_min_df_and_max_words_bound_the_vocabulary():
    profile = TextProfile.fit("t", ["a b", "a c", "a b"], [], min_df=2, max_words=1)
    assert profile.vocabulary == frozenset({"a"})


def test_descriptors_and_missing_text():
    profile = TextProfile.fit("t", ["wifi down"] * 3, ["wifi down"])
    out = descriptors(["wifi down", None, "wifi 5g!"], profile)
    assert list(out["length"][[0, 2]]) == [9.0, 8.0] and math.isnan(out["length"][1])
    assert list(out["words"][[0, 2]]) == [2.0, 3.0]
    assert out["oov_share"][2] == pytest.approx(2 / 3)


def test_other_format_refused():
    with pytest.raises(ValueError, match="format"):
        TextProfile.from_dict({"format": 99})


def test_one_pass_text_stats_equal_the_per_text_functions_on_random_texts():
    """text_stats (each text split once) gives what the per-text functions give: length,
    words(), TextProfile.oov, non_letter_share and TextProfile.is_ood, NaN descriptors for a
    missing text, and the OOD share and mean OOV share the drift check reported before."""
    import numpy as np

    from kernel.text import text_stats

    rng = np.random.default_rng(16)
    pool = ["wifi", "down", "invoice", "wrong", "kaput", "ded", "5g", "Ünïcødé", "rip", "12",
            "!!", "__", "e-mail", "naïve", "ERROR", "[2024-01-02 10:00:00]", "\t", "½"]
    profile = TextProfile.fit("t", ["wifi down", "invoice wrong", "wifi is down"] * 4,
                              ["wifi down"] * 99 + ["wifi kaput"], patterns=[r"\brip\b"])
    texts: list[str | None] = []
    for _ in range(2000):
        draw = rng.random()
        if draw < 0.05:
            texts.append(None)
        elif draw < 0.08:
            texts.append("")
        else:
            size = int(rng.integers(1, 9))
            texts.append(" ".join(str(w) for w in rng.choice(pool, size=size)))
    stats = text_stats(texts, profile)
    present = [t for t in texts if isinstance(t, str)]
    keep = np.array([isinstance(t, str) for t in texts])
    for name, values in stats.descriptors().items():
        assert np.isnan(values).tolist() == (~keep).tolist(), name
    assert stats.length[keep].tolist() == [float(len(t)) for t in present]
    assert stats.words[keep].tolist() == [float(len(words(t))) for t in present]
    assert stats.oov_share[keep].tolist() == [profile.oov(t) for t in present]
    assert stats.non_letter_share[keep].tolist() == [non_letter_share(t) for t in present]
    assert stats.ood.tolist() == [profile.is_ood(t) for t in texts]
    assert 0 < stats.ood_share == float(np.mean([profile.is_ood(t) for t in texts])) < 1
    assert stats.mean_oov == float(np.mean([profile.oov(t) for t in present]))
    empty = text_stats([], profile)
    assert empty.ood_share == 0.0 and empty.mean_oov is None
