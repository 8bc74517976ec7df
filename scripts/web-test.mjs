// Opens the page in headless Chromium (Debian's), lets it train (?auto=1), clicks Save and waits
// for both downloads, then resumes from them on a picked text for 2 steps; drives the browser
// over the DevTools protocol on a pipe (no npm packages). Writes the page's `window.wgtrain`
// (the resumed run's under `resumed`) as JSON; exits 1 on a page error or a timeout. With
// SCREENSHOT=FILE it saves a PNG of the page after the first run.
// With ?check=1 in URL it only waits for the shader check. Usage:
//   node scripts/web-test.mjs URL DOWNLOAD_DIR OUT_JSON TIMEOUT_S
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [url, downloads, outFile, timeoutS] = process.argv.slice(2);
const deadline = Date.now() + Number(timeoutS || 600) * 1e3;
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'wgtrain-chromium-'));
// Without the background-networking flags Chromium keeps dialing Google on a closed network.
const chrome = spawn(process.env.CHROMIUM || '/usr/bin/chromium', [
  '--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--remote-debugging-pipe',
  `--user-data-dir=${profile}`, '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic', 'about:blank',
], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
let stderr = '';
chrome.stdio[2].on('data', (d) => { stderr = (stderr + d).slice(-4000); });

let next = 0, pending = '', closing = false;
const waiting = new Map();
chrome.stdio[4].on('data', (d) => {
  pending += d;
  for (let i; (i = pending.indexOf('\0')) >= 0; pending = pending.slice(i + 1)) {
    const msg = JSON.parse(pending.slice(0, i));
    const w = waiting.get(msg.id);
    if (w) {
      waiting.delete(msg.id);
      msg.error ? w.reject(new Error(`${w.method}: ${JSON.stringify(msg.error)}`)) : w.resolve(msg.result);
    } else if (msg.method === 'Runtime.consoleAPICalled') {
      console.log('page console:', msg.params.args.map((a) => a.value ?? a.description).join(' '));
    } else if (msg.method === 'Runtime.exceptionThrown') {
      console.log('page exception:', msg.params.exceptionDetails.exception?.description ?? msg.params.exceptionDetails.text);
    }
  }
});

function send(method, params = {}, sessionId) {
  const id = ++next;
  chrome.stdio[3].write(JSON.stringify({ id, method, params, sessionId }) + '\0');
  return new Promise((resolve, reject) => waiting.set(id, { resolve, reject, method }));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fail(why) {
  console.error(`web-test: ${why}`);
  if (stderr) console.error(`chromium's last words:\n${stderr}`);
  chrome.kill('SIGKILL');
  process.exit(1);
}

async function evaluate(session, expression, userGesture = false) {
  const r = await send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true, userGesture }, session);
  if (r.exceptionDetails) throw new Error(`${expression}: ${r.exceptionDetails.text}`);
  return r.result.value;
}

async function main() {
  const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
  fs.mkdirSync(downloads, { recursive: true });
  await send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: path.resolve(downloads) });
  await send('Runtime.enable', {}, sessionId);
  await send('Page.navigate', { url }, sessionId);
  let state = null;
  while (Date.now() < deadline) {
    await sleep(1000);
    state = JSON.parse(await evaluate(sessionId, 'JSON.stringify(window.wgtrain ?? null)') ?? 'null');
    if (state?.error) fail(`the page failed: ${state.error}`);
    if (state?.finished) break;
  }
  if (!state?.finished) fail(`no result in ${timeoutS} s; the page had ${JSON.stringify(state)}`);
  if (url.includes('check=1')) {
    fs.writeFileSync(outFile, JSON.stringify(state, null, 1));
  } else {
    await save(sessionId);
    const first = JSON.parse(await evaluate(sessionId, 'JSON.stringify(window.wgtrain)'));
    if (process.env.SCREENSHOT) await screenshot(sessionId, process.env.SCREENSHOT);
    const resumed = await resume(sessionId);
    fs.writeFileSync(outFile, JSON.stringify({ ...first, resumed }, null, 1));
  }
  closing = true;
  await send('Browser.close').catch(() => {});
  process.exit(0);
}

// Clicks Save and waits for both files.
async function save(sessionId) {
  await evaluate(sessionId, "document.getElementById('save').click()", true);
  const want = ['model.safetensors', 'config.json'].map((f) => path.join(downloads, f));
  while (!want.every((f) => fs.existsSync(f))) {
    if (Date.now() > deadline) fail(`Save did not download ${want.join(' and ')}`);
    await sleep(250);
  }
}

// The element `id` as a remote object, for the DOM domain.
async function element(sessionId, id) {
  const r = await send('Runtime.evaluate', { expression: `document.getElementById('${id}')` }, sessionId);
  return r.result.objectId;
}

// Picks the downloaded model in Resume's two file inputs and a play as the text (the page's
// "a file I pick"), resumes for 2 steps, and returns the page's state once they ran.
async function resume(sessionId) {
  const pick = async (id, file) =>
    send('DOM.setFileInputFiles', { files: [path.resolve(file)], objectId: await element(sessionId, id) }, sessionId);
  await pick('resume-weights', path.join(downloads, 'model.safetensors'));
  await pick('resume-config', path.join(downloads, 'config.json'));
  await pick('textfile', 'data/shakespeare/sonnets_gut.txt');
  await evaluate(sessionId, "document.getElementById('source').value = 'file'; document.getElementById('steps').value = '2'");
  await evaluate(sessionId, "document.getElementById('resume').click()", true);
  while (Date.now() < deadline) {
    await sleep(500);
    const st = JSON.parse(await evaluate(sessionId, 'JSON.stringify(window.wgtrain)'));
    if (st.error) fail(`resuming failed: ${st.error}`);
    // The first run's state stays until the page takes the files: wait for the new one's.
    if (st.done && !st.running && st.losses.length === 2) return st;
  }
  fail('the resumed run did not end in time');
}

async function screenshot(sessionId, file) {
  const { data } = await send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true }, sessionId);
  fs.writeFileSync(file, Buffer.from(data, 'base64'));
}

chrome.on('exit', (code) => closing || fail(`chromium exited (${code})`));
main().catch((e) => fail(e.message));
