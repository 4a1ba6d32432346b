"""One rank under ``torchrun`` against the plain command: what the distributed path costs (issue #26).

    flock /tmp/mmbench-bench.lock .venv/bin/python bench/bench_distributed_overhead.py
        [--suite mbeir-mini] [--model NAME] [--tasks a,b] [--repeats 3] [--threads 2] [--warmup 1]
        [--data FOLDER] [--chunk-size N] [--batch-size N] [--json FILE] [--keep]

The two arms, each a fresh subprocess with a fresh, empty ``$MMBENCH_HOME`` (embedding cache and model
assets: everything is encoded) and a fresh ``--output`` folder:

* ``plain``:    ``python -m mmbench run --suite S ...``
* ``torchrun``: ``python -m torch.distributed.run --standalone --nproc-per-node 1 -m mmbench run --suite S ...``
  (``torchrun``; ``--standalone`` picks a free port, so a concurrent test's group cannot collide with it).
  One rank takes the group's code path: the gloo process group, the broadcast of the missing-chunk list,
  the shared-encode assignment, rank 0's cache locks, the chunks read back from the cache.

Both arms get the same environment: ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to ``--threads``
(torchrun sets ``OMP_NUM_THREADS=1`` when it is unset, which would make the comparison measure threading),
``MMBENCH_NO_PROGRESS=1``, Hugging Face offline, and ``MMBENCH_DATA`` pointing at one built copy of the
datasets (``--data``; default: the data folder of the current ``$MMBENCH_HOME``), so the runs encode but do
not build data. On a checkout that others edit while it runs, point ``PYTHONPATH`` at a frozen copy of
the sources (``git archive HEAD harness | tar -x -C DIR``, its C helpers compiled there): both arms then
run one commit's code (the folder mmbench is imported from is printed). ``--warmup`` untimed plain runs
first (they build the data when it is missing, and bring the model files and libraries into the page
cache). A third, cheaper arm, ``launcher``, times torchrun alone
with a trivial worker (``--no-python true``): the agent's interpreter, its torch import and its
rendezvous, the part of the torchrun arm that is paid once per launch and not per item.

The rounds alternate the arms in ABBA order (plain, torchrun; torchrun, plain; ...) so a drift of the
machine's load does not favour either; each round also times one launcher-alone run.

What is printed, per run: wall seconds (``time.perf_counter`` around the subprocess), the children's CPU
seconds (user + system, ``resource.getrusage(RUSAGE_CHILDREN)`` before and after: torchrun's worker is
reaped by the agent, so its CPU is included), the seconds the run itself spent encoding (the records'
``timings_s``: every task's ``encode_queries``, and ``encode_candidates`` once per pool), the rest of the
wall time (start-up, model load, search, scoring, writing, and the launcher and the group's path) and the
1-minute load average before the run. Then per arm the median of wall and CPU, and the ratios
torchrun / plain: of the medians and the median of the per-round ratios, each once as measured (launcher
included) and once with the launcher-alone median subtracted from the torchrun figure (the distributed
path inside mmbench alone).
Last, the same difference split by the records' own timings, which a loaded machine disturbs less: the
extra seconds outside encoding (medians of the rest, torchrun minus plain), of which the launcher alone
and the group's path in mmbench, each as a share of the plain run's wall; and the encoding seconds'
ratio (the same chunks encoded by the same calls: a ratio off 1 is noise, or a cost of the group's path
inside the encode phase).

Equality: every output file of every run is compared with the first plain run's: run files
(``*.trec.gz``/``*.trec``) and per-query files byte for byte, the JSON records and summary without their
measured fields (``timings_s``, ``efficiency``) and the run's date, commit and the two folders that differ
by construction (output, cache), and the cache's embedding chunks byte for byte. They must all be equal
(docs/running.md, "Many GPUs and nodes"); a difference is printed file by file and the exit status is 1.
Nothing is asserted about the timings. The figures and how to read them: docs/perf.md, "Distributed runs".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")
MEASURED = ("timings_s", "efficiency")                     # record fields that are measured, never equal
PER_RUN_PATHS = ("output", "cache_dir")                    # provenance.config fields that differ by construction


@dataclass
class Run:
    """One timed subprocess."""

    arm: str                      # plain | torchrun | launcher
    round: int
    wall_s: float
    cpu_s: float                  # children's user + system seconds
    load_before: float
    encode_s: float | None = None  # the records' encode seconds (encode_seconds)
    output: Path | None = field(default=None, repr=False)
    cache: Path | None = field(default=None, repr=False)

    @property
    def rest_s(self) -> float:
        """Wall seconds outside encoding: start-up, model load, data, search, scoring, writing, and for
        torchrun the launcher and the group's path."""
        return self.wall_s - (self.encode_s or 0.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="mbeir-mini", help="suite of both arms (mbeir-mini, mteb-mini, ...)")
    p.add_argument("--model", default=None, help="model of both arms (default: mmbench's default model)")
    p.add_argument("--tasks", default=None, help="a comma-separated subset of the suite's tasks")
    p.add_argument("--chunk-size", type=int, default=None, help="mmbench run --chunk-size (default: mmbench's)")
    p.add_argument("--batch-size", type=int, default=None, help="mmbench run --batch-size (default: mmbench's)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; each runs both arms and the launcher alone")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS and MKL_NUM_THREADS of both arms")
    p.add_argument("--warmup", type=int, default=1, help="untimed plain runs before the rounds")
    p.add_argument("--data", type=Path, default=None,
                   help="built datasets folder ($MMBENCH_DATA of both arms; default: the current data home)")
    p.add_argument("--scratch", type=Path, default=None, help="where the runs' folders go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the runs' folders")
    p.add_argument("--json", type=Path, default=None, help="also write the runs and the summary as JSON")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.warmup < 0:
        p.error("--repeats and --threads must be >= 1, --warmup >= 0")
    return args


