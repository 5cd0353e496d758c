"""`deid batch --executor ray --address`: a batch on a Ray cluster of two nodes, both started with `ray start`.

Both nodes are on 127.0.0.1 (a private network namespace: Ray puts a cluster node on the host's routable
address otherwise), with token authentication on (a token in a temporary file, as docs/batch.md describes),
one CPU each, so the stages of the two pairs spread over both; every stage logs the Ray node it ran on.
The test stops the nodes it started (SIGTERM to each `ray start --block`, then SIGKILL to anything of theirs
still alive), never other Ray processes on the machine, whatever happens.

Outside a network namespace the test re-runs itself inside one (`unshare -n`, loopback up) when the machine
allows it, and is skipped otherwise. Marked slow (about two minutes on a 2-core CPU, like the local-Ray batch
in test_batch.py: the stages of two pairs, two nodes to start): `python -m pytest -q -m slow
tests/test_ray_cluster.py` runs it.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from test_batch import _deid_command, _manifest, _status, clips, is_loopback, listening_sockets  # noqa: F401 (clips: a fixture)

ROOT = Path(__file__).resolve().parents[1]
INNER = "DEID_TEST_IN_NETNS"


def _ray_node_ip() -> str:
    """The address Ray would give a node started here (what `ray start --node-ip-address=127.0.0.1` becomes)."""
    from ray._private.services import resolve_ip_for_localhost

    return resolve_ip_for_localhost("127.0.0.1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(processes) -> list:
    import psutil

    found = []
    for process in processes:
        try:
            root = psutil.Process(process.pid)
            found += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    return found


def _stop(processes, known: list) -> None:
    """SIGTERM each `ray start --block` (it stops its node's processes), then SIGKILL what is left of them."""
    import psutil

    known = [*known, *_descendants(processes)]
    for process in reversed(processes):  # the worker node first, then the head
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for leftover in known:
        try:
            if leftover.is_running():
                leftover.kill()
        except psutil.Error:
            pass  # the process ended between listing and asking: nothing left to check or stop


def _wait_for_nodes(env: dict, address: str, count: int, timeout: float) -> None:
    probe = ("import sys, time, ray\n"
             f"ray.init(address={address!r}, log_to_driver=False)\n"
             f"deadline = time.monotonic() + {timeout}\n"
             f"while sum(1 for n in ray.nodes() if n['Alive']) < {count}:\n"
             "    if time.monotonic() > deadline:\n"
             "        sys.exit('nodes: ' + str([(n['NodeManagerAddress'], n['Alive']) for n in ray.nodes()]))\n"
             "    time.sleep(0.5)\n")
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                            timeout=timeout + 60)
    assert result.returncode == 0, result.stdout + result.stderr


def _rerun_in_network_namespace(test_id: str) -> None:
    """Run this test again inside `unshare -n` (only loopback up), where Ray keeps 127.0.0.1 as node address."""
    if os.environ.get(INNER):
        pytest.skip(f"Ray gives a node started here the address {_ray_node_ip()}, not 127.0.0.1, even inside a "
                    "network namespace (this machine's host name resolves to it)")
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not (unshare and ip) or subprocess.run([unshare, "-n", ip, "link", "set", "lo", "up"],
                                              capture_output=True).returncode != 0:
        pytest.skip("a two-node Ray cluster on 127.0.0.1 needs a private network namespace (unshare -n, loopback "
                    "only), which this machine does not allow; outside one Ray binds nodes to the host's address")
    inner = f"{ip} link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider -o addopts='' " \
            f"'{test_id}'"
    process = subprocess.Popen([unshare, "-n", "bash", "-c", inner], cwd=ROOT, env={**os.environ, INNER: "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = process.communicate(timeout=540)[0]
    except subprocess.TimeoutExpired:
        raise AssertionError("the test inside the network namespace did not finish within 540 s") from None
    finally:
        _stop([process], [])
    assert process.returncode == 0 and " passed" in output, output[-4000:]


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s") from None
            time.sleep(0.3)


@pytest.mark.slow
def test_batch_on_a_two_node_cluster_spreads_stages_over_both_nodes(tmp_path, request):
    pytest.importorskip("ray")  # also puts Ray's bundled psutil on sys.path
    if not is_loopback(_ray_node_ip()):
        _rerun_in_network_namespace(request.node.nodeid)
        return
    media = request.getfixturevalue("clips")  # only now: the outer run above does not need the clips
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip(f"the ray command is not installed next to {sys.executable}")

    # Ray's unix sockets live under the temp dir: keep its path short (a socket path has at most 107 bytes).
    temp = Path(tempfile.mkdtemp(prefix="deidray", dir="/tmp"))
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    port = _free_port()
    address = f"127.0.0.1:{port}"

    def node(name: str, first_worker_port: int, *args: str) -> subprocess.Popen:
        agent_ports = [f"--{flag}={_free_port()}" for flag in ("dashboard-agent-listen-port",
                                                               "dashboard-agent-grpc-port", "metrics-export-port",
                                                               "runtime-env-agent-port")]
        command = [str(ray_cli), "start", "--block", *args, "--node-ip-address=127.0.0.1", "--num-cpus=1",
                   "--num-gpus=0", "--object-store-memory=100000000", f"--temp-dir={temp / name}",
                   f"--min-worker-port={first_worker_port}", f"--max-worker-port={first_worker_port + 49}",
                   "--disable-usage-stats", *agent_ports]
        return subprocess.Popen(command, env=env, stdout=open(temp / f"{name}.out", "w"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)

    runs = tmp_path / "runs"
    manifest = _manifest(tmp_path / "batch.yaml", media, ["p1", "p2"])
    nodes: list[subprocess.Popen] = []
    seen: list = []
    started = time.monotonic()
    try:
        nodes.append(node("head", 41000, "--head", f"--port={port}", "--include-dashboard=false"))
        _wait_for_port(port, 60)
        nodes.append(node("worker", 41100, f"--address={address}"))
        _wait_for_nodes(env, address, 2, 60)
        seen = _descendants(nodes)
        cluster_up = time.monotonic() - started

        result = subprocess.run([*_deid_command(), "batch", str(manifest), "-o", str(runs), "--executor", "ray",
                                 "--address", address], env=env, capture_output=True, text=True, timeout=420)
        sockets = listening_sockets(_descendants(nodes))
    finally:
        _stop(nodes, seen)
        shutil.rmtree(temp, ignore_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr
    status = _status(runs)
    assert status["p1"]["status"] == "done" and status["p2"]["status"] == "done", status

    # Every stage task names its node in its pair's log; the two pairs' stages ran on both nodes.
    ran_on: dict[str, str] = {}
    for pair in ("p1", "p2"):
        for line in (runs / pair / "batch.log").read_text().splitlines():
            if " ran on node " in line:
                stage, node_id = line.split(": ", 1)[1].split(" ran on node ")
                ran_on[f"{pair}:{stage}"] = node_id.strip()
    assert "p1:train" in ran_on and "p2:evaluate" in ran_on, ran_on
    assert len(set(ran_on.values())) == 2, f"every stage ran on one node: {json.dumps(ran_on, indent=1)}"
    # The nodes started on 127.0.0.1 listen on loopback only.
    assert sockets and all(is_loopback(ip) for _, ip, _ in sockets), sorted(sockets)
    print(f"cluster up in {cluster_up:.0f} s; stages per node: "
          f"{ {n: sorted(k for k, v in ran_on.items() if v == n) for n in set(ran_on.values())} }")
