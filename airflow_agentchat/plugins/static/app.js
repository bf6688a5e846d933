// Agent Chat page. Plain DOM, no build step. Everything that comes from the server or the agent is written
// with textContent (never innerHTML), so an answer containing markup is shown as text.
"use strict";

(function () {
  const $ = (sel, root = document) => root.querySelector(sel);
  const ROLES = ["user", "assistant", "system", "developer", "tool"];
  const state = { schema: null, common: [], defaultModel: "agent", connections: [], fields: {}, busy: false };

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  // ------------------------------------------------------------------------------------------- theme
  // Follow the Airflow UI around the iframe (same origin), else the system preference.
  function applyTheme() {
    let dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    try {
      if (window.parent !== window) {
        const root = window.parent.document.documentElement;
        if (root.classList.contains("dark")) dark = true;
        else if (root.classList.contains("light")) dark = false;
        else if (root.style.colorScheme) dark = root.style.colorScheme === "dark";
      }
    } catch (e) { /* not same origin: keep the system preference */ }
    document.documentElement.dataset.theme = dark ? "dark" : "light";
  }
  applyTheme();
  try {
    if (window.parent !== window) {
      new MutationObserver(applyTheme).observe(window.parent.document.documentElement, {
        attributes: true, attributeFilter: ["class", "style"],
      });
    }
  } catch (e) { /* ignore */ }

  // ------------------------------------------------------------------------------------------- http
  async function api(path, options = {}) {
    const init = { credentials: "same-origin", headers: { Accept: "application/json" }, ...options };
    if (options.json !== undefined) {
      init.method = init.method || "POST";
      init.headers = { ...init.headers, "Content-Type": "application/json" };
      init.body = JSON.stringify(options.json);
    }
    return fetch(path, init);
  }

  async function readJson(response) {
    try { return await response.json(); } catch (e) { return { detail: `HTTP ${response.status}` }; }
  }

  function explainHttp(response, data) {
    if (response.status === 401) return "You are signed out of Airflow: sign in again, then reload this page.";
    if (response.status === 403) return `Not allowed: ${data.detail || "your Airflow role has no rights on connections"}.`;
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || data);
    return `HTTP ${response.status}: ${detail}`;
  }

  // ------------------------------------------------------------------------------------------- schema → form
  function resolve(node) {
    if (node && node.$ref) return state.schema.$defs[node.$ref.split("/").pop()];
    return node;
  }

  // Describe one schema property as a form field: kind, valid values, range, default, description.
  function describe(name, prop) {
    const variants = (prop.anyOf || [prop]).map(resolve).filter((v) => v && v.type !== "null");
    const spec = { name, description: prop.description || "", default: prop.default, nullable: !!prop.anyOf, rules: [] };
    const types = new Set(variants.map((v) => (v.enum || v.const !== undefined ? "enum" : v.type)));
    const enumVariant = variants.find((v) => v.enum);
    if (variants.length === 1 && enumVariant) {
      spec.kind = "enum";
      spec.values = enumVariant.enum;
    } else if (variants.length === 1 && ["integer", "number", "boolean", "string"].includes(variants[0].type)) {
      const v = variants[0];
      spec.kind = v.type;
      if (v.minimum !== undefined) spec.min = v.minimum;
      if (v.maximum !== undefined) spec.max = v.maximum;
      if (v.minLength !== undefined) spec.rules.push(`at least ${v.minLength} character(s)`);
      if (v.pattern) spec.rules.push(`matches ${v.pattern}`);
    } else {
      // objects, arrays and unions (stop: string or list; tool_choice: keyword or object) are edited as JSON
      spec.kind = types.has("string") || types.has("enum") ? "json-or-string" : "json";
      if (enumVariant) spec.values = enumVariant.enum;
      spec.shape = variants.map((v) => (v.enum ? v.enum.map((x) => JSON.stringify(x)).join(" | ") : v.type === "array" ? arrayShape(v) : v.title || v.type)).join(" | ");
    }
    if (spec.min !== undefined && spec.max !== undefined) spec.rules.unshift(`${spec.min} to ${spec.max}`);
    else if (spec.min !== undefined) spec.rules.unshift(`≥ ${spec.min}`);
    else if (spec.max !== undefined) spec.rules.unshift(`≤ ${spec.max}`);
    if (spec.values) spec.rules.push(`one of: ${spec.values.join(", ")}`);
    if (spec.shape) spec.rules.push(`JSON: ${spec.shape}`);
    return spec;
  }

  function arrayShape(v) {
    const items = resolve(v.items || {});
    const bounds = v.minItems !== undefined || v.maxItems !== undefined ? ` (${v.minItems ?? 0}–${v.maxItems ?? "∞"} items)` : "";
    return `[${items.title || items.type || "…"}]${bounds}`;
  }

  function renderField(spec, wide) {
    let input;
    const id = `f-${spec.name}`;
    if (spec.kind === "boolean") {
      if (spec.name === "stream") {
        input = el("input", { id, type: "checkbox" });
        if (spec.default === true) input.checked = true;
      } else {
        input = el("select", { id }, el("option", { value: "", text: "(not set)" }),
          el("option", { value: "true", text: "true" }), el("option", { value: "false", text: "false" }));
      }
    } else if (spec.kind === "enum") {
      input = el("select", { id }, el("option", { value: "", text: "(not set)" }),
        ...spec.values.map((v) => el("option", { value: String(v), text: String(v) })));
    } else if (spec.kind === "integer" || spec.kind === "number") {
      input = el("input", { id, type: "number", inputmode: "decimal", step: spec.kind === "integer" ? "1" : "any", min: spec.min, max: spec.max });
    } else if (spec.kind === "string") {
      input = el("input", { id, type: "text", spellcheck: "false" });
    } else {
      input = el("textarea", { id, class: "json", rows: spec.name === "tools" ? 4 : 2, spellcheck: "false" });
      wide = wide || spec.name === "tools";
    }
    if (spec.name === "model") input.placeholder = state.defaultModel;
    else if (spec.name === "tools") input.placeholder = '[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]';
    else if (spec.default !== undefined && spec.default !== null && input.tagName !== "SELECT" && input.type !== "checkbox") input.placeholder = `default ${JSON.stringify(spec.default)}`;
    const meta = [];
    if (spec.default !== undefined && spec.default !== null) meta.push(`default ${JSON.stringify(spec.default)}`);
    meta.push(...spec.rules);
    const label = spec.kind === "boolean" && spec.name === "stream"
      ? el("label", { class: "check", for: id }, input, el("span", { class: "name", text: spec.name }))
      : el("label", { for: id }, el("span", { class: "name", text: spec.name }));
    const field = el("div", { class: `field${wide ? " wide" : ""}`, "data-field": spec.name },
      label,
      spec.kind === "boolean" && spec.name === "stream" ? null : input,
      spec.description ? el("p", { class: "desc", text: spec.description }) : null,
      meta.length ? el("p", { class: "rule", text: meta.join(" · ") }) : null,
      el("p", { class: "error", role: "alert" }));
    state.fields[spec.name] = { spec, input, field };
    return field;
  }

  function buildForm() {
    const props = state.schema.properties;
    const common = $("#common-fields");
    const advanced = $("#advanced-fields");
    for (const name of state.common) if (props[name]) common.append(renderField(describe(name, props[name])));
    let count = 0;
    for (const [name, prop] of Object.entries(props)) {
      if (name === "messages" || state.common.includes(name)) continue;
      const spec = describe(name, prop);
      advanced.append(renderField(spec, spec.kind === "json" || spec.kind === "json-or-string" || (spec.description || "").length > 160));
      count += 1;
    }
    $("#advanced-count").textContent = `${count} fields`;
  }

  // ------------------------------------------------------------------------------------------- messages
  // One editor row per message. Tool messages carry a tool_call_id; assistant messages may carry tool_calls
  // (JSON, as the wire has them), so a tool round trip can be written, or built from an answer's tool calls.
  function addMessage(role = "user", content = "", { toolCallId = "", toolCalls = null } = {}) {
    const list = $("#messages");
    const select = el("select", { "aria-label": "role", class: "role" }, ...ROLES.map((r) => el("option", { value: r, text: r })));
    select.value = role;
    const text = el("textarea", { rows: 3, placeholder: "Message content", "aria-label": "content", class: "content" });
    text.value = content;
    const toolId = el("input", { type: "text", class: "tool-id", placeholder: "tool_call_id", "aria-label": "tool_call_id" });
    toolId.value = toolCallId;
    // A user message may carry an image: its URL (https:// or data:image/...) becomes an image_url part.
    const image = el("input", { type: "url", class: "image-url", placeholder: "Image URL (optional): https://... or data:image/...;base64,...", "aria-label": "image URL" });
    const calls = el("textarea", { rows: 3, class: "json tool-calls", spellcheck: "false", "aria-label": "tool_calls",
      placeholder: 'tool_calls (optional): [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]' });
    if (toolCalls) calls.value = pretty(toolCalls);
    const showRoleFields = () => {
      toolId.hidden = select.value !== "tool"; calls.hidden = select.value !== "assistant"; image.hidden = select.value !== "user";
    };
    select.addEventListener("change", showRoleFields);
    showRoleFields();
    const remove = el("button", { type: "button", class: "btn btn-small remove", title: "Remove this message", text: "Remove" });
    const row = el("div", { class: "message" }, select, toolId, remove,
      el("div", { class: "field" }, text, image, calls, el("p", { class: "error", role: "alert" })));
    remove.addEventListener("click", () => { if (list.children.length > 1) row.remove(); });
    list.append(row);
    return row;
  }

  // Continue the conversation after an answer that called tools: the assistant turn with its tool_calls, then
  // one tool message per call, its tool_call_id filled in; the user types each result and sends.
  function replyToToolCalls(calls) {
    addMessage("assistant", "", { toolCalls: calls.map((c) => ({ id: c.id, type: c.type || "function", function: c.function })) });
    const rows = calls.map((c) => addMessage("tool", "", { toolCallId: c.id }));
    const first = rows[0].querySelector("textarea.content");
    first.placeholder = "The tool's result, e.g. {\"temperature_c\": 21}";
    first.focus();
    first.scrollIntoView({ block: "center" });
  }

  // ------------------------------------------------------------------------------------------- connections
  async function loadConnections() {
    const select = $("#conn-select");
    const info = $("#conn-info");
    const response = await api("api/connections");
    const data = await readJson(response);
    if (!response.ok) { info.textContent = explainHttp(response, data); return; }
    state.connections = data.connections || [];
    select.replaceChildren();
    for (const c of state.connections) select.append(el("option", { value: c.conn_id, text: c.conn_id }));
    select.append(el("option", { value: "__other__", text: "Other connection id…" }));
    if (!state.connections.length) select.value = "__other__";
    onConnectionChange();
  }

  function currentConnection() {
    const select = $("#conn-select");
    return select.value === "__other__" ? $("#conn-other").value.trim() : select.value;
  }

  function onConnectionChange() {
    const select = $("#conn-select");
    const other = $("#conn-other");
    other.hidden = select.value !== "__other__";
    const c = state.connections.find((x) => x.conn_id === select.value);
    const info = $("#conn-info");
    if (c) {
      const parts = [c.endpoint || "(no host)", c.has_key ? "access key set" : "no access key", `from ${c.source}`];
      if (c.model) parts.push(`default model ${c.model}`);
      info.textContent = parts.join(" · ") + (c.description ? ` — ${c.description}` : "");
      const model = state.fields.model;
      if (model) model.input.placeholder = c.model || state.defaultModel;
    } else {
      info.textContent = state.connections.length
        ? "Any connection id the API server can resolve (e.g. from a secrets backend)."
        : "No agentchat connection found: create one under Admin → Connections, or type an id.";
    }
  }

  // ------------------------------------------------------------------------------------------- collect
  function clearErrors() {
    for (const node of document.querySelectorAll(".field.invalid")) node.classList.remove("invalid");
    for (const node of document.querySelectorAll(".error")) node.textContent = "";
  }

  function markField(field, message) {
    if (!field) return false;
    field.classList.add("invalid");
    const err = field.querySelector(".error");
    err.textContent = err.textContent ? `${err.textContent}\n${message}` : message;
    return true;
  }

  // Read the form into a request body. Local problems (JSON that does not parse, a number that is not one)
  // are reported per field; the rules of the reference are checked by the server, still before sending.
  function collect() {
    const problems = [];
    const messages = [];
    const system = $("#system-prompt").value;
    state.systemOffset = system.trim() ? 1 : 0;
    // A cache lifetime marks the system prompt with cache_control: sent again within it, the prefix is read from
    // the cache (the usage shows "cache read").
    const ttl = $("#cache-prompt").value;
    if (system.trim()) {
      messages.push({ role: "system", content: ttl ? [{ type: "text", text: system, cache_control: { type: "ephemeral", ttl } }] : system });
    }
    for (const row of $("#messages").children) {
      const role = row.querySelector("select.role").value;
      const message = { role, content: row.querySelector("textarea.content").value };
      if (role === "tool") message.tool_call_id = row.querySelector("input.tool-id").value;
      const imageUrl = row.querySelector("input.image-url").value.trim();
      if (role === "user" && imageUrl) {
        message.content = [...(message.content ? [{ type: "text", text: message.content }] : []),
          { type: "image_url", image_url: { url: imageUrl } }];
      }
      const calls = row.querySelector("textarea.tool-calls").value.trim();
      if (role === "assistant" && calls) {
        try {
          message.tool_calls = JSON.parse(calls);
          if (message.content === "") message.content = null;  // an assistant turn that only calls tools
        } catch (e) { problems.push([row.querySelector(".field"), `tool_calls: not valid JSON: ${e.message}`]); }
      }
      messages.push(message);
    }
    const request = { messages };
    for (const { spec, input, field } of Object.values(state.fields)) {
      if (input.type === "checkbox") { if (input.checked) request[spec.name] = true; continue; }
      const raw = input.value.trim();
      if (raw === "") continue;
      if (spec.kind === "boolean") request[spec.name] = raw === "true";
      else if (spec.kind === "integer" || spec.kind === "number") {
        const value = Number(raw);
        if (!Number.isFinite(value) || (spec.kind === "integer" && !Number.isInteger(value))) {
          problems.push([field, `must be ${spec.kind === "integer" ? "an integer" : "a number"}`]);
        } else request[spec.name] = value;
      } else if (spec.kind === "json") {
        try { request[spec.name] = JSON.parse(raw); } catch (e) { problems.push([field, `not valid JSON: ${e.message}`]); }
      } else if (spec.kind === "json-or-string") {
        if (/^[[{"]/.test(raw)) {
          try { request[spec.name] = JSON.parse(raw); } catch (e) { problems.push([field, `not valid JSON: ${e.message}`]); }
        } else request[spec.name] = raw;
      } else request[spec.name] = spec.kind === "string" ? input.value : raw;
    }
    // Streams report usage only when asked to: ask, visibly (it is in the request body and the snippet).
    if (request.stream && request.stream_options === undefined) request.stream_options = { include_usage: true };
    return { request, problems };
  }

  // Point each server-side (field, rule) pair at its input.
  function showErrors(errors) {
    const leftovers = [];
    for (const { field, rule } of errors) {
      const match = /^messages\[(\d+)\]/.exec(field);
      let target = null;
      if (match) {
        const index = Number(match[1]) - state.systemOffset;
        target = index < 0 ? $('[data-field="system"]') : $("#messages").children[index]?.querySelector(".field");
      } else if (field === "messages") target = $("#messages").children[0]?.querySelector(".field");
      else target = state.fields[field.split(/[.[]/)[0]]?.field;
      if (!markField(target, `${field}: ${rule}`)) leftovers.push(`${field}: ${rule}`);
      else if (target.closest("details")) target.closest("details").open = true;
    }
    $("#form-error").textContent = leftovers.join("\n");
    document.querySelector(".field.invalid")?.scrollIntoView({ block: "center", behavior: "smooth" });
  }

  // ------------------------------------------------------------------------------------------- result view
  function selectTab(name) {
    for (const tab of document.querySelectorAll(".tab")) tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
    for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.dataset.panel !== name;
  }

  function setBadge(kind, text) {
    const badge = $("#status-badge");
    badge.hidden = false;
    badge.className = `badge ${kind}`;
    badge.textContent = text;
  }

  function setStats(pairs) {
    const stats = $("#stats");
    stats.replaceChildren(...pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) =>
      el("div", {}, el("dt", { text: k }), el("dd", { text: String(v) }))));
    stats.hidden = !stats.children.length;
  }

  function pretty(value) { return JSON.stringify(value, null, 2); }

  function block(title, value, { tag, warn, open = true } = {}) {
    const details = el("details", { class: `block${warn ? " warn" : ""}`, open },
      el("summary", {}, el("span", { text: title }), tag ? el("span", { class: "tag", text: tag }) : null),
      el("pre", { class: "code", text: typeof value === "string" ? value : pretty(value) }));
    return details;
  }

  function resetResult() {
    $("#empty").hidden = true;
    const answer = $("#answer");
    answer.hidden = false;
    answer.className = "answer";
    answer.textContent = "";
    $("#blocks").replaceChildren();
    $("#raw-response").textContent = "—";
    setStats([]);
  }

  function showRequest(data) {
    if (data.request) $("#raw-request").textContent = pretty(data.request);
    if (data.snippet) $("#snippet").textContent = data.snippet;
  }

  function showResult(data) {
    const answer = $("#answer");
    answer.classList.remove("streaming");
    const text = data.text;
    answer.textContent = text === null || text === undefined || text === "" ? "" : text;
    if (!answer.textContent) {
      answer.textContent = data.tool_calls && data.tool_calls.length ? "(no text: the agent called tools)" : "(empty answer)";
      answer.classList.add("muted");
    }
    const usage = data.usage || {};
    const meta = data.meta || {};
    setBadge("ok", data.finish_reason ? `finish: ${data.finish_reason}` : "done");
    setStats([
      ["latency", meta.latency_ms !== undefined ? `${Math.round(meta.latency_ms)} ms` : null],
      ["prompt tokens", usage.prompt_tokens], ["completion tokens", usage.completion_tokens], ["total tokens", usage.total_tokens],
      ["cache read", usage.cache_read_input_tokens], ["cache written", usage.cache_created_input_tokens],
      ["model", data.model], ["attempts", meta.attempts], ["chunks", meta.chunks], ["request id", meta.request_id],
    ]);
    const blocks = $("#blocks");
    const extra = (data.texts || []).slice(1);
    extra.forEach((t, i) => blocks.append(block(`Choice ${i + 1}`, t ?? "(no text)")));
    if (data.tool_calls && data.tool_calls.length) blocks.append(toolCallsBlock(data.tool_calls));
    const triggered = data.guardrails && data.guardrails.triggered_guardrails;
    if (data.guardrails) blocks.append(block("Guardrails", data.guardrails, { warn: triggered && triggered.length, tag: triggered && triggered.length ? `${triggered.length} triggered` : "none triggered" }));
    if (data.retrieval) blocks.append(block("Retrieval", data.retrieval, { tag: `${(data.retrieval.retrieved_data || []).length} documents` }));
    if (data.functions) blocks.append(block("Functions", data.functions));
    if (data.citations) blocks.append(block("Citations", data.citations));
    const table = el("table", { class: "usage" }, ...Object.entries(usage).map(([k, v]) =>
      el("tr", {}, el("td", { text: k }), el("td", { text: typeof v === "object" ? JSON.stringify(v) : String(v) }))));
    blocks.append(el("details", { class: "block", open: true }, el("summary", {}, el("span", { text: "Usage" })),
      el("div", { class: "code" }, table)));
    $("#raw-response").textContent = pretty(data.raw || data);
  }

  // Arguments arrive as a JSON string; show them parsed and indented (as sent when they do not parse).
  function toolCallsBlock(calls) {
    const readable = calls.map((c) => {
      const fn = c.function || {};
      let args = fn.arguments;
      try { args = JSON.parse(fn.arguments); } catch (e) { /* keep the text */ }
      return { ...c, function: { ...fn, arguments: args } };
    });
    const details = block("Tool calls", readable, { tag: `${calls.length}` });
    const reply = el("button", { type: "button", class: "btn btn-small", id: "reply-tools", text: "Reply with tool results",
      title: "Add the assistant turn and one tool message per call to the conversation" });
    reply.addEventListener("click", () => replyToToolCalls(calls));
    details.append(el("div", { class: "block-actions" }, reply));
    return details;
  }

  function showFailure(message, data) {
    const answer = $("#answer");
    answer.hidden = false;
    answer.classList.remove("streaming");
    answer.classList.add("failed");
    answer.textContent = message;
    setBadge("err", "error");
    const err = data && data.error;
    if (err) {
      setStats([["status", err.status], ["code", err.code], ["attempts", err.attempts], ["request id", err.request_id]]);
      $("#raw-response").textContent = pretty(data);
    }
  }

  // ------------------------------------------------------------------------------------------- actions
  async function send(event) {
    if (event) event.preventDefault();
    if (state.busy) return;
    clearErrors();
    const connId = currentConnection();
    if (!connId) { markField($('[data-field="connection"]'), "choose a connection"); return; }
    const { request, problems } = collect();
    if (problems.length) { for (const [field, rule] of problems) markField(field, rule); return; }
    state.busy = true;
    $("#send").disabled = true;
    selectTab("answer");
    resetResult();
    setBadge("busy", request.stream ? "streaming…" : "waiting…");
    $("#raw-request").textContent = pretty(request);
    try {
      const response = await api(`api/connections/${encodeURIComponent(connId)}/chat`, { json: { request } });
      const type = response.headers.get("content-type") || "";
      if (response.ok && type.includes("ndjson")) await readStream(response);
      else {
        const data = await readJson(response);
        showRequest(data);
        if (response.status === 422 && data.errors) {
          showErrors(data.errors);
          showFailure("Not sent: fix the fields marked in the form.", null);
        } else if (data.ok) showResult(data);
        else if (data.error) showFailure(data.error.message, data);
        else showFailure(explainHttp(response, data), null);
      }
    } catch (e) {
      showFailure(`The request did not complete: ${e.message}`, null);
    } finally {
      state.busy = false;
      $("#send").disabled = false;
    }
  }

  async function readStream(response) {
    const answer = $("#answer");
    answer.classList.add("streaming");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let finished = false;
    const handle = (line) => {
      if (!line.trim()) return;
      const event = JSON.parse(line);
      if (event.type === "start") showRequest(event);
      else if (event.type === "open") setStats([["attempts", event.attempts], ["request id", event.request_id]]);
      else if (event.type === "delta") answer.textContent += event.text || "";
      else if (event.type === "result") { finished = true; showResult(event); }
      else if (event.type === "error") { finished = true; showFailure(event.error.message, event); }
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        handle(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
      }
    }
    handle(buffer + decoder.decode());
    if (!finished) showFailure("The stream ended before the answer was complete.", null);
  }

  async function showSnippet() {
    clearErrors();
    const { request, problems } = collect();
    if (problems.length) { for (const [field, rule] of problems) markField(field, rule); return; }
    const response = await api("api/validate", { json: { conn_id: currentConnection() || "agentchat_default", request } });
    const data = await readJson(response);
    if (response.status === 422 && data.errors) { showErrors(data.errors); return; }
    if (!response.ok) { $("#form-error").textContent = explainHttp(response, data); return; }
    $("#snippet").textContent = data.snippet;
    $("#raw-request").textContent = pretty(data.body);
    selectTab("operator");
    await copy(data.snippet);
  }

  async function copy(text) {
    const button = $("#copy-snippet");
    let ok = false;
    try { await navigator.clipboard.writeText(text); ok = true; } catch (e) {
      const area = el("textarea", { class: "json" });
      area.value = text;
      document.body.append(area);
      area.select();
      try { ok = document.execCommand("copy"); } catch (e2) { ok = false; }
      area.remove();
    }
    button.textContent = ok ? "Copied" : "Select and copy";
    setTimeout(() => { button.textContent = "Copy"; }, 1600);
  }

  // ------------------------------------------------------------------------------------------- start
  async function start() {
    addMessage("user", "");
    $("#add-message").addEventListener("click", () => addMessage("user", "").querySelector("textarea").focus());
    $("#conn-select").addEventListener("change", onConnectionChange);
    $("#request-form").addEventListener("submit", send);
    $("#request-form").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(e); });
    $("#show-snippet").addEventListener("click", showSnippet);
    $("#copy-snippet").addEventListener("click", () => copy($("#snippet").textContent));
    for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => selectTab(tab.dataset.tab));
    const response = await api("api/schema");
    const data = await readJson(response);
    if (!response.ok) { $("#form-error").textContent = explainHttp(response, data); return; }
    state.schema = data.schema;
    state.common = data.common;
    state.defaultModel = data.default_model;
    buildForm();
    await loadConnections();
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", () => { start().catch((e) => { $("#form-error").textContent = String(e); }); });
})();
