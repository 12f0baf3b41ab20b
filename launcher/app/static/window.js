(() => {
  const DEBOUNCE = DEBOUNCE_MS;
  const $ = (s) => document.querySelector(s);
  const query = () => $('#q textarea, #q input');
  const hits = () => Array.from(document.querySelectorAll('#results .hit'));
  const current = () => Math.max(0, hits().findIndex((h) => h.classList.contains('sel')));
  function select(i) {
    const hs = hits();
    if (!hs.length) return;
    i = Math.max(0, Math.min(i, hs.length - 1));
    hs.forEach((h, j) => h.classList.toggle('sel', j === i));
    hs[i].scrollIntoView({block: 'nearest'});
  }
  function toast(text, bad) {
    let t = $('#toast');
    if (!t) { t = document.createElement('div'); t.id = 'toast'; t.setAttribute('role', 'status'); document.body.appendChild(t); }
    t.textContent = text;
    t.className = bad ? 'show bad' : 'show';
    clearTimeout(t._h); t._h = setTimeout(() => { t.className = ''; }, 2600);
  }
  async function copyText(text) {
    try { await navigator.clipboard.writeText(text); return; } catch (e) {}
    const ta = document.createElement('textarea');
    ta.value = text; document.body.appendChild(ta); ta.select();
    document.execCommand('copy'); ta.remove(); query() && query().focus();
  }
  async function act(action, hit) {
    hit = hit || hits()[current()];
    if (!hit) return;
    let r, data = {};
    try {
      r = await fetch('/api/open', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                    body: JSON.stringify({file_id: hit.dataset.file, action})});
      data = await r.json();
    } catch (e) { toast('the launcher is not answering', true); return; }
    if (!r.ok) { toast(data.error || ('error ' + r.status), true); return; }
    if (action === 'copy') { await copyText(data.path); toast('Copied ' + data.path); }
    else toast((action === 'open' ? 'Opening ' : 'Showing in folder: ') + data.name);
  }
  window.launcherAct = act;
  let timer = null;
  document.addEventListener('input', (e) => {
    if (!e.target.closest || !e.target.closest('#q')) return;
    clearTimeout(timer);
    timer = setTimeout(() => { const go = $('#go'); go && go.click(); }, DEBOUNCE);
  }, true);
  const inFilters = (el) => el && el.closest && el.closest('#filters');
  document.addEventListener('keydown', (e) => {
    const k = e.key;
    if ((k === 'ArrowDown' || k === 'ArrowUp') && !inFilters(e.target)) {
      if (!hits().length) return;
      e.preventDefault();
      select(current() + (k === 'ArrowDown' ? 1 : -1));
    } else if (k === 'Enter' && !e.isComposing && !inFilters(e.target)) {
      if (!hits().length) return;
      e.preventDefault(); e.stopPropagation();
      act(e.ctrlKey || e.metaKey ? 'reveal' : e.altKey ? 'copy' : 'open');
    } else if ((e.ctrlKey || e.metaKey) && e.shiftKey && (k === 'C' || k === 'c')) {
      e.preventDefault(); act('copy');
    } else if (e.altKey && !e.ctrlKey && (k === 'r' || k === 'R' || e.code === 'KeyR')) {
      e.preventDefault();
      const c = $('#f-rerank input'); c && c.click();
    } else if ((e.ctrlKey || e.metaKey) && (k === 'm' || k === 'M')) {
      e.preventDefault();
      const b = hits()[current()] && hits()[current()].querySelector('[data-act="like"]');
      b && b.click();
    } else if (k === 'Escape') {
      const q = query();
      if (q && q.value) {
        e.preventDefault();
        q.value = ''; q.dispatchEvent(new Event('input', {bubbles: true}));
      } else {
        window.close();
      }
    } else if (k === '/' && document.activeElement && !['TEXTAREA', 'INPUT'].includes(document.activeElement.tagName)) {
      e.preventDefault(); query() && query().focus();
    }
  }, true);
  document.addEventListener('click', (e) => {
    const w = e.target.closest('[data-watch]');
    if (w) {
      fetch('/api/watch', {method: 'POST', headers: {'Content-Type': 'application/json'},
                           body: JSON.stringify({paused: w.dataset.watch === 'pause'})});
      return;
    }
    const b = e.target.closest('#results [data-act]');
    if (b) { e.preventDefault(); act(b.dataset.act, b.closest('.hit')); return; }
    const h = e.target.closest('#results .hit');
    if (h) select(hits().indexOf(h));
  });
  document.addEventListener('dblclick', (e) => {
    const h = e.target.closest('#results .hit');
    if (h && !e.target.closest('button')) act('open', h);
  });
  function setImage(file) {
    const put = () => {
      const input = $('#img input[type=file]');
      if (!input) return false;
      const dt = new DataTransfer(); dt.items.add(file);
      input.files = dt.files;
      input.dispatchEvent(new Event('change', {bubbles: true}));
      return true;
    };
    if (put()) return;
    const clear = document.querySelector('#img button[aria-label="Clear"], #img button[title="Clear"]');
    clear && clear.click();
    setTimeout(put, 150);
  }
  const imageOf = (list) => Array.from(list || []).find((f) => f.type && f.type.startsWith('image/'));
  document.addEventListener('paste', (e) => {
    const f = imageOf(e.clipboardData && e.clipboardData.files);
    if (!f) return;
    e.preventDefault(); setImage(f);
  });
  document.addEventListener('dragover', (e) => { if (!e.target.closest('#img')) e.preventDefault(); });
  document.addEventListener('drop', (e) => {
    if (e.target.closest('#img')) return;
    const f = imageOf(e.dataTransfer && e.dataTransfer.files);
    if (!f) return;
    e.preventDefault(); setImage(f);
  });
  function focusQuery() {
    window.focus();
    const q = query();
    if (q) { q.focus(); q.select(); }
    document.body.classList.remove('flash'); void document.body.offsetWidth; document.body.classList.add('flash');
  }
  function listen() {
    const es = new EventSource('/api/events');
    es.onopen = () => { document.documentElement.dataset.live = '1'; };
    es.addEventListener('focus', focusQuery);
    es.onerror = () => {
      if (es.readyState === 2) {
        document.body.classList.add('gone');
        toast('The launcher stopped. Start it again and press the hotkey.', true);
      }
    };
  }
  listen();  // the process counts this window as open while the stream lasts
  window.addEventListener('load', () => {
    const wait = setInterval(() => { const q = query(); if (q) { clearInterval(wait); q.focus(); } }, 50);
  });
})();
