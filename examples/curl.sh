#!/usr/bin/env bash
# tollgate with plain curl: health, models, a chat completion, a stream, and an error.
#
#   tollgate --config config/config.example.yaml          # in another terminal
#   examples/curl.sh
#
# TOLLGATE_URL   gateway address         (default http://127.0.0.1:8000)
# TOLLGATE_MODEL model to ask for        (default mock:mock-1, the example config's mock backend)
# TOLLGATE_KEY   a client key, when auth.keys or PROXY_API_KEY are configured
set -euo pipefail

URL="${TOLLGATE_URL:-http://127.0.0.1:8000}"
MODEL="${TOLLGATE_MODEL:-mock:mock-1}"
AUTH=()
if [[ -n "${TOLLGATE_KEY:-}" ]]; then
  AUTH=(-H "Authorization: Bearer ${TOLLGATE_KEY}")
fi

step() { printf '\n== %s\n' "$*"; }

step "GET /health/live"
curl -sS --fail "$URL/health/live"
echo

step "GET /health/ready (200 when a backend is usable, 503 with a reason per backend otherwise)"
curl -sS "$URL/health/ready"
echo

step "GET /v1/models (ids are backend:model, plus route names)"
curl -sS --fail ${AUTH[@]+"${AUTH[@]}"} "$URL/v1/models"
echo

step "POST /v1/chat/completions (-i: see x-tollgate-backend, x-tollgate-attempts, x-request-id)"
curl -sS -i --fail ${AUTH[@]+"${AUTH[@]}"} "$URL/v1/chat/completions" \
  -H 'content-type: application/json' \
  -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}"
echo

step "POST /v1/chat/completions, streamed (-N: print each event as it arrives)"
curl -sS -N --fail ${AUTH[@]+"${AUTH[@]}"} "$URL/v1/chat/completions" \
  -H 'content-type: application/json' \
  -d "{\"model\":\"$MODEL\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}"

step "An error: OpenAI-shaped, with the right status (400, param names the field)"
curl -sS -w ' -> HTTP %{http_code}\n' ${AUTH[@]+"${AUTH[@]}"} "$URL/v1/chat/completions" \
  -H 'content-type: application/json' \
  -d "{\"model\":\"$MODEL\"}"
