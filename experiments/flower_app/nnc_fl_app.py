"""The ServerApp and ClientApp of `run.py fl`, as Flower's deployment engine loads them.

Both read the run's arguments (JSON) from the run config; the server writes the run's rows
and summary to ``<results>/fl_deployment_<codec>.json`` for the launcher to collect.
"""
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from experiments.fl_run import args_from_json, client_handler, run_server

server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    run_server(args_from_json(context.run_config["args"]), grid)


@client_app.train()
def train(message: Message, context: Context) -> Message:
    return client_handler(args_from_json(context.run_config["args"]))(message, context)
