"""tollgate with the official OpenAI Python SDK: a completion, a stream, and error handling.

    pip install openai
    tollgate --config config/config.example.yaml          # in another terminal
    python3 examples/python_sdk.py

TOLLGATE_URL   gateway address   (default http://127.0.0.1:8000)
TOLLGATE_MODEL model to ask for  (default mock:mock-1, the example config's mock backend)
TOLLGATE_KEY   a client key, when auth.keys or PROXY_API_KEY are configured
"""

import os
import sys

import openai
from openai import OpenAI

URL = os.environ.get("TOLLGATE_URL", "http://127.0.0.1:8000")
MODEL = os.environ.get("TOLLGATE_MODEL", "mock:mock-1")

client = OpenAI(
    base_url=URL + "/v1",
    # Without client keys the gateway ignores this, but the SDK insists on one.
    api_key=os.environ.get("TOLLGATE_KEY", "unused-without-client-keys"),
    # tollgate already retries and falls back across backends; SDK retries would multiply them.
    max_retries=0,
    timeout=120,
)
messages = [{"role": "user", "content": "Hello"}]

# 1. A whole completion. with_raw_response exposes tollgate's headers too.
raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
reply = raw.parse()
print("backend:", raw.headers.get("x-tollgate-backend"), "attempts:", raw.headers.get("x-tollgate-attempts"))
print("reply:", reply.choices[0].message.content)
print("usage:", reply.usage)

# 2. A stream. Keepalives (`: keepalive` comments) are invisible to the SDK. A stream that
#    breaks after it started ends with an error event, which the SDK raises as APIError.
print("stream: ", end="")
try:
    for chunk in client.chat.completions.create(
        model=MODEL,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices:
            print(chunk.choices[0].delta.content or "", end="", flush=True)
        if chunk.usage:
            print(f"\nstream usage: {chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} completion tokens")
except openai.APIError as e:
    print(f"\nthe stream broke: {e.message}", file=sys.stderr)
    sys.exit(1)

# 3. Errors are OpenAI-shaped, so the SDK raises its typed exceptions with tollgate's code.
def show(e: openai.APIStatusError) -> None:
    print(f"{type(e).__name__}: HTTP {e.status_code}, code={e.body.get('code')!r}, "
          f"param={e.body.get('param')!r}, request id={e.response.headers.get('x-request-id')}")

try:  # 400: tollgate checks the fields it acts on, and names the bad one.
    client.chat.completions.create(model=MODEL, messages=messages, max_tokens=-1)
    sys.exit("expected a 400")
except openai.BadRequestError as e:
    show(e)

try:  # 404: a model no backend lists.
    client.models.retrieve("no-such-backend:no-such-model")
    sys.exit("expected a 404")
except openai.NotFoundError as e:
    show(e)

# What to catch in an application, most specific first.
try:
    client.chat.completions.create(model=MODEL, messages=messages)
except openai.AuthenticationError as e:      # 401 invalid_api_key: set TOLLGATE_KEY
    show(e)
except openai.PermissionDeniedError as e:    # 403 permission_denied: the key may not use MODEL
    show(e)
except openai.RateLimitError as e:           # 429: see e.response.headers.get("retry-after")
    show(e)
except openai.APIStatusError as e:           # 502 upstream_error, 503 backend_unavailable, 504 upstream_timeout …
    show(e)
except openai.APIConnectionError as e:       # tollgate itself unreachable
    sys.exit(f"cannot reach tollgate at {URL}: {e}")

print("ok")
