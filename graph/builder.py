"""Builds the review graph:

fetch_pr -> prepare -> analyze -> plan -> review_group (one per group, in parallel) -> collect
-> summarize -> publish (only with `options.post`).
"""

from __future__ import annotations

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import RetryPolicy

from graph import nodes
from graph.context import ReviewContext
from graph.state import ReviewState
from prreview.errors import GitHubTransient

# Transient faults are retried by the clients themselves; a node runs once more on GitHub flakiness
# that outlasted its client's retries. (Malformed model output is asked for again inside the node.)
TRANSIENT = RetryPolicy(max_attempts=2, initial_interval=1.0, retry_on=lambda exc: isinstance(exc, GitHubTransient))


ReviewGraph = CompiledStateGraph[ReviewState, ReviewContext, ReviewState, ReviewState]


def build_review_graph(checkpointer: BaseCheckpointSaver | None) -> ReviewGraph:
    builder = StateGraph(ReviewState, context_schema=ReviewContext)
    builder.add_node("fetch_pr", nodes.fetch_pr, retry_policy=TRANSIENT)
    builder.add_node("prepare", nodes.prepare, retry_policy=TRANSIENT)
    builder.add_node("analyze", nodes.analyze, retry_policy=TRANSIENT)
    builder.add_node("plan", nodes.plan)
    # a Send target: its input is a GroupTask, not the graph's state
    builder.add_node("review_group", nodes.review_group, retry_policy=TRANSIENT)  # type: ignore[call-overload]
    builder.add_node("collect", nodes.collect)
    builder.add_node("summarize", nodes.summarize, retry_policy=TRANSIENT)
    builder.add_node("publish", nodes.publish, retry_policy=TRANSIENT)
    builder.add_edge(START, "fetch_pr")
    builder.add_edge("fetch_pr", "prepare")
    builder.add_edge("prepare", "analyze")
    builder.add_edge("analyze", "plan")
    builder.add_conditional_edges("plan", nodes.fan_out, ["review_group", "collect"])
    builder.add_edge("review_group", "collect")
    builder.add_edge("collect", "summarize")
    builder.add_conditional_edges("summarize", nodes.after_summary, ["publish", END])
    builder.add_edge("publish", END)
    return builder.compile(checkpointer=checkpointer)
