"""The official Anthropic Python SDK against tollgate's Messages door, one scenario per run.

Run by tests/messages_door.rs, which starts tollgate in front of a strict fake NIM, scripts
the fake's answer for the scenario, and passes tollgate's address in TOLLGATE_URL and the client
key in TOLLGATE_KEY. Prints one JSON object with what the SDK saw; the SDK's own models parse
every event and `messages.stream()` accumulates them, so a malformed stream fails here.
"""

import json
import os
import sys

import anthropic

client = anthropic.Anthropic(
    base_url=os.environ["TOLLGATE_URL"],
    api_key=os.environ["TOLLGATE_KEY"],
    max_retries=0,
    timeout=90,
)
MODEL = "claude-sonnet-5-5"
MESSAGES = [{"role": "user", "content": "hi"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
}


def blocks(message):
    out = []
    for b in message.content:
        if b.type == "text":
            out.append({"type": "text", "text": b.text})
        elif b.type == "thinking":
            out.append({"type": "thinking", "thinking": b.thinking})
        elif b.type == "tool_use":
            out.append({"type": "tool_use", "id": b.id, "name": b.name, "input": b.input})
    return out


def stream(model=MODEL, **kwargs):
    with client.messages.stream(model=model, max_tokens=1024, **kwargs) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    return kinds, final


scenario = sys.argv[1]
result = {}

if scenario == "text":
    whole = client.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES, system="Be brief.")
    kinds, final = stream(messages=MESSAGES)
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    result = {
        "whole": blocks(whole),
        "whole_model": whole.model,
        "whole_stop": whole.stop_reason,
        "whole_usage": [whole.usage.input_tokens, whole.usage.output_tokens],
        "stream": blocks(final),
        "stream_text": "".join(b.text for b in final.content if b.type == "text"),
        "stream_stop": final.stop_reason,
        "stream_usage": [final.usage.input_tokens, final.usage.output_tokens],
    }
elif scenario == "tool_call":
    kinds, final = stream(messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER])
    result = {"blocks": blocks(final), "stop": final.stop_reason}
elif scenario == "parallel":
    kinds, final = stream(messages=[{"role": "user", "content": "Paris and Rome?"}], tools=[WEATHER])
    result = {"blocks": blocks(final), "stop": final.stop_reason}
elif scenario == "follow_up":
    whole = client.messages.create(
        model=MODEL,
        max_tokens=1024,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 21C"}],
            },
        ],
    )
    result = {"blocks": blocks(whole)}
elif scenario == "thinking":
    # claude-opus* is mapped to the backend with a reasoning control.
    kinds, final = stream(
        model="claude-opus-5-5",
        messages=[{"role": "user", "content": "think"}],
        thinking={"type": "enabled", "budget_tokens": 2048},
    )
    result = {"blocks": blocks(final)}
elif scenario == "cut":
    try:
        stream(messages=MESSAGES)
        raise AssertionError("a stream cut mid-answer must raise")
    except anthropic.APIError as e:
        result = {"raised": type(e).__name__}
elif scenario == "slow":
    kinds, final = stream(messages=MESSAGES)
    result = {"text": "".join(b.text for b in final.content if b.type == "text"), "stop": final.stop_reason}
elif scenario == "rate_limited":
    try:
        client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        raise AssertionError("expected a 429")
    except anthropic.RateLimitError as e:
        result = {"status": e.status_code, "type": e.body["error"]["type"]}
elif scenario == "overloaded":
    try:
        client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        raise AssertionError("expected a 529")
    except anthropic.APIStatusError as e:
        result = {"status": e.status_code, "type": e.body["error"]["type"], "class": type(e).__name__}
elif scenario == "count_tokens":
    counted = client.messages.count_tokens(model=MODEL, messages=MESSAGES, system="Be brief.")
    result = {"input_tokens": counted.input_tokens}
else:
    raise SystemExit(f"unknown scenario {scenario}")

print(json.dumps(result))
