"""The verdict rules on simulated data with known truth: null studies with correlated cells,
injected effects, small n, fewer images, equivalence margins and the SAE quality bar."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sst

from hf_vitrobust import report as rp
from hf_vitrobust.report import verdicts as vd
from hf_vitrobust.stats import images_to_resolve, interval_position, paired_bootstrap

RULES = rp.VerdictRules()


def record(estimate, low, high, p=0.5, n=400, metric="m", scope="s", **qualifiers) -> rp.Record:
    return rp.Record(
        model="adv",
        reference="control",
        reference_role="clean_control",
        metric=metric,
        scope=scope,
        estimate=estimate,
        ci_low=low,
        ci_high=high,
        p_value=p,
        test="wilcoxon_signed_rank",
        n=n,
        qualifiers=qualifiers,
    )


# ---------------------------------------------------------------------------------------------
# C1 / certainty: a gain over the control above a floor
# ---------------------------------------------------------------------------------------------


def test_gain_floor_supported_not_supported_inconclusive():
    floor = RULES.seen_floor
    assert vd.judge_floor(record(0.05, 0.02, 0.08), floor).verdict == rp.SUPPORTED
    # A gain that is certainly smaller than the floor is no support, even if it is above zero.
    assert vd.judge_floor(record(0.005, 0.002, 0.008), floor).verdict == rp.NOT_SUPPORTED
    undecided = vd.judge_floor(record(0.02, 0.005, 0.035, n=400), floor)
    assert undecided.verdict == rp.INCONCLUSIVE
    # At the observed spread the CI's lower half (0.015 wide) must shrink below 0.01: 400·2.25.
    assert undecided.needed_images == 901 and "901 images" in undecided.state
    missing = vd.judge_floor(None, floor)
    assert missing.verdict == rp.INCONCLUSIVE and missing.state == vd.NO_CONTROL


def test_one_model_without_control_makes_the_claim_inconclusive_with_that_reason():
    judged = vd.judgement_of(vd.judge_floor(record(0.05, 0.02, 0.08), 0.01))
    missing = vd.judgement_of(vd.judge_floor(None, 0.01))
    claim = vd.combine_judgements([judged, missing])
    assert (claim.verdict, claim.reason) == (rp.INCONCLUSIVE, vd.NO_CONTROL)
    failing = vd.judgement_of(vd.judge_floor(record(0.0, -0.01, 0.005), 0.01))
    assert vd.combine_judgements([failing, missing]).verdict == rp.NOT_SUPPORTED
    empty = vd.combine_judgements([])
    assert empty.verdict == rp.INCONCLUSIVE and "no adversarial" in empty.reason


# ---------------------------------------------------------------------------------------------
# C2: no transfer, by equivalence per unseen group
# ---------------------------------------------------------------------------------------------


def test_transfer_margin_is_the_larger_of_the_minimum_and_a_share_of_the_seen_gain():
    assert vd.transfer_margin(record(0.03, 0.01, 0.05), RULES) == pytest.approx(0.01)
    assert vd.transfer_margin(record(0.12, 0.10, 0.14), RULES) == pytest.approx(0.024)
    assert vd.transfer_margin(record(-0.2, -0.3, -0.1), RULES) == pytest.approx(0.01)
    assert vd.transfer_margin(None, RULES) == pytest.approx(0.01)
    wide = rp.VerdictRules(transfer_margin_min=0.02, transfer_margin_share=0.5)
    assert vd.transfer_margin(record(0.12, 0.10, 0.14), wide) == pytest.approx(0.06)


def test_transfer_states_and_claim():
    m = 0.02
    inside = record(0.001, -0.01, 0.012, scope="group:noise")
    above = record(0.06, 0.04, 0.08, scope="group:blur")
    below = record(-0.06, -0.08, -0.04, scope="group:digital")
    straddles = record(0.015, 0.0, 0.03, scope="group:weather")
    assert vd.judge_transfer([inside], m).verdict == rp.SUPPORTED
    present = vd.judge_transfer([inside, above], m)
    assert present.verdict == rp.NOT_SUPPORTED
    assert [c.state for c in present.cells] == [vd.NO_TRANSFER, vd.TRANSFERS]
    assert vd.judge_transfer([inside, below], m).cells[1].state == vd.NEGATIVE_TRANSFER
    undecided = vd.judge_transfer([inside, straddles], m)
    assert undecided.verdict == rp.INCONCLUSIVE
    # The CI's upper half (0.015) must fit into the 0.005 left below the margin: 400·9.
    assert undecided.cells[1].needed_images == 3601
    assert vd.judge_transfer([], m).verdict == rp.INCONCLUSIVE


def test_a_non_significant_change_is_not_no_transfer():
    # The old rule called "no CI above zero" no transfer: a wide CI around a real gain passed.
    wide = record(0.03, -0.01, 0.07, scope="group:noise")
    assert vd.judge_transfer([wide], 0.02).verdict == rp.INCONCLUSIVE


def _widen(r: rp.Record, factor: float) -> rp.Record:
    """The same estimate from n / factor² images: each side of the CI grows by `factor`."""
    return record(
        r.estimate,
        r.estimate - (r.estimate - r.ci_low) * factor,
        r.estimate + (r.ci_high - r.estimate) * factor,
        n=max(2, int(r.n / factor**2)),
        scope=r.scope,
    )


_RANK = {rp.SUPPORTED: 1, rp.NOT_SUPPORTED: 1, rp.INCONCLUSIVE: 0}

groups = st.lists(
    st.tuples(
        st.floats(-0.2, 0.2, allow_nan=False),
        st.floats(0.0, 0.1, allow_nan=False),
        st.floats(0.0, 0.1, allow_nan=False),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(
    groups=groups,
    margin=st.floats(0.001, 0.1),
    floor=st.floats(0.0, 0.1),
    factor=st.floats(1.0, 10.0),
)
def test_fewer_images_only_move_verdicts_towards_inconclusive(groups, margin, floor, factor):
    full = [record(e, e - lo, e + hi, scope=f"group:{i}") for i, (e, lo, hi) in enumerate(groups)]
    fewer = [_widen(r, factor) for r in full]
    for judge in (
        lambda rs: vd.judge_transfer(rs, margin).verdict,
        lambda rs: vd.judge_floor(rs[0], floor).verdict,
        lambda rs: vd.judge_changed(rs, floor, RULES).verdict,
        lambda rs: vd.judge_sae({"s": rs}, {"s": []}, margin).verdict,
    ):
        before, after = judge(full), judge(fewer)
        assert after in (before, rp.INCONCLUSIVE), (before, after)
        assert not (before == rp.NOT_SUPPORTED and after == rp.SUPPORTED)


def test_fewer_real_images_never_turn_not_supported_into_supported():
    """Nested subsamples of simulated studies, every CI from stats.paired_bootstrap: the claim's
    verdict on a quarter of the images is the full verdict or inconclusive."""
    rng = np.random.default_rng(11)
    moves = set()
    for study in range(6):
        n = 800
        truth = [0.0, 0.0, 0.05 if study % 2 else 0.0]  # half the studies transfer to one group
        base = rng.uniform(size=(3, n))
        verdicts = []
        for size in (n, n // 4):
            records = []
            for g, shift in enumerate(truth):
                a = (base[g, :size] < 0.5).astype(float)
                b = (base[g, :size] + rng.normal(0, 0.05, size) < 0.5 + shift).astype(float)
                c = paired_bootstrap(a, b, n_resamples=1000, seed=study)
                records.append(record(c.estimate, c.ci_low, c.ci_high, n=size, scope=f"g{g}"))
            verdicts.append(vd.judge_transfer(records, 0.02).verdict)
        moves.add(tuple(verdicts))
        assert verdicts[1] in (verdicts[0], rp.INCONCLUSIVE), verdicts
    assert (rp.NOT_SUPPORTED, rp.NOT_SUPPORTED) in moves or (
        rp.NOT_SUPPORTED,
        rp.INCONCLUSIVE,
    ) in moves  # the transfer was found on all images


# ---------------------------------------------------------------------------------------------
# C3 / C4: "changed", corrected for multiplicity, with an effect floor — simulated studies
# ---------------------------------------------------------------------------------------------

CONDITIONS, LAYERS, HEADS = 4, 7, 9  # 28 layer cells, 252 layer x head cells per study


def _studies(
    n_studies: int, n: int, rho: float, seed: int, effect: float = 0.0, sd: float = 0.3
) -> np.ndarray:
    """Per-image attention-entropy differences adversarial − control, [studies, images,
    conditions, layers, heads] (nats): every cell of an image shares that image's component
    (correlation `rho` between cells), plus `effect` on layer 3 of condition 0 (all heads)."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n_studies, n, 1, 1, 1), dtype=np.float32)
    d = rng.standard_normal((n_studies, n, CONDITIONS, LAYERS, HEADS), dtype=np.float32)
    d *= sd * math.sqrt(1 - rho)
    d += sd * math.sqrt(rho) * shared
    d[:, :, 0, 2, :] += effect
    return d


