"""What every command module shares: the handler's shape and JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ...settings import Settings

#: A command: parsed arguments and settings in, exit status out.
Handler = Callable[[argparse.Namespace, Settings], int]
#: Adds one command to the parser: ``add(name, handler, help)`` -> its subparser.
Add = Callable[[str, Handler, str], argparse.ArgumentParser]


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()
