"""Everything a completion task keeps in Airflow's task state store: its conversation and its spend.

XCom cannot keep progress across tries: Airflow clears a task's XComs when a new try starts. Airflow 3.3's
task state store (``context["task_state_store"]``) is kept across the tries of a task instance (it is scoped
to the DAG run, task id and map index). Two records live there, both written through :class:`TaskStore`:

* the conversation (:data:`KEY`, :class:`RoundState`), kept when the task has Python tools or a review, so a
  retry repeats nothing paid for:

  - an answer that called tools, as soon as it arrives (``pending``): a retry runs its tools instead of asking
    again;
  - the round's tool results when the round ends or stops early (a tool raised, SIGTERM): a retry does not run
    those tools again (one write per round: the whole conversation after every call would be quadratic);
  - the conversation after each completed round (tool results or a repair): a retry sends only the next request;
  - the final answer while a person reviews it (``final``): a retry goes back to the review.

  A fingerprint of the task's own request (messages and body fields) guards it: when the DAG renders a
  different request, the saved conversation is ignored and the conversation starts over;
* the spend (:data:`SPEND_KEY`, the tokens every try used), kept when the task has a token or cost budget, so
  the budget holds across tries.

**One write rule**: every value is written with the store's "never expire" retention
(:func:`airflow_agentchat.compat.never_expire`), however long a task's retries are apart, and deleted when the
task succeeds, so clearing a finished task later starts a fresh conversation and a fresh budget.

**One error policy**, chosen so that nothing paid for is lost: a store that fails to *read* fails the task
before any request is sent (starting over could pay again and run tools with side effects again); a failed
*write* or *delete* is a warning in the task log, because what it would keep is already paid for and failing
the try would throw it away (a retry then starts from the last write that worked).

Without a task state store (Airflow < 3.3, or a context without one) nothing is kept and a retry starts over;
the task says so in its log (and when the DAG is parsed), see :func:`airflow_agentchat.compat.warn_no_task_state_store`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from airflow_agentchat.usage import TokenUsage

#: The store keys. Renaming one would orphan the state of tasks retrying during an upgrade.
KEY = "agentchat_conversation"
SPEND_KEY = "agentchat_spend"
_VERSION = 1

_log = logging.getLogger(__name__)


class TaskStore:
    """One task instance's task state store, written under the rule and error policy above (or none)."""

    def __init__(self, store: Any, log: Any = None) -> None:
        self._store = store.raw if isinstance(store, TaskStore) else store
        self.log = log or _log

    @classmethod
    def of(cls, context: Mapping[str, Any], log: Any = None) -> TaskStore:
        try:
            store = context.get("task_state_store")
        except AttributeError:
            store = None
        return cls(store, log)

    @property
    def raw(self) -> Any:
        return self._store

    @property
    def available(self) -> bool:
        return self._store is not None

    def read(self, key: str) -> Mapping[str, Any] | None:
        """The mapping saved under ``key`` (None when nothing is, or no store). A failing store fails the task."""
        if self._store is None:
            return None
        value = self._store.get(key)
        return value if isinstance(value, Mapping) else None

    def write(self, key: str, value: Mapping[str, Any]) -> bool:
        """Keep ``value`` until the task succeeds; False (with a warning) when the store refused it."""
        if self._store is None:
            return False
        from airflow_agentchat.compat import never_expire

        try:
            self._store.set(key, dict(value), retention=never_expire())
        except Exception as exc:
            self.log.warning(
                "Could not save %s to the task state store (a retry starts from the last save): %s", key, exc
            )
            return False
        return True

    def delete(self, key: str) -> None:
        """Forget ``key`` (the task is done with it); a failure is a warning."""
        if self._store is None:
            return
        try:
            self._store.delete(key)
        except Exception as exc:
            self.log.warning("Could not delete %s from the task state store: %s", key, exc)


# ---------------------------------------------------------------------------------------------- the spend


def load_spend(store: TaskStore) -> TokenUsage:
    """What earlier tries of this task spent (zero when nothing was saved)."""
    saved = store.read(SPEND_KEY)
    if saved:
        store.log.info("Earlier tries of this task used %s tokens", saved.get("total_tokens"))
    return TokenUsage.of(saved)


def save_spend(store: TaskStore, used: TokenUsage) -> None:
    store.write(SPEND_KEY, used.as_dict())


# ---------------------------------------------------------------------------------------------- the conversation


def fingerprint(messages: list[dict[str, Any]], params: Mapping[str, Any]) -> str:
    """A digest of the request a task starts from (its messages and body fields)."""
    text = json.dumps({"messages": messages, "params": params}, sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class RoundState:
    """The saved progress of one task instance's conversation (empty when nothing was saved)."""

    def __init__(self, store: Any, print_: str, data: Mapping[str, Any] | None = None) -> None:
        self._store = store if isinstance(store, TaskStore) else TaskStore(store)
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
        store = TaskStore.of(context, log) if enabled else TaskStore(None, log)
        print_ = fingerprint(messages, params)
        if not store.available:
            if enabled:
                from airflow_agentchat.compat import warn_no_task_state_store

                warn_no_task_state_store("The tool loop and the review", log)
            return cls(store, print_)
        saved = store.read(KEY)
        if saved is None or saved.get("v") != _VERSION:
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
        store = TaskStore.of(context)
        saved = store.read(KEY)
        if saved is None or saved.get("v") != _VERSION:
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
        self._written = self._store.write(KEY, value) or self._written

    def clear(self) -> None:
        """Delete what this or an earlier try saved (nothing to do when nothing was)."""
        if self.resumed or self._written:
            self._store.delete(KEY)


def forget(context: Mapping[str, Any]) -> None:
    """Delete the saved conversation (the task is done with it)."""
    TaskStore.of(context).delete(KEY)