def run_args(args: argparse.Namespace, out: Path) -> list[str]:
    """``mmbench run ...`` of both arms."""
    cmd = ["run", "--suite", args.suite, "--output", str(out)]
    if args.model:
        cmd += ["--model", args.model]
    if args.tasks:
        cmd += ["--tasks", args.tasks]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    return cmd


def arm_env(home: Path, data: Path, threads: int) -> dict:
    """The environment of one run: no launcher variables inherited, its own home, the shared data."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(MMBENCH_HOME=str(home), MMBENCH_DATA=str(data), MMBENCH_NO_PROGRESS="1",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("MMBENCH_CACHE", None)
    return env


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict, timeout: float) -> tuple[float, float]:
    """(wall seconds, children's CPU seconds) of ``cmd``; exits with its stderr's tail when it fails."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise SystemExit(f"{' '.join(cmd[:8])} ... exited with {proc.returncode}:\n{tail}")
    return wall, cpu


def encode_seconds(out: Path) -> float | None:
    """Seconds the run spent encoding, from its records: each task's queries, plus each candidate pool
    once (tasks that share a pool -- ``efficiency.encode.candidates.pool`` -- repeat its figure)."""
    total, pools, seen = 0.0, {}, False
    for path in sorted(out.rglob("*.json")):
        record = json.loads(path.read_text())
        timings = record.get("timings_s")
        if not (isinstance(timings, dict) and "encode_queries" in timings):
            continue
        seen = True
        total += float(timings["encode_queries"])
        candidates = (record.get("efficiency") or {}).get("encode", {}).get("candidates", {})
        pools[candidates.get("pool") or path.stem] = float(timings.get("encode_candidates", 0.0))
    return total + sum(pools.values()) if seen else None


def comparable(path: Path) -> bytes:
    """A result file's bytes; a JSON record or summary without its measured fields and per-run folders."""
    if path.suffix != ".json":
        return path.read_bytes()
    data = json.loads(path.read_text())

    def strip(obj):
        if isinstance(obj, dict):
            out = {}
            for key, value in obj.items():
                if key in MEASURED or key in ("date", "commit", "dirty"):
                    continue
                if key == "config" and isinstance(value, dict):
                    value = {k: v for k, v in value.items() if k not in PER_RUN_PATHS}
                out[key] = strip(value)
            return out
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return json.dumps(strip(data), sort_keys=True).encode()


def files_of(root: Path, pattern: str = "*") -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob(pattern))
            if p.is_file() and not p.name.startswith(".")}