def _cell_records(d: np.ndarray, test: str) -> list[list[rp.Record]]:
    """One family of records per study from per-image differences [studies, images, cells...]:
    mean, normal 95% CI, and the p-value of `test` (wilcoxon as the analysis records it, or the
    t-test where thousands of cells make the rank test too slow for the fast loop)."""
    s, n = d.shape[:2]
    flat = np.moveaxis(d.reshape(s, n, -1), 1, -1)  # [studies, cells, images]
    mean = flat.mean(-1)
    half = 1.959964 * flat.std(-1, ddof=1) / math.sqrt(n)
    if test == "wilcoxon":
        p = sst.wilcoxon(flat, axis=-1).pvalue
    else:
        p = sst.ttest_1samp(flat, 0.0, axis=-1).pvalue
    return [
        [
            record(mean[i, j], mean[i, j] - half[i, j], mean[i, j] + half[i, j], p[i, j], n=n)
            for j in range(flat.shape[1])
        ]
        for i in range(s)
    ]


def _families(d: np.ndarray, cells: bool = True) -> dict[str, list[list[rp.Record]]]:
    """The records of each simulated study: the layer family (mean over heads, Wilcoxon
    p-values, as the analysis records them) and the layer x head family (t-test p-values)."""
    out = {"layer": _cell_records(d.mean(axis=-1), "wilcoxon")}
    if cells:
        out["cell"] = _cell_records(d, "t")
    return out


