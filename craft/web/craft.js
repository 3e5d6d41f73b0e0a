// craft in the browser: the exported decoder in onnxruntime-web (WASM), with the tokenizer, sliding
// window and sampling rules of craft/runtime.py (the rules run inside the generation graph; greedy
// output is identical, while sampled text follows this file's own seeded generator, so it differs
// from Python's for the same seed). No network beyond this folder.
//
// URL parameters set the fields and can start a run: ?prompt=...&max_new_tokens=200&temperature=0
// &top_k=&top_p=&seed=&model=fp32|int8&autorun=1. When a run ends, window.craftResult holds
// {text, tokens, seconds, tokens_per_sec, model} and <body data-state="done"> (or "error").
import * as ort from "./ort.wasm.min.mjs";

const FORMAT = "craft-onnx-decoder/4"; // as craft.export
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

// The export's generation graph (model.loop.onnx, craft/export/web.py write_loop): one call runs many
// decoder steps and draws each token inside onnxruntime, so the cache crosses into WASM memory once
// per call rather than once per token. A call starts with a prefill from position 0, or with the
// last token after the filled slots; the page passes the uniforms its seeded generator draws.
class Generator {
  constructor(session, arch) {
    this.session = session;
    this.m = arch; // the manifest's architecture: craft.model.GPTConfig's fields
    this.shape = [1, arch.n_head, arch.block_size, arch.d_model / arch.n_head];
    this.names = [];
    for (let i = 0; i < arch.n_layers; i++) this.names.push(`k_${i}`, `v_${i}`);
    this.reset();
  }
  reset() {
    const size = this.shape.reduce((a, b) => a * b, 1);
    this.cache = this.names.map(() => new ort.Tensor("float32", new Float32Array(size), this.shape));
  }
  // `n` new token ids after `ids` at positions start..start+T-1.
  async run(ids, start, n, settings, rand) {
    const V = this.m.vocab_size;
    const T = ids.length;
    const k = Math.min(V, Math.max(1, settings.top_k ?? V));
    const feeds = {
      n: new ort.Tensor("int64", BigInt64Array.from([BigInt(n)]), []),
      loop_ids: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, T]),
      loop_pos: new ort.Tensor("int64", BigInt64Array.from({ length: T }, (_, i) => BigInt(start + i)), [T]),
      uniforms: new ort.Tensor("float32", Float32Array.from({ length: n }, rand), [n]),
      temperature: new ort.Tensor("float32", Float32Array.from([settings.temperature]), []),
      top_k: new ort.Tensor("int64", BigInt64Array.from([BigInt(k)]), [1]),
      top_p: new ort.Tensor("float32", Float32Array.from([settings.top_p]), []),
    };
    this.names.forEach((name, i) => (feeds[`loop_${name}`] = this.cache[i]));
    const out = await this.session.run(feeds);
    this.cache = this.names.map((name) => out[`${name}_next`]);
    return Array.from(out.tokens.data, Number);
  }
}

const CHUNK = 128; // tokens per call at most: the text appears as it is written

// Yields arrays of new token ids, as craft.generate.stream: a KV cache, and once the window is
// full the newest half of it is prefilled again. The caller stops early at a stop string.
async function* stream(gen, prompt, n, settings) {
  const block = gen.m.block_size;
  const keep = Math.max(1, Math.floor(block / 2));
  const rand = generator(settings.seed ?? 0);
  let ctx = prompt.slice(-block);
  let filled = 0; // positions of ctx whose keys and values are in the cache
  for (let done = 0; done < n; ) {
    if (ctx.length > block) {
      ctx = ctx.slice(-keep);
      filled = 0;
    }
    if (filled === 0) gen.reset();
    const room = block - ctx.length + 1; // steps before the window is full
    const steps = Math.min(n - done, room, CHUNK);
    const fresh = filled === 0 ? await gen.run(ctx, 0, steps, settings, rand) : await gen.run(ctx.slice(-1), filled, steps, settings, rand);
    filled = ctx.length + steps - 1;
    ctx = ctx.concat(fresh);
    done += steps;
    yield fresh;
  }
}

