"""Where a federation runs: Flower's simulation engine (Ray), or in this process.

Both drive the same strategy (its own round loop, ``Strategy.start``) and the same
``ClientApp``. The in-process engine is a ``Grid`` that calls the client app directly, for
fast tests; it can drop messages to simulate clients that go away.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

from flwr.app import ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

OFFLINE_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
               "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}


def offline() -> None:
    """No telemetry, no update checks: set before Flower or Ray start."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def server_app(make_strategy: Callable[[Context], object], num_rounds: int,
               timeout: float = 3600.0) -> ServerApp:
    """A ``ServerApp`` that runs ``make_strategy(context).start(...)`` for ``num_rounds``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        make_strategy(context).start(grid=grid, initial_arrays=ArrayRecord(),
                                     num_rounds=num_rounds, timeout=timeout)

    return app


class InProcessGrid(Grid):
    """A grid whose nodes are ``ClientApp`` calls in this process, each with its own
    persistent context (``partition-id`` 0..n-1). ``drop(server_round, partition)`` True
    loses that message (the client does not answer)."""

    def __init__(self, app: ClientApp, num_nodes: int,
                 drop: Callable[[int, int], bool] | None = None):
        self.app, self.drop = app, drop
        self.contexts = {1000 + i: Context(run_id=1, node_id=1000 + i,
                                           node_config={"partition-id": i, "num-partitions": num_nodes},
                                           state=RecordDict(), run_config={})
                         for i in range(num_nodes)}
        self._run = None
        self._replies: dict[str, Message] = {}

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def _answer(self, message: Message) -> Message | None:
        context = self.contexts[message.metadata.dst_node_id]
        server_round = int(message.content["config"].get("server-round", 0)) \
            if "config" in message.content else 0
        if self.drop and self.drop(server_round, int(context.node_config["partition-id"])):
            return None
        try:
            return self.app(message, context)
        except Exception as error:            # a failing client answers with an error
            return Message(Error(code=1, reason=f"{type(error).__name__}: {error}"),
                           reply_to=message)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for i, message in enumerate(messages):
            key = f"m{len(self._replies)}-{i}"
            reply = self._answer(message)
            if reply is not None:
                self._replies[key] = reply
            ids.append(key)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(messages))


def run_inprocess(make_strategy: Callable[[Context], object], client: ClientApp,
                  num_clients: int, num_rounds: int, drop=None):
    """Run the strategy of ``make_strategy`` against ``client`` in this process; returns
    the strategy."""
    from flwr.supercore.task_identity import TaskIdentity
    # what a ServerApp process is told by its SuperLink: messages are stamped with it
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    grid = InProcessGrid(client, num_clients, drop)
    strategy = make_strategy(Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                     run_config={}))
    strategy.start(grid=grid, initial_arrays=ArrayRecord(), num_rounds=num_rounds)
    return strategy


def run_simulation(make_strategy: Callable[[Context], object], client: ClientApp,
                   num_clients: int, num_rounds: int, num_cpus: int = 1) -> None:
    """Flower's simulation engine on Ray: one CPU and no GPU per client, ``num_cpus``
    for the whole federation."""
    offline()
    from flwr.simulation import run_simulation as flower_run_simulation
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": num_cpus, "num_gpus": 0, "include_dashboard": False,
                             "logging_level": "ERROR", "log_to_driver": False}}
    flower_run_simulation(server_app=server_app(make_strategy, num_rounds), client_app=client,
                          num_supernodes=num_clients, backend_config=backend)


ENGINES = {"inprocess": run_inprocess, "simulation": run_simulation}


def _free_ports(count: int) -> list[int]:
    import socket
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_deployment(app_dir, num_clients: int, run_config: dict, workdir, *,
                   pythonpath: str | None = None, timeout: float = 3600.0) -> None:
    """Flower's deployment engine on this machine: a SuperLink and ``num_clients``
    SuperNodes (``partition-id`` 0..n-1) as separate processes on loopback without TLS,
    then ``flwr run`` of the Flower app in ``app_dir`` with ``run_config``; every process
    is stopped afterwards. Logs go to ``workdir``. Across machines, start
    ``flower-superlink`` on the server and ``flower-supernode --superlink HOST:PORT`` on
    each client yourself (with TLS), and point ``flwr run`` at the SuperLink."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    offline()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    binaries = Path(sys.executable).parent
    # the SuperLink serves its fleet, control and runtime APIs on one HTTP port
    link, *node_ports = _free_ports(1 + num_clients)
    home = workdir / "flwr_home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "nnc"\n\n'
        f'[superlink.nnc]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    overrides = workdir / "run_config.toml"
    overrides.write_text("".join(f"{k} = {_toml_string(v)}\n" for k, v in run_config.items()))
    env = dict(os.environ, FLWR_HOME=str(home), **OFFLINE_ENV)
    # the SuperLink and SuperNodes start their helper processes (flower-superexec) by name
    env["PATH"] = os.pathsep.join([str(binaries), env.get("PATH", "")])
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    processes, logs = [], []

    def start(name: str, *command: str):
        log = open(workdir / f"{name}.log", "w")
        logs.append(log)
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          cwd=workdir))

    try:
        start("superlink", str(binaries / "flower-superlink"), "--insecure",
              "--isolation", "subprocess", "--database", ":flwr-in-memory-state:",
              "--disable-runtime-dependency-installation",
              "--host", "127.0.0.1", "--port", str(link))
        _wait_for_port(link, processes[0], workdir / "superlink.log")
        for i, port in enumerate(node_ports):
            start(f"supernode_{i}", str(binaries / "flower-supernode"), "--insecure",
                  "--superlink", f"127.0.0.1:{link}", "--isolation", "subprocess",
                  "--host", "127.0.0.1", "--port", str(port),
                  "--node-config", f"partition-id={i} num-partitions={num_clients}")
        with open(workdir / "flwr_run.log", "w") as log:
            result = subprocess.run([str(binaries / "flwr"), "run", str(app_dir), "nnc",
                                     "--run-config", str(overrides), "--stream"],
                                    stdout=log, stderr=subprocess.STDOUT, env=env,
                                    timeout=timeout, cwd=workdir)
        if result.returncode != 0:
            tail = (workdir / "flwr_run.log").read_text()[-2000:]
            raise RuntimeError(f"flwr run failed (exit {result.returncode}); see {workdir}:\n{tail}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()


def _wait_for_port(port: int, process, log, timeout: float = 120.0) -> None:
    """Until something listens on ``port`` (the SuperLink takes seconds to start)."""
    import socket
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the SuperLink exited ({process.returncode}); see {log}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the SuperLink did not open port {port} within {timeout:.0f} s; see {log}")


def _toml_string(value: str) -> str:
    """A TOML basic string."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


ENGINES["deployment"] = run_deployment
