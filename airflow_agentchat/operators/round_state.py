"""The conversation of a task, kept where an Airflow retry can read it, so a retry repeats nothing paid for.

A tool loop pays for every answer and may run tools with side effects. XCom cannot keep its progress:
Airflow clears a task's XComs when a new try starts. Airflow 3.3's task state store
(``context["task_state_store"]``) is kept across the tries of a task instance (it is scoped to the DAG run,
task id and map index), so after every step the conversation is written there:

* an answer that called tools, as soon as it arrives (``pending``): a retry runs its tools instead of asking again;
* the round's tool results when the round ends or stops early (a tool raised, SIGTERM): a retry does not run
  those tools again (one write per round: the whole conversation after every call would be quadratic);
* the conversation after each completed round (tool results or a repair): a retry sends only the next request;
* the final answer while a person reviews it (``final``): a retry goes back to the review.

A fingerprint of the task's own request (messages and body fields) guards the saved state: when the DAG
renders a different request, the saved state is ignored and the conversation starts over. A task that
succeeds deletes its state, so clearing it later starts a fresh conversation.

Without a task state store (Airflow < 3.3, or a context without one) nothing is kept and a retry starts over;
the task says so in its log (and when the DAG is parsed), see :func:`airflow_agentchat.compat.warn_no_task_state_store`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from airflow_agentchat.usage import TokenUsage

#: The task state store key. Renaming it would orphan the state of tasks retrying during an upgrade.
KEY = "agentchat_conversation"
_VERSION = 1


def fingerprint(messages: list[dict[str, Any]], params: Mapping[str, Any]) -> str:
    """A digest of the request a task starts from (its messages and body fields)."""
    text = json.dumps({"messages": messages, "params": params}, sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class RoundState:
    """The saved progress of one task instance's conversation (empty when nothing was saved)."""

    def __init__(self, store: Any, print_: str, data: Mapping[str, Any] | None = None) -> None:
        self._store = store
        self._fingerprint = print_
        data = dict(data or {})
        self.resumed = bool(data)
        self._written = False
        self.messages: list[dict[str, Any]] | None = data.get("messages")
        self.usage = TokenUsage.of(data.get("usage"))  # every answer of the conversation, each one paid
        self.trace: list[dict[str, Any]] = list(data.get("trace") or [])
        self.tool_rounds: int = int(data.get("tool_rounds") or 0)
        self.pending: dict[str, Any] | None = data.get("pending")
        self.final: dict[str, Any] | None = data.get("final")

    @classmethod
    def load(
        cls,
        context: Mapping[str, Any],
        messages: list[dict[str, Any]],
        params: Mapping[str, Any],
        log: Any,
        *,
        enabled: bool = True,
    ) -> RoundState:
        """The state an earlier try saved for this request, or an empty one.

        ``enabled=False`` (a task without tools or review, which has nothing worth keeping) never touches the store.
        """
        store = _store_of(context) if enabled else None
        print_ = fingerprint(messages, params)
        if store is None:
            if enabled:
                from airflow_agentchat.compat import warn_no_task_state_store

                warn_no_task_state_store("The tool loop and the review", log)
            return cls(None, print_)
        saved = store.get(KEY)
        if not isinstance(saved, Mapping) or saved.get("v") != _VERSION:
            return cls(store, print_)
        if saved.get("fingerprint") != print_:
            log.warning("The saved conversation of an earlier try was for a different request; starting over")
            return cls(store, print_)
        state = cls(store, print_, saved)
        log.info(
            "Resuming the conversation an earlier try saved: %d tool round(s) done, %s tokens paid%s",
            state.tool_rounds,
            state.usage.total_tokens,
            ", the answer awaits review" if state.final else (", tools pending" if state.pending else ""),
        )
        return state

    @classmethod
    def reopen(cls, context: Mapping[str, Any]) -> RoundState | None:
        """What an earlier step saved, for the review's resume (which does not rebuild the request); None when
        nothing was saved."""
        store = _store_of(context)
        saved = store.get(KEY) if store is not None else None
        if not isinstance(saved, Mapping) or saved.get("v") != _VERSION:
            return None
        return cls(store, str(saved.get("fingerprint") or ""), saved)

    def await_review(self, messages: list[dict[str, Any]], final: dict[str, Any]) -> None:
        """Save the final answer (value, message, response) while a person reviews it."""
        self.messages, self.final = messages, final
        self.save()

    def ask_revision(self, comment: str | None) -> None:
        """The reviewer rejected the final answer: a retry asks the agent for a revision, repeating no tool."""
        final = self.final
        if not final:
            return
        message = final["message"]
        calls = message.get("tool_calls") or ()
        self.messages = [
            *(self.messages or []),
            message if calls else {"role": "assistant", "content": message.get("content") or ""},
            *({"role": "tool", "tool_call_id": call["id"], "content": "Rejected by the reviewer."} for call in calls),
            {
                "role": "user",
                "content": f"A reviewer rejected this answer: {comment or 'no reason given'}. Give a revised answer.",
            },
        ]
        self.final = None
        self.save()

    def save(self) -> None:
        """Write the state (a no-op without a task state store)."""
        if self._store is None:
            return
        from airflow_agentchat.compat import never_expire

        value = {
            "v": _VERSION,
            "fingerprint": self._fingerprint,
            "messages": self.messages,
            "usage": self.usage.as_dict(),
            "trace": self.trace,
            "tool_rounds": self.tool_rounds,
            "pending": self.pending,
            "final": self.final,
        }
        # Kept until the task succeeds (then deleted), however long its retries are apart.
        self._store.set(KEY, value, retention=never_expire())
        self._written = True

    def clear(self) -> None:
        """Delete what this or an earlier try saved (nothing to do when nothing was)."""
        if self.resumed or self._written:
            forget(self._store)


def _store_of(context: Mapping[str, Any]) -> Any:
    try:
        return context.get("task_state_store")
    except AttributeError:
        return None


def forget(store_or_context: Any) -> None:
    """Delete the saved conversation (the task is done with it)."""
    store = _store_of(store_or_context) if isinstance(store_or_context, Mapping) else store_or_context
    if store is not None:
        store.delete(KEY)
