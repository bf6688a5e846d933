"""Wire models of the agent chat completions API.

Requests are **strict** (:mod:`.request`, with message content in :mod:`.content`): every body field of the
reference with its description, default and valid values, and a request that breaks a rule is refused before
anything is sent (:mod:`.validation` turns pydantic's errors into ``(field, rule)`` pairs). Responses are
**lenient** (:mod:`.response`): unknown keys are kept, a missing or unknown ``finish_reason`` is accepted, usage
may carry only the totals.

Building these classes costs pydantic some milliseconds, so DAG-facing modules import this package lazily.
``from airflow_agentchat.models import X`` works for every public name below.
"""

from __future__ import annotations

from airflow_agentchat.models._common import DEFAULT_MODEL, ReasoningEffort, Role, TextBool
from airflow_agentchat.models.content import (
    CacheControl,
    Content,
    ContentPart,
    ImagePart,
    ImageURL,
    TextPart,
    VideoPart,
    VideoURL,
    content_text,
    validate_content,
)
from airflow_agentchat.models.request import (
    _SHARED,
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    FunctionDefinition,
    MessageToolCall,
    NamedFunction,
    NamedToolChoice,
    RequestFields,
    SharedFields,
    StreamOptions,
    Tool,
)
from airflow_agentchat.models.response import (
    CONTENT_FILTER,
    AssistantMessage,
    CacheCreation,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FunctionsInfo,
    Guardrails,
    ResponseFunctionCall,
    ResponseToolCall,
    Retrieval,
    TokenLogprob,
    TopLogprob,
    Usage,
    as_request_message,
    content_filter_error,
    raise_for_content_filter,
)
from airflow_agentchat.models.validation import (
    build_fields,
    build_request,
    field_errors,
    invalid_request_from,
)

__all__ = [
    "CONTENT_FILTER",
    "DEFAULT_MODEL",
    "_SHARED",
    "AssistantMessage",
    "CacheControl",
    "CacheCreation",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChoiceLogprobs",
    "ChunkChoice",
    "Content",
    "ContentPart",
    "Delta",
    "FunctionCall",
    "FunctionDefinition",
    "FunctionsInfo",
    "Guardrails",
    "ImagePart",
    "ImageURL",
    "MessageToolCall",
    "NamedFunction",
    "NamedToolChoice",
    "ReasoningEffort",
    "RequestFields",
    "ResponseFunctionCall",
    "ResponseToolCall",
    "Retrieval",
    "Role",
    "SharedFields",
    "StreamOptions",
    "TextBool",
    "TextPart",
    "TokenLogprob",
    "Tool",
    "TopLogprob",
    "Usage",
    "VideoPart",
    "VideoURL",
    "as_request_message",
    "build_fields",
    "build_request",
    "content_filter_error",
    "content_text",
    "field_errors",
    "invalid_request_from",
    "raise_for_content_filter",
    "validate_content",
]
