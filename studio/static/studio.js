// Shared by the studio's pages: JSON calls with a busy state, errors, the audio player,
// and a piano-roll drawing in a canvas. Plain browser JavaScript, no build step.
'use strict';

const Studio = (() => {
  const $ = (id) => document.getElementById(id);
  let busyDepth = 0;
  let disabledByBusy = [];

  // While a request runs, every enabled control is disabled and the status line spins.
  function setBusy(on, text) {
    if (on) {
      busyDepth += 1;
      if (busyDepth === 1) {
        disabledByBusy = Array.from(
            document.querySelectorAll('button, input, select, textarea'))
            .filter((el) => !el.disabled);
        disabledByBusy.forEach((el) => { el.disabled = true; });
        document.body.classList.add('busy');
        document.body.setAttribute('aria-busy', 'true');
      }
      const status = $('status');
      status.replaceChildren();
      const spinner = document.createElement('span');
      spinner.className = 'spinner';
      status.append(spinner, text || 'Working…');
    } else {
      busyDepth = Math.max(0, busyDepth - 1);
      if (busyDepth === 0) {
        disabledByBusy.forEach((el) => { el.disabled = false; });
        disabledByBusy = [];
        document.body.classList.remove('busy');
        document.body.removeAttribute('aria-busy');
        $('status').replaceChildren();
      }
    }
  }

  function showError(message) {
    const box = $('error');
    if (!box) return;
    box.hidden = !message;
    box.textContent = message || '';
  }

  // fetch + JSON + errors as {"error": message}; throws Error(message) after showing it.
  async function api(method, url, body, busyText) {
    setBusy(true, busyText);
    try {
      const options = {method, credentials: 'same-origin', headers: {}};
      if (body instanceof FormData) {
        options.body = body;
      } else if (body !== undefined) {
        options.headers['Content-Type'] = 'application/json';
        options.body = JSON.stringify(body);
      }
      let response;
      try {
        response = await fetch(url, options);
      } catch (e) {
        throw new Error('cannot reach the studio server (is it still running?)');
      }
      let data = null;
      try { data = await response.json(); } catch (e) { data = null; }
      if (!response.ok) {
        throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
      }
      showError(null);
      return data;
    } catch (e) {
      showError(e.message);
      throw e;
    } finally {
      setBusy(false);
    }
  }

  // The page's one <audio id="player">: plays a WAV served by the studio.
  function play(url, label) {
    const player = $('player');
    player.src = url;
    const now = $('now-playing');
    if (now) now.textContent = label ? `Playing: ${label}` : '';
    const started = player.play();
    if (started && started.catch) {
      started.catch((e) => {
        if (e.name !== 'AbortError') showError(`cannot play the audio: ${e.message}`);
      });
    }
  }

  const VOICE_COLORS = ['#2f6fde', '#e58a00', '#2a9d5b', '#b0417a'];

  // Notes {pitch, start, end, voice, drum} (16th steps) as a piano roll.
  function drawRoll(canvas, notes, numSteps) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = '#fbfcfe';
    ctx.fillRect(0, 0, width, height);
    const pitches = notes.map((n) => n.pitch);
    const low = pitches.length ? Math.min(...pitches) - 2 : 58;
    const high = pitches.length ? Math.max(...pitches) + 2 : 74;
    const rows = high - low + 1;
    const rowH = height / rows;
    const steps = Math.max(numSteps, 1, ...notes.map((n) => n.end));
    const stepW = width / steps;
    for (let p = low; p <= high; p++) {  // black keys shaded
      if ([1, 3, 6, 8, 10].includes(((p % 12) + 12) % 12)) {
        ctx.fillStyle = '#eef1f6';
        ctx.fillRect(0, (high - p) * rowH, width, rowH);
      }
    }
    for (let s = 0; s <= steps; s += 4) {  // beats, bars darker
      ctx.fillStyle = s % 16 === 0 ? '#b9c1cf' : '#e1e5ec';
      ctx.fillRect(Math.round(s * stepW), 0, 1, height);
    }
    notes.forEach((n) => {
      ctx.fillStyle = VOICE_COLORS[(n.voice || 0) % VOICE_COLORS.length];
      const x = n.start * stepW;
      const w = Math.max((n.end - n.start) * stepW - 1, 2);
      ctx.fillRect(x + 0.5, (high - n.pitch) * rowH + 0.5, w, Math.max(rowH - 1, 2));
    });
    if (!notes.length) {
      ctx.fillStyle = '#8a94a6';
      ctx.font = '13px system-ui, sans-serif';
      ctx.fillText('(silence)', 8, height / 2);
    }
  }

  const NOTE_NAMES = ['C', 'C#', 'D', 'D#', 'E', 'F', 'F#', 'G', 'G#', 'A', 'A#', 'B'];
  function noteName(pitch) {
    return `${NOTE_NAMES[pitch % 12]}${Math.floor(pitch / 12) - 1}`;
  }

  // /api/info's entry for a page's model, or null when the server could not be reached (api()
  // shows why) or the model is not loaded (a notice box says why and `panelId` is hidden).
  async function modelInfo(model, panelId) {
    let info;
    try {
      info = await api('GET', '/api/info', undefined, 'Connecting…');
    } catch (e) {
      return null;
    }
    if (!info[model].available) {
      const box = $('unavailable');
      box.textContent = info[model].message;
      box.hidden = false;
      $(panelId).hidden = true;
      return null;
    }
    return info[model];
  }

  return {$, api, play, drawRoll, noteName, showError, modelInfo, setBusy};
})();
