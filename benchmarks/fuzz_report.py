"""Fuzz facekit's parsers and decoders for a while and report what happened.

    python benchmarks/fuzz_report.py --seconds 300 [--targets learned.decode jpeg.decode]
                                     [--memory-mb 1024] [--timeout 10] [--json PATH]

Inputs start from the corpus in ``tests/corpus`` (real files of every format, and the second
generation's FKH1 files, made at start by a tiny seeded model: ``tests/corpus/fkh1.py``) and are
mutated with :func:`facekit.safety.apply_ops` (truncation, bit flips, interesting
integers, insertions, deletions, splices between files, wrong magic, random bytes,
empty input); for formats with checksums half of them are resealed
(:func:`facekit.safety.reseal`) so that the mutation reaches the checks behind the CRC.
Input ``i`` of a target is a pure function of ``(--seed, target, i)``, so any reported
input can be rebuilt (and crashing inputs are also saved next to the JSON).

Each target runs in its own forked worker, one at a time, single-threaded and niced, with
an address-space limit (``RLIMIT_AS``, ``--memory-mb`` above what the worker starts
with). The parent watches it: an input that takes longer than ``--timeout`` seconds is a
hang, a worker that dies is a crash; either way the worker is restarted after it.

Printed and written to JSON, per target: inputs fuzzed, how many were decoded / refused,
the distinct refusal messages (numbers and names normalised away), and crashes, where a
crash is any exception that is not a :class:`~facekit.errors.FacekitError` (``MemoryError``
included), a wrong result, a hang or a dead worker. The exit status is 1 when there was
any crash.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"
sys.path.insert(0, str(CORPUS))

from facekit.fileio import write_json  # noqa: E402
from facekit.safety import apply_ops, classify, random_ops, reseal  # noqa: E402


def make_input(target, seed: int, index: int) -> tuple[bytes, str]:  # type: ignore[no-untyped-def]
    """Input ``index`` of ``target`` and how it was made."""
    rng = random.Random(f"{seed}:{target.name}:{index}")
    r = rng.random()
    if r < 0.01:
        return b"", "empty"
    if r < 0.04:
        return rng.randbytes(rng.randint(1, 4096)), "random bytes"
    base = rng.randrange(len(target.seeds))
    ops = random_ops(rng)
    data = apply_ops(target.seeds[base], ops, target.others)
    sealed = target.reseal and rng.random() < 0.5
    if sealed:
        data = reseal(data)
    return data, f"seed {base}, ops {ops}" + (", resealed" if sealed else "")


_NORMALISE = (
    (re.compile(r"/[^\s:'\"()]+"), "<path>"),
    (re.compile(r"<\d+ bytes>"), "<bytes>"),
    (re.compile(r"b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\""), "b'...'"),
    (re.compile(r"'(?:[^'\\]|\\.)*'"), "'...'"),
    (re.compile(r"(?<=decode it with )[^)]*"), "..."),
    (re.compile(r"(?<![\w])-?\d+ ?x ?-?\d+(?![\w])"), "NxN"),
    (re.compile(r"\b(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b"), "<hex>"),
    (re.compile(r"\b0x[0-9a-fA-F]+"), "<hex>"),
    (re.compile(r"(?<![A-Za-z0-9])\d+"), "N"),
)


def normalise(message: str) -> str:
    """A message with paths, byte strings and numbers replaced (to count distinct ones)."""
    text = message.splitlines()[0] if message else ""
    for pattern, repl in _NORMALISE:
        text = pattern.sub(repl, text)
    return text[:300]


def _worker(conn, target, seed: int, start: int, memory_mb: float | None, quiet: bool) -> None:  # type: ignore[no-untyped-def]
    import resource
    import warnings

    warnings.simplefilter("ignore")  # glymur/OpenJPEG warn on every damaged codestream
    if quiet:  # libtiff and friends print to file descriptor 2 directly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    try:
        os.nice(10)
    except OSError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if memory_mb:
        from facekit.safety import vm_kb

        start_kb = vm_kb("VmSize") or 0
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (start_kb * 1024 + int(memory_mb * 2**20), hard))
    index = start
    while True:
        data, _ = make_input(target, seed, index)
        conn.send(("begin", index))
        out = classify(target.run, data)
        right_class = None
        if out.status == "refused":
            from facekit import errors

            right_class = issubclass(getattr(errors, out.error, errors.FacekitError), target.expected)
        conn.send(("end", index, out.status, out.error, out.message, out.seconds, right_class,
                   (out.traceback or "")[-2000:]))
        index += 1


def fuzz_target(target, seconds: float, *, seed: int, timeout: float, memory_mb: float | None,
                crash_dir: Path | None, quiet: bool = True) -> dict:  # type: ignore[no-untyped-def]
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    stats: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    examples: dict[str, str] = {}
    wrong_class: Counter[str] = Counter()
    crashes: dict[str, dict] = {}
    slowest = 0.0
    total_time = 0.0
    index = 0
    deadline = time.monotonic() + seconds
    restarts = 0

    def record_crash(kind: str, error: str | None, message: str, idx: int, tb: str = "") -> None:
        data, how = make_input(target, seed, idx)
        key = f"{kind}: {error}: {normalise(message)}"
        stats["crash"] += 1
        entry = crashes.setdefault(key, {"kind": kind, "error": error, "message": message[:500], "count": 0,
                                         "first_input": idx, "how": how, "bytes": len(data),
                                         "sha256": hashlib.sha256(data).hexdigest(), "traceback": tb})
        entry["count"] += 1
        if crash_dir is not None and entry["count"] == 1:
            crash_dir.mkdir(parents=True, exist_ok=True)
            path = crash_dir / f"{target.name}-{idx}.bin"
            path.write_bytes(data)
            entry["saved"] = str(path)

    def watch(recv, proc) -> bool:  # type: ignore[no-untyped-def]
        """Follow one worker; True when the time is up, False when it must be restarted."""
        nonlocal index, total_time, slowest
        current = None
        while True:
            if not recv.poll(timeout if current is not None else max(60.0, timeout)):
                stuck = current if current is not None else index
                stats["inputs"] += 1
                record_crash("hang", None, f"no result after {timeout:.0f} s", stuck)
                index = stuck + 1
                return False
            try:
                msg = recv.recv()
            except EOFError:
                proc.join(5)
                code = proc.exitcode
                what = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
                stuck = current if current is not None else index
                stats["inputs"] += 1
                record_crash("dead worker", what, f"the worker died ({what})", stuck)
                index = stuck + 1
                return False
            if msg[0] == "begin":
                current = msg[1]
                continue
            _, idx, status, error, message, secs, right_class, tb = msg
            current = None
            index = idx + 1
            stats["inputs"] += 1
            total_time += secs
            slowest = max(slowest, secs)
            if status == "ok":
                stats["decoded"] += 1
            elif status == "refused":
                stats["refused"] += 1
                key = f"{error}: {normalise(message)}"
                messages[key] += 1
                examples.setdefault(key, message[:300])
                if not right_class:
                    wrong_class[key] += 1
            else:
                record_crash("exception", error, message, idx, tb)
            if time.monotonic() >= deadline:
                return True

    done = False
    while not done and time.monotonic() < deadline:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(send, target, seed, index, memory_mb, quiet), daemon=True)
        proc.start()
        send.close()
        try:
            done = watch(recv, proc)
            if not done:
                restarts += 1
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
            recv.close()
    return {
        "inputs": stats["inputs"],
        "decoded": stats["decoded"],
        "refused": stats["refused"],
        "crashes": stats["crash"],
        "distinct_messages": len(messages),
        "messages": [{"message": k, "count": v, "example": examples[k]} for k, v in messages.most_common()],
        "unexpected_class": [{"message": k, "count": v} for k, v in wrong_class.most_common()],
        "crash_kinds": list(crashes.values()),
        "worker_restarts": restarts,
        "mean_ms": 1000 * total_time / max(1, stats["inputs"]),
        "slowest_s": slowest,
        "expected": target.expected.__name__,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60, help="total fuzzing time, split over the targets")
    p.add_argument("--targets", nargs="*", default=None, help="target names (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds an input may take before it is a hang")
    p.add_argument("--memory-mb", type=float, default=1024, help="address space a worker may add (0: no limit)")
    p.add_argument("--json", default=str(REPO / "artifacts" / "fuzz" / "fuzz_report.json"))
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    p.add_argument("--show-stderr", action="store_true", help="let the decoders' own stderr output through")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    import tempfile

    from fkh1 import hyperprior_targets
    from targets import build_targets

    work = Path(tempfile.mkdtemp(prefix="facekit-fuzz-"))
    targets = build_targets(args.targets, workdir=work)
    targets = hyperprior_targets(work, lambda name: args.targets is None or name in args.targets, into=targets)
    if args.list or not targets:
        print("\n".join(targets) or "no such target")
        return 0
    out_path = Path(args.json)
    crash_dir = out_path.parent / "crashes"
    per = args.seconds / len(targets)
    report = {
        "seconds": args.seconds, "seed": args.seed, "timeout_s": args.timeout,
        "memory_mb": args.memory_mb or None, "targets": {},
    }
    t0 = time.time()
    for name, target in targets.items():
        r = fuzz_target(target, per, seed=args.seed, timeout=args.timeout, memory_mb=args.memory_mb or None,
                        crash_dir=crash_dir, quiet=not args.show_stderr)
        report["targets"][name] = r
        print(f"{name:24s} {r['inputs']:7d} inputs  {r['decoded']:6d} decoded  {r['refused']:6d} refused  "
              f"{r['distinct_messages']:3d} distinct messages  {r['crashes']:3d} crashes  "
              f"(mean {r['mean_ms']:.1f} ms, slowest {r['slowest_s']:.2f} s)", flush=True)
        for c in r["crash_kinds"]:
            print(f"    CRASH x{c['count']}: {c['kind']} {c['error']}: {c['message'][:160]}  [input {c['first_input']}]")
        for w in r["unexpected_class"]:
            print(f"    unexpected class x{w['count']}: {w['message'][:160]}")
    report["wall_s"] = round(time.time() - t0, 1)
    report["total_inputs"] = sum(r["inputs"] for r in report["targets"].values())
    report["total_crashes"] = sum(r["crashes"] for r in report["targets"].values())
    from facekit.provenance import provenance

    report["provenance"] = provenance("cpu", args.seed)
    write_json(out_path, report)
    print(f"total: {report['total_inputs']} inputs, {report['total_crashes']} crashes in {report['wall_s']} s "
          f"-> {out_path}")
    return 1 if report["total_crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
