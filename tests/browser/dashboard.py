"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

Run by tests/dashboard_browser.rs against a tollgate it started (mock backend with
chunk_delay_ms, keepalive_interval 1 s, client keys and an admin key). Checks:

- the page loads and logs in with the admin key, with no console error at any point;
- a chat stream sent by this script is in the in-flight list within 1 s, then moves to the
  finished list with its status;
- that stream's timeline shows keepalives;
- nothing scrolls sideways at phone width;
- screenshots at 1280x800 and at phone width go to --screenshot (and a -phone sibling).

Prints "ok" and exits 0, or raises.
"""

import argparse
import json
import os
import tempfile
import threading
import time
import urllib.request

from playwright.sync_api import sync_playwright

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def send_stream(url, client_key, request_id, done):
    body = json.dumps(
        {
            "model": "mock:mock-1",
            "stream": True,
            "messages": [{"role": "user", "content": "a prompt the dashboard never shows"}],
        }
    ).encode()
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        data=body,
        headers={
            "content-type": "application/json",
            "authorization": "Bearer " + client_key,
            "x-request-id": request_id,
        },
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        done["status"] = resp.status
        done["body"] = resp.read().decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--admin-key", required=True)
    ap.add_argument("--client-key", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    problems = []
    with tempfile.TemporaryDirectory(prefix="tollgate-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=args.chromium,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 800},
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.on(
            "console",
            lambda m: problems.append("console " + m.type + ": " + m.text)
            if m.type in ("error", "warning")
            else None,
        )
        page.on("pageerror", lambda e: problems.append("page error: " + str(e)))

        page.goto(args.url + "/dashboard")
        # Client keys exist: the page asks for the admin key once.
        page.wait_for_selector("#login:not([hidden])", timeout=10000)
        page.fill("#login-key", args.admin_key)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#app:not([hidden])", timeout=10000)
        page.wait_for_selector('#conn[data-state="live"]', timeout=10000)
        assert args.admin_key not in page.content(), "the key is not kept in the page"

        # A stream: first event at once, then 1.5 s between chunks (keepalives every 1 s).
        request_id = "browser-%d" % int(time.time() * 1000)
        done = {}
        sender = threading.Thread(
            target=send_stream, args=(args.url, args.client_key, request_id, done)
        )
        sent = time.monotonic()
        sender.start()
        row = '#inflight tr[data-request-id="%s"]' % request_id
        page.wait_for_selector(row, timeout=5000)
        seen = time.monotonic() - sent
        assert seen < 1.0, "in flight after %.2f s (want < 1 s)" % seen
        print("in flight after %.3f s" % seen)
        # Its timeline, live: open it while it streams.
        page.click(row)
        page.wait_for_selector("#timeline:not([hidden])", timeout=5000)

        finished = '#finished tr[data-request-id="%s"]' % request_id
        page.wait_for_selector(finished, timeout=30000)
        sender.join(30)
        assert done.get("status") == 200, done
        status = page.text_content(finished + " td[data-status]")
        assert status.strip().startswith("200"), "status shown: %r" % status
        assert page.query_selector(row) is None, "it left the in-flight list"

        page.click(finished)
        page.wait_for_selector('#marks li[data-what="end"]', timeout=5000)
        keepalives = page.query_selector_all('#marks li[data-what="keepalive"]')
        assert len(keepalives) >= 1, "no keepalive in the timeline"
        for what in ("received", "attempt", "committed", "first_event", "last_event", "end"):
            assert page.query_selector('#marks li[data-what="%s"]' % what), what + " missing"
        assert page.query_selector('#lanes .dot[data-what="keepalive"]'), "no keepalive lane dot"
        print("timeline: %d keepalives" % len(keepalives))

        # The other panels are filled.
        page.wait_for_selector('#backends tr[data-backend="mock"]:not([data-requests="0"])', timeout=5000)
        page.wait_for_selector('#keys tr[data-key="ci"]:not([data-requests="0"])', timeout=15000)
        assert "a prompt the dashboard never shows" not in page.content()

        os.makedirs(os.path.dirname(args.screenshot) or ".", exist_ok=True)
        page.screenshot(path=args.screenshot, full_page=True)

        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, "the page scrolls sideways at phone width by %d px" % overflow
        root, ext = os.path.splitext(args.screenshot)
        page.screenshot(path=root + "-phone" + ext, full_page=True)
        context.close()

    assert not problems, "\n".join(problems)
    print("ok")


if __name__ == "__main__":
    main()
