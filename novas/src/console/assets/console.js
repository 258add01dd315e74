// NOVAS console: fills the server-rendered page shells from the JSON API.
// Plain JS, no dependencies, no inline script (the CSP forbids it). Text
// from the API only ever goes into textContent, never into HTML.
'use strict';

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const page = document.body ? document.body.dataset.page : '';

  function csrfToken() {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : '';
  }

  // fetch + JSON (text with opts.raw); a 401 means the session ended:
  // back to the login page.
  async function api(path, opts) {
    opts = opts || {};
    const headers = { Accept: 'application/json' };
    if (opts.method && opts.method !== 'GET') headers['X-CSRF-Token'] = csrfToken();
    const r = await fetch(path, { method: opts.method || 'GET', headers, credentials: 'same-origin', cache: 'no-store' });
    if (r.status === 401) {
      window.location.assign('/login');
      throw new Error('logged out');
    }
    const text = await r.text();
    let body = text;
    if (!opts.raw || !r.ok) {
      try { body = JSON.parse(text); } catch (_) { /* not JSON: keep text */ }
    }
    if (!r.ok) throw new Error((body && body.error) || (r.status + ' ' + r.statusText));
    return body;
  }

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    td.textContent = text === null || text === undefined || text === '' ? '-' : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function bytes(n) {
    if (typeof n !== 'number') return '-';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
  }

  function when(iso) {
    if (!iso) return '-';
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return iso;
    return new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  function fromMs(ms) { return when(new Date(ms).toISOString()); }

  function duration(ms) {
    if (typeof ms !== 'number') return '-';
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  }

  function tagsText(tags) {
    return Object.keys(tags || {}).sort().map((k) => k + '=' + tags[k]).join(';');
  }

  function replaceRows(table, rows) {
    const tbody = table.tBodies[0];
    tbody.replaceChildren(...rows);
  }

  // A repeating refresh that shows its state and never overlaps itself.
  function poll(fn, everyMs) {
    let running = false;
    const status = $('#live-status');
    async function tick() {
      if (running) return;
      running = true;
      try {
        await fn();
        if (status) status.textContent = 'live · updated ' + new Date().toLocaleTimeString();
      } catch (e) {
        if (status) status.textContent = 'update failed: ' + e.message;
      } finally {
        running = false;
      }
    }
    tick();
    setInterval(tick, everyMs);
    return tick;
  }

  // ---- Reverse Tunnels ----------------------------------------------------

  function eventSummary(ev) {
    const e = ev.event || {};
    switch (e.type) {
      case 'agent_connect': return 'from ' + e.remote_addr + ' [' + e.tags + '] version ' + e.agent_version;
      case 'agent_disconnect': return e.reason + ' after ' + duration(e.connected_ms);
      case 'session_open': return 'from ' + e.client_addr + ' as ' + (e.account || '-') + ' via ' + (e.agent || '-');
      case 'session_close': return e.outcome + ' after ' + duration(e.duration_ms) + ', ' + bytes(e.bytes_up) + ' up, ' + bytes(e.bytes_down) + ' down';
      case 'statement': return e.text + (e.error ? '  [error: ' + e.error + ']' : '');
      case 'command': return e.channel + ': ' + e.text + (e.error ? '  [error: ' + e.error + ']' : '');
      case 'login_failure':
      case 'access_denied': return 'from ' + e.client_addr + ': ' + e.reason;
      case 'admin_change': return e.action + ' ' + e.object + ': ' + e.detail;
      case 'kube_request': return e.text + ' -> ' + e.status + ' as ' + e.kube_user + (e.error ? '  [' + e.error + ']' : '');
      default: return JSON.stringify(e);
    }
  }

  function tunnelsPage() {
    const filter = $('#tag-filter');
    const params = new URLSearchParams(window.location.search);
    if (params.get('tag')) filter.value = params.get('tag');
    async function refresh() {
      const tag = filter.value.trim();
      const agents = await api('/api/tunnels' + (tag ? '?tag=' + encodeURIComponent(tag) : ''));
      const now = Date.now();
      // Replicas of one group (same tags: an HA Deployment's pods) sit
      // together, and each row says how many the group has.
      const groupSize = {};
      for (const a of agents) groupSize[a.group] = (groupSize[a.group] || 0) + 1;
      agents.sort((x, y) => (x.group < y.group ? -1 : x.group > y.group ? 1 : x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
      const rows = agents.map((a) => {
        const tr = document.createElement('tr');
        tr.dataset.agent = a.name;
        cell(tr, a.name, 'name');
        cell(tr, tagsText(a.tags), 'tags');
        cell(tr, a.remote_addr);
        cell(tr, a.node);
        cell(tr, a.agent_version);
        cell(tr, when(a.connected_since));
        const hbAge = now - Date.parse(a.last_heartbeat);
        cell(tr, when(a.last_heartbeat) + (Number.isNaN(hbAge) ? '' : ' (' + Math.max(0, Math.round(hbAge / 1000)) + 's ago)'));
        cell(tr, a.rtt_ms ? a.rtt_ms.toFixed(2) + ' ms' : '-');
        // The server drops an agent after three silent heartbeat intervals;
        // a heartbeat older than 30 s already means trouble.
        const stale = !Number.isNaN(hbAge) && hbAge > 30000;
        cell(tr, stale ? 'stale' : 'connected', stale ? 'status stale' : 'status ok');
        cell(tr, a.active_streams + ' (' + a.streams_total + ' total)');
        cell(tr, bytes(a.bytes_in));
        cell(tr, bytes(a.bytes_out));
        const n = groupSize[a.group] || 1;
        cell(tr, n > 1 ? n + ' replicas' : 'single', 'replicas');
        return tr;
      });
      replaceRows($('#tunnels'), rows);
      $('#tunnels-empty').hidden = rows.length > 0;
      const history = await api('/api/tunnels/history');
      replaceRows($('#history'), history.slice(0, 100).map((ev) => {
        const tr = document.createElement('tr');
        const e = ev.event || {};
        cell(tr, fromMs(ev.time_ms));
        cell(tr, ev.node);
        cell(tr, e.agent);
        cell(tr, e.type === 'agent_connect' ? 'connected' : 'disconnected');
        cell(tr, eventSummary(ev));
        return tr;
      }));
    }
    const now = poll(refresh, 1500);
    filter.addEventListener('input', () => {
      const u = new URL(window.location.href);
      if (filter.value.trim()) u.searchParams.set('tag', filter.value.trim()); else u.searchParams.delete('tag');
      window.history.replaceState(null, '', u);
      now();
    });
  }

  // ---- Sessions -----------------------------------------------------------

  function sessionsPage() {
    const msg = $('#session-message');
    async function terminate(id, button) {
      button.disabled = true;
      try {
        const v = await api('/api/sessions/' + encodeURIComponent(id) + '/terminate', { method: 'POST' });
        msg.textContent = 'Terminated session ' + v.id + ' (' + v.kind + ', ' + (v.user || '-') + ').';
        msg.className = 'ok';
      } catch (e) {
        msg.textContent = 'Terminate failed: ' + e.message;
        msg.className = 'error';
        button.disabled = false;
      }
      refresh();
    }
    async function refresh() {
      const s = await api('/api/sessions');
      replaceRows($('#active'), s.active.map((x) => {
        const tr = document.createElement('tr');
        tr.dataset.session = x.id;
        tr.dataset.kind = x.kind;
        cell(tr, when(x.started));
        cell(tr, x.kind);
        cell(tr, x.user);
        cell(tr, x.resource);
        cell(tr, x.agent);
        cell(tr, x.client_addr);
        cell(tr, x.node);
        cell(tr, duration(x.duration_ms));
        cell(tr, x.state);
        cell(tr, bytes(x.bytes_up));
        cell(tr, bytes(x.bytes_down));
        const td = cell(tr, '');
        td.textContent = '';
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'terminate';
        b.textContent = 'Terminate';
        b.disabled = x.state === 'terminating';
        b.addEventListener('click', () => terminate(x.id, b));
        td.appendChild(b);
        return tr;
      }));
      $('#active-empty').hidden = s.active.length > 0;
      replaceRows($('#past'), s.past.map((x) => {
        const tr = document.createElement('tr');
        tr.dataset.session = x.id;
        cell(tr, when(x.ended));
        cell(tr, x.kind);
        cell(tr, x.user);
        cell(tr, x.resource);
        cell(tr, x.agent);
        cell(tr, x.client_addr);
        cell(tr, x.node);
        cell(tr, duration(x.duration_ms));
        cell(tr, bytes(x.bytes_up));
        cell(tr, bytes(x.bytes_down));
        cell(tr, x.outcome, 'outcome');
        return tr;
      }));
    }
    poll(refresh, 2000);
  }

  // ---- Audit --------------------------------------------------------------

  function auditPage() {
    const form = $('#audit-search');
    const err = $('#audit-error');
    async function search() {
      const qs = new URLSearchParams();
      for (const el of form.elements) {
        if (el.name && el.value.trim()) qs.set(el.name, el.value.trim());
      }
      try {
        const events = await api('/api/audit?' + qs.toString());
        err.textContent = '';
        replaceRows($('#audit'), events.map((ev) => {
          const tr = document.createElement('tr');
          const e = ev.event || {};
          tr.dataset.type = e.type;
          cell(tr, fromMs(ev.time_ms));
          cell(tr, ev.node);
          cell(tr, ev.user);
          cell(tr, ev.resource);
          cell(tr, e.type === 'statement' ? 'statement/' + e.kind : e.type);
          cell(tr, e.decision);
          cell(tr, e.policy);
          cell(tr, eventSummary(ev), 'text');
          return tr;
        }));
        form.dataset.results = String(events.length);
      } catch (e) {
        err.textContent = e.message;
      }
    }
    form.addEventListener('submit', (ev) => { ev.preventDefault(); search(); });
    search();
  }

  // ---- Recordings: a small asciicast v2 player ----------------------------

  // A minimal terminal: printable text, CR, LF, BS, TAB, cursor movement
  // (CSI A B C D H f G d), erase in line/display (CSI K, J). Colours and
  // other attributes (SGR), scroll regions, alternate screens and OSC
  // titles are parsed and ignored.
  function Terminal(width, height) {
    this.width = width || 80;
    this.height = height || 24;
    this.lines = [[]];
    this.row = 0;
    this.col = 0;
    this.top = 0; // first line of the visible screen within this.lines
    this.pending = '';
  }
  Terminal.prototype.line = function (r) {
    while (this.lines.length <= r) this.lines.push([]);
    return this.lines[r];
  };
  Terminal.prototype.newline = function () {
    this.row++;
    this.line(this.row);
    if (this.row - this.top >= this.height) this.top = this.row - this.height + 1;
    if (this.lines.length > 5000) {
      const cut = this.lines.length - 5000;
      this.lines.splice(0, cut);
      this.row -= cut;
      this.top = Math.max(0, this.top - cut);
    }
  };
  Terminal.prototype.put = function (ch) {
    if (this.col >= this.width) { this.col = 0; this.newline(); }
    const l = this.line(this.row);
    while (l.length < this.col) l.push(' ');
    l[this.col] = ch;
    this.col++;
  };
  Terminal.prototype.csi = function (params, final) {
    const n = params.split(';').map((x) => parseInt(x.replace(/^\?/, ''), 10));
    const a = Number.isNaN(n[0]) ? 1 : n[0] || 1;
    const l = this.line(this.row);
    switch (final) {
      case 'A': this.row = Math.max(this.top, this.row - a); break;
      case 'B': this.row += a; this.line(this.row); break;
      case 'C': this.col = Math.min(this.width - 1, this.col + a); break;
      case 'D': this.col = Math.max(0, this.col - a); break;
      case 'G': this.col = Math.max(0, a - 1); break;
      case 'd': this.row = this.top + Math.max(0, a - 1); this.line(this.row); break;
      case 'H': case 'f': {
        const r = Number.isNaN(n[0]) ? 1 : n[0] || 1;
        const c = Number.isNaN(n[1]) ? 1 : n[1] || 1;
        this.row = this.top + r - 1; this.col = c - 1; this.line(this.row); break;
      }
      case 'K': {
        const mode = Number.isNaN(n[0]) ? 0 : n[0];
        if (mode === 0) l.length = Math.min(l.length, this.col);
        else if (mode === 1) for (let i = 0; i <= this.col && i < l.length; i++) l[i] = ' ';
        else l.length = 0;
        break;
      }
      case 'J': {
        const mode = Number.isNaN(n[0]) ? 0 : n[0];
        if (mode === 2 || mode === 3) {
          // Clear screen: start a fresh screen below the scrollback.
          this.top = this.lines.length;
          this.row = this.top; this.col = 0; this.line(this.row);
        } else if (mode === 0) {
          l.length = Math.min(l.length, this.col);
          this.lines.length = this.row + 1;
        }
        break;
      }
      default: break; // m (colours), h/l (modes), r (scroll region), …
    }
  };
  Terminal.prototype.write = function (data) {
    const s = this.pending + data;
    this.pending = '';
    let i = 0;
    while (i < s.length) {
      const ch = s[i];
      if (ch === '\x1b') {
        if (i + 1 >= s.length) { this.pending = s.slice(i); return; }
        const next = s[i + 1];
        if (next === '[') {
          let j = i + 2;
          while (j < s.length && !/[\x40-\x7e]/.test(s[j])) j++;
          if (j >= s.length) { this.pending = s.slice(i); return; }
          this.csi(s.slice(i + 2, j), s[j]);
          i = j + 1;
        } else if (next === ']') {
          // OSC: up to BEL or ESC \.
          let j = i + 2;
          while (j < s.length && s[j] !== '\x07' && !(s[j] === '\x1b' && s[j + 1] === '\\')) j++;
          if (j >= s.length) { this.pending = s.slice(i); return; }
          i = s[j] === '\x07' ? j + 1 : j + 2;
        } else {
          i += 2; // ESC ( B, ESC =, ESC > …
        }
        continue;
      }
      if (ch === '\r') this.col = 0;
      else if (ch === '\n') this.newline();
      else if (ch === '\b') this.col = Math.max(0, this.col - 1);
      else if (ch === '\t') this.col = Math.min(this.width - 1, (Math.floor(this.col / 8) + 1) * 8);
      else if (ch === '\x07') { /* bell */ }
      else if (ch >= ' ') this.put(ch);
      i++;
    }
  };
  Terminal.prototype.text = function () {
    return this.lines.map((l) => l.join('').replace(/\s+$/, '')).join('\n').replace(/\n+$/, '');
  };

  function parseCast(text) {
    const lines = text.split('\n').filter((l) => l.trim());
    if (!lines.length) throw new Error('empty recording');
    const header = JSON.parse(lines[0]);
    if (header.version !== 2) throw new Error('not an asciicast v2 recording');
    const events = [];
    for (const l of lines.slice(1)) {
      try {
        const e = JSON.parse(l);
        if (Array.isArray(e) && e[1] === 'o' && typeof e[2] === 'string') events.push([Number(e[0]) || 0, e[2]]);
      } catch (_) { /* a cut last line: skip */ }
    }
    return { header, events };
  }

  function recordingsPage() {
    const player = $('#player');
    const screen = $('#screen');
    const state = $('#player-state');
    const speedSel = $('#player-speed');
    let timer = null;
    let current = null;

    function play(cast) {
      if (timer) clearTimeout(timer);
      const term = new Terminal(cast.header.width, cast.header.height);
      screen.textContent = '';
      screen.style.setProperty('--cols', String(term.width));
      player.dataset.state = 'playing';
      state.textContent = 'playing';
      let i = 0;
      let last = 0;
      const step = () => {
        const speed = Number(speedSel.value) || 1;
        // Write every event that is due, then wait for the next one; idle
        // gaps longer than 2 s are shortened to 2 s.
        while (i < cast.events.length) {
          term.write(cast.events[i][1]);
          last = cast.events[i][0];
          i++;
          if (i < cast.events.length && cast.events[i][0] - last > 0.01) break;
        }
        screen.textContent = term.text();
        if (i >= cast.events.length) {
          player.dataset.state = 'done';
          state.textContent = 'finished';
          timer = null;
          return;
        }
        const gap = Math.min(2, cast.events[i][0] - last) / speed;
        timer = setTimeout(step, gap * 1000);
      };
      step();
    }

    async function open(r) {
      current = parseCast(await api('/api/recordings/' + encodeURIComponent(r.id), { raw: true }));
      player.hidden = false;
      player.dataset.recording = r.id;
      $('#player-title').textContent = (r.title || r.id) + (r.command ? ': ' + r.command : '');
      play(current);
    }

    $('#player-restart').addEventListener('click', () => { if (current) play(current); });

    async function refresh() {
      const list = await api('/api/recordings');
      replaceRows($('#recordings'), list.map((r) => {
        const tr = document.createElement('tr');
        tr.dataset.recording = r.id;
        cell(tr, fromMs(r.timestamp * 1000));
        cell(tr, r.title);
        cell(tr, r.command);
        cell(tr, r.width + '×' + r.height);
        cell(tr, bytes(r.bytes));
        const td = cell(tr, '');
        td.textContent = '';
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'play';
        b.textContent = 'Play';
        b.addEventListener('click', () => open(r).catch((e) => { state.textContent = 'cannot play: ' + e.message; }));
        td.appendChild(b);
        return tr;
      }));
      $('#recordings-empty').hidden = list.length > 0;
    }
    refresh().catch((e) => { state.textContent = e.message; });
  }

  const pages = { tunnels: tunnelsPage, sessions: sessionsPage, audit: auditPage, recordings: recordingsPage };
  if (pages[page]) pages[page]();
})();
