// The Harmonize page: a melody on a step grid (or a MIDI file) -> four voices by Coconet.
'use strict';

(() => {
  const {$, api, play, noteName, showError} = Studio;
  let grid = null;  // {steps, step_sixteenths, low, high} from /api/info
  let melody = [];  // one MIDI pitch or null per grid column
  let result = null;
  let maxUploadBytes = 1 << 20;
  let painting = null;  // 'draw' | 'erase' while the pointer is down on the grid

  function buildGrid() {
    const element = $('grid');
    element.replaceChildren();
    element.style.gridTemplateColumns = `auto repeat(${grid.steps}, 22px)`;
    const stepsPerBeat = 4 / grid.step_sixteenths;
    for (let pitch = grid.high; pitch >= grid.low; pitch--) {
      const label = document.createElement('div');
      label.className = 'label';
      label.textContent = noteName(pitch);
      element.append(label);
      const black = [1, 3, 6, 8, 10].includes(pitch % 12);
      for (let step = 0; step < grid.steps; step++) {
        const cell = document.createElement('div');
        cell.className = 'cell';
        if (black) cell.classList.add('black');
        if (step % (stepsPerBeat * 4) === 0) cell.classList.add('bar');
        else if (step % stepsPerBeat === 0) cell.classList.add('beat');
        cell.dataset.step = step;
        cell.dataset.pitch = pitch;
        cell.setAttribute('role', 'gridcell');
        cell.title = `${noteName(pitch)}, eighth ${step + 1}`;
        element.append(cell);
      }
    }
    drawGrid();
  }

  function drawGrid() {
    document.querySelectorAll('#grid .cell').forEach((cell) => {
      const step = Number(cell.dataset.step);
      const pitch = Number(cell.dataset.pitch);
      const on = melody[step] === pitch;
      cell.classList.toggle('on', on);
      cell.classList.toggle('held', on && step > 0 && melody[step - 1] === pitch);
      cell.setAttribute('aria-selected', on ? 'true' : 'false');
    });
    $('harmonize').disabled = !melody.some((p) => p !== null);
  }

  function paint(cell) {
    if (!cell || !cell.classList.contains('cell')) return;
    const step = Number(cell.dataset.step);
    const pitch = Number(cell.dataset.pitch);
    if (painting === 'draw') melody[step] = pitch;
    else if (painting === 'erase' && melody[step] === pitch) melody[step] = null;
    drawGrid();
  }

  function bindGrid() {
    const element = $('grid');
    element.addEventListener('pointerdown', (e) => {
      const cell = e.target.closest('.cell');
      if (!cell || document.body.classList.contains('busy')) return;
      e.preventDefault();
      const step = Number(cell.dataset.step);
      painting = melody[step] === Number(cell.dataset.pitch) ? 'erase' : 'draw';
      paint(cell);
    });
    element.addEventListener('pointermove', (e) => {
      if (painting) paint(document.elementFromPoint(e.clientX, e.clientY));
    });
    window.addEventListener('pointerup', () => { painting = null; });
    window.addEventListener('pointercancel', () => { painting = null; });
  }

  function showResult(data) {
    result = data;
    $('result').hidden = false;
    $('result').dataset.id = data.id;
    $('roll').src = data.png;
    const download = $('download');
    download.href = data.mid;
    download.download = `harmonization_${data.seed}.mid`;
    const shifted = data.transposed_by ?
        `; melody transposed by ${data.transposed_by > 0 ? '+' : ''}${data.transposed_by}` : '';
    const how = data.sampler === 'gibbs' ? `${data.gibbs_steps} Gibbs steps` :
        `${data.sampler} sampling`;
    $('result-info').textContent =
        `${how}, seed ${data.seed}, ${data.seconds.toFixed(1)} s` + shifted;
  }

  function gibbsSteps() {
    return Number($('gibbs').value);
  }

  function sampler() {
    return $('sampler').value;
  }

  async function harmonizeGrid() {
    if (!melody.some((p) => p !== null)) {
      showError('Place some notes on the grid first.');
      return;
    }
    try {
      showResult(await api('POST', '/api/harmonize', {
        melody, steps_per_note: grid.step_sixteenths, gibbs_steps: gibbsSteps(),
        sampler: sampler(), transpose: false,
      }, 'Harmonizing (the first call of a sampler compiles the model)…'));
    } catch (e) { /* shown by api() */ }
    drawGrid();
  }

  async function harmonizeFile() {
    const file = $('file').files[0];
    if (!file) {
      showError('Choose a MIDI file first.');
      return;
    }
    if (file.size > maxUploadBytes) {
      showError(`The file is too large (the limit is ${Math.round(maxUploadBytes / 1024)} KiB).`);
      return;
    }
    const form = new FormData();
    form.append('file', file);
    form.append('gibbs_steps', String(gibbsSteps()));
    form.append('sampler', sampler());
    form.append('transpose', $('transpose').checked ? 'true' : 'false');
    try {
      showResult(await api('POST', '/api/harmonize/upload', form,
          `Harmonizing ${file.name}…`));
    } catch (e) { /* shown by api() */ }
    drawGrid();
  }

  async function loadExample() {
    try {
      const data = await api('GET', '/api/harmonize/example', undefined, 'Loading…');
      melody = data.melody.slice(0, grid.steps);
    } catch (e) { /* shown by api() */ }
    drawGrid();
  }

  async function start() {
    const coconet = await Studio.modelInfo('coconet', 'workspace');
    if (!coconet) {
      return;
    }
    grid = coconet.grid;
    maxUploadBytes = coconet.max_upload_bytes;
    melody = new Array(grid.steps).fill(null);
    const select = $('gibbs');
    coconet.gibbs_steps.forEach((n) => {
      const option = document.createElement('option');
      option.value = n;
      option.textContent = n;
      option.selected = n === coconet.default_gibbs_steps;
      select.append(option);
    });
    $('sampler').addEventListener('change', () => {
      $('gibbs').disabled = sampler() !== 'gibbs';
    });
    buildGrid();
    bindGrid();
    $('harmonize').addEventListener('click', harmonizeGrid);
    $('harmonize-file').addEventListener('click', harmonizeFile);
    $('clear').addEventListener('click', () => {
      melody = new Array(grid.steps).fill(null);
      drawGrid();
    });
    $('example').addEventListener('click', loadExample);
    $('play').addEventListener('click', () => {
      if (result) play(result.wav, 'the harmonization');
    });
  }

  start();
})();
