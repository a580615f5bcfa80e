"""``python -m emu``: the same command as the ``emu`` console script.

The command line speaks kernel (configs, policies), so it lives in the
``actors`` package; this module finds it through the distribution's
``emu`` console-script entry point instead of importing ``actors`` directly,
which keeps the engine free of kernel imports.
"""

import sys
from importlib.metadata import entry_points


def main() -> None:
    (script,) = entry_points(group="console_scripts", name="emu")
    sys.exit(script.load()())


if __name__ == "__main__":
    main()
