// The Evolve page: a population of MusicVAE melodies bred from the ones the user likes.
'use strict';

(() => {
  const {$, api, play, drawRoll} = Studio;
  let state = null;  // the last /api/evolve answer
  const liked = new Set();

  const ORIGINS = {
    initial: 'random', child: 'crossover', mutant: 'mutated', foreign: 'newcomer', elite: 'kept',
  };

  function selectedIndices() {
    return Array.from(liked).sort((a, b) => a - b);
  }

  function refreshControls() {
    const ready = state !== null;
    $('next').disabled = !ready || liked.size === 0;
    $('undo').disabled = !ready || !state.can_undo;
    $('reset').disabled = !ready;
    $('sigma').disabled = !ready;
    const count = $('selection-count');
    count.textContent = liked.size ? `${liked.size} selected` :
        'Select the melodies you like.';
    document.querySelectorAll('.card').forEach((card) => {
      const index = Number(card.dataset.index);
      card.classList.toggle('liked', liked.has(index));
      card.querySelector('input.like').checked = liked.has(index);
    });
  }

  function toggle(index) {
    if (liked.has(index)) liked.delete(index); else liked.add(index);
    refreshControls();
  }

  function card(candidate) {
    const article = document.createElement('article');
    article.className = 'card';
    article.dataset.index = candidate.index;
    article.dataset.id = candidate.id;

    const canvas = document.createElement('canvas');
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', `Piano roll of melody ${candidate.index + 1}`);
    canvas.addEventListener('click', () => {
      if (!document.body.classList.contains('busy')) toggle(candidate.index);
    });

    const row = document.createElement('div');
    row.className = 'row';
    const label = document.createElement('label');
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.className = 'like';
    box.addEventListener('change', () => toggle(candidate.index));
    label.append(box, ` #${candidate.index + 1}`);

    const origin = document.createElement('span');
    origin.className = 'origin';
    origin.textContent = ORIGINS[candidate.origin] || candidate.origin;

    const playButton = document.createElement('button');
    playButton.type = 'button';
    playButton.className = 'play secondary';
    playButton.textContent = '▶ Play';
    playButton.addEventListener('click', () => {
      document.querySelectorAll('.card.playing')
          .forEach((c) => c.classList.remove('playing'));
      article.classList.add('playing');
      play(candidate.wav, `generation ${state.generation}, #${candidate.index + 1}`);
    });

    const download = document.createElement('a');
    download.className = 'button secondary midi';
    download.href = candidate.mid;
    download.download = `${candidate.name}.mid`;
    download.textContent = 'MIDI';

    row.append(label, origin, playButton, download);
    article.append(canvas, row);
    return {article, canvas};
  }

  function render(newState) {
    state = newState;
    liked.clear();
    // Said once, by the answer that started a new session in place of an expired one.
    $('notice').hidden = !state.notice;
    $('notice').textContent = state.notice || '';
    $('generation').textContent = `Generation ${state.generation}`;
    $('generation').dataset.generation = state.generation;
    const population = $('population');
    population.replaceChildren();
    const drawn = state.population.map((candidate) => {
      const {article, canvas} = card(candidate);
      population.append(article);
      return [canvas, candidate];
    });
    drawn.forEach(([canvas, candidate]) =>
      drawRoll(canvas, candidate.notes, candidate.num_steps));
    refreshControls();
  }

  async function call(method, url, body, text) {
    try {
      render(await api(method, url, body, text));
    } catch (e) {
      refreshControls();
    }
  }

  function sigma() {
    return Number($('sigma').value);
  }

  $('sigma').addEventListener('input', () => {
    $('sigma-value').textContent = sigma().toFixed(2);
  });
  $('next').addEventListener('click', () => call('POST', '/api/evolve/next', {
    generation: state.generation, selected: selectedIndices(), sigma: sigma(),
  }, 'Breeding and decoding the next generation…'));
  $('undo').addEventListener('click', () => call('POST', '/api/evolve/undo',
      {generation: state.generation}, 'Going back one generation…'));
  $('reset').addEventListener('click', () => call('POST', '/api/evolve/reset', {},
      'Drawing a fresh population…'));
  $('player').addEventListener('ended', () => {
    document.querySelectorAll('.card.playing').forEach((c) => c.classList.remove('playing'));
  });

  async function start() {
    refreshControls();
    const musicvae = await Studio.modelInfo('musicvae', 'controls');
    if (!musicvae) {
      return;
    }
    $('sigma').value = musicvae.sigma;
    $('sigma-value').textContent = Number(musicvae.sigma).toFixed(2);
    await call('GET', '/api/evolve', undefined,
        'Decoding the first population (the first call compiles the model)…');
  }

  window.addEventListener('resize', () => {
    if (!state) return;
    document.querySelectorAll('.card').forEach((article) => {
      const candidate = state.population[Number(article.dataset.index)];
      drawRoll(article.querySelector('canvas'), candidate.notes, candidate.num_steps);
    });
  });
  start();
})();