def _rates(families: dict[str, list[list[rp.Record]]], floor: float) -> dict[str, float]:
    """Share of studies per verdict in each family; with the layer x head family also the rule
    this one replaced: "changed" when more CIs exclude zero than the 5% expected by chance (a
    one-sided binomial test that treats the cells as independent)."""
    out = {}
    for name, studies in families.items():
        verdicts = [vd.judge_changed(rs, floor, RULES).verdict for rs in studies]
        for v in rp.VERDICTS:
            out[f"{name} {v}"] = verdicts.count(v) / len(verdicts)
    if "cell" in families:
        cells = families["cell"]
        excluding = [sum(r.ci_low > 0 or r.ci_high < 0 for r in rs) for rs in cells]
        old = [
            sst.binomtest(k, len(cells[0]), 0.05, alternative="greater").pvalue < 0.05
            for k in excluding
        ]
        out["old rule supported"] = float(np.mean(old))
    return out


def _bound(rate: float, n: int) -> float:
    """5% plus two binomial standard errors of a rate over `n` studies."""
    return rate + 2 * math.sqrt(rate * (1 - rate) / n)


def test_null_studies_with_correlated_cells_rarely_say_changed():
    null_studies = _families(_studies(200, 500, rho=0.6, seed=1))
    # Without the floor: the corrected test alone keeps false "changed" at or below 5%.
    bare = _rates(null_studies, floor=0.0)
    assert bare["layer supported"] <= _bound(0.05, 200), bare
    assert bare["cell supported"] <= _bound(0.05, 200), bare
    # The simulation catches the rule this one replaced (issue #13 measured 20% on such data).
    assert bare["old rule supported"] > 0.1, bare
    # With the default floor (0.05 nats) false "changed" is rarer still, and with 500 images
    # most null studies are judged unchanged (every CI inside ±0.05 nats).
    rates = _rates(null_studies, floor=RULES.entropy_floor)
    assert rates["layer supported"] <= _bound(0.05, 200), rates
    assert rates["layer not supported"] >= 0.8, rates


