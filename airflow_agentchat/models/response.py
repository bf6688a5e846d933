"""The lenient response: unknown keys are kept, a missing or unknown ``finish_reason`` is accepted, usage may
carry only the totals, and the DigitalOcean agent blocks (``retrieval``, ``functions``, ``guardrails``,
``citations``) are typed but optional."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, PrivateAttr

from airflow_agentchat.models._common import _LENIENT
from airflow_agentchat.models.content import content_text

if TYPE_CHECKING:
    from airflow_agentchat.exceptions import ContentFilterError

#: The finish reason of an answer the agent platform's content filter stopped or withheld.
CONTENT_FILTER = "content_filter"


class CacheCreation(BaseModel):
    """Prompt tokens written to the cache, by cache lifetime."""

    model_config = _LENIENT
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0


class Usage(BaseModel):
    """Token counts. Servers may send only the three totals or add detail objects (kept as extras).

    With prompt caching, DigitalOcean adds how many of the prompt tokens were written to the cache
    (``cache_created_input_tokens``, by lifetime in ``cache_creation``) and read from it
    (``cache_read_input_tokens``); they are absent (None) when the server sends none.
    """

    model_config = _LENIENT
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_created_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: CacheCreation | None = None
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class ResponseFunctionCall(BaseModel):
    model_config = _LENIENT
    name: str | None = None
    arguments: str = ""


class ResponseToolCall(BaseModel):
    """A tool call in a response. In stream deltas only the first fragment of an index has id and name."""

    model_config = _LENIENT
    index: int | None = None
    id: str | None = None
    type: str | None = "function"
    function: ResponseFunctionCall = Field(default_factory=ResponseFunctionCall)


class AssistantMessage(BaseModel):
    model_config = _LENIENT
    role: str = "assistant"
    content: str | list[Any] | None = None  # a server may answer in content parts
    refusal: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ResponseToolCall] | None = None


_TEXT_PART_KEYS = ("type", "text", "cache_control")


def _request_content(content: Any) -> Any:
    """Content as an assistant request message may carry it: a string as it is; parts kept, each cut down to
    the keys of a text part (a response may add others, a request may not)."""
    if not isinstance(content, list):
        return content
    return [
        {key: part[key] for key in _TEXT_PART_KEYS if key in part} if isinstance(part, Mapping) else part
        for part in content
    ]


def as_request_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """An assistant message from a response, cut down to what a request message may carry.

    Responses keep unknown keys (``annotations``, a tool call's ``index``, ...), but request messages are
    strict, so a message sent back in a tool round trip is reduced to the fields the reference names.
    Content parts stay parts.
    """
    out: dict[str, Any] = {
        "role": message.get("role") or "assistant",
        "content": _request_content(message.get("content")),
    }
    for key in ("refusal", "reasoning_content"):
        if message.get(key) is not None:
            out[key] = message[key]
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [
            {
                "id": call.get("id"),
                "type": call.get("type") or "function",
                "function": {
                    "name": (call.get("function") or {}).get("name"),
                    "arguments": (call.get("function") or {}).get("arguments") or "",
                },
            }
            for call in calls
        ]
    return out


class TopLogprob(BaseModel):
    model_config = _LENIENT
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    model_config = _LENIENT
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class Choice(BaseModel):
    model_config = _LENIENT
    index: int = 0
    message: AssistantMessage = Field(default_factory=AssistantMessage)
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class Retrieval(BaseModel):
    """DigitalOcean agents: knowledge-base documents retrieved for the answer."""

    model_config = _LENIENT
    retrieved_data: list[dict[str, Any]] = Field(default_factory=list)


class FunctionsInfo(BaseModel):
    """DigitalOcean agents: functions the agent called on its side."""

    model_config = _LENIENT
    called_functions: list[Any] = Field(default_factory=list)
    function_details: list[Any] = Field(default_factory=list)


class Guardrails(BaseModel):
    """DigitalOcean agents: guardrails that triggered."""

    model_config = _LENIENT
    triggered_guardrails: list[dict[str, Any]] = Field(default_factory=list)


class _AgentBlocks(BaseModel):
    model_config = _LENIENT
    retrieval: Retrieval | None = None
    functions: FunctionsInfo | None = None
    guardrails: Guardrails | None = None
    citations: list[Any] | None = None


class ChatCompletion(_AgentBlocks):
    """A chat completion, parsed leniently, with the accessors a DAG author reaches for."""

    id: str = ""
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Choice] = Field(default_factory=list)
    usage: Usage | None = None
    system_fingerprint: str | None = None
    _meta: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def meta(self) -> dict[str, Any]:
        """What the hook measured: ``attempts``, ``latency_ms`` and the server's ``request_id``."""
        # Read from pydantic's private store: ``self._meta`` goes through BaseModel.__getattr__, which costs
        # more than the rest of a cached answer's bookkeeping (a batch reads meta several times per item).
        private = self.__pydantic_private__
        return private["_meta"] if private is not None else self._meta

    @property
    def text(self) -> str | None:
        """The first choice's text (``None`` when it only called tools; text parts joined)."""
        return content_text(self.choices[0].message.content) if self.choices else None

    @property
    def texts(self) -> list[str | None]:
        """Every choice's text, in index order (for ``n > 1``)."""
        return [content_text(choice.message.content) for choice in sorted(self.choices, key=lambda c: c.index)]

    @property
    def message(self) -> AssistantMessage | None:
        return self.choices[0].message if self.choices else None

    @property
    def tool_calls(self) -> list[ResponseToolCall]:
        """The first choice's tool calls (empty when there are none)."""
        message = self.message
        return list(message.tool_calls or []) if message else []

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None

    def content_filter_error(self) -> ContentFilterError | None:
        """The error for an answer that ended in ``content_filter``, or None (see :func:`content_filter_error`)."""
        return content_filter_error(self)

    def raise_for_content_filter(self) -> None:
        """Raise :class:`~airflow_agentchat.exceptions.ContentFilterError` when an answer ended in
        ``content_filter`` (see :func:`content_filter_error`)."""
        raise_for_content_filter(self)

    def usage_dict(self) -> dict[str, Any]:
        """Token counts as a plain dict (zeros when the server sent none), ready for XCom."""
        return (self.usage or Usage()).as_dict()

    def to_dict(self) -> dict[str, Any]:
        """The whole response as JSON-safe data, unknown keys included."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> bytes:
        """:meth:`to_dict` as compact UTF-8 JSON, written by pydantic's serializer in one step (a batch line)."""
        return self.__pydantic_serializer__.to_json(self, exclude_none=True)


class Delta(BaseModel):
    model_config = _LENIENT
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ResponseToolCall] | None = None


