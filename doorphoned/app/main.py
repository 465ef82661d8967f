"""``doorphoned``: the command systemd (or ``make run``) starts."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from doorphoned import __version__
from doorphoned.app.config import Config, load_config, load_default
from doorphoned.app.daemon import AlreadyRunningError, ConfigLoader, Daemon, run_daemon
from doorphoned.core.config import DEFAULT_CONFIG_PATH, ConfigError, config_warnings
from doorphoned.core.logsetup import setup_logging
from doorphoned.core.statedir import secure_state_dir, set_umask


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doorphoned", description="Door-phone firmware daemon.")
    parser.add_argument("--version", action="version", version=f"doorphoned {__version__}")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, help=f"TOML configuration (default {DEFAULT_CONFIG_PATH})")
    source.add_argument("--sim", action="store_true",
                        help="embedded default: hw-sim hardware, state in ./var, no cloud")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration (with environment overrides) and exit")
    parser.add_argument("--log-level", type=int, choices=range(1, 8), metavar="1-7",
                        help="override daemon.log_level (1 critical ... 7 trace)")
    return parser


def make_loader(args: argparse.Namespace) -> ConfigLoader:
    if args.sim:
        return ConfigLoader(lambda overrides: load_default(overrides=overrides), "embedded default (--sim)")
    path: Path = args.config or DEFAULT_CONFIG_PATH
    if not args.config and not path.exists():
        raise ConfigError(str(path), "no configuration file; pass --config FILE, or --sim for the embedded default")
    return ConfigLoader(lambda overrides: load_config(path, overrides=overrides), str(path))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        loader = make_loader(args)
        config: Config = loader.load(None)
    except ConfigError as exc:
        print(f"doorphoned: configuration error: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG: systemd shows it, Restart=on-failure does not loop on it (RestartPreventExitStatus)
    if args.check_config:
        for warning in config_warnings(config):
            print(f"doorphoned: warning: {warning}", file=sys.stderr)
        print(f"configuration OK ({loader.source}): {len(config.doors)} doors")
        return 0
    set_umask()  # before the first file: the log, the database, its WAL
    secure_state_dir(config.state_path, config.control_socket_path, config.control.group)
    setup_logging(args.log_level or config.daemon.log_level, config.state_path / "log" / "doorphoned.log",
                  config.daemon.log_file_size)
    try:
        return asyncio.run(run_daemon(Daemon(config, loader)))
    except AlreadyRunningError as exc:
        print(f"doorphoned: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
