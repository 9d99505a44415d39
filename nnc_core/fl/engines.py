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
