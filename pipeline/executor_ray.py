"""`deid batch --executor ray`: every pair's stages as Ray tasks, on a cluster or a local Ray.

The driver plans every pair (the same plan `deid run` makes) and submits one task per stage, passing
the results of the stages it needs as arguments, so Ray starts a stage as soon as its inputs exist and
runs independent stages (two pairs' trainings, a target's extraction beside a donor's) at once. A stage
shared by several pairs (a donor's extraction, content-addressed) is one task that all of them wait on.

Resource requests: training takes one GPU when the cluster has GPUs; conversion half a GPU; extraction
and evaluation a quarter (they may share); every stage one CPU, training two. Tasks write into RUNS_DIR,
which on a real cluster must be a filesystem every node mounts at the same path (NFS, Lustre, CephFS).

A stage that fails returns its one-line reason instead of raising, and the stages after it in that pair
pass it on without running; Ray's own failures (a worker killed for memory) are caught per pair. Each task
logs the Ray node it ran on into its pair's batch.log ("train ran on node <id>").

Safety. A Ray cluster runs any code sent to it, so the private Ray started without --address must not be
reachable from the network: Ray rewrites a 127.0.0.1 node address to the host's routable one (and then
its GCS, raylet, workers and agents listen on every interface) unless it believes it is a single-machine
install, so `_init` tells it so (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the switch Ray uses on macOS and
Windows), and then checks that every node's address is loopback, refusing to run otherwise. Ray workers
put the driver's working directory first on sys.path; ray.init is called from the folder holding deid, so a
`deid/` folder where the user started the batch cannot replace deid's code.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from deid.core.errors import DeidError
from deid.pipeline.batch_pair import PairResult, failure_reason, link_shared, shared_root
from deid.pipeline.config import PipelineConfig, as_plain, config_from_mapping
from deid.pipeline.donor_start import DonorStart, is_trained, with_start
from deid.pipeline.runner import Manifest, run_stage
from deid.pipeline.workflow import plan

log = logging.getLogger("deid.batch")

# The folder that holds the `deid` package (site-packages, or a checkout's parent): where ray.init runs, so that
# what Ray puts first on its workers' sys.path holds deid itself and not the user's folders.
DEID_HOME = Path(__file__).resolve().parents[2]
# Ray's switch for "clusters are not supported here" (macOS, Windows): with it off, Ray keeps 127.0.0.1 as
# the node address instead of replacing it with the host's routable one, and binds its servers to it.
_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

# (CPUs, share of a GPU when the cluster has GPUs) per stage kind.
RESOURCES = {"train": (2, 1.0), "convert": (1, 0.5), "extract": (1, 0.25), "evaluate": (1, 0.25)}


def stage_task(config_plain: dict, key: str, force: bool, *upstream: dict, after: dict | None = None) -> dict:
    """Run one stage of one pair inside a Ray worker. Returns {"key", "ok", "ran", "reason", "node"}, "node"
    being the id of the Ray node the task ran on (also logged in the pair's batch.log).

    `after`: the result of the train task of the pair whose model this pair starts from (train.init_from,
    pipeline/donor_start.py); Ray resolves it first, so this task waits for it; a failure there only means
    training from scratch."""
    failed = [u for u in upstream if not u["ok"]]
    if failed:
        return {"key": key, "ok": False, "ran": False, "reason": failed[0]["reason"], "upstream": True}
    node = _node_id()
    config = config_from_mapping(config_plain, Path("/"))
    if after is not None and config.train.init_from is not None:
        start = DonorStart(config.pair, after.get("pair", "?"), config.train.init_from)
        config = with_start(dataclasses.replace(config, train=dataclasses.replace(config.train, init_from=None)),
                            start, bool(after["ok"]) and is_trained(start.model_dir))
    with _pair_log(Path(config.runs_dir) / config.pair / "batch.log"):
        try:
            pair, specs = plan(config, progress=False, shared=shared_root(Path(config.runs_dir)))
            spec = next(s for s in specs if s.key == key)
            outcome = run_stage(spec, Manifest(pair.manifest), force=force and spec.manifest is None)
        except Exception as exc:  # reported per pair by the driver; the batch goes on
            log.info("%s ran on node %s", key, node)
            return {"key": key, "ok": False, "ran": False, "reason": f"{key}: {failure_reason(exc)}", "node": node,
                    "pair": config.pair}
        log.info("%s ran on node %s", key, node)
    return {"key": key, "ok": True, "ran": outcome.ran, "reason": outcome.reason, "node": node, "pair": config.pair}


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() or "?"
    except Exception:  # not inside Ray (a direct call)
        return "?"


@contextmanager
def _pair_log(path: Path) -> Iterator[None]:
    """Append this task's log records to the pair's batch.log, as the local executor's workers do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def run_ray(configs: Sequence[PipelineConfig], runs_dir: Path, address: str | None = None, force: bool = False,
            on_result: Callable[[PairResult], None] | None = None,
            starts: Mapping[str, DonorStart] | None = None) -> list[PairResult]:
    try:
        import ray
    except ImportError:
        raise DeidError("the ray executor needs Ray: pip install 'deid[ray]' (or use --executor local)") from None
    started_here = not ray.is_initialized()
    if started_here:
        _init(ray, address)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        cpus = ray.cluster_resources().get("CPU", 1)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        # A task runs on one node: ask for no more CPUs than the largest node has, or it never starts.
        node_cpus = max((n.get("Resources", {}).get("CPU", 0) for n in nodes), default=0) or cpus
        log.info("ray executor: %s, %d node(s), %g CPU(s), %g GPU(s)", address or "local Ray on 127.0.0.1",
                 len(nodes), cpus, gpus)
        remote = ray.remote(stage_task)
        shared_refs: dict[tuple[str, str], Any] = {}
        pair_refs: dict[str, list[Any]] = {}
        train_refs: dict[str, Any] = {}
        donor_starts = starts or {}
        starts = {}
        for config in configs:
            pair, specs = plan(config, progress=False, shared=shared_root(Path(runs_dir)))
            link_shared(pair)
            start = donor_starts.get(config.pair)
            if start is not None:  # train.init_from is set here; the train task drops it if the source failed
                config = with_start(config, start, True)
            plain = as_plain(config)
            refs: dict[str, Any] = {}
            borrowed: set[str] = set()
            for spec in specs:
                shared_id = (str(spec.manifest), spec.record or spec.key) if spec.manifest else None
                if shared_id and shared_id in shared_refs:
                    refs[spec.key] = shared_refs[shared_id]
                    borrowed.add(spec.key)  # another pair's task does it; this pair only waits for it
                    continue
                num_cpus, gpu_share = RESOURCES.get(spec.key.split(":")[0], (1, 0.0))
                wants_gpu = gpus and config.device != "cpu"
                options = {"num_cpus": min(num_cpus, node_cpus), "num_gpus": gpu_share if wants_gpu else 0}
                after = {"after": train_refs[start.source]} if spec.key == "train" and start is not None else {}
                refs[spec.key] = remote.options(**options, name=f"{config.pair}:{spec.key}").remote(
                    plain, spec.key, force, *(refs[n] for n in spec.needs), **after)
                if spec.key == "train":
                    train_refs[config.pair] = refs[spec.key]
                if shared_id:
                    shared_refs[shared_id] = refs[spec.key]
            pair_refs[config.pair] = [(refs[spec.key], spec.key in borrowed) for spec in specs]
            starts[config.pair] = time.perf_counter()
        results = []
        for config in configs:
            result = _pair_result(ray, config, pair_refs[config.pair], starts[config.pair])
            if on_result:
                on_result(result)
            results.append(result)
        return results
    finally:
        if started_here:
            ray.shutdown()