def test_an_injected_effect_above_the_floor_is_found():
    rates = _rates(_families(_studies(100, 500, 0.6, seed=2, effect=0.1), False), 0.05)
    assert rates["layer supported"] >= 0.95, rates
    # An effect below the floor is significant but not "changed".
    small = _rates(_families(_studies(100, 500, 0.6, seed=3, effect=0.03), False), 0.05)
    assert small["layer supported"] <= _bound(0.05, 100), small


def test_small_n_keeps_the_error_rate_and_says_inconclusive():
    null = _rates(_families(_studies(200, 20, rho=0.6, seed=4), False), RULES.entropy_floor)
    assert null["layer supported"] <= _bound(0.05, 200), null
    # Twenty images cannot show that nothing changed: the null is mostly inconclusive.
    assert null["layer not supported"] <= 0.2 and null["layer inconclusive"] >= 0.75, null


def test_changed_needs_both_the_corrected_test_and_the_floor():
    tiny = [record(0.01, 0.008, 0.012, p=1e-9)] + [record(0.0, -0.01, 0.01, p=0.9)] * 9
    judged = vd.judge_changed(tiny, 0.05, RULES)
    assert judged.verdict == rp.NOT_SUPPORTED  # significant, but every CI inside ±0.05
    big_raw_only = [record(0.2, 0.01, 0.39, p=0.02)] + [record(0.0, -0.01, 0.01, p=0.9)] * 9
    judged = vd.judge_changed(big_raw_only, 0.05, RULES)
    # Holm: 10 × 0.02 = 0.2 ≥ 0.05 — not changed; the CI leaves the band: inconclusive.
    assert judged.verdict == rp.INCONCLUSIVE
    assert judged.cells[0].adjusted_p == pytest.approx(0.2)
    bh = vd.judge_changed(big_raw_only, 0.05, rp.VerdictRules(correction="bh"))
    assert bh.cells[0].adjusted_p == pytest.approx(0.2)


def test_bootstrap_p_values_too_coarse_for_the_correction_are_reported():
    coarse = [
        rp.Record(
            "adv",
            "control",
            "clean_control",
            "attention_entropy",
            "clean",
            0.2,
            0.1,
            0.3,
            1 / 1001,
            "paired_bootstrap",
            500,
            n_resamples=1000,
            qualifiers={"layer": i},
        )
        for i in range(60)
    ]
    judged = vd.judge_changed(coarse, 0.05, RULES)
    # 60 × 1/1001 > 0.05: no record could pass Holm, whatever the data.
    assert judged.verdict == rp.INCONCLUSIVE
    assert judged.reason == "p-values too coarse for the correction"
    assert "1200" in judged.notes[0]


# ---------------------------------------------------------------------------------------------
# C5: SAE codes unchanged, by equivalence, for SAEs that pass the quality bar
# ---------------------------------------------------------------------------------------------


def _sae(sae_type="standard", ev=0.85, l0=8.0, k=8):
    entry = {
        "sae_id": "s",
        "sae_type": sae_type,
        "metrics": {"base": {"explained_variance": ev, "l0": l0}},
    }
    if k is not None:
        entry["k"] = k
    return entry


