"""The flow run the calling code runs in: its id, and the state it ends in."""

from __future__ import annotations

from typing import Protocol, TypeVar, cast

from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.states import Completed, Failed


class Summarized(Protocol):
    """An outcome that says in one line what happened, for the run's final message."""

    def summary(self) -> str:
        """What happened, in one line."""
        ...


OutcomeT = TypeVar("OutcomeT", bound=Summarized)


def current_flow_run_id() -> str:
    """The id of the current flow run.

    Raises:
        MissingContextError: not called inside a flow run.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise MissingContextError("the flow run id is only known inside a flow run")
    return str(context.flow_run.id)


def completed(outcome: OutcomeT) -> OutcomeT:
    """End the flow run Completed, with `outcome` as its result and its summary as message.

    Return this from the flow, whose return type stays the outcome's: Prefect unwraps a
    returned state, so the flow's caller gets `outcome` (or this state, with
    `return_state=True`). Typed as the outcome for that reason, as Prefect's `Flow` has
    no type for "returns a state of R".
    """
    state: State[OutcomeT] = Completed(message=outcome.summary(), data=outcome)
    return cast(OutcomeT, state)


def failed(outcome: OutcomeT) -> OutcomeT:
    """End the flow run Failed, with `outcome`'s summary as its message and no result.

    Return this from the flow, as with `completed`: the flow's caller gets the failure
    raised (or this state, with `return_state=True`), never `outcome`.
    """
    state: State[OutcomeT] = Failed(message=outcome.summary())
    return cast(OutcomeT, state)
