// craft in the browser: the exported decoder in onnxruntime-web (WASM), with the tokenizer and the
// sampling rules of craft/runtime.py (greedy output is identical; sampled text uses this file's own
// seeded generator, so it differs from Python's for the same seed). No network beyond this folder.
//
// URL parameters set the fields and can start a run: ?prompt=...&max_new_tokens=200&temperature=0
// &top_k=&top_p=&seed=&model=fp32|int8&autorun=1. When a run ends, window.craftResult holds
// {text, tokens, seconds, tokens_per_sec, model} and <body data-state="done"> (or "error").
import * as ort from "./ort.wasm.min.mjs";

const GREEDY_BELOW = 1e-6; // as craft.generation and craft/runtime.py
const FORMAT = "craft-onnx-decoder/3"; // as craft.export
const $ = (id) => document.getElementById(id);

ort.env.wasm.wasmPaths = "./";
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain static server lacks

class CharCodec {
  constructor(vocab) {
    this.vocab = vocab;
    this.index = new Map(vocab.map((c, i) => [c, i]));
  }
  encode(text) {
    const chars = Array.from(text);
    const unknown = [...new Set(chars.filter((c) => !this.index.has(c)))].sort();
    if (unknown.length) {
      throw new Error(`prompt has characters outside the model's vocabulary: ${JSON.stringify(unknown.slice(0, 10))}`);
    }
    return chars.map((c) => this.index.get(c));
  }
  decode(ids) {
    return ids.map((i) => this.vocab[i]).join("");
  }
}

// A small seeded generator (mulberry32): uniform floats in [0, 1).
function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function argmax(row) {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i; // the first of equal maxima, as numpy
  return best;
}

function softmax(x) {
  const m = Math.max(...x);
  const e = x.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

// Temperature, then top-k and top-p as craft/runtime.py's filter_logits; then one draw.
function sampleNext(row, { temperature, top_k, top_p }, rand) {
  if (temperature < GREEDY_BELOW) return argmax(row);
  const V = row.length;
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let logits = Array.from(row, (v) => (v - max) / temperature);
  if (top_k != null && top_k < V) {
    const kth = [...logits].sort((a, b) => a - b)[V - top_k];
    logits = logits.map((v) => (v < kth ? -Infinity : v));
  }
  if (top_p < 1) {
    const order = logits.map((_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b); // stable, descending
    const probs = softmax(order.map((i) => logits[i]));
    let before = 0;
    order.forEach((i, r) => {
      if (before >= top_p) logits[i] = -Infinity; // the first token always stays
      before += probs[r];
    });
  }
  const probs = softmax(logits);
  let u = rand();
  for (let i = 0; i < V; i++) {
    u -= probs[i];
    if (u < 0) return i;
  }
  return probs.findLastIndex((p) => p > 0);
}

class Decoder {
  constructor(session, manifest) {
    this.session = session;
    this.m = manifest;
    this.shape = [1, manifest.n_head, manifest.block_size, manifest.head_size];
    this.names = [];
    for (let i = 0; i < manifest.n_layers; i++) this.names.push(`k_${i}`, `v_${i}`);
    this.reset();
  }
  reset() {
    const size = this.shape.reduce((a, b) => a * b, 1);
    this.cache = this.names.map(() => new ort.Tensor("float32", new Float32Array(size), this.shape));
  }
  // Logits of the last of `ids` at positions start..start+T-1 (a prefill from 0, or one token).
  async run(ids, start) {
    const T = ids.length;
    const feeds = {
      ids: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, T]),
      input_pos: new ort.Tensor("int64", BigInt64Array.from({ length: T }, (_, i) => BigInt(start + i)), [T]),
    };
    this.names.forEach((n, i) => (feeds[n] = this.cache[i]));
    const out = await this.session.run(feeds);
    this.cache = this.names.map((n) => out[`${n}_out`]);
    const V = this.m.vocab_size;
    return out.logits.data.subarray((T - 1) * V, T * V);
  }
}

// Yields new token ids, as craft.generation.stream: a KV cache, and once the window is full the
// newest half of it is prefilled again.
async function* stream(decoder, prompt, n, settings) {
  const block = decoder.m.block_size;
  const keep = Math.max(1, Math.floor(block / 2));
  const rand = generator(settings.seed ?? 0);
  let ctx = prompt.slice(-block);
  let filled = 0;
  for (let t = 0; t < n; t++) {
    if (ctx.length > block) {
      ctx = ctx.slice(-keep);
      filled = 0;
    }
    const row = filled === 0 ? await decoder.run(ctx, 0) : await decoder.run(ctx.slice(-1), filled);
    filled = ctx.length;
    const next = sampleNext(row, settings, rand);
    ctx = [...ctx, next];
    yield next;
  }
}

