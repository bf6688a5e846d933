"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """Describe the provider: its connection type, the connection form, hooks and task decorators.

    The connection form is declared with ``conn-fields`` (JSON schema per field), the Airflow 3 way; the values
    land in the connection's ``extra`` under the same names and are read by ``AgentChatHook``.
    """
    return {
        "package-name": "airflow-agentchat",
        "name": "Agent Chat",
        "description": "Agent chat completion endpoints (DigitalOcean GenAI agents, OpenAI-compatible).",
        "versions": ["0.1.0"],
        "integrations": [
            {
                "integration-name": "Agent Chat",
                "external-doc-url": "https://docs.digitalocean.com/products/genai-platform/",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Agent Chat",
                "python-modules": ["airflow_agentchat.hooks.agent_chat", "airflow_agentchat.hooks.managed_agent"],
            }
        ],
        "operators": [
            {
                "integration-name": "Agent Chat",
                "python-modules": [
                    "airflow_agentchat.operators.agent_chat",
                    "airflow_agentchat.operators.batch",
                    "airflow_agentchat.operators.branch",
                ],
            }
        ],
        "connection-types": [
            {
                # The subclass that also speaks common.ai's managed-agent contract (when common.ai is installed), so
                # ``BaseHook.get_hook(conn_id)`` gives a hook common.ai's toolset and failover client can use.
                "hook-class-name": "airflow_agentchat.hooks.managed_agent.AgentChatManagedAgentHook",
                "connection-type": "agentchat",
                "hook-name": "Agent Chat",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "Agent endpoint", "password": "Agent access key"},
                    "placeholders": {
                        "host": "https://xxxxxxxx.agents.do-ai.run",
                        "password": "agent access key",
                        "extra": '{"timeout": 60, "max_retries": 4}',
                    },
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "Read timeout for one request; connect timeout is capped at 10 s.",
                        "schema": {"type": ["number", "null"], "minimum": 1, "default": 120},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": "Retries for 408/409/429/5xx and connection errors (0 disables).",
                        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 20, "default": 4},
                    },
                    "attempt_deadline": {
                        "label": "Attempt deadline (seconds)",
                        "description": "Longest one attempt may take in all, body included (default: 4 x timeout).",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    },
                    "max_response_bytes": {
                        "label": "Max response size (bytes)",
                        "description": "Cap on one decoded answer; past it the request fails, not retried.",
                        "schema": {"type": ["integer", "null"], "minimum": 1, "default": 16777216},
                    },
                    "max_event_bytes": {
                        "label": "Max stream event size (bytes)",
                        "description": "Cap on one server-sent event of a stream; past it the request fails.",
                        "schema": {"type": ["integer", "null"], "minimum": 1, "default": 4194304},
                    },
                    "model": {
                        "label": "Default model",
                        "description": "Model name sent when a task names none (agents ignore it).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "verify": {
                        "label": "Verify TLS",
                        "description": "Verify the endpoint's TLS certificate.",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "ca_bundle": {
                        "label": "CA bundle path",
                        "description": "PEM file of CA certificates to trust instead of the system store.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "prompt_token_price": {
                        "label": "Prompt token price",
                        "description": "Price per million prompt tokens (any currency): gives tasks a cost.",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                    "completion_token_price": {
                        "label": "Completion token price",
                        "description": "Price per million completion tokens, in the same currency.",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                    "cached_prompt_token_price": {
                        "label": "Cached prompt token price",
                        "description": "Price per million prompt tokens read from the prompt cache (default: the "
                        "prompt price).",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                    "cache_write_token_price": {
                        "label": "Cache write token price",
                        "description": "Price per million prompt tokens written to the prompt cache (default: the "
                        "prompt price).",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                    "requests_per_minute": {
                        "label": "Requests per minute",
                        "description": "The agent's request limit: every request through this connection (any "
                        "task, trigger, the UI page, a batch; retries too) takes a slot.",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    },
                    "tokens_per_minute": {
                        "label": "Tokens per minute",
                        "description": "The agent's token limit: every request through this connection reserves "
                        "its estimate (prompt plus completion cap), corrected by usage.",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    },
                    "limit_backend_conn_id": {
                        "label": "Limit backend (redis connection id)",
                        "description": "A redis connection that holds the request and token limits for every task "
                        "and worker (without it each process keeps its own).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "limit_backend_fallback": {
                        "label": "When the limit backend is down",
                        "description": "fail: send nothing (default); static_share: each task paces at its static "
                        "share of the limit.",
                        "schema": {"type": ["string", "null"], "enum": ["fail", "static_share", None]},
                    },
                    "allow_insecure_http": {
                        "label": "Allow plain http",
                        "description": "Permit http:// to non-loopback hosts (the key travels in clear text).",
                        "schema": {"type": ["boolean", "null"], "default": False},
                    },
                },
            }
        ],
        "task-decorators": [
            {"name": "agent_chat", "class-name": "airflow_agentchat.decorators.agent_chat.agent_chat_task"},
            {
                "name": "agent_chat_branch",
                "class-name": "airflow_agentchat.decorators.agent_chat_branch.agent_chat_branch_task",
            },
        ],
        # The UI plugin is registered through the ``airflow.plugins`` entry point only: listing it here too
        # makes Airflow load it twice when providers are discovered eagerly.
    }
