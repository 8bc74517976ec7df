// ?check=1: hands every WGSL module the page's runs may compile to the browser's own shader
// compiler (Tint in Chromium, Naga in Firefox) on a device of its own, and lists what it
// rejects in `window.wgtrain.shaderErrors` ([] when all pass).
import { shader_sources } from './pkg/wgtrain_web.js';

export async function checkShaders(state) {
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error('no WebGPU adapter');
  const device = await adapter.requestDevice();
  const errors = [];
  const sources = JSON.parse(shader_sources());
  for (const [name, code] of sources) {
    const info = await device.createShaderModule({ code, label: name }).getCompilationInfo();
    for (const m of info.messages.filter((m) => m.type === 'error')) {
      const line = code.split('\n')[m.lineNum - 1] ?? '';
      errors.push(`${name}:${m.lineNum}:${m.linePos}: ${m.message}\n    ${line.trim()}`);
    }
  }
  state.shaders = sources.length;
  state.shaderErrors = errors;
  device.destroy();
}
