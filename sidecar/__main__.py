"""``python -m algomesh.sidecar``: run one sidecar (the launcher starts these).

The runner process starts first, before the sidecar imports the rest of itself, so the
two processes' starts overlap (an instance's cold start is the longer of them, not both).
"""
import logging
import sys

from .procs import die_with_parent

die_with_parent()

from .config import SidecarConfig  # noqa: E402 (light: argparse and the runner commands)

cfg = SidecarConfig.from_argv()
stdin = None if cfg.cert_dir or cfg.insecure else sys.stdin.buffer.read()  # before the runner exists
early = None
if not cfg.external_runner and cfg.isolation != "shared":
    from .runtimes import start_runner  # noqa: E402
    early = start_runner(cfg.runtime, cfg.runner_spec(), cfg.runner_env())

import uvloop  # noqa: E402

from .sidecar import main  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
uvloop.run(main(cfg, stdin=stdin, early=early))
