// The page: opens the browser's GPU, trains step after step (each awaited), plots the loss,
// samples, and saves or resumes the model. `window.wgtrain` holds what a test reads; with
// ?auto=1 (and config=, steps=) the page trains at once and sets `done` at the end.
import init, { Trainer } from './pkg/wgtrain_web.js';

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const state = window.wgtrain = {
  adapter: null, info: null, losses: [], val: [], stepMs: [], running: false, done: false, error: null,
};
let trainer = null;
let busy = false; // a handler is running: every button but Pause waits for it

function fail(e) {
  state.error = String(e && e.message || e);
  state.running = false;
  $('error').textContent = 'error: ' + state.error;
}

function buttons() {
  const idle = trainer && !busy;
  $('train').disabled = !idle;
  $('resume').disabled = !idle;
  $('pause').disabled = !state.running;
  $('sample-btn').disabled = !idle || !state.info;
  $('save').disabled = !idle || !state.info;
}

async function bytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function text() {
  if ($('source').value !== 'file') return bytes('corpus.txt');
  const f = $('textfile').files[0];
  if (!f) throw new Error('pick a text file, or train on the bundled plays');
  return new Uint8Array(await f.arrayBuffer());
}

// A whole number from 1 to 1e9 from the input `id`, or `fallback` when it is empty.
function count(id, fallback) {
  const v = $(id).value.trim();
  if (v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1e9) throw new Error(`${id}: a whole number from 1 to 1e9, not "${v}"`);
  return n;
}

// What a new run is made of, to tell whether Train continues the paused run or starts anew.
function selection() {
  const f = $('textfile').files[0];
  return JSON.stringify([$('config').value, $('source').value, f && [f.name, f.size, f.lastModified], $('steps').value]);
}

// Tokens per second over the steps after the first (which compiles the pipelines).
function tokensPerSecond() {
  const ms = state.stepMs.slice(1).reduce((a, b) => a + b, 0);
  return ms > 0 ? state.info.tokens_per_step * (state.stepMs.length - 1) / (ms / 1e3) : null;
}

function status(last) {
  const i = state.info;
  const tps = tokensPerSecond();
  const val = state.val.length ? `  val ${state.val[state.val.length - 1][1].toFixed(4)}` : '';
  $('status').textContent =
    `model: ${i.n_layer} layers, ${i.n_head} heads, ${i.n_embd} channels, ${(i.parameters / 1e6).toFixed(2)}M parameters; ` +
    `batch ${i.batch_size} × ${i.seq_len}\n` +
    `step ${last ? last.step + 1 : 0}/${i.steps}` + (last ? `  loss ${last.loss.toFixed(4)}  lr ${last.lr.toExponential(2)}` : '') +
    (last && last.skipped ? '  (skipped: a non-finite loss or gradient)' : '') +
    val + (tps ? `  ${tps.toFixed(0)} tokens/s` : '');
}

function plot() {
  const c = $('plot'), g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  const all = state.losses.concat(state.val.map((v) => v[1]));
  if (!all.length) return;
  // Not Math.min(...all): a long run's array would overflow the call's arguments.
  const [lo, hi] = all.reduce(([a, b], l) => [Math.min(a, l), Math.max(b, l)], [Infinity, -Infinity]);
  const pad = 40, steps = Math.max(state.info.steps, 2);
  const x = (s) => pad + (c.width - 2 * pad) * s / (steps - 1);
  const y = (l) => c.height - pad - (c.height - 2 * pad) * (hi > lo ? (l - lo) / (hi - lo) : 0.5);
  g.fillStyle = '#333';
  g.font = '12px sans-serif';
  g.fillText(hi.toFixed(3), 2, y(hi) + 4);
  g.fillText(lo.toFixed(3), 2, y(lo) + 4);
  g.fillText(`step ${steps}`, c.width - pad - 40, c.height - 10);
  g.strokeStyle = '#1f5fbf';
  g.beginPath();
  state.losses.forEach((l, s) => (s ? g.lineTo(x(s), y(l)) : g.moveTo(x(s), y(l))));
  g.stroke();
  g.fillStyle = '#d0611b';
  state.val.forEach(([s, l]) => g.fillRect(x(s) - 3, y(l) - 3, 6, 6));
  g.fillText('train loss', c.width - 160, 16);
  g.fillText('■ val loss', c.width - 90, 16);
}

