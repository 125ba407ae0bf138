// tollgate with the official OpenAI Node SDK (`openai` on npm): a completion, a stream, an error.
//
//   npm install openai                                   # in the directory you run this from
//   tollgate --config config/config.example.yaml         # in another terminal
//   node node_sdk.mjs
//
// TOLLGATE_URL   gateway address   (default http://127.0.0.1:8000)
// TOLLGATE_MODEL model to ask for  (default mock:mock-1, the example config's mock backend)
// TOLLGATE_KEY   a client key, when auth.keys or PROXY_API_KEY are configured

import OpenAI from "openai";

const url = process.env.TOLLGATE_URL ?? "http://127.0.0.1:8000";
const model = process.env.TOLLGATE_MODEL ?? "mock:mock-1";

const client = new OpenAI({
  baseURL: `${url}/v1`,
  // Without client keys the gateway ignores this, but the SDK insists on one.
  apiKey: process.env.TOLLGATE_KEY ?? "unused-without-client-keys",
  // tollgate already retries and falls back across backends; SDK retries would multiply them.
  maxRetries: 0,
  timeout: 120_000,
});
const messages = [{ role: "user", content: "Hello" }];

// 1. A whole completion; withResponse() exposes tollgate's headers too.
const { data: reply, response } = await client.chat.completions
  .create({ model, messages })
  .withResponse();
console.log("backend:", response.headers.get("x-tollgate-backend"), "attempts:", response.headers.get("x-tollgate-attempts"));
console.log("reply:", reply.choices[0].message.content);
console.log("usage:", reply.usage);

// 2. A stream. With the default `keepalive_format: comment` the SDK never sees keepalives; with
//    `chunk` it hands them to this loop as empty content. A stream that breaks after it
//    started ends with an error event, which the SDK throws as an APIError.
process.stdout.write("stream: ");
try {
  const stream = await client.chat.completions.create({
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  for await (const chunk of stream) {
    process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
    if (chunk.usage) {
      console.log(`\nstream usage: ${chunk.usage.prompt_tokens} prompt + ${chunk.usage.completion_tokens} completion tokens`);
    }
  }
} catch (e) {
  console.error(`\nthe stream broke: ${e.message}`);
  process.exit(1);
}

// 3. Errors are OpenAI-shaped, so the SDK throws its typed errors with tollgate's code.
try {
  await client.chat.completions.create({ model, messages, max_tokens: -1 });
  throw new Error("expected a 400");
} catch (e) {
  if (!(e instanceof OpenAI.BadRequestError)) throw e;
  console.log(`${e.constructor.name}: HTTP ${e.status}, code=${e.code}, param=${e.param}, request id=${e.headers?.get?.("x-request-id") ?? e.headers?.["x-request-id"]}`);
}

console.log("ok");
