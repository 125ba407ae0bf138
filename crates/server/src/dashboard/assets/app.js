// tollgate dashboard: plain JavaScript, no framework, no build step.
//
// Flow: GET /dashboard/session says whether an admin key is needed and whether this browser
// has a session; if it needs one, the key is posted once to /dashboard/login (a session cookie
// comes back: EventSource cannot send headers). Then /dashboard/state gives the snapshot and
// /dashboard/events the live ticks. Every value shown is written with textContent.
'use strict';

(function () {
  const FINISHED_KEPT = 256;
  const $ = (id) => document.getElementById(id);

  const view = {
    offset: 0, // server clock minus ours, in ms
    inflight: [],
    inflightTotal: 0,
    finished: new Map(), // seq -> summary
    backends: [],
    windows: null,
    keys: [],
    config: null,
    sizes: null,
    selected: null, // seq
    detail: null,
    detailAsked: 0,
    events: null,
    retryTimer: null,
    lastStateAt: 0,
  };

  const now = () => Date.now() + view.offset;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '–';
    if (ms < 1) return ms.toFixed(2) + ' ms';
    if (ms < 1000) return ms.toFixed(ms < 10 ? 1 : 0) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
    return Math.floor(ms / 60000) + 'm' + Math.round((ms % 60000) / 1000) + 's';
  }

  function fmtClock(unixMs) {
    const d = new Date(unixMs);
    return d.toLocaleTimeString([], { hour12: false });
  }

  function fmtAgo(unixMs) {
    const s = Math.max(0, Math.round((now() - unixMs) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    return Math.round(s / 3600) + ' h ago';
  }

  function fmtNum(n) {
    if (n === null || n === undefined) return '–';
    return Number(n).toLocaleString();
  }

  function statusClass(status) {
    if (!status) return '';
    if (status < 300) return 's2';
    if (status < 500) return 's4';
    return 's5';
  }

  function setConn(state, text) {
    const c = $('conn');
    c.dataset.state = state;
    c.textContent = text || state;
  }

  async function api(path, options) {
    return fetch(path, Object.assign({ credentials: 'same-origin', cache: 'no-store' }, options || {}));
  }

  // ---- access ----

  async function start() {
    let session;
    try {
      const r = await api('/dashboard/session');
      session = await r.json();
    } catch (e) {
      setConn('offline', 'unreachable');
      schedule(start, 3000);
      return;
    }
    if (session.key_required && !session.authorized) {
      showLogin();
      return;
    }
    $('logout').hidden = !session.key_required;
    $('login').hidden = true;
    $('app').hidden = false;
    connect();
  }

  function showLogin() {
    closeEvents();
    $('app').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    setConn('offline', 'locked');
    $('login-key').focus();
  }

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = $('login-key').value;
    $('login-error').textContent = '';
    let r;
    try {
      r = await api('/dashboard/login', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ key: key }),
      });
    } catch (e) {
      $('login-error').textContent = 'the gateway cannot be reached';
      return;
    }
    if (r.status === 204) {
      $('login-key').value = '';
      start();
    } else {
      $('login-error').textContent = r.status === 401 ? 'not an admin key' : 'refused (' + r.status + ')';
    }
  });

  $('logout').addEventListener('click', async () => {
    try {
      await api('/dashboard/logout', { method: 'POST' });
    } catch (e) {
      // The cookie stays; the next page load asks again.
    }
    showLogin();
  });

  // ---- data ----

  function schedule(fn, ms) {
    clearTimeout(view.retryTimer);
    view.retryTimer = setTimeout(fn, ms);
  }

  async function loadState() {
    let r;
    try {
      r = await api('/dashboard/state');
    } catch (e) {
      return;
    }
    if (r.status === 401) {
      showLogin();
      return;
    }
    if (!r.ok) return;
    const s = await r.json();
    view.lastStateAt = Date.now();
    view.offset = s.now - Date.now();
    view.sizes = s.sizes;
    view.inflight = s.inflight;
    view.inflightTotal = s.inflight_total;
    view.finished = new Map();
    for (const f of s.finished) view.finished.set(f.seq, f);
    view.backends = s.backends;
    view.windows = null;
    view.keys = s.keys;
    view.config = s.config;
    $('summary').textContent = 'v' + s.version + ' · up since ' + fmtClock(s.started_at);
    $('footer').textContent =
      'keeps the last ' + s.sizes.finished + ' finished requests, ' + s.sizes.marks_per_request +
      ' timeline marks each; backend figures over the last ' + s.sizes.window_seconds / 60 + ' minutes.';
    render();
  }

  function closeEvents() {
    if (view.events) {
      view.events.close();
      view.events = null;
    }
  }

  function connect() {
    closeEvents();
    setConn('connecting');
    const es = new EventSource('/dashboard/events');
    view.events = es;
    es.addEventListener('open', () => {
      setConn('live');
      // The snapshot after the stream is open: nothing between the two is missed.
      loadState();
    });
    es.addEventListener('tick', (ev) => onTick(JSON.parse(ev.data)));
    es.addEventListener('dropped', () => setConn('dropped', 'too slow: reconnecting'));
    es.addEventListener('reset', () => {
      closeEvents();
      start();
    });
    es.addEventListener('error', () => {
      if (es.readyState === EventSource.CLOSED) {
        // Refused (a session that ended) or gone: ask again in a moment.
        view.events = null;
        setConn('offline', 'disconnected');
        schedule(start, 3000);
      } else {
        setConn('reconnecting');
      }
    });
  }

  function onTick(t) {
    view.offset = t.now - Date.now();
    view.inflight = t.inflight;
    view.inflightTotal = t.inflight_total;
    for (const f of t.finished) view.finished.set(f.seq, f);
    if (view.finished.size > FINISHED_KEPT) {
      const keep = sortedFinished().slice(0, FINISHED_KEPT);
      view.finished = new Map(keep.map((f) => [f.seq, f]));
    }
    if (t.backends) view.windows = t.backends;
    // Backend states, keys and configuration move slowly: a fresh snapshot every 10 s, or
    // 2 s after requests finished (their keys' counts changed).
    const age = Date.now() - view.lastStateAt;
    if (age > 10000 || (t.finished.length && age > 2000)) loadState();
    render();
    refreshDetail(t);
  }

  function endOf(f) {
    return f.started_at + (f.duration_ms || 0);
  }

  function sortedFinished() {
    return Array.from(view.finished.values()).sort((a, b) => endOf(b) - endOf(a));
  }

  // ---- rendering ----

  function render() {
    renderInflight();
    renderFinished();
    renderBackends();
    renderKeys();
    renderConfig();
    if (view.detail) renderDetail();
  }

  function rowFor(summary) {
    const tr = document.createElement('tr');
    tr.dataset.seq = summary.seq;
    tr.dataset.requestId = summary.request_id;
    if (view.selected === summary.seq) tr.className = 'selected';
    tr.addEventListener('click', () => select(summary.seq));
    return tr;
  }

  function modelCell(s) {
    const td = el('td', s.model || '–', 'model');
    td.title = s.model || '';
    return td;
  }

  function renderInflight() {
    const body = $('inflight').tBodies[0];
    const rows = view.inflight.map((s) => {
      const tr = rowFor(s);
      tr.append(
        el('td', fmtClock(s.started_at)),
        el('td', s.door),
        el('td', s.key || '–'),
        modelCell(s),
        el('td', s.target || '–', 'wide'),
        el('td', s.phase.replace('_', ' ')),
        el('td', s.attempts + (s.fallbacks ? ' (' + s.fallbacks + ' fallback)' : '')),
        el('td', s.stream ? s.events + ' ev · ' + s.keepalives + ' ka' : '–', 'wide'),
        el('td', fmtMs(now() - s.started_at)),
      );
      return tr;
    });
    body.replaceChildren(...rows);
    $('inflight-count').textContent = view.inflightTotal;
    $('inflight-empty').hidden = view.inflightTotal > 0;
  }

  function renderFinished() {
    const body = $('finished').tBodies[0];
    const list = sortedFinished();
    const rows = list.map((s) => {
      const tr = rowFor(s);
      const status = el('td', s.status + (s.error ? ' ' + s.error : ''), statusClass(s.counted_status || s.status));
      status.dataset.status = s.status;
      tr.append(
        el('td', fmtClock(endOf(s))),
        el('td', s.door),
        el('td', s.key || '–'),
        modelCell(s),
        el('td', s.target || '–', 'wide'),
        status,
        el('td', s.attempts + (s.fallbacks ? ' (' + s.fallbacks + ' fallback)' : '')),
        el('td', fmtMs(s.ttft_ms)),
        el('td', fmtMs(s.duration_ms)),
        el('td', fmtNum(s.prompt_tokens) + ' / ' + fmtNum(s.completion_tokens), 'wide'),
      );
      return tr;
    });
    body.replaceChildren(...rows);
    $('finished-count').textContent = list.length;
    $('finished-empty').hidden = list.length > 0;
  }

  function pair(p) {
    return p ? fmtMs(p.p50) + ' / ' + fmtMs(p.p95) : '–';
  }

  function renderBackends() {
    const body = $('backends').tBodies[0];
    const rows = view.backends.map((b) => {
      const w = (view.windows && view.windows[b.name]) || b.window;
      const tr = document.createElement('tr');
      tr.dataset.backend = b.name;
      tr.dataset.requests = w.requests;
      const state = el('td', b.usable ? 'usable' : 'unusable', b.usable ? 'yes' : 'no');
      if (b.circuit !== 'closed') state.textContent += ' · circuit ' + b.circuit.replace('_', '-');
      if (b.unusable_reason) {
        state.title = b.unusable_reason;
        state.append(el('div', b.unusable_reason, 'muted'));
      }
      const rate = w.error_rate === null ? '–' : (w.error_rate * 100).toFixed(1) + ' %';
      tr.append(
        el('td', b.name + (b.type !== b.name ? ' (' + b.type + ')' : '')),
        state,
        el('td', rate, w.error_rate > 0.05 ? 'no' : ''),
        el('td', pair(w.latency_ms)),
        el('td', pair(w.ttft_ms)),
        el('td', fmtNum(w.requests), 'wide'),
        el('td', b.models === null ? '?' : fmtNum(b.models), 'wide'),
      );
      return tr;
    });
    body.replaceChildren(...rows);
    if (view.sizes) $('window-label').textContent = 'last ' + view.sizes.window_seconds / 60 + ' min';
  }

  function limitText(l) {
    if (!l) return 'none';
    const parts = [];
    if (l.rpm) parts.push(fmtNum(l.rpm) + ' rpm');
    if (l.tpm) parts.push(fmtNum(l.tpm) + ' tpm');
    if (l.tokens_per_day) parts.push(fmtNum(l.tokens_per_day) + '/day');
    if (l.max_tokens_per_request) parts.push('≤' + fmtNum(l.max_tokens_per_request) + ' out');
    return parts.join(' · ') || 'none';
  }

  function remainingText(store) {
    if (!store) return '–';
    if (store.status !== 'ok') return 'store ' + store.status;
    const r = store.remaining;
    const parts = [];
    if (r.requests_this_minute !== null) parts.push(fmtNum(r.requests_this_minute) + ' req/min');
    if (r.tokens_this_minute !== null) parts.push(fmtNum(r.tokens_this_minute) + ' tok/min');
    if (r.tokens_today !== null) parts.push(fmtNum(r.tokens_today) + ' tok today');
    return parts.join(' · ') || '–';
  }

  function renderKeys() {
    const body = $('keys').tBodies[0];
    const rows = view.keys.map((k) => {
      const tr = document.createElement('tr');
      tr.dataset.key = k.name;
      tr.dataset.requests = k.today.requests;
      const tokens = k.today.prompt_tokens + k.today.completion_tokens;
      tr.append(
        el('td', k.name + (k.admin ? ' (admin)' : '')),
        el('td', fmtNum(k.today.requests)),
        el('td', fmtNum(tokens)),
        el('td', limitText(k.limits)),
        el('td', remainingText(k.store)),
      );
      return tr;
    });
    body.replaceChildren(...rows);
  }

  function renderConfig() {
    const c = view.config;
    if (!c) return;
    const r = c.reloads;
    $('config-loaded').textContent =
      'Loaded ' + fmtClock(r.loaded_at) + ' (' + fmtAgo(r.loaded_at) + ') · ' + c.backends + ' backends, ' +
      c.routes + ' routes, ' + c.client_keys + ' client keys, store ' + c.store + ' · reloads: ' +
      r.succeeded + ' applied, ' + r.refused + ' refused';
    const box = $('config-refused');
    if (r.last_refused) {
      box.hidden = false;
      $('config-refused-title').textContent =
        (r.last_failed ? 'The last reload was refused' : 'A reload was refused') + ' at ' +
        fmtClock(r.last_refused.at) + ' (' + fmtAgo(r.last_refused.at) + '); the running configuration stayed:';
      $('config-problems').replaceChildren(...r.last_refused.problems.map((p) => el('li', p)));
    } else {
      box.hidden = true;
    }
  }

  // ---- one request's timeline ----

  async function select(seq) {
    view.selected = seq;
    $('timeline').hidden = false;
    $('timeline-title').textContent = '#' + seq;
    await fetchDetail();
    render();
  }

  $('timeline-close').addEventListener('click', () => {
    view.selected = null;
    view.detail = null;
    $('timeline').hidden = true;
    render();
  });

  async function fetchDetail() {
    const seq = view.selected;
    if (seq === null) return;
    view.detailAsked = Date.now();
    let r;
    try {
      r = await api('/dashboard/state?request=' + encodeURIComponent(seq));
    } catch (e) {
      return;
    }
    if (view.selected !== seq) return;
    if (r.status === 404) {
      view.detail = null;
      $('marks').replaceChildren();
      $('lanes').replaceChildren();
      $('timeline-note').textContent = 'This request is no longer kept.';
      return;
    }
    if (!r.ok) return;
    view.detail = await r.json();
    renderDetail();
  }

  // A selected request still in flight is fetched again as ticks come (at most once a second).
  function refreshDetail(tick) {
    if (view.selected === null) return;
    const changed =
      tick.inflight.some((s) => s.seq === view.selected) ||
      tick.finished.some((s) => s.seq === view.selected);
    if (changed && Date.now() - view.detailAsked > 1000) fetchDetail();
  }

  function describe(m) {
    switch (m.what) {
      case 'received': return 'received';
      case 'attempt': return 'attempt ' + m.n + ' → ' + m.target;
      case 'failed': return 'attempt ' + m.n + ' failed: ' + m.status + ' (' + m.kind + ')';
      case 'answered': return 'attempt ' + m.n + ' answered';
      case 'skipped': return 'skipped ' + m.target + ': ' + m.why.replace('_', ' ');
      case 'held': return 'status held for the first event (up to ' + fmtMs(m.up_to_ms) + ')';
      case 'committed':
        return 'status ' + m.status + ' committed ' +
          (m.before_first_event ? 'before the first event: keepalives follow' : 'with the first event');
      case 'first_event': return 'first event';
      case 'keepalive': return 'keepalive';
      case 'last_event': return 'last event (' + m.events + ' events)';
      case 'end':
        return 'end: ' + m.status + (m.error ? ' ' + m.error : '') + (m.completed ? '' : ' (the client left)');
      default: return m.what;
    }
  }

  function laneOf(m) {
    switch (m.what) {
      case 'attempt': case 'failed': case 'answered': return 'attempt ' + m.n;
      case 'skipped': return 'skipped';
      case 'first_event': case 'keepalive': case 'last_event': return 'stream';
      default: return 'gateway';
    }
  }

  function renderDetail() {
    const d = view.detail;
    if (!d) return;
    const s = d.request;
    $('timeline-title').textContent =
      '#' + s.seq + ' · ' + s.request_id + ' · ' + s.door + ' · ' + (s.model || '–') +
      (d.in_flight ? ' · in flight' : '');
    const total = Math.max(d.in_flight ? d.elapsed_ms : (s.duration_ms || 0), 1);
    // Lanes: one row per part of the request's life, each mark a dot at its time.
    const lanes = new Map();
    for (const m of d.marks) {
      const name = laneOf(m);
      if (!lanes.has(name)) lanes.set(name, []);
      lanes.get(name).push(m);
    }
    const laneRows = [];
    for (const [name, marks] of lanes) {
      const row = el('div', null, 'lane');
      row.dataset.lane = name;
      const track = el('div', null, 'lane-track');
      for (const m of marks) {
        const dot = el('span', null, 'dot');
        dot.dataset.what = m.what;
        dot.style.left = Math.min(100, (m.t / total) * 100) + '%';
        dot.title = fmtMs(m.t) + ' ' + describe(m);
        track.append(dot);
      }
      row.append(el('span', name, 'lane-name'), track);
      laneRows.push(row);
    }
    $('lanes').replaceChildren(...laneRows);
    $('marks').replaceChildren(...d.marks.map((m) => {
      const li = el('li', null, 'mark');
      li.dataset.what = m.what;
      li.append(el('span', '+' + fmtMs(m.t), 't'), el('span', describe(m), 'what'));
      return li;
    }));
    $('timeline-note').textContent = d.omitted_marks
      ? d.omitted_marks + ' more marks (keepalives) were counted but not kept.'
      : '';
  }

  // In-flight durations tick between server updates.
  setInterval(() => {
    if (!$('app').hidden && view.inflight.length) renderInflight();
  }, 1000);

  start();
})();
