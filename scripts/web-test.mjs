// Opens the page in headless Chromium (Debian's), lets it train (?auto=1), clicks Save and waits
// for both downloads, driving the browser over the DevTools protocol on a pipe (no npm
// packages). Writes the page's `window.wgtrain` as JSON; exits 1 on a page error or a timeout.
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
  if (!url.includes('check=1')) await save(sessionId);
  state = JSON.parse(await evaluate(sessionId, 'JSON.stringify(window.wgtrain)'));
  fs.writeFileSync(outFile, JSON.stringify(state, null, 1));
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

chrome.on('exit', (code) => closing || fail(`chromium exited (${code})`));
main().catch((e) => fail(e.message));