async function start(resume) {
  $('error').textContent = '';
  const name = $('config').value;
  if (!name) throw new Error('pick a model');
  const config = new TextDecoder().decode(await bytes('models/' + name));
  const steps = count('steps', undefined);
  const corpus = await text();
  // The old run is gone once start is called, whether the new one starts or not.
  Object.assign(state, { info: null, losses: [], val: [], stepMs: [], done: false, error: null });
  state.info = JSON.parse(trainer.start(config, name, corpus, resume?.config, resume?.weights, steps));
  state.spec = selection();
  status();
  plot();
  await train();
}

async function train() {
  state.running = true;
  buttons();
  try {
    await steps();
  } finally {
    state.running = false;
  }
}

async function steps() {
  const i = state.info;
  while (state.running) {
    const t = performance.now();
    let out;
    try {
      out = await trainer.step();
    } catch (e) {
      state.info = null; // a failed step leaves nothing to continue: Train starts anew
      throw e;
    }
    if (out === null) break;
    const d = JSON.parse(out);
    state.stepMs.push(performance.now() - t);
    state.losses.push(d.loss);
    if ((i.eval_every > 0 && (d.step + 1) % i.eval_every === 0) || d.step + 1 === i.steps) {
      const v = await trainer.val_loss(4);
      if (v !== null) state.val.push([d.step, v]);
    }
    status(d);
    plot();
    if (d.step + 1 === i.steps) state.done = true;
  }
  state.running = false;
  state.tokensPerSecond = tokensPerSecond();
}

async function sample() {
  const t = Number($('temperature').value);
  if (!(t >= 0)) throw new Error('temperature: a number of at least 0');
  $('sample').textContent = await trainer.sample($('prompt').value, count('length', 200), t, t > 0 ? 40 : 1, 1);
  state.sample = $('sample').textContent;
}

function offer(id, blob) {
  const a = $(id);
  if (a.href) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(blob);
  a.hidden = false;
  a.click();
}

async function save() {
  const [weights, config] = await trainer.save();
  offer('dl-weights', new Blob([weights], { type: 'application/octet-stream' }));
  offer('dl-config', new Blob([config], { type: 'application/json' }));
  state.saved = weights.length;
}

async function resume() {
  const [w, c] = [$('resume-weights').files[0], $('resume-config').files[0]];
  if (!w || !c) throw new Error('pick both model.safetensors and config.json, as Save made them');
  await start({ weights: new Uint8Array(await w.arrayBuffer()), config: await c.text() });
}

// One handler at a time; its error shows on the page.
const guard = (f) => async () => {
  if (busy) return;
  busy = true;
  buttons();
  try {
    await f();
  } catch (e) {
    fail(e);
  } finally {
    busy = false;
    buttons();
  }
};
const paused = () => state.info && !state.done && state.losses.length && state.spec === selection();
$('train').onclick = guard(() => (paused() ? train() : start()));
$('pause').onclick = () => { state.running = false; };
$('resume').onclick = guard(resume);
$('sample-btn').onclick = guard(sample);
$('save').onclick = guard(save);

// The browser's words for its adapter (wgpu's web back end leaves the name empty).
async function adapterInfo() {
  const a = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  const i = a?.info ?? {};
  const words = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ');
  return (words || 'unnamed adapter') + (i.isFallbackAdapter || a?.isFallbackAdapter ? ', a fallback adapter' : '');
}

async function main() {
  await init();
  trainer = await Trainer.open();
  state.adapter = (await adapterInfo()) + ' ' + trainer.adapter();
  $('adapter').textContent = 'adapter: ' + state.adapter;
  buttons();
  if (query.get('check')) {
    await (await import('./check.js')).checkShaders(state);
    $('status').textContent = `${state.shaders} shaders: ${state.shaderErrors.length} errors\n${state.shaderErrors.join('\n')}`;
    state.finished = true;
    return;
  }
  if (query.get('config')) $('config').value = query.get('config');
  if (query.get('steps')) $('steps').value = query.get('steps');
  if (query.get('auto')) {
    await guard(start)();
    if (!state.error) await guard(sample)();
    state.finished = true;
  }
}
main().catch(fail);