def differences(ref: Run, run: Run) -> tuple[list[str], dict[str, int]]:
    """(what differs from ``ref``, counts of the files compared by kind)."""
    diffs, counts = [], {"run files": 0, "per-query files": 0, "records": 0, "cache chunks": 0}
    a, b = files_of(ref.output), files_of(run.output)
    if set(a) != set(b):
        diffs.append(f"output files differ: {sorted(set(a) ^ set(b))[:5]}")
    for rel in sorted(set(a) & set(b)):
        kind = ("run files" if rel.endswith((".trec.gz", ".trec")) else
                "per-query files" if rel.endswith(".per_query.tsv") else "records")
        counts[kind] += 1
        if comparable(a[rel]) != comparable(b[rel]):
            diffs.append(f"{kind[:-1]} {rel}")
    ca, cb = files_of(ref.cache / "embeddings", "chunk_*.npy"), files_of(run.cache / "embeddings", "chunk_*.npy")
    if set(ca) != set(cb):
        diffs.append(f"cache chunks differ: {sorted(set(ca) ^ set(cb))[:5]}")
    for rel in sorted(set(ca) & set(cb)):
        counts["cache chunks"] += 1
        if ca[rel].read_bytes() != cb[rel].read_bytes():
            diffs.append(f"cache chunk {rel}")
    return diffs, counts


def ensure_data(args: argparse.Namespace) -> Path:
    from mmbench.config import data_home

    return (args.data or data_home()).resolve()


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(runs: list[Run]) -> dict:
    """Medians per arm and the torchrun / plain ratios, with and without the launcher."""
    by = {arm: [r for r in runs if r.arm == arm] for arm in ("plain", "torchrun", "launcher")}
    out: dict = {"arms": {}}
    for arm, rs in by.items():
        encoded = [r.encode_s for r in rs if r.encode_s is not None]
        out["arms"][arm] = {"wall_s": med([r.wall_s for r in rs]), "cpu_s": med([r.cpu_s for r in rs]),
                            "encode_s": med(encoded) if encoded else None,
                            "rest_s": med([r.rest_s for r in rs])}
    rounds = sorted({r.round for r in runs})
    pair = {k: {r.round: r for r in by[k]} for k in by}
    launch = out["arms"]["launcher"]
    for what in ("wall_s", "cpu_s"):
        p, t, lz = out["arms"]["plain"][what], out["arms"]["torchrun"][what], launch[what]
        paired = [getattr(pair["torchrun"][i], what) / getattr(pair["plain"][i], what) for i in rounds]
        paired_bare = [(getattr(pair["torchrun"][i], what) - getattr(pair["launcher"][i], what))
                       / getattr(pair["plain"][i], what) for i in rounds]
        out[what] = {"ratio_of_medians": t / p, "median_of_ratios": med(paired),
                     "ratio_of_medians_without_launcher": (t - lz) / p,
                     "median_of_ratios_without_launcher": med(paired_bare)}
    arms = out["arms"]
    extra = arms["torchrun"]["rest_s"] - arms["plain"]["rest_s"]
    out["split"] = {"extra_outside_encoding_s": extra, "launcher_s": launch["wall_s"],
                    "group_path_outside_encoding_s": extra - launch["wall_s"],
                    "plain_wall_s": arms["plain"]["wall_s"],
                    "encode_ratio": arms["torchrun"]["encode_s"] / arms["plain"]["encode_s"]}
    return out


