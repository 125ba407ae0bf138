"""The official OpenAI Python SDK's Responses API against tollgate, one scenario per run.

Run by tests/responses_door.rs, which starts tollgate in front of a strict fake NIM, scripts
the fake's answer for the scenario, and passes tollgate's address in TOLLGATE_URL. Prints one
JSON object with what the SDK saw; assertions on the SDK's side raise (non-zero exit).

The SDK's own pydantic models parse every event (`ResponseStreamEvent`), and
`responses.stream()` accumulates them and checks their order, so a malformed event fails here.
"""

import json
import os
import sys

import openai
from openai import OpenAI

client = OpenAI(
    base_url=os.environ["TOLLGATE_URL"] + "/v1", api_key="unused", max_retries=0, timeout=60
)
MODEL = "nvidia:meta/llama-3.1-8b-instruct"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def stream(**kwargs):
    """Streams through `responses.stream()`: every event, then the final response."""
    events = []
    with client.responses.stream(model=MODEL, **kwargs) as s:
        for event in s:
            events.append(event)
        final = s.get_final_response()
    seq = [e.sequence_number for e in events]
    assert seq == sorted(seq) and len(set(seq)) == len(seq), seq
    return events, final


def items(response):
    out = []
    for item in response.output:
        entry = {"type": item.type}
        for field in ("name", "arguments", "call_id", "status"):
            if hasattr(item, field):
                entry[field] = getattr(item, field)
        if item.type == "message":
            entry["text"] = "".join(c.text for c in item.content if c.type == "output_text")
        if item.type == "reasoning":
            entry["text"] = "".join(
                [s.text for s in (item.summary or [])] + [c.text for c in (item.content or [])]
            )
        out.append(entry)
    return out


scenario = sys.argv[1]
result = {}

if scenario == "text":
    whole = client.responses.create(model=MODEL, input="hi", max_output_tokens=50)
    assert whole.status == "completed", whole
    events, final = stream(input="hi", instructions="Be brief.")
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[1] == "response.in_progress", kinds
    assert "response.content_part.added" in kinds, kinds
    assert kinds[-1] == "response.completed", kinds
    result = {
        "whole_text": whole.output_text,
        "whole_model": whole.model,
        "whole_usage": [whole.usage.input_tokens, whole.usage.output_tokens, whole.usage.total_tokens],
        "stream_text": final.output_text,
        "stream_model": final.model,
        "stream_usage": [final.usage.input_tokens, final.usage.output_tokens],
    }
elif scenario == "tool_call":
    events, final = stream(input="weather in Paris?", tools=[WEATHER])
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds, kinds
    assert "response.function_call_arguments.done" in kinds, kinds
    result = {"items": items(final)}
elif scenario == "follow_up":
    whole = client.responses.create(
        model=MODEL,
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21C"},
        ],
    )
    result = {"text": whole.output_text}
elif scenario == "parallel":
    events, final = stream(input="weather in Paris and Rome?", tools=[WEATHER])
    result = {"items": items(final)}
elif scenario == "reasoning":
    events, final = stream(input="think", reasoning={"effort": "high", "summary": "auto"})
    result = {"items": items(final), "kinds": sorted({e.type for e in events})}
elif scenario == "incomplete":
    # get_final_response() raises on an incomplete response (as with OpenAI): read the events.
    events = list(client.responses.create(model=MODEL, input="long", max_output_tokens=3, stream=True))
    last = events[-1]
    assert last.type == "response.incomplete", [e.type for e in events]
    result = {
        "status": last.response.status,
        "reason": last.response.incomplete_details.reason,
        "text": last.response.output_text,
    }
elif scenario == "cut":
    try:
        stream(input="hi")
        raise AssertionError("a stream cut mid-answer must raise")
    except openai.APIError as e:
        result = {"raised": type(e).__name__, "message": str(e)}
elif scenario == "error":
    try:
        client.responses.create(model=MODEL, input="hi", previous_response_id="resp_123")
        raise AssertionError("previous_response_id on a translated backend must be refused")
    except openai.BadRequestError as e:
        result = {"status": e.status_code, "message": str(e)}
else:
    raise SystemExit(f"unknown scenario {scenario}")

print(json.dumps(result))