def test_sae_quality_bar():
    assert vd.sae_quality_failures(_sae(), RULES) == []
    assert "explained variance 0.500" in vd.sae_quality_failures(_sae(ev=0.5), RULES)[0]
    assert vd.sae_quality_failures(_sae("batchtopk", l0=8.7), RULES) == []
    assert "not within ±10% of k = 8" in vd.sae_quality_failures(_sae("batchtopk", l0=15), RULES)[0]
    assert "not recorded" in vd.sae_quality_failures(_sae("batchtopk", k=None), RULES)[0]


def test_sae_unchanged_by_equivalence_per_cell():
    same = [record(0.01, -0.01, 0.03, token=t) for t in ("cls", "patches")]
    assert vd.judge_sae({"s": same}, {"s": []}, 0.05).verdict == rp.SUPPORTED
    moved = same + [record(-0.1, -0.13, -0.07, token="patches", scope="blur")]
    judged = vd.judge_sae({"s": moved}, {"s": []}, 0.05)
    assert judged.verdict == rp.NOT_SUPPORTED and judged.cells[-1].state == "changed"
    below = vd.judge_sae({"s": same}, {"s": ["explained variance 0.5 < 0.7"]}, 0.05)
    assert (below.verdict, below.reason) == (rp.INCONCLUSIVE, vd.BELOW_QUALITY_BAR)
    assert all("not judged" in c.state for c in below.cells)
    none = vd.judge_sae({}, {"s": []}, 0.05)
    assert (none.verdict, none.reason) == (rp.INCONCLUSIVE, vd.NO_RECORD)
    empty = vd.judge_changed([], 0.05, RULES)
    assert (empty.verdict, empty.reason) == (rp.INCONCLUSIVE, vd.NO_RECORD)


# ---------------------------------------------------------------------------------------------
# Primitives: interval positions and images to resolve
# ---------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    estimate=st.floats(-1, 1),
    below=st.floats(1e-4, 0.5),
    above=st.floats(1e-4, 0.5),
    margin=st.floats(1e-3, 0.5),
    n=st.integers(2, 10_000),
)
def test_images_to_resolve_decides_the_interval(estimate, below, above, margin, n):
    low, high = estimate - below, estimate + above
    needed = images_to_resolve(estimate, low, high, n, -margin, margin)
    if interval_position(low, high, -margin, margin) != "undecided":
        assert needed is None
        return
    if needed is None:  # the estimate sits on a bound (or within rounding of one)
        assert min(abs(estimate - margin), abs(estimate + margin)) < 1e-6
        return
    shrink = math.sqrt(n / needed)
    decided = interval_position(
        estimate - below * shrink, estimate + above * shrink, -margin, margin
    )
    assert needed > n and decided != "undecided"


def test_rules_reject_bad_numbers():
    with pytest.raises(ValueError, match="correction"):
        rp.VerdictRules(correction="bonferroni")
    with pytest.raises(ValueError, match="alpha"):
        rp.VerdictRules(alpha=0.0)
    with pytest.raises(ValueError, match="seen_floor"):
        rp.VerdictRules(seen_floor=-0.1)


def test_the_definitions_state_each_default():
    """docs/definitions.md states every rule with the numbers VerdictRules uses."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "definitions.md").read_text()
    verdicts = text[text.index("## Verdicts") :]
    assert RULES == rp.VerdictRules(
        alpha=0.05,
        correction="holm",
        seen_floor=0.01,
        certainty_floor=0.01,
        transfer_margin_min=0.01,
        transfer_margin_share=0.2,
        entropy_floor=0.05,
        layer_floor=0.25,
        sae_margin=0.05,
        sae_min_explained_variance=0.7,
        sae_l0_tolerance=0.1,
    ), "a default changed: update docs/definitions.md (Verdicts) and this test"
    for stated in (
        "floor of **1 pp**",
        "floor\n  **0.01**",
        "max(1 pp, 20% of the same model's seen gain",
        "**0.05 nats**",
        "**0.25 layers**",
        "**Holm** by default",
        "inside **±0.05**",
        "**≥ 0.7**",
        "within **±10% of k**",
    ):
        assert stated in verdicts, stated
