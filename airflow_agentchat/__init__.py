"""Apache Airflow provider for agent chat completion endpoints.

``POST {endpoint}/api/v1/chat/completions?agent=true`` is the OpenAI-compatible API that DigitalOcean GenAI
agents expose. This package stays import-light on purpose: DAG files import the operators on every parse, so
nothing here imports httpx clients, pydantic models or Airflow internals at module level.
"""

__version__ = "0.1.0"
