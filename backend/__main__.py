"""``python -m backend COMMAND``: a small dispatcher. Each command is one function taking argparse's
namespace; add yours to ``COMMANDS`` (name -> (add_arguments, run))."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from backend.errors import InvalidInput


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind", default="tcp://127.0.0.1:5557", help="ZeroMQ endpoint to listen on (default: loopback)")
    p.add_argument("--models", default="builtin", help="model set (backend.models.registry), default: builtin")
    p.add_argument("--device", default="cpu", help="device(s), comma-separated: one worker each (e.g. cuda:0,cuda:1)")
    p.add_argument("--checkpoints", default=None, help="checkpoint directory for real models")
    p.add_argument("--untrained", action="store_true",
                   help="random networks of the model set's architecture (plumbing and load tests only)")
    p.add_argument("--runner", default="pipeline",
                   help="'pipeline' (backend.pipeline.run_job), 'simulated' (no models: for testing clients), or MODULE:FUNCTION")
    p.add_argument("--sim-step", type=float, default=0.1, help="seconds per sampling step of the simulated runner")
    p.add_argument("--curve-secret", default=None, help="the server's NAME.key_secret (from 'python -m backend keys')")
    p.add_argument("--allow", default=None, help="directory of allowed client public keys (*.key)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without CURVE (trusted networks only)")
    p.add_argument("--max-queue", type=int, default=32, help="jobs queued in all")
    p.add_argument("--max-queue-per-client", type=int, default=4, help="unfinished jobs per client")
    p.add_argument("--max-message-mb", type=float, default=None, help="largest message read (default: from the model limits)")
    p.add_argument("--max-vertices", type=int, default=500_000)
    p.add_argument("--heartbeat-timeout", type=float, default=10.0, help="seconds of client silence before its jobs are cancelled")
    p.add_argument("--result-ttl", type=float, default=900.0, help="seconds a finished job's result is kept for Attach")
    p.add_argument("-v", "--verbose", action="store_true")


def _serve(args: argparse.Namespace) -> int:
    from backend.security import CurveConfig, check_bind
    from backend.server import Server, ServerConfig

    if (args.curve_secret is None) != (args.allow is None):
        raise InvalidInput("curve_secret", "CURVE needs both --curve-secret and --allow")
    curve = CurveConfig.load(args.curve_secret, args.allow) if args.curve_secret else None
    config = ServerConfig(bind=args.bind, curve=curve, insecure=args.insecure, max_queue=args.max_queue,
                          max_queue_per_client=args.max_queue_per_client, max_vertices=args.max_vertices,
                          heartbeat_timeout_s=args.heartbeat_timeout, result_ttl_s=args.result_ttl,
                          max_message_bytes=None if args.max_message_mb is None else int(args.max_message_mb * 2**20))
    check_bind(args.bind, curve, args.insecure)  # before loading any model
    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    if args.runner == "simulated":
        from backend.simulate import SimulatedRunner, simulated_model_limits

        server = Server(config, model_limits=simulated_model_limits(), runner=SimulatedRunner(step_s=args.sim_step),
                        workers=len(devices), models_name="simulated", devices=devices)
    else:
        from backend.models.registry import load_model_set

        runner = None
        if args.runner != "pipeline":
            module, _, func = args.runner.partition(":")
            runner = getattr(importlib.import_module(module), func)
        options = {"untrained": True} if args.untrained else {}
        try:
            model_sets = [load_model_set(args.models, device=d, checkpoints=args.checkpoints, **options) for d in devices]
        except (ImportError, OSError) as exc:  # OSError: missing weights or checkpoints
            raise InvalidInput("models", f"model set {args.models!r} cannot be loaded here: {exc}") from None
        try:
            server = Server(config, model_sets=model_sets, runner=runner)
        except ImportError as exc:
            raise InvalidInput("runner", f"the job runner cannot be imported: {exc}") from None
    server.start()
    print(f"dsquare backend listening on {server.endpoint} (models: {server.models_name}, devices: {','.join(server.devices)}, "
          f"CURVE: {'on' if curve else 'off'}); Ctrl-C stops", flush=True)
    server.serve_forever()
    if server.crashed:
        print("error: the server's I/O loop crashed (see the log above)", file=sys.stderr)
        return 1
    return 0


def _keys_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="key pair name, e.g. 'server' or an artist's name")
    p.add_argument("--dir", default=".", help="where to write NAME.key (public) and NAME.key_secret (secret)")


def _keys(args: argparse.Namespace) -> int:
    from backend.security import make_keys

    public, secret = make_keys(args.dir, args.name)
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")
    print("server: --curve-secret SERVER.key_secret --allow DIR_WITH_CLIENT_KEYS; "
          "client: the server's .key and its own .key_secret")
    return 0


COMMANDS = {
    "serve": (_serve_args, _serve, "run the backend server"),
    "keys": (_keys_args, _keys, "make a CURVE key pair"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description="dsquare backend")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _, help_text) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return COMMANDS[args.command][1](args)
    except InvalidInput as exc:
        print(f"error: {exc.field}: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
