"""Flower 1.42 (Message API) client and strategy that exchange coded updates.

:class:`NNCFedAvg` is a ``flwr.serverapp.strategy.FedAvg`` whose messages carry bitstreams
(bytes in a ``ConfigRecord``) instead of float arrays; :class:`NNClient` is the client's
logic behind a ``ClientApp``. The client keeps its whole state (global model copy, coding
states, residual) in ``context.state``, which Flower keeps per node across rounds in the
simulation and deployment engines alike, so clients and server can run in different
processes or machines. The training itself is a *task* (see :class:`Task`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from logging import INFO
from typing import Callable, Protocol

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from flwr.supercore import log

from ..errors import DecodeError
from .protocol import ClientLink, FLOptions, RoundTraffic, ServerLink
from .views import exchange_view

DOWN, UP, STATE = "nnc_down", "nnc_up", "nnc_client"


class Task(Protocol):
    """What a federated experiment trains: the model's float tensors and a local step."""

    def template(self) -> dict[str, np.ndarray]:
        """The model's float tensors (names, shapes) in a fixed order."""

    def train(self, weights: dict[str, np.ndarray], partition: int,
              server_round: int) -> tuple[dict[str, np.ndarray], int, dict]:
        """Train from ``weights`` on partition ``partition``; returns the new weights, the
        number of samples actually trained on, and metrics."""

    # optional, for ``bnf``: batchnorm_blocks() -> the model's (weight, BatchNorm) pairs


def _down_record(message: dict) -> ConfigRecord:
    return ConfigRecord({"version": message["version"], "first_version": message["first_version"],
                         "streams": list(message["streams"]), "resync": message["resync"],
                         "reset_upstream": message["reset_upstream"]})


class NNClient:
    """The client's logic: decode the broadcast, train, code the upload."""

    def __init__(self, task: Task, options: FLOptions, partition: int):
        self.task, self.options, self.partition = task, options, partition
        self.view = exchange_view(options, task)

    def handle(self, message: Message, context: Context) -> Message:
        template = self.view.exchanged(self.task.template())
        saved = context.state.get(STATE)
        link = ClientLink.from_bytes(saved["blob"], template, self.options) if saved else \
            ClientLink(self.partition + 1, template, self.options)
        down = message.content[DOWN]
        server_round = int(message.content["config"]["server-round"])
        received = link.receive({k: down[k] for k in down.keys()})
        weights = self.view.model(received, link.kept)
        start = time.perf_counter()
        trained, samples, metrics = self.task.train(weights, self.partition, server_round)
        link.kept = self.view.kept(trained) or None
        upload = link.send(self.view.upload(received, weights, trained))
        context.state[STATE] = ConfigRecord({"blob": link.to_bytes()})
        reply = RecordDict({
            UP: ConfigRecord({"upload": upload, "version": link.version}),
            "metrics": MetricRecord({"num-examples": int(samples),
                                     "train-seconds": time.perf_counter() - start,
                                     **{k: float(v) for k, v in metrics.items()}})})
        return Message(reply, reply_to=message)


def client_app(make_task: Callable[[Context], Task], options: FLOptions) -> ClientApp:
    """A Flower ``ClientApp``; ``make_task(context)`` builds the task in the client's process
    (the partition is ``context.node_config["partition-id"]``)."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        partition = int(context.node_config.get("partition-id", 0))
        return NNClient(make_task(context), options, partition).handle(message, context)

    return app


@dataclass
class RoundLog:
    round: int
    traffic: RoundTraffic
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0


class NNCFedAvg(FedAvg):
    """FedAvg whose broadcasts and uploads are coded updates (see :mod:`.protocol`).

    ``server`` holds the global model; ``evaluate`` (optional) maps the global model as
    the clients hold it to metrics, after every round. Client-side evaluation is off.
    """

    def __init__(self, server: ServerLink, evaluate: Callable | None = None,
                 on_round: Callable[[RoundLog], None] | None = None, **fedavg):
        fedavg.setdefault("fraction_evaluate", 0.0)
        super().__init__(**fedavg)
        self.server, self.evaluate, self.on_round = server, evaluate, on_round
        self.history: list[RoundLog] = []
        self._started = time.perf_counter()

    def configure_train(self, server_round, arrays, config, grid):
        if self.fraction_train == 0.0:
            return []
        num_nodes = int(len(list(grid.get_node_ids())) * self.fraction_train)
        node_ids, _ = sample_nodes(grid, self.min_available_nodes,
                                   max(num_nodes, self.min_train_nodes))
        config["server-round"] = server_round
        self._started = time.perf_counter()
        return [Message(RecordDict({DOWN: _down_record(self.server.downstream(node)),
                                    "config": config}),
                        dst_node_id=node, message_type="train") for node in node_ids]

    def aggregate_train(self, server_round, replies):
        valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
        train_metrics = {}
        for message in valid:
            node = message.metadata.src_node_id
            try:
                up = message.content[UP]
                metrics = message.content["metrics"]
                samples, version = float(metrics["num-examples"]), int(up["version"])
                payload = up["upload"]
            except (KeyError, TypeError, ValueError):
                self.server.traffic.failures += 1
                continue
            self.server.acknowledge(node, version)
            if self.server.receive(node, payload, samples, version):
                for key, value in metrics.items():
                    train_metrics.setdefault(key, []).append(float(value))
        self.server.traffic.failures += len(errors)
        traffic = self.server.aggregate()
        summary = {k: float(np.mean(v)) for k, v in train_metrics.items() if k != "num-examples"}
        if self.evaluate is not None:
            summary.update(self.evaluate(self.server.broadcast))
        entry = RoundLog(server_round, traffic, summary, time.perf_counter() - self._started)
        self.history.append(entry)
        if self.on_round is not None:
            self.on_round(entry)
        log(INFO, "round %d: %d uploads, %d failures, %d B up, %d B down", server_round,
            traffic.uploads, traffic.failures, traffic.up, traffic.down + traffic.initial)
        return None, MetricRecord({k: v for k, v in summary.items()
                                   if isinstance(v, (int, float))})


__all__ = ["NNClient", "NNCFedAvg", "client_app", "Task", "RoundLog", "DecodeError"]
