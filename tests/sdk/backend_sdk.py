"""Official SDKs against tollgate in front of a fake Anthropic backend, one scenario per run.

Run by tests/anthropic_backend.rs (TOLLGATE_URL, TOLLGATE_KEY). Prints one JSON object.
- OpenAI SDK scenarios (`chat`, `stream`, `tool`): the Chat door, translated to Messages.
- Anthropic SDK scenarios (`native`, `native_stream`): the Messages door, passed through; the
  request body the SDK sent is recorded (hex) so the test can compare it with what the
  backend received.
"""

import json
import os
import sys

try:  # the SDKs moved from httpx to its successor, httpx2
    import httpx2 as httpx
except ImportError:
    import httpx

base = os.environ["TOLLGATE_URL"]
key = os.environ["TOLLGATE_KEY"]
scenario = sys.argv[1]
result = {}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

if scenario in ("chat", "stream", "tool"):
    from openai import OpenAI

    client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)
    model = "anthropic:claude-sonnet-4-6"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    if scenario == "chat":
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=200)
        result = {
            "text": r.choices[0].message.content,
            "model": r.model,
            "finish": r.choices[0].finish_reason,
            "usage": [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens],
        }
    elif scenario == "stream":
        text, usage, finish = "", None, None
        for chunk in client.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True}
        ):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
        result = {"text": text, "usage": usage, "finish": finish}
    else:
        calls = {}
        finish = None
        for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER], stream=True
        ):
            if not chunk.choices:
                continue
            finish = chunk.choices[0].finish_reason or finish
            for tc in chunk.choices[0].delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    entry["id"] = tc.id
                if tc.function and tc.function.name:
                    entry["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    entry["arguments"] += tc.function.arguments
        result = {"calls": [calls[i] for i in sorted(calls)], "finish": finish}
else:
    import anthropic

    sent = []

    def record(request):
        sent.append((request.content, request.headers.get("anthropic-version")))

    http = httpx.Client(event_hooks={"request": [record]}, timeout=60)
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, http_client=http)
    body = dict(
        model="claude-sonnet-4-6",
        max_tokens=300,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hi"}],
        metadata={"user_id": "u-1"},
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    if scenario == "native":
        m = client.messages.create(**body)
        result = {"text": m.content[0].text, "model": m.model, "usage": [m.usage.input_tokens, m.usage.output_tokens]}
    else:
        with client.messages.stream(**body) as s:
            kinds = [e.type for e in s]
            m = s.get_final_message()
        result = {"text": m.content[0].text, "stop": m.stop_reason, "kinds": kinds}
    result["sent"] = sent[-1][0].hex()
    result["version"] = sent[-1][1]

print(json.dumps(result))