function settingsFromPage() {
  const num = (id) => ($(id).value === "" ? null : Number($(id).value));
  const s = { temperature: num("temperature"), top_k: num("top_k"), top_p: num("top_p") ?? 1, seed: num("seed") };
  const problems = [];
  if (!(s.temperature >= 0)) problems.push("temperature must be >= 0 (0 means greedy)");
  if (s.top_k != null && !(s.top_k >= 1)) problems.push("top-k must be >= 1");
  if (!(s.top_p > 0 && s.top_p <= 1)) problems.push("top-p must be in (0, 1]");
  const n = num("max_new_tokens");
  if (!(n >= 0)) problems.push("new tokens must be >= 0");
  if (problems.length) throw new Error("invalid sampling settings: " + problems.join("; "));
  return [n, s];
}

async function main() {
  const params = new URLSearchParams(location.search);
  const manifest = await (await fetch("manifest.json")).json();
  if (manifest.format !== FORMAT) throw new Error(`this page reads ${FORMAT}, the folder holds ${manifest.format}: export it again`);
  const state = await (await fetch("tokenizer.json")).json();
  if (state.type !== "char") throw new Error(`the page has the char tokenizer only; this model's is ${state.type}`);
  const codec = new CharCodec(state.vocab);
  const models = ["model.int8.onnx", "model.onnx"].filter((f) => f in manifest.files);
  for (const f of models) $("model").add(new Option(f === "model.onnx" ? "fp32" : "int8", f));
  const sampling = manifest.sampling;
  const fields = { ...sampling, prompt: "\n" };
  for (const key of ["prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "model"]) {
    if (params.has(key)) fields[key] = params.get(key);
  }
  for (const key of ["prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed"]) $(key).value = fields[key] ?? "";
  if (fields.model) $("model").value = fields.model === "fp32" ? "model.onnx" : fields.model === "int8" ? "model.int8.onnx" : fields.model;
  const sessions = {};
  const session = async (file) => (sessions[file] ??= await ort.InferenceSession.create(file, { executionProviders: ["wasm"] }));
  await session($("model").value);
  const m = manifest;
  $("about").textContent = `A char model (${m.n_layers} layers, width ${m.n_head * m.head_size}, context ${m.block_size}, ` +
    `${m.global_step} training steps) running in this page: onnxruntime-web, WASM, one thread. Nothing leaves the page.`;
  $("generate").disabled = false;

  async function generate() {
    $("generate").disabled = true;
    document.body.dataset.state = "running";
    try {
      const [n, settings] = settingsFromPage();
      const prompt = $("prompt").value;
      if (!prompt) throw new Error("prompt is empty; give at least one character");
      const file = $("model").value;
      const decoder = new Decoder(await session(file), manifest);
      const ids = codec.encode(prompt);
      const out = $("output");
      out.replaceChildren(Object.assign(document.createElement("span"), { className: "prompt", textContent: prompt }));
      const text = out.appendChild(document.createTextNode(""));
      const fresh = [];
      const start = performance.now();
      let shown = start;
      for await (const id of stream(decoder, ids, n, settings)) {
        fresh.push(id);
        if (performance.now() - shown > 100) { // let the page paint now and then
          text.data = codec.decode(fresh);
          await new Promise((r) => setTimeout(r, 0));
          shown = performance.now();
        }
      }
      const seconds = (performance.now() - start) / 1000;
      text.data = codec.decode(fresh);
      const rate = fresh.length / seconds;
      $("status").textContent = `${fresh.length} tokens in ${seconds.toFixed(2)} s: ${Math.round(rate).toLocaleString("en")} tokens/s ` +
        `(${file === "model.onnx" ? "fp32" : "int8"}, onnxruntime-web ${ort.env.versions?.web ?? ""}, WASM)`;
      window.craftResult = { text: codec.decode(fresh), tokens: fresh.length, seconds, tokens_per_sec: rate, model: file };
      document.body.dataset.state = "done";
    } catch (e) {
      fail(e);
    } finally {
      $("generate").disabled = false;
    }
  }
  $("generate").addEventListener("click", generate);
  if (params.get("autorun") === "1") await generate();
}

function fail(e) {
  $("status").textContent = `error: ${e.message ?? e}`;
  window.craftResult = { error: String(e.message ?? e) };
  document.body.dataset.state = "error";
}

main().catch(fail);