def pct(ratio: float) -> str:
    return f"{ratio:.4f} ({(ratio - 1) * 100:+.1f} %)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = ensure_data(args)
    scratch = Path(tempfile.mkdtemp(prefix="bench_dist_", dir=args.scratch))
    loads = [os.getloadavg()]
    print(f"suite {args.suite}, model {args.model or '(default)'}, tasks {args.tasks or 'all'}; "
          f"OMP_NUM_THREADS=MKL_NUM_THREADS={args.threads} in both arms; data {data}")
    where = subprocess.run([sys.executable, "-c", "import mmbench; print(mmbench.__file__)"], text=True,
                           capture_output=True, env=arm_env(scratch / "probe", data, args.threads)).stdout.strip()
    print(f"mmbench imported from {where or '?'} (PYTHONPATH={os.environ.get('PYTHONPATH', '')!r})")
    print("load average at start: " + " ".join(f"{v:.2f}" for v in loads[0]))
    plain_cmd = [sys.executable, "-m", "mmbench"]
    torch_cmd = [*TORCHRUN, "-m", "mmbench"]
    launcher_cmd = [*TORCHRUN, "--no-python", "true"]
    runs: list[Run] = []
    try:
        for k in range(args.warmup):
            folder = scratch / f"warmup-{k}"
            wall, cpu = timed([*plain_cmd, *run_args(args, folder / "out")], arm_env(folder / "home", data,
                                                                                    args.threads), args.timeout)
            print(f"warm-up {k + 1}: plain {wall:.1f} s wall, {cpu:.1f} s CPU (not counted)", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
        print("\n| round | arm | wall s | CPU s | encode s | rest s | load before |\n|---|---|---|---|---|---|---|")
        for i in range(1, args.repeats + 1):
            order = ("plain", "torchrun") if i % 2 else ("torchrun", "plain")
            for arm in (*order, "launcher"):
                folder = scratch / f"{arm}-{i}"
                env = arm_env(folder / "home", data, args.threads)
                load = os.getloadavg()[0]
                if arm == "launcher":
                    wall, cpu = timed(launcher_cmd, env, args.timeout)
                    run = Run(arm, i, wall, cpu, load)
                else:
                    cmd = [*(plain_cmd if arm == "plain" else torch_cmd), *run_args(args, folder / "out")]
                    wall, cpu = timed(cmd, env, args.timeout)
                    run = Run(arm, i, wall, cpu, load, encode_seconds(folder / "out"), folder / "out",
                              folder / "home")
                runs.append(run)
                enc = "-" if run.encode_s is None else f"{run.encode_s:.1f}"
                print(f"| {i} | {arm} | {wall:.2f} | {cpu:.2f} | {enc} | {run.rest_s:.2f} | {load:.2f} |",
                      flush=True)
        loads.append(os.getloadavg())

        ref = next(r for r in runs if r.arm == "plain")
        all_diffs, counts = [], {}
        for run in runs:
            if run.output is None or run is ref:
                continue
            diffs, counts = differences(ref, run)
            all_diffs += [f"{run.arm} round {run.round}: {d}" for d in diffs]
        summary = summarise(runs)
        arms = summary["arms"]
        print(f"\nmedians of {args.repeats} round(s):\n\n| arm | wall s | CPU s | encode s | rest s |"
              "\n|---|---|---|---|---|")
        for arm, m in arms.items():
            enc = "-" if m["encode_s"] is None else f"{m['encode_s']:.1f}"
            print(f"| {arm} | {m['wall_s']:.2f} | {m['cpu_s']:.2f} | {enc} | {m['rest_s']:.2f} |")
        print("\n| torchrun / plain | wall | CPU |\n|---|---|---|")
        for label, key in (("ratio of medians, launcher included", "ratio_of_medians"),
                           ("median of per-round ratios, launcher included", "median_of_ratios"),
                           ("ratio of medians, launcher alone subtracted", "ratio_of_medians_without_launcher"),
                           ("median of per-round ratios, launcher subtracted", "median_of_ratios_without_launcher")):
            print(f"| {label} | {pct(summary['wall_s'][key])} | {pct(summary['cpu_s'][key])} |")
        split, base = summary["split"], summary["split"]["plain_wall_s"]
        print("\n| the torchrun arm's extra wall time, split (medians) | seconds | of plain's wall |\n|---|---|---|")
        for label, key in (("outside encoding (rest s: torchrun - plain)", "extra_outside_encoding_s"),
                           ("of which the launcher alone", "launcher_s"),
                           ("of which the group's path in mmbench (the difference)", "group_path_outside_encoding_s")):
            print(f"| {label} | {split[key]:+.2f} | {split[key] / base * 100:+.1f} % |")
        print(f"| encoding (encode s), torchrun / plain | | {pct(split['encode_ratio'])} |")
        compared = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        n_other = sum(1 for r in runs if r.output is not None) - 1
        if all_diffs:
            print(f"\nresults NOT identical to the first plain run's ({len(all_diffs)} difference(s)):")
            for line in all_diffs[:40]:
                print(f"  {line}")
        else:
            print(f"\nresults identical to the first plain run's in all {n_other} other runs "
                  f"(each: {compared}; run files, per-query files and chunks byte for byte, records without "
                  "their timings, date, commit and folders)")
        print("load average at end: " + " ".join(f"{v:.2f}" for v in loads[-1]))
        if args.json:
            report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                      "runs": [{k: v for k, v in asdict(r).items() if k not in ("output", "cache")} for r in runs],
                      "summary": summary, "identical": not all_diffs, "differences": all_diffs,
                      "compared": counts, "load_start": loads[0], "load_end": loads[-1]}
            args.json.write_text(json.dumps(report, indent=1) + "\n")
        return 1 if all_diffs else 0
    finally:
        if args.keep:
            print(f"runs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