class ChunkChoice(BaseModel):
    model_config = _LENIENT
    index: int = 0
    delta: Delta = Field(default_factory=Delta)
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(_AgentBlocks):
    """One server-sent event of a streamed completion. ``choices`` is empty on the usage-only chunk."""

    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    system_fingerprint: str | None = None

    @property
    def text(self) -> str:
        """The text this chunk adds to the first choice."""
        for choice in self.choices:
            if choice.index == 0:
                return choice.delta.content or ""
        return ""


def content_filter_error(completion: ChatCompletion) -> ContentFilterError | None:
    """The error for an answer whose choice ended in ``content_filter``, or None.

    The one place that decides it, for the operator and the batch alike. The error keeps the filtered choice's
    text (what the agent produced before it was stopped, if anything), its index, the usage (the tokens were
    paid for) and the request id.
    """
    for choice in completion.choices:
        if choice.finish_reason == CONTENT_FILTER:
            from airflow_agentchat.exceptions import ContentFilterError  # lazy: the dev server runs without Airflow

            return ContentFilterError(
                text=content_text(choice.message.content),
                index=choice.index,
                request_id=completion.meta.get("request_id"),
                usage=completion.usage_dict(),
            )
    return None


def raise_for_content_filter(completion: ChatCompletion) -> None:
    """Raise :func:`content_filter_error`'s error, if there is one."""
    error = content_filter_error(completion)
    if error is not None:
        raise error
