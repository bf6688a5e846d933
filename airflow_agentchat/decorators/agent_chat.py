"""``@task.agent_chat``: a Python function builds the prompt, the operator sends it.

The function may return a prompt string, a list of messages, or a dict request body; its arguments can be
XComs of upstream tasks, which is what makes completions chain with data tasks naturally.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory

from airflow_agentchat.compat import context_merge
from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class _AgentChatDecoratedOperator(DecoratedOperator, AgentChatCompletionOperator):
    """Calls the decorated function at run time and sends what it returns."""

    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *AgentChatCompletionOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **AgentChatCompletionOperator.template_fields_renderers,
    }
    custom_operator_name = "@task.agent_chat"

    def __init__(
        self,
        *,
        python_callable: Callable,
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)

    def execute(self, context: Context) -> Any:
        self._returned = self._call(context)
        return AgentChatCompletionOperator.execute(self, context)

    def _call(self, context: Context) -> Any:
        """Call the function and take its prompt, messages or request."""
        from airflow_agentchat.compat import determine_kwargs

        context_merge(context, self.op_kwargs)
        result = self.python_callable(*self.op_args, **determine_kwargs(self.python_callable, self.op_args, context))
        self._take(result)
        return result

    def _take(self, result: Any) -> None:
        if isinstance(result, str):
            self.prompt = result
        elif isinstance(result, Mapping):
            self.request = dict(result)
        elif isinstance(result, Sequence):
            self.messages = list(result)
        else:
            raise TypeError(
                "@task.agent_chat functions return a prompt string, a list of messages or a request dict, "
                f"not {type(result).__name__}"
            )

    # A deferred task resumes in a new operator instance that has not called the function. What it returned
    # travels with the resume (the triggerer keeps ``kwargs`` beside the event), so the function runs once;
    # where the resume carries only the event (``airflow dags test``), the function is called again.
    def defer(self, *, kwargs: dict[str, Any] | None = None, **rest: Any) -> Any:
        if rest.get("method_name") == "execute_complete":
            kwargs = {**(kwargs or {}), "returned": self._returned}
        return super().defer(kwargs=kwargs, **rest)

    def execute_complete(self, context: Context, event: dict[str, Any], returned: Any = None) -> Any:
        if returned is None:
            self._call(context)
        else:
            self._take(returned)
        return AgentChatCompletionOperator.execute_complete(self, context, event)


def agent_chat_task(python_callable: Callable | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function that returns a prompt (or messages, or a request) into an agent chat completion task.

    Takes every keyword of :class:`AgentChatCompletionOperator` (``system_prompt``, ``temperature``,
    ``output``, ``agentchat_conn_id``, Python functions in ``tools``, ``require_approval``, ...). After a review
    the task resumes without calling the function again: the answer travels with the resume.
    """
    # The function returns the request, not the task's result: a ``-> dict`` annotation must not turn on
    # Airflow's multiple_outputs (which would unroll the answer text and fail).
    kwargs.setdefault("multiple_outputs", False)
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_AgentChatDecoratedOperator,
        **kwargs,
    )
