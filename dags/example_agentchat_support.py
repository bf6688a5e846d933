"""A support agent that looks things up with Python tools, drafts a typed reply, and a person approves it.

::

    create_orders -> draft_reply (tools: lookup_order, convert_currency; output_schema=SupportReply;
                                  require_approval) -> send_reply

* ``create_orders`` writes a small SQLite table of orders (a real DAG would use its own database);
* ``draft_reply`` gives the agent two plain Python functions as tools. The provider runs the loop: it
  validates the agent's arguments, calls the functions, sends the results back and asks again until the
  agent answers with a :class:`SupportReply`. Every call is in the ``tool_trace`` XCom. Then the task waits
  in Airflow's *Required actions* until a person approves the reply, edits it (the edit is validated against
  the schema) or rejects it (the task fails with the comment). No answer within a day rejects it;
* ``send_reply`` runs only with an approved reply (here it appends it to an outbox file).

``params.require_approval`` (default true) turns the review off, for ``airflow dags test``, which would wait
for a person forever, and for the offline demo: ``airflow dags test example_agentchat_support -c
'{"require_approval": false}'``. Against the dev server the agent calls ``lookup_order`` once with a made-up id,
so the reply says the order was not found; a real agent looks up the id the customer gave.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pendulum
from airflow.sdk import DAG, Param, task
from pydantic import BaseModel, Field

from airflow_agentchat.operators.agent_chat import AgentChatCompletionOperator

WORK_DIR = Path(os.environ.get("AGENTCHAT_EXAMPLE_OUTPUT_DIR") or tempfile.gettempdir()) / "agentchat-support"
DB_PATH = WORK_DIR / "orders.sqlite"
ORDERS = [
    ("A-1001", "Ada Lovelace", "shipped", 129.90, "2026-02-27"),
    ("A-1002", "Grace Hopper", "processing", 54.00, None),
    ("A-1003", "Alan Turing", "delivered", 310.50, "2026-02-20"),
]
#: Euro exchange rates (a real DAG would read today's rates).
EUR_RATES = {"EUR": 1.0, "USD": 1.08, "GBP": 0.85, "JPY": 162.0}
Currency = Literal["EUR", "USD", "GBP", "JPY"]


def lookup_order(order_id: str) -> dict:
    """Look up a customer's order by its id.

    :param order_id: the order id as the customer wrote it, like "A-1001".
    """
    with sqlite3.connect(DB_PATH) as db:
        row = db.execute(
            "SELECT order_id, customer, status, total_eur, shipped_on FROM orders WHERE order_id = ?",
            (order_id.strip().upper(),),
        ).fetchone()
    if row is None:
        return {"found": False, "order_id": order_id}
    keys = ("order_id", "customer", "status", "total_eur", "shipped_on")
    return {"found": True, **dict(zip(keys, row, strict=True))}


def convert_currency(amount_eur: float, to_currency: Currency) -> dict:
    """Convert an amount in euros to the customer's currency.

    :param amount_eur: the amount in EUR.
    :param to_currency: the currency to convert to.
    """
    return {"amount": round(amount_eur * EUR_RATES[to_currency], 2), "currency": to_currency}


class SupportReply(BaseModel):
    """The reply to one customer message."""

    order_id: str = Field(description="The order the customer asks about.")
    status: Literal["processing", "shipped", "delivered", "not_found"]
    reply: str = Field(min_length=1, max_length=1200, description="The message to send to the customer.")
    total_in_customer_currency: float | None = Field(None, description="The order total in their currency.")


with DAG(
    dag_id="example_agentchat_support",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    params={
        "customer": Param("Ada Lovelace", type="string"),
        "message": Param("Where is my order A-1001? And what did it cost in dollars?", type="string"),
        "currency": Param("USD", enum=list(EUR_RATES)),
        "require_approval": Param(True, type="boolean", description="a person approves the reply before sending"),
    },
    tags=["agentchat", "example", "tools", "approval"],
):

    @task
    def create_orders() -> str:
        """The shop's orders table (created fresh for the example)."""
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(DB_PATH) as db:
            db.execute("DROP TABLE IF EXISTS orders")
            db.execute(
                "CREATE TABLE orders (order_id TEXT PRIMARY KEY, customer TEXT, status TEXT, total_eur REAL, "
                "shipped_on TEXT)"
            )
            db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", ORDERS)
        return str(DB_PATH)

    draft_reply = AgentChatCompletionOperator(
        task_id="draft_reply",
        system_prompt=(
            "You answer customers of a small web shop. Look orders up with lookup_order and convert amounts "
            "with convert_currency before you answer; never guess an order's status."
        ),
        prompt=("Customer {{ params.customer }} (currency {{ params.currency }}) writes:\n{{ params.message }}"),
        tools=[lookup_order, convert_currency],
        max_tool_rounds=5,
        output_schema=SupportReply,
        output_strategy="json",
        require_approval="{{ params.require_approval }}",
        approval_timeout=timedelta(days=1),
        approval_default="reject",
    )

    @task
    def send_reply(reply: dict, params: dict) -> dict:
        """Send the approved reply (here: append it to an outbox file)."""
        outbox = WORK_DIR / "outbox.jsonl"
        with outbox.open("a") as out:
            out.write(json.dumps({"to": params["customer"], **reply}) + "\n")
        return {"sent_to": params["customer"], "outbox": str(outbox), "status": reply["status"]}

    create_orders() >> draft_reply
    send_reply(draft_reply.output)
