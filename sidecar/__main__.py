"""``python -m algomesh.sidecar``: run one sidecar (the launcher starts these)."""
import logging

import uvloop

from .procs import die_with_parent
from .sidecar import main

die_with_parent()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
uvloop.run(main())
