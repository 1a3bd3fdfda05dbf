"""Aggregators combine candidate answers; looked up by name in ``AGGREGATORS``."""

from coe.aggregators.base import Aggregate, Aggregator, AggregatorContext, AggregatorParams
from coe.registry import Registry

AGGREGATORS: Registry[Aggregator] = Registry(
    "aggregator",
    Aggregator,
    {
        "vote": "coe.aggregators.vote:VoteAggregator",
        "choice-vote": "coe.aggregators.choice_vote:ChoiceVoteAggregator",
        "synthesize": "coe.aggregators.synthesize:SynthesizeAggregator",
        "moa": "coe.aggregators.moa:MoAAggregator",
        "weighted-vote": "coe.aggregators.weighted_vote:WeightedVoteAggregator",
    },
)

__all__ = ["AGGREGATORS", "Aggregate", "Aggregator", "AggregatorContext", "AggregatorParams"]
