"""The promotion stage of a retrain: the candidate and the champion on the same gold test
snapshot, the gate, registration of the candidate, and a compare-and-set promotion.

The champion is resolved once, to a version number, and loaded pinned
(`models:/name/<version>`); promotion then happens only if `champion` still points at
that version. A champion moved by anything else in between (a person in the UI, a run of
an older semilabel) means the candidate was never compared with the new one: it is
registered, its gate result kept, and it is not promoted, with the reason on the version.
"""

from tasks.registry.promotion.decision import (
    RetrainDecision,
    check_lines,
    decision_headline,
    gate_candidate,
)
from tasks.registry.promotion.evaluation import (
    Evaluation,
    evaluate_candidate_and_champion,
    evaluate_on_gold,
    gold_probabilities,
)
from tasks.registry.promotion.record import (
    AFTER_DECISION_DELAYS_S,
    AFTER_DECISION_TRIES,
    Destination,
    after_decision,
    describe_decision,
    fit_tag,
    log_gate_to_run,
    record_decision,
    register_and_decide,
)
from tasks.validation.next_step import GoldPool, gold_to_request, next_step

__all__ = [
    "AFTER_DECISION_DELAYS_S",
    "AFTER_DECISION_TRIES",
    "Destination",
    "after_decision",
    "Evaluation",
    "GoldPool",
    "RetrainDecision",
    "check_lines",
    "decision_headline",
    "describe_decision",
    "evaluate_candidate_and_champion",
    "evaluate_on_gold",
    "fit_tag",
    "gate_candidate",
    "gold_probabilities",
    "gold_to_request",
    "log_gate_to_run",
    "next_step",
    "record_decision",
    "register_and_decide",
]
