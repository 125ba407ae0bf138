"""The official OpenAI Python SDK against a running tollgate (mock backends).

Run by tests/sdk.rs, which starts tollgate and passes its address in TOLLGATE_URL.
Exits non-zero (with an assertion message) on any mismatch.
"""

import os
import sys

import openai
from openai import OpenAI

base = os.environ["TOLLGATE_URL"]
reply = os.environ["EXPECTED_REPLY"]
client = OpenAI(base_url=base + "/v1", api_key=os.environ.get("TOLLGATE_KEY", "unused"), max_retries=0, timeout=60)

messages = [{"role": "user", "content": "Hello"}]

# A whole completion.
r = client.chat.completions.create(model="mock:mock-1", messages=messages)
assert r.choices[0].message.content == reply, r
assert r.usage is not None and r.usage.total_tokens > 0, r.usage

# A stream, with usage asked for.
text = ""
usage = None
for chunk in client.chat.completions.create(
    model="mock:mock-1", messages=messages, stream=True, stream_options={"include_usage": True}
):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage
assert text == reply, text
assert usage is not None and usage.completion_tokens > 0, usage

# A slow stream: silent longer than the keepalive interval before its first chunk and between
# chunks, so keepalive frames are interleaved. The SDK must still see exactly the text.
text = "".join(
    chunk.choices[0].delta.content or ""
    for chunk in client.chat.completions.create(model="slow:m", messages=messages, stream=True)
    if chunk.choices
)
assert text == "slow-and-steady", text

# Errors are OpenAI-shaped: the SDK raises its typed exception with our code.
try:
    client.chat.completions.create(model="nowhere:x", messages=messages)
    raise AssertionError("expected a 404")
except openai.NotFoundError as e:
    assert e.status_code == 404
    assert e.body["code"] == "model_not_found", e.body

# Embeddings and the model list.
emb = client.embeddings.create(model="mock:mock-1", input="hi")
assert len(emb.data[0].embedding) > 0
ids = [m.id for m in client.models.list()]
assert "mock:mock-1" in ids, ids

print("openai sdk", openai.__version__, "ok")
sys.exit(0)