// The text before the first stop string in it (as craft.sampling.cut_at_stop), or null if none.
function cutAtStop(text, stop) {
  const hits = stop.map((s) => text.indexOf(s)).filter((i) => i >= 0);
  return hits.length ? text.slice(0, Math.min(...hits)) : null;
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
  // fp32 first: PyTorch's text exactly, and in WASM no slower than int8 (benchmarks/README.md)
  const models = ["model.loop.onnx", "model.int8.loop.onnx"].filter((f) => f in manifest.files);
  const label = (f) => (f.includes("int8") ? "int8" : "fp32");
  for (const f of models) $("model").add(new Option(label(f), f));
  const sampling = manifest.sampling; // craft.sampling.SamplingConfig, as the model was trained with
  const arch = manifest.architecture;
  const fields = { ...sampling, prompt: "\n" };
  for (const key of ["prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "model"]) {
    if (params.has(key)) fields[key] = params.get(key);
  }
  for (const key of ["prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed"]) $(key).value = fields[key] ?? "";
  if (fields.model) $("model").value = { fp32: "model.loop.onnx", int8: "model.int8.loop.onnx" }[fields.model] ?? fields.model;
  const sessions = {};
  // A new session runs at a third of its speed until the browser has compiled its hot WASM code
  // with the optimizing tier: warm it up once, at load, with four greedy calls of up to 128 steps
  // (under a second here; 233-560 tok/s without it, 711-960 with it: benchmarks/README.md).
  const warm = async (s) => {
    const gen = new Generator(s, arch);
    const steps = Math.min(128, arch.block_size); // positions stay inside the window
    for (let i = 0; i < 4; i++) await gen.run([0], 0, steps, { temperature: 0, top_k: null, top_p: 1 }, Math.random);
    return s;
  };
  const session = async (file) =>
    (sessions[file] ??= await warm(await ort.InferenceSession.create(file, { executionProviders: ["wasm"] })));
  await session($("model").value);
  $("about").textContent = `A char model (${arch.n_layers} layers, width ${arch.d_model}, context ${arch.block_size}, ` +
    `${manifest.global_step} training steps) running in this page: onnxruntime-web, WASM, one thread. Nothing leaves the page.`;
  $("generate").disabled = false;

  async function generate() {
    $("generate").disabled = true;
    document.body.dataset.state = "running";
    try {
      const [n, settings] = settingsFromPage();
      const prompt = $("prompt").value;
      if (!prompt) throw new Error("prompt is empty; give at least one character");
      const file = $("model").value;
      const gen = new Generator(await session(file), arch);
      const ids = codec.encode(prompt);
      const out = $("output");
      out.replaceChildren(Object.assign(document.createElement("span"), { className: "prompt", textContent: prompt }));
      const text = out.appendChild(document.createTextNode(""));
      const fresh = [];
      const start = performance.now();
      let shown = start;
      let shownText = null; // set once a stop string ends the text
      for await (const chunk of stream(gen, ids, n, settings)) {
        fresh.push(...chunk);
        shownText = cutAtStop(codec.decode(fresh), sampling.stop ?? []);
        if (shownText !== null) break;
        if (performance.now() - shown > 100) { // let the page paint now and then
          text.data = codec.decode(fresh);
          await new Promise((r) => setTimeout(r, 0));
          shown = performance.now();
        }
      }
      const seconds = (performance.now() - start) / 1000;
      text.data = shownText ?? codec.decode(fresh);
      const rate = fresh.length / seconds;
      $("status").textContent = `${fresh.length} tokens in ${seconds.toFixed(2)} s: ${Math.round(rate).toLocaleString("en")} tokens/s ` +
        `(${label(file)}, onnxruntime-web ${ort.env.versions?.web ?? ""}, WASM)`;
      window.craftResult = { text: text.data, tokens: fresh.length, seconds, tokens_per_sec: rate, model: label(file) };
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
