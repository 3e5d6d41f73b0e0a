"""Generate text from an exported craft model with numpy and onnxruntime only: no PyTorch.

    python -m craft run export/got_char --prompt "Winter" --max_new_tokens 200
    python export/got_char/run.py --prompt "Winter"          # the copy inside an exported folder

Generation mirrors ``craft.generate.stream``: the one ``SamplingConfig`` (``craft/sampling.py``:
temperature, 0 is greedy; top-k; top-p; max new tokens; a seed; stop strings) with the model's
settings from the manifest as defaults, a KV cache (one token of work per step) and the same sliding
window once the context is full. Char tokenizers need nothing more; BPE tokenizers also need the
``tokenizers`` package (no PyTorch). Besides numpy and onnxruntime this file needs only
``craft/sampling.py``, which an export copies beside it as ``craft_sampling.py``.

A step costs a few hundred microseconds, so what surrounds it matters: with a fused-attention
export (``craft/export/``) each layer's cache buffer is bound once as both the input and the
output of the session (``InPlaceDecoder``), so onnxruntime writes the new keys and values in place
and no cache array is made or copied per token; the token, position and logits buffers are bound
once too. One intra-op thread by default: at batch 1 a second one bought nothing steady
(benchmarks/README.md, "Generation without PyTorch").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

if (Path(__file__).resolve().parent / "manifest.json").is_file():  # run.py in an exported folder
    from craft_sampling import SamplingConfig, SamplingError, cut_at_stop
else:
    from craft.sampling import SamplingConfig, SamplingError, cut_at_stop

FORMAT = "craft-onnx-decoder/4"  # as craft.export
DEFAULT_THREADS = 1


class RunError(Exception):
    """A problem with the exported folder or the request, reported as one line."""


def load_tokenizer(state: dict):
    """The tokenizer of ``tokenizer.json``: char or bpe only. Like craft (``craft/checkpoint.py``),
    the runtime imports nothing that an exported file names."""
    kind = state.get("type") if isinstance(state, dict) else None
    if isinstance(state, dict) and "class_path" in state:
        raise RunError(
            f"tokenizer.json names a tokenizer class ({state['class_path']!r}); the runtime knows only "
            "the char and bpe tokenizers and imports nothing a file names"
        )
    if kind == "char":
        vocab = state.get("vocab")
        if not (isinstance(vocab, list) and all(isinstance(c, str) for c in vocab)):
            raise RunError("tokenizer.json holds a char tokenizer without its vocabulary: export the model again")
        return CharCodec(vocab)
    if kind == "bpe":
        try:
            import tokenizers
        except ImportError:
            raise RunError("this model uses a BPE tokenizer: pip install tokenizers (no PyTorch needed)") from None
        try:
            return tokenizers.Tokenizer.from_str(state["trained"])
        except Exception as e:  # the tokenizers library raises its own Exception type
            raise RunError(f"tokenizer.json holds a BPE tokenizer that does not load ({e}); export again") from None
    raise RunError(f"unknown tokenizer type {kind!r} in tokenizer.json: the runtime reads char and bpe; export again")


class CharCodec:
    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab
        self.index = {c: i for i, c in enumerate(vocab)}

    def encode(self, text: str) -> list[int]:
        unknown = sorted({c for c in text if c not in self.index})
        if unknown:
            raise RunError(f"prompt has characters outside the model's vocabulary: {unknown[:10]}")
        return [self.index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)


def sample_next(
    logits: np.ndarray, sampling: SamplingConfig, rng: np.random.Generator, uniforms: np.ndarray | None = None
) -> np.ndarray:
    """One token per row of ``logits`` (B, V) -> (B, 1), by the rule in ``craft/sampling.py`` (the
    torch sampler's and the page's): ``uniforms`` (B, 1) in [0, 1) are the draws (default: ``rng``)."""
    if sampling.greedy:
        return logits.argmax(axis=-1)[:, None]
    if uniforms is None:
        uniforms = rng.random((logits.shape[0], 1))
    filtered = filter_logits(logits, sampling)
    order = np.argsort(-filtered, axis=-1, kind="stable")  # largest first, ties by lower id
    probs = softmax(np.take_along_axis(filtered, order, axis=-1))
    past_u = (np.cumsum(probs, axis=-1) <= uniforms).sum(axis=-1, keepdims=True)  # the first cdf > u
    last_possible = (probs > 0).sum(axis=-1, keepdims=True) - 1  # where rounding leaves none past u
    return np.take_along_axis(order, np.minimum(past_u, last_possible), axis=-1)


def filter_logits(logits: np.ndarray, sampling: SamplingConfig) -> np.ndarray:
    """Logits (B, V) scaled by the temperature, tokens outside top-k / top-p at -inf (float32, as
    the torch sampler and the page compute)."""
    logits = logits.astype(np.float32)
    logits = (logits - logits.max(axis=-1, keepdims=True)) / np.float32(sampling.temperature)
    V, top_k, top_p = logits.shape[-1], sampling.top_k, sampling.top_p
    if top_k is not None and top_k < V:
        kth = np.sort(logits, axis=-1)[:, [V - top_k]]
        logits = np.where(logits < kth, -np.inf, logits).astype(np.float32)
    if top_p < 1.0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        sorted_logits = np.take_along_axis(logits, order, axis=-1)
        probs = softmax(sorted_logits)
        drop_sorted = (np.cumsum(probs, axis=-1) - probs) >= top_p  # the first token always stays
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        logits = np.where(drop, -np.inf, logits).astype(np.float32)
    return logits


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class InPlaceDecoder:
    """Runs a fused-attention graph with its cache bound in place (``onnxruntime`` IO binding).

    Each layer's ``(B, nh, block, hs)`` key and value buffer is one numpy array, bound as both the
    layer's cache input and its cache output: the attention node sees one buffer and writes only the
    new slots. The one-token inputs and the logits are numpy arrays bound once and rewritten in
    place; a prefill binds arrays of its own length for one call.
    """

    def __init__(self, session: ort.InferenceSession, names: list[str], shape: tuple, batch: int, vocab: int):
        self.session = session
        self.binding = session.io_binding()
        self.cache = [np.zeros((batch, *shape), dtype=np.float32) for _ in names]
        self._values = []  # the OrtValues wrap the arrays' memory: keep both alive
        for name, buf in zip(names, self.cache, strict=True):
            value = ort.OrtValue.ortvalue_from_numpy(buf)
            self.binding.bind_ortvalue_input(name, value)
            self.binding.bind_ortvalue_output(f"{name}_out", value)
            self._values.append(value)
        self.token = np.zeros((batch, 1), dtype=np.int64)
        self.pos = np.zeros(1, dtype=np.int64)
        self.logits = np.zeros((batch, 1, vocab), dtype=np.float32)
        self._one = [self.token, self.pos, self.logits]
        self._bound: list[np.ndarray] | None = None

    def _bind(self, arrays: list[np.ndarray]) -> None:
        if self._bound is not arrays:
            for name, arr in zip(("ids", "input_pos", "logits"), arrays, strict=True):
                value = ort.OrtValue.ortvalue_from_numpy(arr)
                if name == "logits":
                    self.binding.bind_ortvalue_output(name, value)
                else:
                    self.binding.bind_ortvalue_input(name, value)
            self._bound = arrays

    def __call__(self, ids: np.ndarray, start: int) -> np.ndarray:
        """Logits ``(B, T, V)`` of ``ids`` ``(B, T)`` at positions ``start..start+T-1`` (consecutive:
        a prefill from 0, or one token). The one-token logits array is reused by the next call."""
        if ids.shape[1] == 1:
            self.token[:] = ids
            self.pos[0] = start
            self._bind(self._one)
        else:
            logits = np.empty((ids.shape[0], ids.shape[1], self.logits.shape[-1]), dtype=np.float32)
            positions = np.arange(start, start + ids.shape[1], dtype=np.int64)
            self._bind([np.ascontiguousarray(ids, dtype=np.int64), positions, logits])
        self.session.run_with_iobinding(self.binding)
        return self._bound[2]


def read_json(path: Path, what: str):
    """A JSON file of an exported folder, or one line saying what is wrong with it."""
    if not path.is_file():
        raise RunError(f"{path} not found: the exported folder is incomplete; export it again")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is not valid JSON ({e}): the {what} is damaged; export the model again") from None


class ExportedModel:
    def __init__(self, folder: str | Path, int8: bool = False, threads: int | None = None) -> None:
        folder = Path(folder)
        if not (folder / "manifest.json").is_file():
            raise RunError(f"{folder} is not an exported craft model (no manifest.json); make one with craft export")
        self.manifest = m = read_json(folder / "manifest.json", "manifest")
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            found = m.get("format") if isinstance(m, dict) else None
            raise RunError(f"{folder} holds format {found!r}; this runtime reads {FORMAT}: export it again")
        try:
            arch = m["architecture"]
            self.sampling = SamplingConfig.of(m["sampling"])
            self.block_size, self._n_layers, self.vocab_size = arch["block_size"], arch["n_layers"], arch["vocab_size"]
            self._buffer_shape = (arch["n_head"], arch["block_size"], arch["d_model"] // arch["n_head"])
        except (KeyError, TypeError, ZeroDivisionError, SamplingError) as e:
            raise RunError(
                f"{folder / 'manifest.json'} is damaged ({type(e).__name__}: {e}); export the model again"
            ) from None
        name = "model.int8.onnx" if int8 else "model.onnx"
        if not (folder / name).is_file():
            hint = " (export with --int8)" if int8 else ""
            raise RunError(f"{folder / name} not found{hint}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or DEFAULT_THREADS
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a truncated or foreign file
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise RunError(
                f"{folder / name} cannot be loaded by onnxruntime ({first}); export the model again"
            ) from None
        self.tokenizer = load_tokenizer(read_json(folder / "tokenizer.json", "tokenizer"))
        self.fused = m.get("attention") == "fused"
        self._buffers = [f"{kind}_{i}" for i in range(self._n_layers) for kind in ("k", "v")]
        self._inputs = ["ids", "input_pos", *self._buffers]

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        """``k_0, v_0, k_1, ...``: one zeroed ``(B, n_head, block_size, head_size)`` buffer each."""
        return [np.zeros((batch, *self._buffer_shape), dtype=np.float32) for _ in range(2 * self._n_layers)]

    def step(self, ids: np.ndarray, input_pos: np.ndarray, cache: list[np.ndarray]):
        """One decoder call: logits of every new position (B, T, V) and the cache with them written
        (new arrays). Positions are consecutive: a prefill from 0, or one token after the filled ones."""
        feeds = dict(zip(self._inputs, [ids.astype(np.int64), input_pos.astype(np.int64), *cache], strict=True))
        logits, *cache = self.session.run(None, feeds)
        return logits, cache

    def decoder(self, batch: int):
        """``(ids (B, T), start) -> logits (B, T, V)`` with the cache kept between calls."""
        if self.fused:
            return InPlaceDecoder(self.session, self._buffers, self._buffer_shape, batch, self.vocab_size)
        cache = self.empty_cache(batch)

        def run(ids: np.ndarray, start: int) -> np.ndarray:
            nonlocal cache
            logits, cache = self.step(ids, np.arange(start, start + ids.shape[1]), cache)
            return logits

        return run

    def stream(self, idx: np.ndarray, sampling: SamplingConfig) -> Iterator[np.ndarray]:
        """Yield up to ``sampling.max_new_tokens`` new token columns (B, 1), as
        ``craft.generate.stream`` does (stop strings are ``generate``'s)."""
        rng = np.random.default_rng(sampling.seed)
        block, keep = self.block_size, max(1, self.block_size // 2)
        ctx = idx[:, -block:]
        run = self.decoder(idx.shape[0])
        filled = 0  # positions of ctx whose keys and values are in the cache
        for _ in range(sampling.max_new_tokens):
            if ctx.shape[1] > block:
                ctx, filled = ctx[:, -keep:], 0  # slide: prefill the newest half of the window again
            logits = run(ctx, 0) if filled == 0 else run(ctx[:, -1:], filled)
            filled = ctx.shape[1]
            nxt = sample_next(logits[:, -1, :], sampling, rng)
            ctx = np.concatenate([ctx, nxt], axis=1)
            yield nxt

    def default_prompt(self) -> str:
        """What ``predict`` starts from without prompts: a newline, or the first symbol of a
        vocabulary that has none."""
        vocab = getattr(self.tokenizer, "vocab", None)
        return vocab[0] if vocab and "\n" not in vocab else "\n"

    def generate(self, prompt: str, **changes) -> str:
        """Continue ``prompt``; returns only the new text. Settings that are not given (or None)
        are the model's, from the manifest; all are checked by ``SamplingConfig``."""
        try:
            sampling = self.sampling.with_(**changes).for_vocab(self.vocab_size)
        except (SamplingError, TypeError) as e:
            raise RunError(str(e)) from None
        if not prompt:
            raise RunError("prompt is empty; give at least one character")
        ids = np.array([self.tokenizer.encode(prompt)], dtype=np.int64)
        new: list[int] = []
        for column in self.stream(ids, sampling):
            new.append(int(column[0, 0]))
            if sampling.stop and cut_at_stop(self.tokenizer.decode(new), sampling.stop)[1]:
                break
        return cut_at_stop(self.tokenizer.decode(new), sampling.stop)[0]


class Parser(argparse.ArgumentParser):
    """Mistakes as one ``craft: error:`` line, as every craft verb reports them."""

    def error(self, message: str):
        self.exit(2, f"craft: error: {' '.join(message.split())} (options: {self.prog} --help)\n")


# The spellings before the one command (python -m craft run): accepted for one release, with a note.
OLD_FLAGS = {"--max-new-tokens": "--max_new_tokens", "--top-k": "--top_k", "--top-p": "--top_p"}


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    here = Path(__file__).resolve().parent
    in_export = (here / "manifest.json").is_file()  # this file is run.py inside an exported folder
    parser = Parser(
        prog=prog or ("run.py" if in_export else "python -m craft run"),
        description=__doc__.splitlines()[0] + " Unset sampling options take the model's saved settings.",
    )
    parser.add_argument(
        "folder",
        nargs="?" if in_export else None,
        default=here if in_export else None,
        help="a folder written by craft export" + (" (default: this one)" if in_export else ""),
    )
    parser.add_argument("--prompt", default=None, help="text to continue (default: a newline, as predict)")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=None, help="0 is greedy")
    parser.add_argument("--top_k", type=int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampling generator")
    parser.add_argument("--stop", action="append", default=None, help="stop at this text (repeat for several)")
    parser.add_argument("--int8", action="store_true", help="use model.int8.onnx")
    parser.add_argument(
        "--threads", type=int, default=None, help=f"onnxruntime intra-op threads (default {DEFAULT_THREADS})"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in OLD_FLAGS:
            print(f"craft: note: {flag} is now {OLD_FLAGS[flag]}", file=sys.stderr)
            argv[i] = OLD_FLAGS[flag] + eq + value
    args = parser.parse_args(argv)
    try:
        model = ExportedModel(args.folder, int8=args.int8, threads=args.threads)
        prompt = model.default_prompt() if args.prompt is None else args.prompt
        start = time.perf_counter()
        text = model.generate(
            prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            stop=args.stop,
        )
    except RunError as e:
        print(f"craft: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(prompt + text)
    print(f"[{time.perf_counter() - start:.2f} s]", file=sys.stderr)


if __name__ == "__main__":
    if not (Path(__file__).resolve().parent / "manifest.json").is_file():
        print(
            "craft: note: 'python -m craft.runtime' is now 'python -m craft run' (the old name goes in 0.2)",
            file=sys.stderr,
        )
    main()
