"""The contract's rules: the finding between two thresholds, the rules read from metadata,
the body parts the model learned, and the outputs block."""

from __future__ import annotations

import math

from modelio import contract

RULES = {
    "rule_out": {"threshold": 0.2, "sensitivity": 0.95, "specificity": 0.5},
    "rule_in": {"threshold": 0.7, "sensitivity": 0.6, "specificity": 0.95},
    "region_threshold": 0.5,
    "measured_on": "held-out folds",
}


def test_the_finding_is_uncertain_between_the_thresholds() -> None:
    assert contract.finding(0.1, 0.2, 0.7) == "no_fracture"
    assert contract.finding(0.2, 0.2, 0.7) == "uncertain"
    assert contract.finding(0.69, 0.2, 0.7) == "uncertain"
    assert contract.finding(0.7, 0.2, 0.7) == "fracture"
    assert contract.finding(math.nan, 0.2, 0.7) == "uncertain"


def test_rules_come_from_metadata_and_bad_rules_are_none() -> None:
    rules = contract.FractureRules.from_metadata({"fracture": RULES})
    assert rules is not None
    assert rules.finding(0.9) == "fracture"
    assert rules.rule_out.sensitivity == 0.95
    assert contract.FractureRules.from_metadata({}) is None
    swapped = {**RULES, "rule_out": RULES["rule_in"], "rule_in": RULES["rule_out"]}
    assert contract.FractureRules.from_metadata({"fracture": swapped}) is None
    assert contract.FractureRules.from_metadata({"fracture": {"rule_out": {}}}) is None
    for bad in (float("nan"), 1.5, -0.2):
        broken = {**RULES, "region_threshold": bad}
        assert contract.FractureRules.from_metadata({"fracture": broken}) is None
        point = {**RULES["rule_in"], "specificity": bad}
        assert (
            contract.FractureRules.from_metadata({"fracture": {**RULES, "rule_in": point}}) is None
        )


def test_a_chest_is_not_a_trained_body_part_but_a_limb_or_nothing_is() -> None:
    assert not contract.is_trained_body_part("CHEST")
    assert not contract.is_trained_body_part("SKULL")
    for part in (
        "HAND",
        "Lower Extremity",
        "KNEE",
        "SHOULDER",
        "EXTREMITY",
        "FINGERS",
        "LEFT KNEE",
        "R HAND",
        None,
        "",
    ):
        assert contract.is_trained_body_part(part), part


def test_the_ood_rule_counts_nan_as_unfamiliar() -> None:
    assert contract.is_unfamiliar(1.01)
    assert contract.is_unfamiliar(math.nan)
    assert not contract.is_unfamiliar(1.0)


def test_outputs_block_names_every_output_with_its_shape() -> None:
    block = contract.outputs_block(
        10, ood=True, class_map_grid=(22, 22), fracture=True, fracture_map_grid=(22, 22)
    )
    names = [o["name"] for o in block]
    assert names == list(contract.OUTPUT_NAMES)
    assert block[-1]["shape"] == ["batch", 22, 22]
    assert contract.output_names({"outputs": block}) == contract.OUTPUT_NAMES