def _init(ray: Any, address: str | None) -> None:
    try:
        with _from_deid_root():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                with _single_machine(ray):
                    # A private Ray for this run, bound to loopback: nothing on the network can reach it.
                    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                             log_to_driver=False, object_store_memory=256 * 2**20)
    except Exception as exc:
        raise DeidError(f"cannot start or reach Ray at {address or 'a local instance'} ({failure_reason(exc)}); "
                        "check --address (ray://HOST:10001 or HOST:6379)") from None
    if not address:
        exposed = sorted({str(n.get("NodeManagerAddress")) for n in ray.nodes()
                          if not is_loopback(str(n.get("NodeManagerAddress")))})
        if exposed:
            ray.shutdown()
            raise DeidError(f"the local Ray came up on {', '.join(exposed)}, not 127.0.0.1 (Ray {ray.__version__}), "
                            "so the network could reach it; not running. Use --executor local, or --address with "
                            "a cluster on a private network")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or ::ffff:127.x (how a dual-stack socket shows an IPv4 loopback address)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return host == "localhost"
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


@contextmanager
def _single_machine(ray: Any) -> Iterator[None]:
    """Make Ray keep 127.0.0.1 as this node's address (Ray otherwise swaps in the host's routable address and
    binds its servers to every interface): in this process (read once, at import) and in the processes
    ray.init starts (they read the environment)."""
    try:
        from ray._private import ray_constants
    except ImportError:  # another Ray layout: the environment variable alone, and _init's check after it
        ray_constants = None
    saved_env = os.environ.get(_SINGLE_MACHINE_ENV)
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_SINGLE_MACHINE_ENV] = "0"
    if saved is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop(_SINGLE_MACHINE_ENV, None)
        else:
            os.environ[_SINGLE_MACHINE_ENV] = saved_env
        if saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved


@contextmanager
def _from_deid_root() -> Iterator[None]:
    """Call ray.init from the folder holding deid: Ray puts the driver's working directory first on every worker's
    sys.path (and a private Ray's workers start in it), so the user's folder must not be it."""
    try:
        previous = os.getcwd()
    except OSError:  # the working directory was deleted; nothing to restore
        previous = None
    os.chdir(DEID_HOME)
    try:
        yield
    finally:
        if previous is not None:
            try:
                os.chdir(previous)
            except OSError:  # removed meanwhile: deid's folder is as good a place as any to stay in
                log.debug("could not return to %s", previous)


def _pair_result(ray: Any, config: PipelineConfig, refs: list[tuple[Any, bool]], started: float) -> PairResult:
    outcomes = []
    for ref, borrowed in refs:
        try:
            outcome = dict(ray.get(ref))
        except Exception as exc:  # the task itself died (worker killed, node lost)
            outcome = {"ok": False, "ran": False, "reason": f"Ray task failed: {failure_reason(exc)}"}
        outcomes.append({**outcome, "ran": outcome.get("ran", False) and not borrowed})
    seconds = round(time.perf_counter() - started, 1)
    failure = next((o for o in outcomes if not o["ok"]), None)
    pair_root = Path(config.runs_dir) / config.pair
    if failure is not None:
        return PairResult(config.pair, "failed", failure["reason"], [o["key"] for o in outcomes if o.get("ran")],
                          seconds)
    ran = [o["key"] for o in outcomes if o["ran"]]
    return PairResult(config.pair, "done" if ran else "skipped", "" if ran else "every stage was up to date", ran,
                      seconds, str(pair_root / "evaluate"))
