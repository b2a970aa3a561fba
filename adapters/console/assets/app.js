// The sluice console. Everything shown comes from the API of the same origin, asked with the token the operator
// typed: it is kept in this tab's sessionStorage only and sent as "Authorization: Bearer", never in a URL or a
// cookie. The API decides what the token may do; the page only hides controls the token's role cannot use.
// Keys and names are untrusted text (clients choose keys): they are only ever set as textContent, never as HTML.
'use strict';

(() => {
  const TOKEN = 'sluice.token';
  const POLL_MS = 1000; // /metrics and the top keys are asked this often
  const SAMPLES = 60; // points per chart: one minute at POLL_MS
  const OUTCOMES = ['allowed', 'denied', 'shadow_denied', 'degraded', 'error'];
  const SVG = 'http://www.w3.org/2000/svg';
  const root = new URL('../', document.baseURI); // the console is at /ui/; the API at the origin's root

  const $ = (sel) => document.querySelector(sel);
  let role = ''; // 'admin' or 'check' once signed in
  let timer = 0;
  let session = 0; // bumped at each sign-in and sign-out: a poll of an earlier session schedules no other
  const series = new Map(); // policy -> [{t, totals: {outcome: count}}], oldest first, SAMPLES + 1 at most
  let policyNames = [];
  let polls = 0;
  let topDrawn = ''; // what the top keys table shows (policy, by and the keys as JSON)

  // el builds an element; children are nodes or strings (set as text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) e.append(c);
    return e;
  }

  function say(text, isError) {
    const m = $('#message');
    m.textContent = text;
    m.className = isError ? 'error' : '';
  }

  // api calls the API with the session's token; it answers {status, data} (data: parsed JSON or text).
  async function api(method, path, body) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN);
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const resp = await fetch(new URL(path, root), {
      method, headers, credentials: 'omit', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const type = resp.headers.get('Content-Type') || '';
    const data = type.includes('json') ? await resp.json() : await resp.text();
    return { status: resp.status, data };
  }

  // problem is the sentence of an RFC 9457 problem answer.
  const problem = (r) => (r.data && (r.data.detail || r.data.title)) || 'HTTP ' + r.status;
  const policyPath = (name) => 'v1/policies/' + encodeURIComponent(name);
  // The key travels in the query string: the path form loses the keys "." and ".." to URL normalisation.
  const keyPath = (name, key) => policyPath(name) + '/keys?key=' + encodeURIComponent(key);

  function fmtMs(ms) {
    if (ms < 1000) return ms + ' ms';
    if (ms < 120000) return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + ' s';
    if (ms < 7200000) return Math.round(ms / 60000) + ' min';
    return Math.round(ms / 3600000) + ' h';
  }

  // Session.

  async function signIn(token) {
    if (token) sessionStorage.setItem(TOKEN, token);
    else sessionStorage.removeItem(TOKEN);
    // The role is what the API answers: listing policies needs admin (403 for a check token, 401 for no token).
    // Any other answer (a 503 while the store is down) leaves the admin controls shown: the API still refuses
    // what the token may not do.
    const r = await api('GET', 'v1/policies');
    if (r.status === 401) {
      signOut();
      say('The token was refused: ' + problem(r), true);
      return;
    }
    role = r.status === 403 ? 'check' : 'admin';
    document.body.classList.remove('signed-out');
    document.body.classList.toggle('role-admin', role === 'admin');
    $('#who').textContent = token ? 'signed in, role ' + role : 'no token (the server has none configured)';
    say('');
    if (r.status === 200) showPolicies(r.data.policies);
    else if (r.status !== 403) say('Could not list the policies: ' + problem(r), true);
    clearTimeout(timer);
    tick(++session);
  }

  // signOut forgets the token and everything it fetched, so the next token starts from what it may see.
  function signOut() {
    sessionStorage.removeItem(TOKEN);
    role = '';
    session++;
    clearTimeout(timer);
    document.body.className = 'signed-out';
    $('#token').value = '';
    series.clear();
    policyNames = [];
    for (const sel of ['#policies tbody', '#top tbody', '#top-policy', '#state', '#policy-names', '#overrides tbody']) $(sel).replaceChildren();
    overridesOf = '';
    $('#overrides-of').textContent = '';
    topDrawn = '';
    $('#charts').replaceChildren(el('p', { class: 'empty' }, 'No decisions yet.'));
    $('#top-note').textContent = '';
  }

  // Polling: the decision counters for the charts and, for an admin, the top keys.

  async function tick(s) {
    try {
      await pollMetrics();
      if (role === 'admin') await refreshTop();
    } catch (e) {
      say('Polling failed: ' + e.message, true);
    }
    if (s === session) timer = setTimeout(() => tick(s), POLL_MS);
  }

  // parseDecisions reads sluice_decisions_total from the Prometheus text exposition: policy -> outcome -> count.
  function parseDecisions(text) {
    const out = new Map();
    for (const line of text.split('\n')) {
      if (!line.startsWith('sluice_decisions_total{')) continue;
      const close = line.lastIndexOf('}');
      const labels = {};
      for (const m of line.slice(line.indexOf('{') + 1, close).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
        labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      }
      const value = Number(line.slice(close + 1).trim().split(' ')[0]);
      if (!out.has(labels.policy)) out.set(labels.policy, {});
      out.get(labels.policy)[labels.outcome] = value;
    }
    return out;
  }

  async function pollMetrics() {
    const r = await api('GET', 'metrics');
    if (r.status !== 200) throw new Error('/metrics answered ' + r.status);
    const now = Date.now();
    for (const [policy, totals] of parseDecisions(r.data)) {
      if (!series.has(policy)) series.set(policy, []);
      const s = series.get(policy);
      s.push({ t: now, totals });
      if (s.length > SAMPLES + 1) s.shift();
    }
    updateNames();
    drawCharts();
  }

  // drawCharts draws, per policy, one line per outcome seen: decisions per second between polls (a counter that
  // went down, a restarted server, counts as 0).
  function drawCharts() {
    const box = $('#charts');
    if (series.size === 0) return;
    const charts = [];
    for (const policy of [...series.keys()].sort()) {
      const s = series.get(policy);
      const last = s[s.length - 1].totals;
      const outcomes = OUTCOMES.filter((o) => last[o] > 0);
      const rates = {};
      let max = 1;
      for (const o of outcomes) {
        rates[o] = [];
        for (let i = 1; i < s.length; i++) {
          const dt = (s[i].t - s[i - 1].t) / 1000;
          const v = dt > 0 ? Math.max(0, ((s[i].totals[o] || 0) - (s[i - 1].totals[o] || 0)) / dt) : 0;
          rates[o].push(v);
          max = Math.max(max, v);
        }
      }
      const W = 300, H = 100;
      const svg = document.createElementNS(SVG, 'svg');
      svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
      svg.setAttribute('preserveAspectRatio', 'none');
      svg.setAttribute('role', 'img');
      svg.setAttribute('aria-label', 'decisions per second of policy ' + policy);
      const axis = document.createElementNS(SVG, 'line');
      for (const [k, v] of Object.entries({ x1: 0, y1: H - 1, x2: W, y2: H - 1, class: 'axis' })) axis.setAttribute(k, v);
      svg.append(axis);
      const legend = el('div', { class: 'legend' });
      for (const o of outcomes) {
        // The points span the width: spread out while the series is young, SAMPLES of them once a minute is in.
        const pts = rates[o].map((v, i) => {
          const x = (W * i) / Math.max(rates[o].length - 1, 1);
          const y = H - 2 - (v / max) * (H - 8);
          return x.toFixed(1) + ',' + y.toFixed(1);
        });
        const line = document.createElementNS(SVG, 'polyline');
        line.setAttribute('points', pts.join(' '));
        line.setAttribute('class', 's-' + o);
        line.setAttribute('data-outcome', o);
        svg.append(line);
        const now = rates[o].length ? rates[o][rates[o].length - 1] : 0;
        legend.append(el('span', { class: 's-' + o, 'data-outcome': o, 'data-total': String(last[o]) },
          `${o} ${last[o]} (${now.toFixed(1)}/s)`));
      }
      const title = el('h3', {}, policy + ' ', el('small', { class: 'note' }, `(top of the scale: ${max.toFixed(1)}/s)`));
      charts.push(el('div', { class: 'chart', 'data-policy': policy }, title, svg, legend));
    }
    box.replaceChildren(...charts);
    box.setAttribute('data-polls', String(++polls)); // says the charts are fresh (the browser test waits on it)
  }

  // Policies (admin).

  async function refreshPolicies() {
    const r = await api('GET', 'v1/policies');
    if (r.status === 200) showPolicies(r.data.policies);
    else say('Could not list the policies: ' + problem(r), true);
  }

  function showPolicies(policies) {
    const rows = policies.map((p) => {
      const actions = el('td', {});
      if (p.source === 'api' && !p.period) {
        const edit = el('button', { type: 'button', class: 'plain edit' }, 'Edit');
        edit.addEventListener('click', () => editPolicy(p));
        const del = el('button', { type: 'button', class: 'danger delete' }, 'Delete');
        del.addEventListener('click', () => deletePolicy(p.name));
        actions.append(edit, ' ', del);
      } else {
        actions.append(el('span', { class: 'note' }, p.source === 'config' ? 'read-only (config file)' : 'calendar period: edit over the API'));
      }
      const name = el('button', { type: 'button', class: 'plain', title: 'show its top keys and inspect its keys' }, p.name);
      name.addEventListener('click', () => selectPolicy(p.name));
      return el('tr', { 'data-policy': p.name },
        el('td', {}, name), el('td', {}, p.algorithm), el('td', { class: 'num' }, String(p.limit)),
        el('td', {}, p.period ? p.period + ' (' + (p.time_zone || 'UTC') + ')' : p.window),
        el('td', {}, p.failure_mode), el('td', {}, p.shadow ? 'yes' : 'no'),
        el('td', {}, el('span', { class: 'badge' }, p.source)), actions);
    });
    $('#policies tbody').replaceChildren(...rows);
    const top = $('#top-policy');
    const chosen = top.value;
    top.replaceChildren(...policies.map((p) => el('option', {}, p.name)));
    if (policies.some((p) => p.name === chosen)) top.value = chosen;
    policyNames = policies.map((p) => p.name);
    updateNames();
  }

  // updateNames offers the known policy names (listed, or seen in the metrics) to the inspector's policy field.
  function updateNames() {
    const names = [...new Set([...policyNames, ...series.keys()])].sort();
    const list = $('#policy-names');
    if (list.children.length !== names.length) list.replaceChildren(...names.map((n) => el('option', { value: n })));
  }

  function selectPolicy(name) {
    $('#top-policy').value = name;
    $('#inspect-policy').value = name;
    overridesOf = name;
    refreshTop();
    refreshOverrides();
  }

  // Overrides of the selected policy (admin): the first page of 100; a config-file policy's are read-only.

  let overridesOf = '';

  async function refreshOverrides() {
    const name = overridesOf;
    $('#overrides-of').textContent = name ? '(' + name + ')' : '';
    if (!name) return;
    const r = await api('GET', policyPath(name) + '/overrides?limit=100');
    if (r.status !== 200) {
      $('#overrides tbody').replaceChildren();
      say('Could not list the overrides: ' + problem(r), true);
      return;
    }
    const readOnly = $('#policies tr[data-policy="' + CSS.escape(name) + '"] .badge')?.textContent === 'config';
    $('#override-form').hidden = readOnly;
    const rows = r.data.overrides.map((o) => {
      const actions = el('td', {});
      if (readOnly) {
        actions.append(el('span', { class: 'note' }, 'read-only (config file)'));
      } else {
        const del = el('button', { type: 'button', class: 'danger delete' }, 'Delete');
        del.addEventListener('click', () => deleteOverride(name, o.match));
        actions.append(del);
      }
      return el('tr', { 'data-match': o.match },
        el('td', {}, o.match), el('td', { class: 'num' }, String(o.limit)), el('td', {}, o.window || "the policy's"), actions);
    });
    if (r.data.next) rows.push(el('tr', {}, el('td', { colspan: '4', class: 'note' }, 'More follow: list them over the API.')));
    $('#overrides tbody').replaceChildren(...rows);
  }

  function overridePath(policy, match) { return policyPath(policy) + '/overrides/' + encodeURIComponent(match); }

  async function saveOverride(ev) {
    ev.preventDefault();
    if (!overridesOf) {
      say('Pick a policy first (its name in the policies table).', true);
      return;
    }
    const f = ev.target.elements;
    const spec = { limit: Number(f.limit.value) };
    if (f.window.value.trim()) spec.window = f.window.value.trim();
    const r = await api('PUT', overridePath(overridesOf, f.match.value), spec);
    if (r.status === 200 || r.status === 201) say(`Override ${r.data.match} ${r.status === 201 ? 'created' : 'replaced'}.`);
    else say('Override not saved: ' + problem(r), true);
    await refreshOverrides();
  }

  async function deleteOverride(policy, match) {
    if (!window.confirm(`Delete the override ${match}? Its keys get the next matching override's limit, or the policy's.`)) return;
    const r = await api('DELETE', overridePath(policy, match));
    if (r.status === 204) say(`Override ${match} deleted.`);
    else say('Override not deleted: ' + problem(r), true);
    await refreshOverrides();
  }

  function editPolicy(p) {
    const f = $('#policy-form');
    f.elements.name.value = p.name;
    f.elements.limit.value = p.limit;
    f.elements.window.value = p.window;
    f.elements.algorithm.value = p.algorithm;
    f.elements.failure_mode.value = p.failure_mode;
    f.elements.shadow.checked = p.shadow;
    f.elements.limit.focus();
  }

  async function savePolicy(ev) {
    ev.preventDefault();
    const f = ev.target.elements;
    const spec = {
      limit: Number(f.limit.value), window: f.window.value.trim(), algorithm: f.algorithm.value,
      failure_mode: f.failure_mode.value, shadow: f.shadow.checked,
    };
    const r = await api('PUT', policyPath(f.name.value.trim()), spec);
    if (r.status === 200 || r.status === 201) {
      say(`Policy ${r.data.name} ${r.status === 201 ? 'created' : 'replaced'}.`);
      await refreshPolicies();
    } else {
      say('Not saved: ' + problem(r), true);
    }
  }

  async function deletePolicy(name) {
    if (!window.confirm(`Delete policy ${name}? Its keys' state is dropped with it.`)) return;
    const r = await api('DELETE', policyPath(name));
    if (r.status === 204) say(`Policy ${name} deleted.`);
    else say('Not deleted: ' + problem(r), true);
    await refreshPolicies();
  }

  // Top keys (admin).

  async function refreshTop() {
    const policy = $('#top-policy').value;
    if (!policy) return;
    const by = $('#top-by').value;
    const r = await api('GET', policyPath(policy) + '/top?by=' + by + '&limit=10');
    if (r.status !== 200) {
      $('#top-note').textContent = 'Could not read the top keys: ' + problem(r);
      $('#top tbody').replaceChildren();
      topDrawn = '';
      return;
    }
    $('#top-note').textContent = r.data.keys.length
      ? `Keys ${by} most on this replica over the last ${fmtMs(r.data.interval_ms)}; counts overestimate by at most their error.`
      : `No key ${by} on this replica recently.`;
    // The table is redrawn only when it changed, so a button is not swapped from under the pointer every poll.
    const drawn = policy + ' ' + by + ' ' + JSON.stringify(r.data.keys);
    if (drawn === topDrawn) return;
    topDrawn = drawn;
    const rows = r.data.keys.map((k) => {
      const inspect = el('button', { type: 'button', class: 'plain inspect' }, 'Inspect');
      inspect.addEventListener('click', () => {
        $('#inspect-policy').value = policy;
        $('#inspect-key').value = k.key;
        peek();
      });
      return el('tr', {}, el('td', { class: 'key' }, k.key), el('td', { class: 'num' }, String(k.count)),
        el('td', { class: 'num' }, String(k.error)), el('td', {}, inspect));
    });
    $('#top tbody').replaceChildren(...rows);
  }

  // Key inspector: a peek consumes nothing; a reset (admin) gives the key a full quota.

  async function peek() {
    const policy = $('#inspect-policy').value.trim();
    const key = $('#inspect-key').value;
    if (!policy || !key) return;
    const r = await api('GET', keyPath(policy, key));
    const dl = $('#state');
    if (r.status !== 200) {
      dl.replaceChildren();
      say('Peek failed: ' + problem(r), true);
      return;
    }
    const d = r.data;
    const row = (field, label, value, cls) => [el('dt', {}, label), el('dd', { 'data-field': field, class: cls || '' }, value)];
    dl.replaceChildren(
      ...row('key', 'Key', `${d.key} (policy ${d.policy})`),
      ...row('verdict', 'Next check', d.allowed ? 'would be allowed' : 'would be denied', d.allowed ? 'verdict-allowed' : 'verdict-denied'),
      ...row('remaining', 'Remaining after it', `${d.remaining} of ${d.limit}`),
      ...(d.override ? row('override', 'Override', d.override) : []),
      ...row('reset', 'Then whole again in', fmtMs(d.reset_after_ms)),
      ...(d.allowed ? [] : row('retry', 'Retry after', fmtMs(d.retry_after_ms))),
      ...(d.degraded ? row('degraded', 'Degraded', 'the store failed; this is the failure_mode answer') : []),
    );
    say('');
  }

  async function reset() {
    const policy = $('#inspect-policy').value.trim();
    const key = $('#inspect-key').value;
    if (!policy || !key) return;
    const r = await api('DELETE', keyPath(policy, key));
    if (r.status !== 204) {
      say('Reset failed: ' + problem(r), true);
      return;
    }
    await peek();
    say(`Key reset: its next check sees a full quota.`);
  }

  // A request that failed outright (the server unreachable) is shown; it is still logged as uncaught.
  window.addEventListener('unhandledrejection', (ev) => say('Request failed: ' + (ev.reason && ev.reason.message), true));

  document.addEventListener('DOMContentLoaded', () => {
    $('#interval').textContent = String(POLL_MS / 1000);
    $('#login').addEventListener('submit', (ev) => {
      ev.preventDefault();
      signIn($('#token').value.trim());
    });
    $('#logout').addEventListener('click', signOut);
    $('#policy-form').addEventListener('submit', savePolicy);
    $('#override-form').addEventListener('submit', saveOverride);
    $('#top-policy').addEventListener('change', refreshTop);
    $('#top-by').addEventListener('change', refreshTop);
    $('#inspect').addEventListener('submit', (ev) => {
      ev.preventDefault();
      peek();
    });
    $('#reset').addEventListener('click', reset);
    const token = sessionStorage.getItem(TOKEN);
    if (token) signIn(token);
  });
})();
