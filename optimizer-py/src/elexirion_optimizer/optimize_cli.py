"""The ``optimize`` subcommand (helper P5's file: it replaces this one).

Until the optimizer lands, ``optimize`` exists so the CLI's shape is final, and says clearly that
it is not built rather than pretending to run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from elexirion_optimizer.client import GatewayClient


def register(commands: Any) -> None:
    """Adds ``optimize`` to the CLI's subparsers; its ``run(args, gateway) -> int`` is the command."""
    parser = commands.add_parser("optimize", help="optimize a pipeline step's prompt (not built yet)")
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--step", required=True)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, gateway: GatewayClient) -> int:
    print("error: optimize is not built in this version of elexirion-optimizer", file=sys.stderr)
    return 2
